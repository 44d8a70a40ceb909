"""Turnaround of second-opinion cases: the business-day clock from records-complete to the
opinion delivered, against the program's promise (the `turnaround` settings).

When a case reached a sub-state is read from its Task's version history: the clock starts
at the first version at or past `records-complete` (records-complete, assigned,
opinion-drafted, opinion-delivered) and stops at the first `opinion-delivered`. A case sent
back to `awaiting-records` starts again when its records are complete again: the promise
is counted from complete records. The clock does not pause while a case is on hold.

An open case on the clock is `on-time`, `at-risk` (the configured share of its promise has
elapsed) or `overdue` (past its due moment); before records are complete it is
`awaiting-records`; once its opinion is out it is `delivered`; cancelled or rejected
without an opinion, `closed`.

Only a few small JSON members are read, in SQL (the status, priority, program and owner of
the current version; the businessStatus of each version), so a few thousand cases answer
without loading any version's whole JSON.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, cast, false, func, or_, select, type_coerce
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from hub import codes
from hub.fhir.dates import instant, utc_now
from hub.storage.tables import ResourceRow, ResourceVersionRow, SearchIndexRow
from hub.workflow.turnaround_config import URGENT_PRIORITIES, Promise, TurnaroundSettings

ON_THE_CLOCK = frozenset({"records-complete", "assigned", "opinion-drafted", "opinion-delivered"})
"""Sub-states at or past records-complete: the clock runs from the first of them."""
DELIVERED = "opinion-delivered"
AWAITING_RECORDS = "awaiting-records"
CLOSED_STATUSES = frozenset({"completed", "cancelled", "rejected"})

STATES = ("awaiting-records", "on-time", "at-risk", "overdue", "delivered", "closed")
OPEN_STATES = frozenset({"awaiting-records", "on-time", "at-risk", "overdue"})


@dataclass(frozen=True)
class CaseTurnaround:
    """One case's clock. Moments are naive UTC, as the database holds them."""

    task_id: str
    program: str
    priority: str
    """routine or urgent."""
    owner: str | None
    status: str
    business_status: str | None
    records_complete_at: datetime | None
    delivered_at: datetime | None
    promise_days: float
    due: datetime | None
    business_days: float | None
    """Elapsed since records-complete: to delivery, else to now; None before records are
    complete and for a case closed without an opinion."""
    state: str

    @property
    def late(self) -> bool:
        """Delivered after its due moment."""
        return (
            self.delivered_at is not None and self.due is not None and self.delivered_at > self.due
        )

    def as_json(self) -> dict[str, Any]:
        """The worklist entry: case id, program, timing; no patient data."""
        return {
            "task": f"Task/{self.task_id}",
            "program": self.program,
            "priority": self.priority,
            "owner": self.owner,
            "status": self.status,
            "businessStatus": self.business_status,
            "state": self.state,
            "recordsCompleteAt": _instant(self.records_complete_at),
            "due": _instant(self.due),
            "deliveredAt": _instant(self.delivered_at),
            "businessDays": _rounded(self.business_days),
            "promiseBusinessDays": self.promise_days,
        }


@dataclass(frozen=True)
class ProgramFigures:
    """A program's cases by state, and the turnaround of those delivered in the window."""

    program: str
    promise: Promise
    open: int
    awaiting_records: int
    on_time: int
    at_risk: int
    overdue: int
    delivered: int
    """Delivered in the window (with a known records-complete moment)."""
    delivered_late: int
    median_business_days: float | None
    p90_business_days: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "display": codes.PROGRAMS.get(self.program, self.program),
            "promiseBusinessDays": {
                "routine": self.promise.routine,
                "urgent": self.promise.urgent,
            },
            "open": self.open,
            "awaitingRecords": self.awaiting_records,
            "onTime": self.on_time,
            "atRisk": self.at_risk,
            "overdue": self.overdue,
            "delivered": self.delivered,
            "deliveredLate": self.delivered_late,
            "medianBusinessDays": _rounded(self.median_business_days),
            "p90BusinessDays": _rounded(self.p90_business_days),
        }


def case_turnarounds(
    session: Session,
    config: TurnaroundSettings,
    *,
    programs: Collection[str] | None = None,
    default_program: str = "oncology",
    now: datetime | None = None,
    closed_before: datetime | None = None,
) -> list[CaseTurnaround]:
    """The clock of every case (of `programs`, all when None), as of `now` (naive UTC).

    `closed_before` leaves out the cases closed (completed, cancelled, rejected) whose Task
    last changed before that moment: what is asked then grows with the open and recent
    cases, not with the hub's whole history."""
    now = now or utc_now()
    chosen = _case_tasks(programs, default_program, closed_before)
    at = _JsonReader(session)
    documents = select(ResourceRow.res_id, at.document(ResourceRow.content).label("doc"))
    documents = documents.where(chosen)
    if at.postgresql:
        documents = documents.offset(0)  # a fence: each text is parsed once, not per member
    document = documents.subquery()
    current = session.execute(
        select(
            document.c.res_id,
            at(document.c.doc, "status"),
            at(document.c.doc, "priority"),
            at(document.c.doc, "businessStatus"),
            at(document.c.doc, "performerType"),
            at(document.c.doc, "owner", "reference"),
        )
    ).all()
    if not current:
        return []
    versions: dict[str, list[tuple[datetime, str | None]]] = {}
    codes_of: dict[str | None, str | None] = {}  # the hub writes the same few texts
    for task_id, updated, business in session.execute(
        select(
            ResourceVersionRow.res_id,
            ResourceVersionRow.last_updated,
            at(at.document(ResourceVersionRow.content), "businessStatus"),
        )
        .where(
            ResourceVersionRow.res_type == "Task",
            ResourceVersionRow.deleted == false(),
            ResourceVersionRow.res_id.in_(select(ResourceRow.res_id).where(chosen)),
        )
        .order_by(ResourceVersionRow.res_id, ResourceVersionRow.version_id)
    ):
        if business not in codes_of:
            codes_of[business] = _business_code(business)
        versions.setdefault(task_id, []).append((updated, codes_of[business]))
    cases = []
    for task_id, status, priority, business, performers, owner in current:
        program = _program(performers, default_program)
        if programs is not None and program not in programs:
            continue  # a second program coding let it through the index
        cases.append(
            _clock(
                config,
                now,
                task_id=task_id,
                program=program,
                priority="urgent" if priority in URGENT_PRIORITIES else "routine",
                owner=owner,
                status=str(status),
                business_status=_business_code(business),
                history=versions.get(task_id, []),
            )
        )
    return sorted(cases, key=lambda case: case.task_id)


def program_figures(
    cases: Iterable[CaseTurnaround],
    config: TurnaroundSettings,
    programs: Iterable[str],
    *,
    now: datetime | None = None,
) -> list[ProgramFigures]:
    """Per program (each of `programs`, and any other the cases name), sorted by code."""
    now = now or utc_now()
    window_start = now - timedelta(days=config.figures_window_days)
    by_program: dict[str, list[CaseTurnaround]] = {program: [] for program in programs}
    for case in cases:
        by_program.setdefault(case.program, []).append(case)
    figures = []
    for program, members in sorted(by_program.items()):
        states = [case.state for case in members]
        delivered = [
            case
            for case in members
            if case.state == "delivered"
            and case.business_days is not None
            and case.delivered_at is not None
            and case.delivered_at >= window_start
        ]
        days = sorted(case.business_days for case in delivered if case.business_days is not None)
        figures.append(
            ProgramFigures(
                program=program,
                promise=config.promises.get(program, config.default_promise),
                open=sum(state in OPEN_STATES for state in states),
                awaiting_records=states.count("awaiting-records"),
                on_time=states.count("on-time"),
                at_risk=states.count("at-risk"),
                overdue=states.count("overdue"),
                delivered=len(delivered),
                delivered_late=sum(case.late for case in delivered),
                median_business_days=percentile(days, 0.5),
                p90_business_days=percentile(days, 0.9),
            )
        )
    return figures


def turnaround_figures(
    session: Session,
    config: TurnaroundSettings,
    programs: Collection[str] | None,
    *,
    default_program: str = "oncology",
    now: datetime | None = None,
) -> list[ProgramFigures]:
    """The figures of `programs` (every known program when None) as of `now`, reading
    only the cases open or closed within the figures' window."""
    now = now or utc_now()
    window_start = now - timedelta(days=config.figures_window_days)
    cases = case_turnarounds(
        session,
        config,
        programs=programs,
        default_program=default_program,
        now=now,
        closed_before=window_start,
    )
    shown = codes.PROGRAMS if programs is None else programs
    return program_figures(cases, config, shown, now=now)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q` quantile of sorted `values`, interpolated linearly between the closest ranks
    (numpy's default, `statistics.quantiles(method="inclusive")`); None when empty."""
    if not values:
        return None
    position = q * (len(values) - 1)
    below = int(position)
    above = min(below + 1, len(values) - 1)
    return values[below] + (values[above] - values[below]) * (position - below)


# -- internals ---------------------------------------------------------------------------
def _clock(
    config: TurnaroundSettings,
    now: datetime,
    *,
    task_id: str,
    program: str,
    priority: str,
    owner: str | None,
    status: str,
    business_status: str | None,
    history: list[tuple[datetime, str | None]],
) -> CaseTurnaround:
    """The clock of one case, from its versions' (last_updated, businessStatus) in order."""
    started: datetime | None = None
    delivered: datetime | None = None
    for updated, code in history:
        if code == AWAITING_RECORDS:
            started = None
        elif code in ON_THE_CLOCK and started is None:
            started = updated
        if code == DELIVERED:
            delivered = updated
            break
    promise = config.promise_for(program, priority)
    calendar = config.calendar
    due = elapsed = None
    if started is not None:
        due = _naive(calendar.add_business_days(started, promise))
        if delivered is not None or status not in CLOSED_STATUSES:
            elapsed = calendar.business_days_between(started, delivered or now)
    if delivered is not None:
        state = "delivered"
    elif status in CLOSED_STATUSES:
        state = "closed"
    elif started is None or due is None:
        state = "awaiting-records"
    elif now > due:
        state = "overdue"
    elif now >= _naive(calendar.add_business_days(started, promise * config.at_risk_fraction)):
        state = "at-risk"
    else:
        state = "on-time"
    return CaseTurnaround(
        task_id=task_id,
        program=program,
        priority=priority,
        owner=owner,
        status=status,
        business_status=business_status,
        records_complete_at=started,
        delivered_at=delivered,
        promise_days=promise,
        due=due,
        business_days=elapsed,
        state=state,
    )


def _case_tasks(
    programs: Collection[str] | None, default_program: str, closed_before: datetime | None
) -> ColumnElement[bool]:
    """A condition on ResourceRow: the current case Tasks of `programs` (all when None),
    less those closed before `closed_before`.

    The program is the Task's performerType in the search index, as the access rules read
    it; a case without one belongs to `default_program`. Uncorrelated subqueries: each runs
    once, where a correlated EXISTS would probe the index once per Task."""
    condition = and_(
        ResourceRow.res_type == "Task",
        ResourceRow.deleted == false(),
        ResourceRow.res_id.in_(_indexed("code", codes.CASE_TASK_SYSTEM, [codes.CASE_TASK_CODE])),
    )
    if closed_before is not None:
        closed = _indexed("status", None, sorted(CLOSED_STATUSES))
        condition = and_(
            condition,
            or_(ResourceRow.last_updated >= closed_before, ResourceRow.res_id.not_in(closed)),
        )
    if programs is None:
        return condition
    of_program: ColumnElement[bool] = ResourceRow.res_id.in_(
        _indexed("performer", codes.PROGRAM_SYSTEM, sorted(programs))
    )
    if default_program in programs:
        without = ResourceRow.res_id.not_in(_indexed("performer", codes.PROGRAM_SYSTEM, None))
        of_program = or_(of_program, without)
    return and_(condition, of_program)


def _indexed(param: str, system: str | None, values: list[str] | None) -> Select[Any]:
    """The ids of the Tasks with an index row `param` (in `system`, with one of `values`)."""
    query = select(SearchIndexRow.res_id).where(
        SearchIndexRow.res_type == "Task", SearchIndexRow.param == param
    )
    if system is not None:
        query = query.where(SearchIndexRow.system == system)
    return query if values is None else query.where(SearchIndexRow.value.in_(values))


class _JsonReader:
    """Members of a JSON text column, read in SQL: `document(column)` once per row, then
    `reader(document, *path)` per member, as text (JSON text for an object or array)."""

    def __init__(self, session: Session) -> None:
        self.postgresql = session.get_bind().dialect.name == "postgresql"

    def document(self, column: Any) -> ColumnElement[Any]:
        return cast(column, postgresql.JSONB) if self.postgresql else column

    def __call__(self, document: Any, *path: str) -> ColumnElement[Any]:
        if self.postgresql:
            member: ColumnElement[Any] = type_coerce(document, postgresql.JSONB)[path].astext
            return member  # the #>> operator
        return func.json_extract(document, "$." + ".".join(path))


def _business_code(member: str | None) -> str | None:
    """Our code in a Task.businessStatus (JSON text), as `cases.business_status_of` reads it."""
    if not member:
        return None
    concept = json.loads(member)
    for coding in (concept.get("coding") or []) if isinstance(concept, dict) else []:
        if isinstance(coding, dict) and coding.get("system") == codes.BUSINESS_STATUS_SYSTEM:
            return str(coding.get("code"))
    return None


def _program(performers: str | None, default: str) -> str:
    """The program in a Task.performerType (JSON text), as `checklist.case_program` reads it."""
    concepts = json.loads(performers) if performers else []
    for concept in concepts if isinstance(concepts, list) else []:
        for coding in (concept.get("coding") or []) if isinstance(concept, dict) else []:
            if coding.get("system") == codes.PROGRAM_SYSTEM and coding.get("code"):
                return str(coding["code"])
    return default


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _instant(moment: datetime | None) -> str | None:
    return instant(moment) if moment is not None else None


def _rounded(days: float | None) -> float | None:
    return round(days, 2) if days is not None else None
