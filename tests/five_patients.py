"""Helpers of the five-patient tests (issue #7): how to find a generated case's overlaps
among FHIR resources, and whether a Bundle's references resolve."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from hub import codes
from hub.demo.five_cases import OutsideCase, Overlap

JSON = dict[str, Any]
HL7_DERIVED = f"{codes.CANONICAL_BASE}/sid/hl7v2-derived/"
"""Systems of the identifiers the hub derives for HL7 v2 results (the OBX's order's)."""


def moment(value: str | None) -> datetime | date | None:
    """A FHIR date, dateTime or instant: an aware datetime in UTC when it has a time, else
    a date (how two clinical dates are compared)."""
    if not value:
        return None
    if "T" not in value:
        return date.fromisoformat(value[:10])
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def has_identifier(resource: JSON, system: str, value: str) -> bool:
    return any(
        i.get("system") == system and i.get("value") == value
        for i in resource.get("identifier") or []
    )


def has_code(resource: JSON, system: str, code: str) -> bool:
    concept = resource.get("code") or resource.get("type") or {}
    return any(
        c.get("system") == system and c.get("code") == code for c in concept.get("coding") or []
    )


def matches(resource: JSON, overlap: Overlap) -> bool:
    """Whether ``resource`` is a copy of ``overlap`` (by its identifier, or by code, clinical
    date and value)."""
    if resource.get("resourceType") != overlap.resource_type:
        return False
    if overlap.identifier is not None:
        return has_identifier(resource, *overlap.identifier)
    assert overlap.code is not None
    if not has_code(resource, *overlap.code):
        return False
    if moment(resource.get("effectiveDateTime")) != moment(overlap.moment):
        return False
    if overlap.value is None:
        return True
    quantity = resource.get("valueQuantity") or {}
    return (quantity.get("value"), quantity.get("code")) == overlap.value


def near_duplicates(resources: Iterable[JSON], case: OutsideCase) -> list[JSON]:
    """The Observations with the near-duplicate's code and clinical date."""
    near = case.near_duplicate
    return [
        r
        for r in resources
        if r.get("resourceType") == "Observation"
        and has_code(r, *near.code)
        and moment(r.get("effectiveDateTime")) == moment(near.moment)
    ]


def resources_of(bundle: JSON) -> list[JSON]:
    return [entry["resource"] for entry in bundle.get("entry") or []]


def unresolved_references(bundle: JSON) -> list[str]:
    """``Type/id: reference`` of every reference in ``bundle`` that no entry answers to
    (contained ``#`` references aside). A relative reference resolves against the base of its
    entry's fullUrl, or failing that against any entry of that type and id."""
    full_urls = {entry.get("fullUrl") for entry in bundle.get("entry") or []}
    keys = {f"{r.get('resourceType')}/{r.get('id')}" for r in resources_of(bundle) if r.get("id")}
    missing = []
    for entry in bundle.get("entry") or []:
        resource = entry["resource"]
        full_url = str(entry.get("fullUrl") or "")
        key = f"{resource.get('resourceType')}/{resource.get('id')}"
        base = full_url[: -len(key) - 1] if full_url.endswith("/" + key) else None
        for reference in _references(resource):
            if reference.startswith("#"):
                continue
            relative = reference.split("/_history/")[0]
            if relative in full_urls or relative in keys:
                continue
            if base is not None and f"{base}/{relative}" in full_urls:
                continue
            missing.append(f"{key}: {reference}")
    return missing


def _references(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "reference" and isinstance(child, str):
                yield child
            elif key != "contained":
                yield from _references(child)
    elif isinstance(node, list):
        for child in node:
            yield from _references(child)


def expected_counts(case: OutsideCase) -> Counter[str]:
    """Resources of each clinical type a deduplicated record bundle of ``case`` holds: the
    FHIR part's (but its Patient, and the Binaries its documents point at), plus what one
    other channel alone sends (the HL7 recount and tumour-marker report, the PACS-only
    study); the overlaps merge into them."""
    found = Counter(r["resourceType"] for r in resources_of(case.record))
    del found["Patient"], found["Binary"]
    found.update(["Observation", "DiagnosticReport", "ImagingStudy"])
    return found
