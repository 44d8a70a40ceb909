"""Which stored resources make up the record of a case: what points at the patient, what
those records point at, and the Provenance of each — loaded in bulk, filtered by what the
caller may read."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import select

from hub.fhir.interactions import FhirInteractions
from hub.fhir.references import references_in
from hub.storage.indexer import ANY_REFERENCE, split_reference
from hub.storage.repository import StoredResource
from hub.storage.tables import ResourceRow, SearchIndexRow

Key = tuple[str, str]

# The types a record holds (issue #7 item 1), and what they lead to. Not: AuditEvent (the
# access log is not the child's record), other Tasks (the hub's own work items).
RECORD_TYPES = frozenset(
    {
        "Patient",
        "RelatedPerson",
        "Coverage",
        "Consent",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "Endpoint",
        "Encounter",
        "Condition",
        "AllergyIntolerance",
        "Observation",
        "DiagnosticReport",
        "Specimen",
        "ImagingStudy",
        "DocumentReference",
        "Binary",
        "Procedure",
        "MedicationRequest",
        "MedicationAdministration",
        "MedicationStatement",
        "Medication",
        "CarePlan",
        "Communication",
        "ServiceRequest",
        "Provenance",
    }
)
# Rounds of following references from members to resources that do not point at the
# patient (a Medication, the practitioner's Organization, a Location of that Encounter…).
FOLLOW_ROUNDS = 3
_NAMES = re.compile(r'"reference": ?"((?:[^"\\]|\\.)*)"|"url": ?"(Binary/[A-Za-z0-9\-.]{1,64})"')
COLUMNS = (
    ResourceRow.res_type,
    ResourceRow.res_id,
    ResourceRow.version_id,
    ResourceRow.last_updated,
    ResourceRow.content,
)
# Bound parameters per IN list (SQLite allows 32,766; PostgreSQL 65,535; keep queries small).
CHUNK = 500


@dataclass(frozen=True)
class CaseRecord:
    """The resources of a case the caller may read, and the references each makes."""

    members: dict[Key, StoredResource]
    references: dict[Key, tuple[str, ...]]
    """Reference.reference values, read from the stored JSON (contained resources' too)."""


def case_record(
    fhir: FhirInteractions, referral: StoredResource, case: StoredResource | None, patient: Key
) -> CaseRecord:
    """The current resources of the case of `referral` that the caller may read."""
    record = CaseRecord({}, {})
    for stored in (referral, case):
        if stored is not None:
            key = (stored.resource_type, stored.resource_id)
            record.members[key] = stored
            record.references[key] = tuple(references_in(stored.content))
    # What refers to the patient is visible to a case worker who sees the patient's case:
    # checking each row again in SQL would cost seconds on a large record.
    whole = fhir.access is None or fhir.access.sees_record_of(patient[1])
    new = list(record.members) + _load(
        fhir, record, {patient, *_pointing_at(fhir, patient)}, checked=not whole
    )
    for _round in range(FOLLOW_ROUNDS):
        new = _load(fhir, record, _named_by(record, new))
    # A Provenance of records the caller sees tells nothing of what it does not see (its
    # targets are narrowed to the bundle's records when it is assembled).
    _load(fhir, record, _provenance_of(fhir, record.members), checked=False)
    return record


def _named_by(record: CaseRecord, keys: Iterable[Key]) -> set[Key]:
    """The record-type resources that `keys` name and `record` lacks."""
    named = set()
    for key in keys:
        for reference in record.references[key]:
            target = split_reference(reference)
            if target and target[0] in RECORD_TYPES:
                named.add(target)
    return named - record.members.keys()


def _pointing_at(fhir: FhirInteractions, target: Key) -> set[Key]:
    """Every record-type resource that references `target` (via the search index)."""
    rows = fhir.session.execute(
        select(SearchIndexRow.res_type, SearchIndexRow.res_id).where(
            SearchIndexRow.param == ANY_REFERENCE,
            SearchIndexRow.system == target[0],
            SearchIndexRow.value == target[1],
        )
    )
    # A ServiceRequest other than the referral (an order the outside EHR placed) is a
    # record; another second-opinion case's Task is not.
    return {(str(t), str(i)) for t, i in rows if t in RECORD_TYPES}


def _provenance_of(fhir: FhirInteractions, members: dict[Key, StoredResource]) -> set[Key]:
    """The Provenances that target one of `members`."""
    by_id: dict[str, set[str]] = defaultdict(set)
    for resource_type, resource_id in members:
        by_id[resource_id].add(resource_type)
    found: set[Key] = set()
    for ids in _chunks(sorted(by_id)):
        rows = fhir.session.execute(
            select(SearchIndexRow.res_id, SearchIndexRow.system, SearchIndexRow.value).where(
                SearchIndexRow.res_type == "Provenance",
                SearchIndexRow.param == ANY_REFERENCE,
                SearchIndexRow.value.in_(ids),
            )
        )
        found.update(("Provenance", str(p)) for p, t, i in rows if t in by_id[str(i)])
    return found


def _load(
    fhir: FhirInteractions, record: CaseRecord, keys: Iterable[Key], *, checked: bool = True
) -> list[Key]:
    """Add to `record` the current versions of `keys` it lacks that the caller may read
    (without `checked`: its scopes are checked, its row-level access was by the caller);
    one query per type and chunk. Returns the keys added."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for resource_type, resource_id in set(keys) - record.members.keys():
        by_type[resource_type].append(resource_id)
    added: list[Key] = []
    for resource_type, ids in sorted(by_type.items()):
        if fhir.principal is not None and not fhir.principal.allows(resource_type, "r"):
            continue
        for chunk in _chunks(sorted(ids)):
            # Columns, not ORM entities: thousands of rows load several times faster.
            statement = select(*COLUMNS).where(
                ResourceRow.res_type == resource_type,
                ResourceRow.res_id.in_(chunk),
                ResourceRow.deleted.is_(False),
            )
            if checked and fhir.access is not None:
                statement = statement.where(fhir.access.visible(resource_type))
            for row in fhir.session.execute(statement):
                key = (row.res_type, row.res_id)
                content = json.loads(row.content)
                record.members[key] = StoredResource(
                    row.res_type, row.res_id, row.version_id, row.last_updated, False, content
                )
                # A regular expression on the stored text finds them ~10x faster than a walk
                # of the parsed JSON; an attachment's `Binary/id` URL counts as a reference.
                record.references[key] = tuple(
                    _unescaped(match.group(1) or match.group(2))
                    for match in _NAMES.finditer(row.content)
                )
                added.append(key)
    return added


def _unescaped(text: str) -> str:
    return str(json.loads(f'"{text}"')) if "\\" in text else text


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
