"""Duplicates in a case's record: the same result, report or document arriving from several
sources (the outside EHR's FHIR API, its HL7 v2 feed, a PACS) is shown once.

Two resources of one type are the same when they share an identifier (system and value),
or when they share a code, the same clinical date (an instant when it has a time, else the
day) and the same value (both absent counts as the same). The survivor of a group is the
most final and most complete one; it takes the others' identifiers, and every reference to
a dropped duplicate is pointed at it, so that the Provenance of each source stays attached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hub.fhir.dates import date_range
from hub.fhir.references import references_in, rewrite

JSON = dict[str, Any]

# What each type is "about" (its code) and when; only these types are compared by content.
# Identifiers are compared for every type except the ones the case is built around.
CODE_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Observation": ("code",),
    "Condition": ("code",),
    "DiagnosticReport": ("code",),
    "Procedure": ("code",),
    "MedicationRequest": ("medicationCodeableConcept",),
    "MedicationAdministration": ("medicationCodeableConcept",),
    "MedicationStatement": ("medicationCodeableConcept",),
    "DocumentReference": ("type",),
    "AllergyIntolerance": ("code",),
    "CarePlan": ("category",),
}
DATE_ELEMENTS = (
    "effectiveDateTime",
    "effectivePeriod",
    "effectiveInstant",
    "onsetDateTime",
    "onsetPeriod",
    "performedDateTime",
    "performedPeriod",
    "authoredOn",
    "recordedDate",
    "issued",
    "date",
    "period",
)
NEVER_MERGED = frozenset({"Patient", "Task", "Provenance", "Binary", "Communication", "Consent"})
# Most final first (Observation / DiagnosticReport / DocumentReference statuses).
STATUS_RANK = {
    "final": 0,
    "amended": 0,
    "corrected": 0,
    "current": 0,
    "completed": 0,
    "active": 1,
    "appended": 1,
    "partial": 2,
    "preliminary": 3,
    "registered": 4,
}


@dataclass(frozen=True)
class Deduplicated:
    """The resources left, and for each dropped one (`Type/id`) the survivor it became."""

    resources: dict[str, JSON]
    merged_into: dict[str, str]


def deduplicate(resources: dict[str, JSON]) -> Deduplicated:
    """Merge the duplicates among `resources` (keyed `Type/id`, not modified)."""
    groups = _Groups()
    owner_of: dict[tuple[Any, ...], str] = {}
    for reference, resource in sorted(resources.items()):
        if resource.get("resourceType") in NEVER_MERGED:
            continue
        for key in _keys(resource):
            first = owner_of.setdefault(key, reference)
            if first != reference:
                groups.join(first, reference)
    merged_into: dict[str, str] = {}
    kept = dict(resources)
    for members in groups.sets():
        survivor = min(members, key=lambda ref: _preference(ref, resources[ref]))
        others = sorted(members - {survivor})
        kept[survivor] = _with_identifiers(resources[survivor], [resources[o] for o in others])
        for other in others:
            merged_into[other] = survivor
            del kept[other]
    if merged_into:
        kept = _repointed(kept, merged_into)
    return Deduplicated(kept, merged_into)


def _keys(resource: JSON) -> Iterator[tuple[Any, ...]]:
    resource_type = resource["resourceType"]
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
            yield resource_type, "identifier", identifier["system"], identifier["value"]
    elements = CODE_ELEMENTS.get(resource_type)
    when = _clinical_date(resource)
    if elements is None or when is None:
        return
    value = _value(resource)
    for element in elements:
        for concept in _concepts(resource.get(element)):
            for coding in concept.get("coding") or []:
                if isinstance(coding, dict) and coding.get("system") and coding.get("code"):
                    yield resource_type, "content", coding["system"], coding["code"], when, value


def _concepts(value: Any) -> list[JSON]:
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict)]


def _clinical_date(resource: JSON) -> tuple[Any, ...] | None:
    for element in DATE_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, dict):
            value = value.get("start")
        if isinstance(value, str):
            try:
                low, high = date_range(value)
            except ValueError:
                return None
            return ("instant", low) if "T" in value else ("date", low, high)
    return None


def _value(resource: JSON) -> str | None:
    """The result an Observation reports or the dose a medication resource gives, as a
    comparable string (quantities by value and unit code)."""
    if resource["resourceType"] == "Observation":
        found = {k: v for k, v in resource.items() if k.startswith("value")}
        if not found:
            return (
                json.dumps(resource["component"], sort_keys=True)
                if resource.get("component")
                else None
            )
        name, value = next(iter(found.items()))
        if name == "valueQuantity" and isinstance(value, dict):
            value = {k: value.get(k) for k in ("value", "code", "system")}
        elif name == "valueCodeableConcept" and isinstance(value, dict):
            value = sorted((c.get("system"), c.get("code")) for c in value.get("coding") or [])
        # Findings that differ only in their components (the gene a variant test studied)
        # are different results.
        components = resource.get("component")
        return json.dumps([name, value, components], sort_keys=True, default=str)
    dosage = resource.get("dosage") or next(iter(resource.get("dosageInstruction") or []), None)
    if isinstance(dosage, dict):
        dose = dosage.get("dose") or next(
            (d.get("doseQuantity") for d in dosage.get("doseAndRate") or [] if isinstance(d, dict)),
            None,
        )
        if isinstance(dose, dict):
            return json.dumps([dose.get("value"), dose.get("code") or dose.get("unit")])
    return None


def _preference(reference: str, resource: JSON) -> tuple[int, int, str]:
    """Most final, then most complete (the longest), then by reference."""
    status = STATUS_RANK.get(str(resource.get("status")), len(STATUS_RANK))
    return status, -len(json.dumps(resource, separators=(",", ":"))), reference


def _with_identifiers(survivor: JSON, others: list[JSON]) -> JSON:
    identifiers = list(survivor.get("identifier") or [])
    seen = {json.dumps(i, sort_keys=True) for i in identifiers}
    for other in others:
        for identifier in other.get("identifier") or []:
            text = json.dumps(identifier, sort_keys=True)
            if text not in seen:
                seen.add(text)
                identifiers.append(identifier)
    if len(identifiers) == len(survivor.get("identifier") or []):
        return survivor
    return {**survivor, "identifier": identifiers}


def _repointed(resources: dict[str, JSON], merged_into: dict[str, str]) -> dict[str, JSON]:
    """References to dropped duplicates point at their survivors; a list that then names
    the same target twice (a report's results, a Provenance's targets) names it once."""
    out: dict[str, JSON] = {}
    for reference, resource in resources.items():
        # `Type/id/_history/n` of a dropped duplicate becomes its survivor (unversioned).
        assigned = {
            found: merged_into[found.split("/_history/")[0]]
            for found in references_in(resource)
            if found.split("/_history/")[0] in merged_into
        }
        if assigned:
            resource = _unique_references(rewrite(resource, assigned))
        out[reference] = resource
    return out


def _unique_references(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _unique_references(value) for key, value in node.items()}
    if isinstance(node, list):
        items = [_unique_references(item) for item in node]
        if not all(isinstance(item, dict) and "reference" in item for item in items):
            return items
        unique: list[Any] = []
        for item in items:
            if item not in unique:
                unique.append(item)
        return unique
    return node


class _Groups:
    """Union-find over `Type/id` strings."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}

    def _root(self, item: str) -> str:
        parent = self._parent.setdefault(item, item)
        while parent != item:
            grand = self._parent.setdefault(parent, parent)
            self._parent[item] = grand
            item, parent = parent, grand
        return item

    def join(self, a: str, b: str) -> None:
        root_a, root_b = self._root(a), self._root(b)
        if root_a != root_b:
            self._parent[max(root_a, root_b)] = min(root_a, root_b)

    def sets(self) -> list[set[str]]:
        grouped: dict[str, set[str]] = {}
        for item in self._parent:
            grouped.setdefault(self._root(item), set()).add(item)
        return [members for members in grouped.values() if len(members) > 1]
