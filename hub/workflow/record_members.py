"""Which stored resources make up the record of a case: what points at the patient, what
those records point at, and the Provenance of each — loaded in bulk, filtered by what the
caller may read."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from sqlalchemy import select

from hub.fhir.interactions import FhirInteractions
from hub.fhir.references import references_in
from hub.storage.indexer import ANY_REFERENCE, split_reference
from hub.storage.repository import StoredResource, stored_from_row
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
# Bound parameters per IN list (SQLite allows 32,766; PostgreSQL 65,535; keep queries small).
CHUNK = 500


def case_record(
    fhir: FhirInteractions, referral: StoredResource, case: StoredResource | None, patient: Key
) -> dict[Key, StoredResource]:
    """The current resources of the case of `referral` that the caller may read, by key."""
    members: dict[Key, StoredResource] = {(referral.resource_type, referral.resource_id): referral}
    if case is not None:
        members[(case.resource_type, case.resource_id)] = case
    new = dict(members)
    new.update(_load(fhir, {patient, *_pointing_at(fhir, patient)} - members.keys()))
    for _round in range(FOLLOW_ROUNDS):
        members.update(new)
        wanted = {
            target
            for stored in new.values()
            for reference in references_in(stored.content)
            if (target := split_reference(reference)) and target[0] in RECORD_TYPES
        } - members.keys()
        new = _load(fhir, wanted)
    members.update(new)
    members.update(_load(fhir, _provenance_of(fhir, members) - members.keys()))
    return members


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


def _load(fhir: FhirInteractions, keys: Iterable[Key]) -> dict[Key, StoredResource]:
    """The current, readable versions of `keys`, one query per type and chunk."""
    by_type: dict[str, list[str]] = defaultdict(list)
    for resource_type, resource_id in keys:
        by_type[resource_type].append(resource_id)
    loaded: dict[Key, StoredResource] = {}
    for resource_type, ids in sorted(by_type.items()):
        if fhir.principal is not None and not fhir.principal.allows(resource_type, "r"):
            continue
        for chunk in _chunks(sorted(ids)):
            statement = select(ResourceRow).where(
                ResourceRow.res_type == resource_type,
                ResourceRow.res_id.in_(chunk),
                ResourceRow.deleted.is_(False),
            )
            if fhir.access is not None:
                statement = statement.where(fhir.access.visible(resource_type))
            for row in fhir.session.scalars(statement):
                loaded[(row.res_type, row.res_id)] = stored_from_row(row)
    return loaded


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]
