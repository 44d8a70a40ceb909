"""The case workflow: a second-opinion ServiceRequest opens a case, a Task walks its states.

Hook points (called by FhirInteractions, inside the caller's transaction):
- `check_write(resource_type, new, old)`: before a Task is stored, refuse illegal moves;
- `after_write(stored)`: note referrals and referrer Tasks written in this unit of work;
- `finish()`: open a case for each new referral, recording every move with a Provenance.

Every move of a case is also passed on to the session's listeners (`case_events`), e.g. the
return channel that tells an HL7 v2 referrer of the new state.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hub import codes
from hub.errors import IllegalTransition, NotFound
from hub.fhir.dates import instant, utc_now
from hub.security.principal import Principal
from hub.storage.indexer import split_reference
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.search import Criterion, SearchQuery, SearchRunner
from hub.workflow.case_events import case_moved
from hub.workflow.case_states import (
    BUSINESS_STATUS_DISPLAY,
    OPENING_STATUS,
    RECEIVED_BUSINESS_STATUS,
    RECEIVED_STATUS,
    transition_problem,
)
from hub.workflow.checklist import queue_records_check
from hub.workflow.consent import consent_problem
from hub.workflow.opinion_rules import (
    DRAFT,
    check_opinion_write,
    is_opinion,
    referral_reference,
)
from hub.workflow.routing import active_routing, least_loaded, route

# Writes that are about a case, not records of its patient: they do not trigger a check.
NOT_RECORDS = frozenset({"Task", "Communication", "Provenance", "AuditEvent", "ServiceRequest"})


def is_second_opinion_referral(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "ServiceRequest" and any(
        coding.get("system") == codes.CASE_CATEGORY_SYSTEM
        and coding.get("code") == codes.SECOND_OPINION
        for category in resource.get("category") or []
        for coding in category.get("coding") or []
    )


def is_case_task(resource: dict[str, Any]) -> bool:
    return resource.get("resourceType") == "Task" and any(
        (coding.get("system"), coding.get("code")) == (codes.CASE_TASK_SYSTEM, codes.CASE_TASK_CODE)
        for coding in (resource.get("code") or {}).get("coding") or []
    )


def business_status_of(task: dict[str, Any]) -> str | None:
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == codes.BUSINESS_STATUS_SYSTEM:
            return str(coding.get("code"))
    return None


def business_status(code: str | None) -> dict[str, Any] | None:
    if code is None:
        return None
    display = BUSINESS_STATUS_DISPLAY.get(code, code)
    return {
        "coding": [{"system": codes.BUSINESS_STATUS_SYSTEM, "code": code, "display": display}],
        "text": display,
    }


class CaseWorkflow:
    """Opens cases and moves them between states, in the repository's session."""

    def __init__(
        self,
        repository: ResourceRepository,
        principal: Principal | None = None,
        default_program: str = "oncology",
    ) -> None:
        self.repository = repository
        self.principal = principal
        self.default_program = default_program
        self._new_referrals: list[StoredResource] = []
        self._new_tasks: list[StoredResource] = []
        self._patients_with_news: set[str] = set()

    # -- hook points -------------------------------------------------------------------
    def check_write(
        self, resource_type: str, new: dict[str, Any], old: StoredResource | None
    ) -> None:
        """Refuse a write that would move a case Task illegally, or break the rules of
        writing an opinion (hub.workflow.opinion_rules)."""
        if resource_type == "DiagnosticReport" and (
            is_opinion(new) or (old is not None and is_opinion(old.content))
        ):
            check_opinion_write(self.opinion_case(new), self.principal, new, old)
            return
        if resource_type != "Task" or old is None or not is_case_task(old.content):
            return
        problem = transition_problem(
            str(old.content.get("status")),
            business_status_of(old.content),
            str(new.get("status")),
            business_status_of(new),
            has_reason=bool(new.get("statusReason")),
        )
        if problem:
            raise IllegalTransition(problem, expression="Task.status")

    def check_delete(self, current: StoredResource) -> None:
        """Refuse to delete a signed opinion: it changes only by an amendment."""
        if (
            current.resource_type == "DiagnosticReport"
            and is_opinion(current.content)
            and current.content.get("status") != DRAFT
        ):
            raise IllegalTransition(
                "A signed opinion is never deleted: amend it ($amend), saying why.",
                expression="DiagnosticReport.status",
            )

    def after_write(self, stored: StoredResource, old: StoredResource | None) -> None:
        if stored.deleted:
            return
        if stored.resource_type == "DiagnosticReport" and is_opinion(stored.content):
            self._opinion_drafted(stored)
        if stored.resource_type not in NOT_RECORDS:
            patient = _patient_of(stored.content)
            if patient:
                self._patients_with_news.add(patient)
        if old is None and is_second_opinion_referral(stored.content):
            self._new_referrals.append(stored)
        elif old is None and stored.resource_type == "Task":
            self._new_tasks.append(stored)
        elif (
            is_case_task(stored.content)
            and old is not None
            and (
                old.content.get("status") != stored.content.get("status")
                or business_status_of(old.content) != business_status_of(stored.content)
            )
        ):
            self._record(stored, old)

    def finish(self) -> list[StoredResource]:
        """Open a case for each referral written in this unit of work; return the case Tasks.

        A referrer's Task whose focus is a second-opinion referral becomes that case's Task,
        whether the referral came in the same unit of work or earlier without a case.
        """
        opened = [self._open_case(referral) for referral in self._new_referrals]
        for task in list(self._new_tasks):
            referral = self._referral_in_focus(task)
            if referral is not None and self.case_task_for(referral.resource_id) is None:
                opened.append(self._open_case(referral))
        self._new_referrals.clear()
        self._new_tasks.clear()
        self._check_records_of(self._patients_with_news)
        self._patients_with_news.clear()
        return opened

    # -- operations ----------------------------------------------------------------------
    def transition(
        self, task_id: str, status: str, business: str | None, reason: str | None
    ) -> StoredResource:
        """Move case `task_id` to `status`/`business` (the $transition operation)."""
        current = self.repository.read("Task", task_id)
        if not is_case_task(current.content):
            raise NotFound(f"Task/{task_id} is not a second-opinion case.")
        task = dict(current.content)
        task["status"] = status
        task.pop("businessStatus", None)
        if business_status(business):
            task["businessStatus"] = business_status(business)
        task.pop("statusReason", None)
        if reason:
            task["statusReason"] = {"text": reason}
        task["lastModified"] = instant(utc_now())
        self.check_write("Task", task, current)
        stored, _ = self.repository.update("Task", task_id, task, if_match=current.version_id)
        self._record(stored, current)
        return stored

    def referral_of(self, task: StoredResource) -> StoredResource:
        """The referral a case Task is for; NotFound if `task` is no case or it is gone."""
        referral = self._referral_in_focus(task) if is_case_task(task.content) else None
        if referral is None:
            raise NotFound(f"Task/{task.resource_id} is not a second-opinion case.")
        return referral

    def opinion_case(self, report: dict[str, Any]) -> StoredResource | None:
        """The case Task of the referral an opinion is basedOn (None if it names none)."""
        target = referral_reference(report)
        referral = self.repository.find(*target) if target else None
        if referral is None or not is_second_opinion_referral(referral.content):
            return None
        return self.case_task_for(referral.resource_id)

    def case_task_for(self, referral_id: str) -> StoredResource | None:
        """The case Task whose focus is ServiceRequest/`referral_id`."""
        query = SearchQuery(
            "Task",
            criteria=[
                Criterion("focus", None, (f"ServiceRequest/{referral_id}",)),
                Criterion("code", None, (f"{codes.CASE_TASK_SYSTEM}|{codes.CASE_TASK_CODE}",)),
            ],
            count=1,
        )
        page = SearchRunner(self.repository.session).search(query)
        return page.matches[0] if page.matches else None

    # -- internals -----------------------------------------------------------------------
    def _opinion_drafted(self, report: StoredResource) -> None:
        """A draft opinion moves its case to in-progress / opinion-drafted (once)."""
        case = self.opinion_case(report.content)
        if case is None or business_status_of(case.content) == "opinion-drafted":
            return
        self.transition(case.resource_id, "in-progress", "opinion-drafted", None)

    def _check_records_of(self, patients: set[str]) -> None:
        """Queue a records check for each case of `patients` that awaits records."""
        if not patients:
            return
        query = SearchQuery(
            "Task",
            criteria=[
                Criterion("patient", None, tuple(sorted(patients))),
                Criterion("code", None, (f"{codes.CASE_TASK_SYSTEM}|{codes.CASE_TASK_CODE}",)),
                Criterion("business-status", None, (RECEIVED_BUSINESS_STATUS,)),
            ],
            count=100,
        )
        for case in SearchRunner(self.repository.session).search(query, with_total=False).matches:
            queue_records_check(self.repository.session, case.resource_id)

    def _open_case(self, referral: StoredResource) -> StoredResource:
        task = self._referrer_task(referral) or self._new_case_task(referral)
        received = dict(task.content)
        received["status"] = RECEIVED_STATUS
        received["businessStatus"] = business_status(RECEIVED_BUSINESS_STATUS)
        received["lastModified"] = instant(utc_now())
        self._route(received, referral)
        stored, _ = self.repository.update("Task", task.resource_id, received)
        self._record(stored, task)
        queue_records_check(self.repository.session, stored.resource_id)
        if self._needs_consent():
            missing = consent_problem(self.repository, referral)
            if missing:
                return self._hold(stored, missing)
        return stored

    def _route(self, task: dict[str, Any], referral: StoredResource) -> None:
        """Program, urgency, due date and specialist of a new case (hub.workflow.routing);
        what the referrer's own Task already says (its performerType, owner) stays."""
        table = active_routing()
        decision = route(table, self._referral_codings(referral))
        program = decision.program or self.default_program
        task.setdefault("performerType", [_program_concept(program)])
        if decision.urgent:
            task["priority"] = "urgent"
        priority = "urgent" if task.get("priority") in ("urgent", "asap", "stat") else "routine"
        due = utc_now() + timedelta(days=table.due_days.get(priority, 14))
        task.setdefault("restriction", {"period": {"end": instant(due)}})
        if "owner" not in task:
            specialist = least_loaded(self.repository.session, table.pools.get(program, ()))
            if specialist:
                task["owner"] = {"reference": f"Practitioner/{specialist}"}
        urgency = ", urgent" if decision.urgent else ""
        note = f"Routed to {codes.PROGRAMS.get(program, program)}{urgency} ({decision.why})."
        task["note"] = [*(task.get("note") or []), {"text": note}]

    def _referral_codings(self, referral: StoredResource) -> list[dict[str, Any]]:
        """The codes routing reads: reasonCode, the reasonReference Conditions', category."""
        content = referral.content
        concepts = [*(content.get("reasonCode") or []), *(content.get("category") or [])]
        for reason in content.get("reasonReference") or []:
            target = str(reason.get("reference", ""))
            if target.startswith("Condition/"):
                condition = self.repository.find("Condition", target.split("/")[1])
                if condition is not None:
                    concepts.append(condition.content.get("code") or {})
        return [coding for concept in concepts for coding in concept.get("coding") or []]

    def _needs_consent(self) -> bool:
        """A referral that does not come from a clinician's system needs a guardian's consent."""
        principal = self.principal
        return (
            principal is not None
            and principal.has_role("referrer")
            and (principal.referrer_kind != "clinician")
        )

    def _hold(self, task: StoredResource, reason: str) -> StoredResource:
        held = dict(task.content)
        held["status"] = "on-hold"
        held["statusReason"] = {"text": reason}
        held["lastModified"] = instant(utc_now())
        stored, _ = self.repository.update("Task", task.resource_id, held)
        self._record(stored, task)
        return stored

    def _referrer_task(self, referral: StoredResource) -> StoredResource | None:
        """A Task the referrer sent for this referral becomes the case (no second Task)."""
        for task in self._new_tasks:
            focus = split_reference((task.content.get("focus") or {}).get("reference", ""))
            if focus == ("ServiceRequest", referral.resource_id):
                self._new_tasks.remove(task)
                adopted = dict(task.content)
                adopted["code"] = _case_task_code()
                adopted["status"] = OPENING_STATUS
                adopted.pop("businessStatus", None)
                adopted.setdefault("for", referral.content.get("subject"))
                stored, _ = self.repository.update("Task", task.resource_id, adopted)
                self._record(stored, None)
                return stored
        return None

    def _referral_in_focus(self, task: StoredResource) -> StoredResource | None:
        focus = split_reference((task.content.get("focus") or {}).get("reference", ""))
        if focus is None or focus[0] != "ServiceRequest":
            return None
        referral = self.repository.find(*focus)
        if referral is None or not is_second_opinion_referral(referral.content):
            return None
        return referral

    def _new_case_task(self, referral: StoredResource) -> StoredResource:
        task: dict[str, Any] = {
            "resourceType": "Task",
            "identifier": [{"system": codes.HUB_CASE_ID_SYSTEM, "value": referral.resource_id}],
            "status": OPENING_STATUS,
            "intent": "order",
            "priority": referral.content.get("priority", "routine"),
            "code": _case_task_code(),
            "focus": {"reference": referral.reference},
            "for": referral.content.get("subject"),
            "authoredOn": instant(utc_now()),
            "lastModified": instant(utc_now()),
        }
        if referral.content.get("requester"):
            task["requester"] = referral.content["requester"]
        stored = self.repository.create("Task", task)
        self._record(stored, None)
        return stored

    def _record(self, task: StoredResource, old: StoredResource | None) -> None:
        """A Provenance for one version of a case Task: who moved it, when, from what to what.

        A move (`old` given) is then passed on to the session's case listeners.
        """
        before = "(new)" if old is None else _state_text(old.content)
        provenance: dict[str, Any] = {
            "resourceType": "Provenance",
            "target": [{"reference": f"{task.reference}/_history/{task.version_id}"}],
            "recorded": instant(task.last_updated),
            "activity": {
                "coding": [
                    {
                        "system": codes.DATA_OPERATION_SYSTEM,
                        "code": "CREATE" if old is None else "UPDATE",
                    }
                ],
                "text": f"{before} -> {_state_text(task.content)}",
            },
            "agent": [{"who": _agent(self.principal)}],
        }
        if task.content.get("for"):
            provenance["target"].append(task.content["for"])
        reason = (task.content.get("statusReason") or {}).get("text")
        if reason:
            provenance["reason"] = [{"text": reason}]
        self.repository.create("Provenance", provenance)
        if old is not None:
            case_moved(self.repository.session, task, old)


def _patient_of(resource: dict[str, Any]) -> str | None:
    """The Patient reference a record is about (subject, patient or beneficiary)."""
    for element in ("subject", "patient", "beneficiary"):
        value = resource.get(element)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str) and reference.startswith("Patient/"):
            return reference
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource.get('id')}"
    return None


def _agent(principal: Principal | None) -> dict[str, Any]:
    """Provenance.agent.who: the caller (client id, and fhirUser for a person), or the hub."""
    if principal is None:
        return {"display": "Second-opinion hub"}
    who: dict[str, Any] = {
        "identifier": {"system": f"{codes.CANONICAL_BASE}/sid/client", "value": principal.subject},
        "display": principal.subject,
    }
    if principal.fhir_user:
        who["reference"] = principal.fhir_user
    return who


def _program_concept(program: str) -> dict[str, Any]:
    display = codes.PROGRAMS.get(program, program)
    return {
        "coding": [{"system": codes.PROGRAM_SYSTEM, "code": program, "display": display}],
        "text": display,
    }


def _case_task_code() -> dict[str, Any]:
    return {
        "coding": [
            {
                "system": codes.CASE_TASK_SYSTEM,
                "code": codes.CASE_TASK_CODE,
                "display": "Second-opinion case",
            }
        ],
    }


def _state_text(task: dict[str, Any]) -> str:
    business = business_status_of(task)
    return f"{task.get('status')}/{business}" if business else str(task.get("status"))
