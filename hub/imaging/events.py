"""Events on a case from its imaging: what a case manager must know, as a Communication about
the case Task (files refused from a transfer, a study held), found with the case's records
and protected like them (a hold reason may quote the patient's name)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from hub.fhir.dates import instant, utc_now
from hub.storage.repository import ResourceRepository

CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/communication-category"


def record_case_event(session: Session, case_task_id: str, text: str) -> None:
    """A Communication about the case, in the caller's transaction (nothing if it is gone)."""
    repository = ResourceRepository(session)
    task = repository.find("Task", case_task_id)
    if task is None:
        return
    communication: dict[str, object] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "notification"}]}],
        "about": [{"reference": task.reference}],
        "sent": instant(utc_now()),
        "payload": [{"contentString": text[:4000]}],
    }
    subject = task.content.get("for")
    if subject:
        communication["subject"] = subject
    focus = task.content.get("focus")
    if focus:
        communication["basedOn"] = [focus]
    repository.create("Communication", communication)
