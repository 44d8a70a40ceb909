"""The record of a case as a FHIR `document` Bundle: a Composition (the table of contents,
section by section, with a readable line per record) followed by the records, duplicates
merged, every reference resolving inside the bundle, the same bytes for the same input."""

from __future__ import annotations

import hashlib
import html
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hub import codes
from hub.fhir.dates import instant
from hub.fhir.references import references_in
from hub.storage.repository import StoredResource
from hub.workflow.record_dedup import DATE_ELEMENTS as CLINICAL_DATES
from hub.workflow.record_dedup import deduplicate
from hub.workflow.record_sections import Section, record_sections, section_of

JSON = dict[str, Any]
Key = tuple[str, str]

LOINC = "http://loinc.org"
DOCUMENT_TYPE = {"system": LOINC, "code": "60591-5", "display": "Patient summary Document"}
EMPTY_SECTION = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/list-empty-reason",
            "code": "unavailable",
            "display": "Unavailable",
        }
    ],
    "text": "Nothing received yet",
}
# What a record is dated by, for the order of a section and its readable lines.
DATE_ELEMENTS = (*CLINICAL_DATES, "started", "birthDate")


def record_document(
    members: dict[Key, StoredResource],
    referral: StoredResource,
    case: StoredResource | None,
    base: str,
    profiles_for: Callable[[JSON], list[str]] | None = None,
    references: Mapping[Key, Sequence[str]] | None = None,
) -> JSON:
    """The document Bundle of a case's `members` (the caller's readable records of it).

    `profiles_for` names the profiles each record claims (stamped in `meta.profile`);
    `references`, the references each member makes, when the caller has them already.
    """
    versions = {f"{t}/{i}": stored for (t, i), stored in members.items()}
    stored_content = {
        ref: s.content for ref, s in versions.items() if s.resource_type != "Provenance"
    }
    deduplicated = deduplicate(stored_content)
    records = deduplicated.resources
    current = {ref: versions[ref].version_id for ref in records}
    provenances = _provenances(
        [s.content for s in versions.values() if s.resource_type == "Provenance"],
        deduplicated.merged_into,
        current,
    )
    resolvable = set(records) | {f"Provenance/{p['id']}" for p in provenances}
    known = references or {}
    records = {
        ref: _only_resolving(
            resource,
            resolvable,
            known.get(_key(ref)) if resource is stored_content[ref] else None,
        )
        for ref, resource in records.items()
    }
    if profiles_for is not None:
        records = {ref: _with_profiles(resource, profiles_for) for ref, resource in records.items()}

    in_case = {referral.reference} | ({case.reference} if case else set())
    placed: dict[str, list[str]] = defaultdict(list)
    unplaced: list[str] = []
    section_by_ref: dict[str, str | None] = {
        ref: section_of(resource, ref in in_case) for ref, resource in records.items()
    }
    report_section = _report_sections(records, section_by_ref)
    for ref in sorted(records, key=lambda r: (record_when(records[r]), r)):
        section = report_section.get(ref) or section_by_ref[ref]
        (placed[section] if section else unplaced).append(ref)

    stamp = max(stored.last_updated for stored in versions.values())
    digest = hashlib.sha256(
        "\n".join(f"{ref}/{versions[ref].version_id}" for ref in sorted(versions)).encode()
    ).hexdigest()
    document_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{base}/{referral.reference}#{digest}"))
    patient = referral.content.get("subject") or {}
    composition: JSON = {
        "resourceType": "Composition",
        "id": document_id,
        "identifier": {"system": f"{base}/record-bundle", "value": document_id},
        "status": "final",
        "type": {"coding": [DOCUMENT_TYPE], "text": "Second-opinion record"},
        "subject": {"reference": patient.get("reference")},
        "date": instant(stamp),
        "author": [{"display": "Second-opinion hub"}],
        "title": "Second-opinion record",
        "section": [_section(section, placed, records) for section in record_sections()],
    }
    ordered = [
        ref
        for section in record_sections()
        for leaf in section.leaves()
        for ref in placed[leaf.code]
    ]
    entries = [{"fullUrl": f"urn:uuid:{document_id}", "resource": composition}]
    entries += [
        {"fullUrl": f"{base}/{ref}", "resource": records[ref]} for ref in ordered + unplaced
    ]
    entries += [
        {"fullUrl": f"{base}/Provenance/{p['id']}", "resource": p}
        for p in sorted(provenances, key=lambda p: str(p["id"]))
    ]
    return {
        "resourceType": "Bundle",
        "id": document_id,
        "meta": {"lastUpdated": instant(stamp)},
        "identifier": {"system": f"{base}/record-bundle", "value": document_id},
        "type": "document",
        "timestamp": instant(stamp),
        "entry": entries,
    }


def _provenances(
    provenances: list[JSON], merged_into: dict[str, str], current: dict[str, int]
) -> list[JSON]:
    """Each Provenance of a record, its targets narrowed to the records in the bundle (at
    their current version); one about nothing here but the patient (an earlier version of
    the case Task, say) is left out."""
    kept = []
    for provenance in provenances:
        targets = []
        for target in provenance.get("target") or []:
            reference = str(target.get("reference", ""))
            plain, _, version = reference.partition("/_history/")
            if plain in merged_into:
                reference, plain, version = merged_into[plain], merged_into[plain], ""
            if plain in current and (not version or version == str(current[plain])):
                targets.append({**target, "reference": reference})
        if any(not t["reference"].startswith("Patient/") for t in targets):
            unique = list({t["reference"]: t for t in targets}.values())
            kept.append({**provenance, "target": unique})
    return kept


def _only_resolving(resource: JSON, resolvable: set[str], references: Sequence[str] | None) -> JSON:
    """`resource`, with any reference to a record outside the bundle (one the caller may
    not read, or no longer held) turned into its display text, so that none dangles.
    `references`: those it makes, if known."""
    dangling = {
        reference
        for reference in (references_in(resource) if references is None else references)
        if not reference.startswith("#") and reference.partition("/_history/")[0] not in resolvable
    }
    return _demoted(resource, dangling) if dangling else resource


def _key(reference: str) -> Key:
    resource_type, _, resource_id = reference.partition("/")
    return resource_type, resource_id


def _demoted(node: Any, dangling: set[str]) -> Any:
    if isinstance(node, dict):
        if node.get("reference") in dangling:
            kept = {k: v for k, v in node.items() if k != "reference"}
            kept.setdefault("display", f"{node['reference']} (not in this record)")
            return kept
        return {key: _demoted(value, dangling) for key, value in node.items()}
    if isinstance(node, list):
        return [_demoted(item, dangling) for item in node]
    return node


def _with_profiles(resource: JSON, profiles_for: Callable[[JSON], list[str]]) -> JSON:
    profiles = profiles_for(resource)
    meta = resource.get("meta") or {}
    claimed = list(meta.get("profile") or [])
    missing = [p for p in profiles if p not in claimed]
    if not missing:
        return resource
    return {**resource, "meta": {**meta, "profile": claimed + missing}}


def _report_sections(
    records: dict[str, JSON], section_by_ref: dict[str, str | None]
) -> dict[str, str]:
    """Results listed by a DiagnosticReport go in the report's section."""
    found: dict[str, str] = {}
    for ref, resource in records.items():
        section = section_by_ref[ref]
        if resource.get("resourceType") != "DiagnosticReport" or section is None:
            continue
        for result in resource.get("result") or []:
            target = str(result.get("reference", ""))
            if target in records:
                found.setdefault(target, section)
    return found


def _section(section: Section, placed: dict[str, list[str]], records: dict[str, JSON]) -> JSON:
    entry: JSON = {
        "title": section.title,
        "code": {
            "coding": [
                {
                    "system": codes.RECORD_SECTION_SYSTEM,
                    "code": section.code,
                    "display": section.title,
                }
            ]
        },
    }
    if section.sections:
        entry["section"] = [_section(sub, placed, records) for sub in section.sections]
        return entry
    refs = placed[section.code]
    entry["text"] = {"status": "generated", "div": _narrative(section.title, refs, records)}
    if refs:
        entry["entry"] = [{"reference": ref} for ref in refs]
    else:
        entry["emptyReason"] = EMPTY_SECTION
    return entry


def _narrative(title: str, refs: list[str], records: dict[str, JSON]) -> str:
    if not refs:
        return f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{html.escape(title)}: none.</p></div>'
    items = "".join(f"<li>{html.escape(record_line(records[ref]))}</li>" for ref in refs)
    return f'<div xmlns="http://www.w3.org/1999/xhtml"><ul>{items}</ul></div>'


def record_line(resource: JSON) -> str:
    """`2026-03-02 Hemoglobin: 9.1 g/dL (final)` — what a reader scans a section for."""
    parts = [record_when(resource)[:10], resource["resourceType"]]
    label = record_label(resource)
    if label:
        parts[-1] = label
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict) and "value" in quantity:
        parts.append(f"{quantity['value']} {quantity.get('unit', quantity.get('code', ''))}")
    elif isinstance(resource.get("valueString"), str):
        parts.append(resource["valueString"][:80])
    if resource.get("status"):
        parts.append(f"({resource['status']})")
    return " ".join(p for p in parts if p).strip()


def record_label(resource: JSON) -> str:
    for element in ("code", "type", "medicationCodeableConcept", "category"):
        concept = resource.get(element)
        if isinstance(concept, list):
            concept = concept[0] if concept else None
        if isinstance(concept, dict):
            codings = concept.get("coding") or [{}]
            text = concept.get("text") or codings[0].get("display") or codings[0].get("code")
            if text:
                return str(text)
    for element in ("name", "title", "description"):
        value = resource.get(element)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and isinstance(value[0], dict):
            name = value[0]
            return str(
                name.get("text") or " ".join([*name.get("given", []), name.get("family", "")])
            )
    return ""


def record_when(resource: JSON) -> str:
    for element in DATE_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, dict):
            value = value.get("start")
        if isinstance(value, str):
            return value
    return ""
