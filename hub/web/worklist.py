"""The specialist's worklist: the cases assigned to them, most pressing first, with the
clock of each (due date and business days left) and how complete its records are."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from hub import codes
from hub.fhir.dates import utc_now
from hub.fhir.interactions import FhirInteractions
from hub.opinions import person_name
from hub.security.principal import Principal
from hub.settings import Settings
from hub.storage.indexer import split_reference
from hub.workflow.checklist import case_program, evaluate, load_checklist
from hub.workflow.turnaround import CaseTurnaround, case_turnarounds

RECENTLY_CLOSED = timedelta(days=14)
"""Delivered cases stay on the worklist this long, below the open ones."""
STATE_ORDER = {"overdue": 0, "at-risk": 1, "on-time": 2, "awaiting-records": 3}
STATE_WORDS = {
    "overdue": "Overdue",
    "at-risk": "At risk",
    "on-time": "On time",
    "awaiting-records": "Awaiting records",
    "delivered": "Opinion delivered",
    "closed": "Closed",
}


@dataclass(frozen=True)
class Clock:
    state: str
    state_text: str
    urgent: bool
    due: datetime | None
    days_left: float | None
    """Business days until due (negative: overdue); None while records are awaited."""


@dataclass(frozen=True)
class WorklistEntry:
    task_id: str
    patient: str
    birth_date: str
    program: str
    clock: Clock
    present: int
    required: int


def clock_of(case: CaseTurnaround) -> Clock:
    days_left = (
        None if case.business_days is None else round(case.promise_days - case.business_days, 1)
    )
    return Clock(
        state=case.state,
        state_text=STATE_WORDS.get(case.state, case.state),
        urgent=case.priority == "urgent",
        due=case.due,
        days_left=days_left if case.state not in ("delivered", "closed") else None,
    )


def _turnarounds(fhir: FhirInteractions, settings: Settings) -> list[CaseTurnaround]:
    now = utc_now()
    return case_turnarounds(
        fhir.session,
        settings.turnaround,
        default_program=settings.default_program,
        now=now,
        closed_before=now - RECENTLY_CLOSED,
    )


def case_clock(fhir: FhirInteractions, settings: Settings, task_id: str) -> Clock | None:
    for case in _turnarounds(fhir, settings):
        if case.task_id == task_id:
            return clock_of(case)
    return None


def assigned_cases(
    fhir: FhirInteractions, settings: Settings, person: Principal
) -> list[WorklistEntry]:
    """The cases whose owner is `person` (their Practitioner), readable by them."""
    mine = [
        c for c in _turnarounds(fhir, settings) if person.fhir_user and c.owner == person.fhir_user
    ]
    checklist = load_checklist(settings.checklist_file)
    visible = fhir.access.visible if fhir.access else None
    entries = []
    for case in mine:
        task = fhir.fetch("Task", case.task_id)
        referral = fhir.cases.referral_of(task)
        program = case_program(task, settings.default_program)
        status = evaluate(fhir.searcher, checklist, task, referral, program, visible)
        subject = split_reference(str((task.content.get("for") or {}).get("reference", "")))
        patient = fhir.read(*subject) if subject else None
        content = patient.content if patient else {}
        required = [item for item in status.items if item.required]
        entries.append(
            WorklistEntry(
                task_id=case.task_id,
                patient=person_name(content) or "(no name on file)",
                birth_date=str(content.get("birthDate") or ""),
                program=codes.PROGRAMS.get(program, program),
                clock=clock_of(case),
                present=sum(1 for item in required if item.present),
                required=len(required),
            )
        )
    return sorted(
        entries,
        key=lambda e: (
            STATE_ORDER.get(e.clock.state, 9),
            not e.clock.urgent,
            e.clock.due or datetime.max,
            e.task_id,
        ),
    )
