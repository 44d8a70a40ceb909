"""A transfer-of-care request: after the opinion, the family chooses to move the child's
care, and the hub asks the referring organization to hand it over — a new ServiceRequest
based on the referral, its performer the referrer (their organization where known),
carrying the opinion as supporting information and the family's reason."""

from __future__ import annotations

from typing import Any

from hub import codes
from hub.errors import IllegalTransition, InvalidRequest
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.imaging.events import record_case_event
from hub.storage.repository import StoredResource
from hub.storage.search import Criterion, SearchQuery, SearchRunner
from hub.workflow.cases import business_status_of, is_case_task

# Care moves once the opinion reached the referrer.
AFTER_OPINION = ("opinion-delivered",)


def request_transfer(fhir: FhirInteractions, task_id: str, reason: str) -> StoredResource:
    """The transfer-of-care ServiceRequest for case Task/`task_id` (its opinion delivered)."""
    if not reason.strip():
        raise InvalidRequest("A transfer of care needs the family's reason.", expression="reason")
    task = fhir.fetch("Task", task_id)
    if not is_case_task(task.content):
        raise InvalidRequest(f"Task/{task_id} is not a second-opinion case.")
    if business_status_of(task.content) not in AFTER_OPINION:
        raise IllegalTransition(
            "Care is transferred after the opinion was delivered to the referrer.",
            expression="Task.businessStatus",
        )
    referral = fhir.cases.referral_of(task)
    performer = _referrer_organization(fhir, referral.content.get("requester") or {})
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "proposal",
        "category": [
            {"coding": [{"system": codes.CASE_CATEGORY_SYSTEM, "code": codes.TRANSFER_OF_CARE}]}
        ],
        "code": {"text": "Transfer of care"},
        "subject": referral.content["subject"],
        "basedOn": [{"reference": referral.reference}],
        "authoredOn": instant(utc_now()),
        "reasonCode": [{"text": reason}],
        "supportingInfo": _opinions(fhir, referral),
    }
    if performer:
        request["performer"] = [performer]
    if fhir.principal is not None and fhir.principal.fhir_user:
        request["requester"] = {"reference": fhir.principal.fhir_user}
    stored, _ = fhir.create("ServiceRequest", request)
    fhir.finish()
    record_case_event(
        fhir.session, task_id, f"Transfer of care requested ({stored.reference}): {reason}"
    )
    return stored


def _referrer_organization(fhir: FhirInteractions, requester: dict[str, Any]) -> dict[str, Any]:
    """The referrer's organization (a PractitionerRole's), else the referrer itself."""
    reference = str(requester.get("reference", ""))
    if reference.startswith("PractitionerRole/"):
        role = fhir.repository.find("PractitionerRole", reference.split("/", 1)[1])
        if role is not None and role.content.get("organization"):
            return dict(role.content["organization"])
    return {k: v for k, v in requester.items() if k in ("reference", "display", "identifier")}


def _opinions(fhir: FhirInteractions, referral: StoredResource) -> list[dict[str, str]]:
    query = SearchQuery(
        "DiagnosticReport",
        criteria=[Criterion("based-on", None, (referral.reference,))],
        count=20,
    )
    found = SearchRunner(fhir.session).search(query, with_total=False).matches
    return [
        {"reference": report.reference}
        for report in found
        if report.content.get("status") in ("final", "amended")
    ]
