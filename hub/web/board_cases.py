"""What the case managers' board shows: the cases of their programs by state, each with its
clock (hub.workflow.turnaround), its missing records (hub.workflow.checklist) and who was
asked for them.

Everything is read through FhirInteractions, as the FHIR API reads it: the same access
rules decide what is on the board (a case of another program is not), and each search is
audited as the API audits it (the board shows patients' names).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from hub import codes
from hub.fhir.dates import date_range
from hub.fhir.interactions import FhirInteractions
from hub.settings import Settings
from hub.storage.repository import StoredResource
from hub.storage.tables import DicomTransferRow, RecordPullRow
from hub.workflow.case_states import BUSINESS_STATUS_DISPLAY
from hub.workflow.cases import business_status_of
from hub.workflow.checklist import case_program, evaluate, load_checklist
from hub.workflow.completeness import REQUEST_ID_SYSTEM
from hub.workflow.routing import active_routing
from hub.workflow.turnaround import CaseTurnaround, case_turnarounds

# The board's groups, in the order a case walks through them.
GROUPS: tuple[tuple[str, str], ...] = (
    ("requested", "Requested, not yet received"),
    *(
        (code, label)
        for code, label in BUSINESS_STATUS_DISPLAY.items()
        if code != "opinion-delivered"
    ),
    ("on-hold", "On hold"),
    ("opinion-delivered", BUSINESS_STATUS_DISPLAY["opinion-delivered"]),
    ("closed", "Closed without an opinion"),
)
GROUP_LABELS = dict(GROUPS)
OPEN_STATUSES = ("requested", "received", "accepted", "in-progress", "on-hold")
# Task.status values each group's cases can have: what the board asks the store for.
GROUP_STATUSES: dict[str, tuple[str, ...]] = {
    "requested": ("requested",),
    "awaiting-records": ("received", "accepted"),
    "records-complete": ("received", "accepted"),
    "assigned": ("accepted", "in-progress"),
    "opinion-drafted": ("in-progress",),
    "on-hold": ("on-hold",),
    "opinion-delivered": ("in-progress", "completed"),
    "closed": ("cancelled", "rejected"),
}
ALL, OPEN = "all", "open"
STATE_CHOICES = ((OPEN, "All open cases"), *GROUPS, (ALL, "All cases"))
ATTENTION = frozenset({"overdue", "at-risk"})
# Cases still gathering records: their checklist is worth evaluating on the board.
GATHERING = frozenset({"requested", "awaiting-records", "on-hold"})
CLOCK_LABELS = {
    "on-time": "On time",
    "at-risk": "At risk",
    "overdue": "Overdue",
    "awaiting-records": "Clock not started",
    "delivered": "Delivered",
    "closed": "Closed",
}


@dataclass(frozen=True)
class Contact:
    """One request for records or message about a case: to whom, when, what."""

    kind: str
    to: str
    when: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class BoardCase:
    task_id: str
    version: int
    status: str
    """Task.status: a `received` case waits to be accepted for review."""
    group: str
    patient: str
    program: str
    program_label: str
    specialist: str
    owner_id: str | None
    urgent: bool
    clock: str
    """The turnaround state (on-time, at-risk, overdue, awaiting-records, delivered, closed)."""
    due: str | None
    due_is_target: bool
    """True when `due` is routing's target date (the clock has not started)."""
    days_left: float | None
    missing: tuple[tuple[str, bool], ...] | None
    """(title, required) of each checklist item not on file; None when not evaluated."""
    contacts: tuple[Contact, ...]
    pool: tuple[tuple[str, str], ...]
    """(Practitioner id, name) of the program's specialists (routing.yaml pools)."""
    referrer: str | None

    @property
    def clock_label(self) -> str:
        return CLOCK_LABELS.get(self.clock, self.clock)


@dataclass(frozen=True)
class Board:
    groups: list[tuple[str, str, list[BoardCase]]]
    total: int
    truncated: bool
    notes: list[str]


def case_board(
    fhir: FhirInteractions,
    settings: Settings,
    now: datetime,
    *,
    state: str = OPEN,
    attention: bool = False,
    task_id: str | None = None,
) -> Board:
    """The board of the signed-in case manager as of `now` (naive UTC): the case Tasks of
    their programs in `state` (a group, OPEN or ALL), only those overdue or at risk with
    `attention`; only `task_id` when given."""
    principal = fhir.principal
    programs = principal.programs if principal else frozenset()
    params = [
        ("code", f"{codes.CASE_TASK_SYSTEM}|{codes.CASE_TASK_CODE}"),
        ("_count", str(fhir.max_count)),
        ("_sort", "_id"),
    ]
    if task_id is not None:
        params.append(("_id", task_id))
    elif state != ALL:
        params.append(("status", ",".join(GROUP_STATUSES.get(state, OPEN_STATUSES))))
    page = fhir.search(fhir.parse_search("Task", params))
    default = settings.default_program
    tasks = [task for task in page.matches if case_program(task, default) in programs]
    closed_too = task_id is not None or state in (ALL, "opinion-delivered", "closed")
    clocks = {
        clock.task_id: clock
        for clock in case_turnarounds(
            fhir.session,
            settings.turnaround,
            programs=programs,
            default_program=default,
            now=now,
            closed_before=None if closed_too else now,
        )
    }
    shown = None if task_id is not None or state == ALL else _shown(state)
    chosen = [
        task
        for task in tasks
        if (shown is None or _group(task.content) in shown)
        and (not attention or _clock_of(clocks, task) in ATTENTION)
    ]
    related = _Related(fhir, chosen)
    cases = [_board_case(task, clocks, related, settings, now) for task in chosen]
    groups = [
        (key, label, [case for case in cases if case.group == key])
        for key, label in GROUPS
        if any(case.group == key for case in cases)
    ]
    return Board(groups, len(cases), page.total > len(page.matches), related.notes)


def _shown(state: str) -> frozenset[str]:
    if state == OPEN:
        return frozenset(key for key, _ in GROUPS) - {"opinion-delivered", "closed"}
    return frozenset({state})


def _group(task: dict[str, Any]) -> str:
    status = task.get("status")
    business = business_status_of(task)
    if status in ("cancelled", "rejected"):
        return "closed"
    if status == "on-hold":
        return "on-hold"
    if status == "completed" or business == "opinion-delivered":
        return "opinion-delivered"
    if status == "requested" or business not in GROUP_LABELS:
        return "requested"
    return str(business)


def _clock_of(clocks: dict[str, CaseTurnaround], task: StoredResource) -> str:
    clock = clocks.get(task.resource_id)
    return clock.state if clock else "awaiting-records"


class _Related:
    """What the board shows beside each Task, read in one audited search per type: the
    patients, the specialists, the referrals, the messages; a type the access token may
    not search is left out, with a note saying so."""

    def __init__(self, fhir: FhirInteractions, tasks: list[StoredResource]) -> None:
        self.fhir = fhir
        self.notes: list[str] = []
        self.tasks = {task.resource_id: task for task in tasks}
        self.pools = active_routing().pools
        self.patients = self._read(
            "Patient", {_ref_id(t.content.get("for"), "Patient") for t in tasks}
        )
        self.referrals = self._read(
            "ServiceRequest", {_ref_id(t.content.get("focus"), "ServiceRequest") for t in tasks}
        )
        self.contacts = self._communications(list(self.tasks))
        self.pulls = self._pulls(list(self.tasks))
        # The people named: owners, the pools to reassign to, referrers, those written to.
        people = [
            *(t.content.get("owner") for t in tasks),
            *({"reference": f"Practitioner/{p}"} for pool in self.pools.values() for p in pool),
            *(r.content.get("requester") for r in self.referrals.values()),
            *(
                recipient
                for sent in self.contacts.values()
                for c in sent
                for recipient in c.content.get("recipient") or []
            ),
        ]
        self.practitioners = self._read(
            "Practitioner", {_ref_id(person, "Practitioner") for person in people}
        )

    def _read(self, resource_type: str, ids: Iterable[str | None]) -> dict[str, StoredResource]:
        wanted = sorted(i for i in ids if i)
        if not wanted:
            return {}
        principal = self.fhir.principal
        if principal is None or not principal.allows(resource_type, "s"):
            self.notes.append(
                f"Your access token does not allow reading {resource_type}: not shown."
            )
            return {}
        found: dict[str, StoredResource] = {}
        size = self.fhir.max_count
        for start in range(0, len(wanted), size):
            chunk = wanted[start : start + size]
            params = [("_id", ",".join(chunk)), ("_count", str(len(chunk)))]
            page = self.fhir.search(self.fhir.parse_search(resource_type, params))
            found.update((stored.resource_id, stored) for stored in page.matches)
        return found

    def _communications(self, task_ids: list[str]) -> dict[str, list[StoredResource]]:
        by_task: dict[str, list[StoredResource]] = {}
        principal = self.fhir.principal
        if not task_ids or principal is None or not principal.allows("Communication", "s"):
            return by_task
        size = self.fhir.max_count
        for start in range(0, len(task_ids), size):
            chunk = task_ids[start : start + size]
            params = [
                ("based-on", ",".join(f"Task/{t}" for t in chunk)),
                ("_count", str(size)),
                ("_sort", "-_lastUpdated"),
            ]
            page = self.fhir.search(self.fhir.parse_search("Communication", params))
            for stored in page.matches:
                for based_on in stored.content.get("basedOn") or []:
                    task = _ref_id(based_on, "Task")
                    if task in self.tasks:
                        by_task.setdefault(task, []).append(stored)
        return by_task

    def _pulls(self, task_ids: list[str]) -> dict[str, list[tuple[str, str, datetime]]]:
        """Case → (source, status, when) of each pull of its records from a connector."""
        found: dict[str, list[tuple[str, str, datetime]]] = {}
        if not task_ids:
            return found
        session = self.fhir.session
        for case, source, status, when in session.execute(
            select(
                RecordPullRow.case_task_id,
                RecordPullRow.source,
                RecordPullRow.status,
                RecordPullRow.updated_at,
            ).where(RecordPullRow.case_task_id.in_(task_ids))
        ):
            found.setdefault(case, []).append((source, status, when))
        for transfer_case, source, status, when in session.execute(
            select(
                DicomTransferRow.case_task_id,
                DicomTransferRow.source,
                DicomTransferRow.status,
                DicomTransferRow.opened_at,
            ).where(DicomTransferRow.case_task_id.in_(task_ids), DicomTransferRow.kind == "pull")
        ):
            found.setdefault(str(transfer_case), []).append((source, status, when))
        return found

    def name_of(self, reference: Any) -> str | None:
        """A readable name for a Practitioner (or Patient) reference, else its text."""
        if not isinstance(reference, dict):
            return None
        target = str(reference.get("reference") or "")
        kind, _, ident = target.partition("/")
        stored = {"Practitioner": self.practitioners, "Patient": self.patients}.get(kind, {})
        if ident in stored:
            return person_name(stored[ident].content) or target
        return str(reference.get("display") or target) or None


def _board_case(
    task: StoredResource,
    clocks: dict[str, CaseTurnaround],
    related: _Related,
    settings: Settings,
    now: datetime,
) -> BoardCase:
    content = task.content
    program = case_program(task, settings.default_program)
    clock = clocks.get(task.resource_id)
    config = settings.turnaround
    due: datetime | None = clock.due if clock else None
    target = (content.get("restriction") or {}).get("period", {}).get("end")
    is_target = due is None and isinstance(target, str)
    if is_target:
        due = date_range(str(target))[0]
    days_left = None
    if due is not None:
        calendar = config.calendar
        days_left = (
            calendar.business_days_between(now, due)
            if due >= now
            else -calendar.business_days_between(due, now)
        )
    group = _group(content)
    patient_id = _ref_id(content.get("for"), "Patient")
    patient = related.patients.get(patient_id or "")
    referral = related.referrals.get(_ref_id(content.get("focus"), "ServiceRequest") or "")
    owner = content.get("owner")
    pool = related.pools.get(program, ())
    return BoardCase(
        task_id=task.resource_id,
        version=task.version_id,
        status=str(content.get("status") or ""),
        group=group,
        patient=(person_name(patient.content) if patient else None) or "Not available to you",
        program=program,
        program_label=codes.PROGRAMS.get(program, program),
        specialist=related.name_of(owner) or "Not assigned",
        owner_id=_ref_id(owner, "Practitioner"),
        urgent=content.get("priority") in ("urgent", "asap", "stat"),
        clock=clock.state if clock else ("closed" if group == "closed" else "awaiting-records"),
        due=local_time(due, config.time_zone) if due else None,
        due_is_target=is_target,
        days_left=days_left,
        missing=_missing(related, task, referral, program, settings)
        if group in GATHERING
        else None,
        contacts=_contacts(related, task.resource_id, config.time_zone),
        pool=tuple((p, related.name_of({"reference": f"Practitioner/{p}"}) or p) for p in pool),
        referrer=related.name_of((referral.content if referral else {}).get("requester")),
    )


def _missing(
    related: _Related,
    task: StoredResource,
    referral: StoredResource | None,
    program: str,
    settings: Settings,
) -> tuple[tuple[str, bool], ...] | None:
    fhir = related.fhir
    if referral is None:
        return None
    status = evaluate(
        fhir.searcher,
        load_checklist(settings.checklist_file),
        task,
        referral,
        program,
        fhir.access.visible if fhir.access else None,
    )
    return tuple(
        (item.item.title, item.required)
        for item in sorted(status.items, key=lambda item: not item.required)
        if not item.present
    )


def _contacts(related: _Related, task_id: str, time_zone: str) -> tuple[Contact, ...]:
    contacts = []
    for stored in related.contacts.get(task_id, []):
        content = stored.content
        lines = tuple(
            str(p.get("contentString"))
            for p in content.get("payload") or []
            if p.get("contentString")
        )
        hub_request = any(
            i.get("system") == REQUEST_ID_SYSTEM for i in content.get("identifier") or []
        )
        recipients = [related.name_of(r) or "?" for r in content.get("recipient") or []]
        sent = content.get("sent")
        contacts.append(
            Contact(
                kind="Records request from the hub" if hub_request else "Message",
                to=", ".join(recipients) or "No recipient",
                when=local_time(date_range(sent)[0], time_zone) if isinstance(sent, str) else "",
                lines=lines[1:] if hub_request else lines,
            )
        )
    for source, status, when in related.pulls.get(task_id, []):
        contacts.append(
            Contact(
                kind="Pull from a connector",
                to=source,
                when=local_time(when, time_zone),
                lines=(f"Status: {status}",),
            )
        )
    return tuple(contacts)


def person_name(resource: dict[str, Any]) -> str | None:
    """`given family` of the first name (or its text)."""
    for name in resource.get("name") or []:
        if name.get("text"):
            return str(name["text"])
        parts = [*(name.get("given") or []), name.get("family") or ""]
        text = " ".join(str(p) for p in parts if p)
        if text:
            return text
    return None


def local_time(moment: datetime, time_zone: str) -> str:
    """A naive UTC moment as local wall-clock time of the turnaround calendar."""
    local = moment.replace(tzinfo=UTC).astimezone(ZoneInfo(time_zone))
    return local.strftime("%Y-%m-%d %H:%M %Z")


def _ref_id(reference: Any, resource_type: str) -> str | None:
    if not isinstance(reference, dict):
        return None
    target = str(reference.get("reference") or "")
    kind, _, ident = target.partition("/")
    return ident if kind == resource_type and ident and "/" not in ident else None
