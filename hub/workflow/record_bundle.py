"""The record bundle of a case: the referral, its case Task, the patient and all that is
stored about the patient, with the practitioners and organizations they name."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import and_, or_, select

from hub.errors import InvalidRequest
from hub.fhir.bundles import full_url
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.fhir.references import references_in
from hub.storage.indexer import ANY_REFERENCE, split_reference
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.tables import SearchIndexRow
from hub.workflow.cases import CaseWorkflow

# Resources the case's records point at that belong in the bundle although they do not
# point at the patient themselves.
FOLLOWED_TYPES = {
    "Practitioner",
    "Organization",
    "RelatedPerson",
    "Binary",
    "Medication",
    "Location",
}


def record_bundle(fhir: FhirInteractions, referral_id: str, base: str) -> dict[str, Any]:
    """A `collection` Bundle of the case of ServiceRequest/`referral_id`, in a stable order,
    holding what the caller may read of it; the hand-out is audited."""
    repository = fhir.repository
    referral = fhir.fetch("ServiceRequest", referral_id)
    subject = split_reference((referral.content.get("subject") or {}).get("reference", ""))
    if subject is None or subject[0] != "Patient":
        raise InvalidRequest(
            "The referral's subject is not a Patient on this server.",
            expression="ServiceRequest.subject",
        )
    members: dict[tuple[str, str], StoredResource] = {
        ("ServiceRequest", referral_id): referral,
    }
    case = CaseWorkflow(repository).case_task_for(referral_id)
    if case is not None:
        members[("Task", case.resource_id)] = case
    _add(repository, members, subject)
    for key in _pointing_at(repository, [subject, *members]):
        _add(repository, members, key)
    for stored in list(members.values()):
        for reference in references_in(stored.content):
            target = split_reference(reference)
            if target and target[0] in FOLLOWED_TYPES:
                _add(repository, members, target)
    readable = [stored for _key, stored in sorted(members.items()) if fhir.may_read(stored)]
    fhir.audited_export("operation", readable)
    entries = [
        {"fullUrl": full_url(base, stored), "resource": stored.content} for stored in readable
    ]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{base}/ServiceRequest/{referral_id}")),
        "meta": {"lastUpdated": instant(utc_now())},
        "identifier": {"system": f"{base}/record-bundle", "value": referral_id},
        "type": "collection",
        "timestamp": instant(utc_now()),
        "total": len(entries),
        "entry": entries,
    }


def _pointing_at(
    repository: ResourceRepository, targets: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Every current resource with a reference to one of `targets` (via the index)."""
    rows = repository.session.execute(
        select(SearchIndexRow.res_type, SearchIndexRow.res_id).where(
            SearchIndexRow.param == ANY_REFERENCE,
            or_(*(and_(SearchIndexRow.system == t, SearchIndexRow.value == i) for t, i in targets)),
        )
    )
    return sorted({(str(res_type), str(res_id)) for res_type, res_id in rows})


def _add(
    repository: ResourceRepository,
    members: dict[tuple[str, str], StoredResource],
    key: tuple[str, str],
) -> None:
    if key not in members:
        stored = repository.find(*key)
        if stored is not None:
            members[key] = stored
