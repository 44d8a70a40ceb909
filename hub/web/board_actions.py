"""What a case manager does from the board: reassign a case to another specialist of its
program's pool, and write to the referrer about a case. Both go through FhirInteractions,
so the same access rules apply as on the FHIR API and each write is audited."""

from __future__ import annotations

from hub.api.desk import case_task
from hub.errors import InvalidRequest, PreconditionFailed
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.storage.repository import StoredResource
from hub.workflow.checklist import case_program
from hub.workflow.completeness import referrer_communication
from hub.workflow.routing import active_routing

MAX_REASON = 500
MAX_MESSAGE = 4000


def reassign_case(
    fhir: FhirInteractions,
    task_id: str,
    practitioner_id: str,
    reason: str,
    *,
    version: int | None,
    default_program: str,
) -> StoredResource:
    """Make Practitioner/`practitioner_id` (of the case's program pool in routing.yaml) the
    owner of case `task_id`, noting who did it and why in the Task; `version`: the version
    the case manager saw (a case changed since is refused, not overwritten)."""
    task = case_task(fhir, task_id)
    if version is not None and version != task.version_id:
        raise PreconditionFailed(
            "The case changed since the page was loaded (someone else may have reassigned "
            "it): reload the page and choose again."
        )
    program = case_program(task, default_program)
    pool = active_routing().pools.get(program, ())
    if practitioner_id not in pool:
        raise InvalidRequest(
            f"Practitioner/{practitioner_id} is not a specialist of the {program} program "
            "(the pools of the routing table).",
            expression="specialist",
        )
    why = _text(reason, "reason", MAX_REASON, "Say why the case is reassigned.")
    content = dict(task.content)
    before = (content.get("owner") or {}).get("reference")
    after = f"Practitioner/{practitioner_id}"
    if before == after:
        raise InvalidRequest(f"The case is already assigned to {after}.", expression="specialist")
    content["owner"] = {"reference": after}
    author = fhir.principal.subject if fhir.principal else "hub"
    note = {
        "authorString": author,
        "time": instant(utc_now()),
        "text": f"Reassigned from {before or 'nobody'} to {after}: {why}",
    }
    content["note"] = [*(content.get("note") or []), note]
    stored, _ = fhir.update("Task", task.resource_id, content, if_match=version)
    fhir.finish()
    return stored


def accept_case(fhir: FhirInteractions, task_id: str, *, version: int | None) -> StoredResource:
    """Accept case `task_id` for review by its assigned specialist (received → accepted,
    assigned): from then on the specialist may write the opinion."""
    task = case_task(fhir, task_id)
    if version is not None and version != task.version_id:
        raise PreconditionFailed(
            "The case changed since the page was loaded: reload the page and look again."
        )
    if not (task.content.get("owner") or {}).get("reference"):
        raise InvalidRequest(
            "The case has no specialist yet: assign one before accepting it.",
            expression="specialist",
        )
    stored = fhir.transition(task.resource_id, "accepted", "assigned", None)
    fhir.finish()
    return stored


def message_referrer(fhir: FhirInteractions, task_id: str, message: str) -> StoredResource:
    """A Communication about case `task_id` to the practitioner who referred it, as the
    completeness job writes its requests for records."""
    task = case_task(fhir, task_id)
    referral = fhir.cases.referral_of(task)
    if not referral.content.get("requester"):
        raise InvalidRequest(
            "The referral names no referring practitioner (ServiceRequest.requester) to write to.",
            expression="message",
        )
    text = _text(message, "message", MAX_MESSAGE, "Write the message to the referrer.")
    communication = referrer_communication(task.resource_id, referral.content, [text])
    stored, _ = fhir.create("Communication", communication)
    fhir.finish()
    return stored


def _text(value: str, name: str, limit: int, empty: str) -> str:
    text = value.strip()
    if not text:
        raise InvalidRequest(empty, expression=name)
    if len(text) > limit:
        raise InvalidRequest(f"The {name} is longer than {limit} characters.", expression=name)
    return text
