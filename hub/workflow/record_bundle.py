"""The record bundle of a case: the referral, its case Task, the patient and all that is
stored about the patient, as one `document` Bundle (hub.workflow.record_document)."""

from __future__ import annotations

from typing import Any

from hub.errors import InvalidRequest
from hub.fhir.interactions import FhirInteractions
from hub.profiles import profiles_for
from hub.storage.indexer import split_reference
from hub.workflow.record_document import record_document
from hub.workflow.record_members import case_record


def record_bundle(fhir: FhirInteractions, referral_id: str, base: str) -> dict[str, Any]:
    """The document Bundle of the case of ServiceRequest/`referral_id`, holding what the
    caller may read of it; the hand-out is audited."""
    referral = fhir.fetch("ServiceRequest", referral_id)
    subject = split_reference((referral.content.get("subject") or {}).get("reference", ""))
    if subject is None or subject[0] != "Patient":
        raise InvalidRequest(
            "The referral's subject is not a Patient on this server.",
            expression="ServiceRequest.subject",
        )
    case = fhir.cases.case_task_for(referral_id)
    if case is not None and not fhir.may_read(case):
        case = None
    record = case_record(fhir, referral, case, subject)
    members = record.members
    fhir.audited_export(
        "operation", [members[key] for key in sorted(members)], patients=["/".join(subject)]
    )
    return record_document(
        members, referral, case, base, profiles_for=profiles_for, references=record.references
    )
