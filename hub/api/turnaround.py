"""Turnaround views for case managers and admins: per-program figures and the worklist of the
cases overdue or at risk (hub.workflow.turnaround). Plain JSON: operational views, not FHIR.

Who: a case manager sees the cases of their programs, an admin those of every program;
either needs a token scope that allows searching Task (e.g. `system/Task.s`), since the
views are a search over case Tasks. A `program` outside the caller's programs shows none.

Not audited when answered: the audit trail records access to patient data
(hub.security.audit), and these views hold none. They name a case by its Task id, its
program, priority and owner (a practitioner of the hub) and give moments and counts; what
a case is about (its patient, records) is read through the FHIR API, audited there. A
refused request is audited, as every refusal is (a probe is worth recording).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from hub import codes
from hub.api.deps import Caller, authenticate, hub_state, unit_of_work
from hub.errors import Forbidden, InvalidRequest
from hub.fhir.dates import instant, utc_now
from hub.security.principal import Principal
from hub.workflow.turnaround import case_turnarounds, turnaround_figures

ATTENTION = ("overdue", "at-risk")
"""What the worklist shows when no state is asked for."""


def operations_caller(*roles: str) -> Callable[[Request, Principal], Principal]:
    """A dependency: the caller has one of `roles` and a scope that allows searching Task.
    Refused inside a unit of work, so that the refusal is audited."""

    def require(request: Request, caller: Caller) -> Principal:
        with unit_of_work(request, caller):
            if not caller.has_role(*roles):
                raise Forbidden(f"This view is for the role(s) {', '.join(roles)}.")
            if not caller.allows("Task", "s"):
                raise Forbidden(
                    "The access token has no scope that allows 's' on Task (e.g. system/Task.s)."
                )
        return caller

    return require


Viewer = Annotated[Principal, Depends(operations_caller("case-manager", "admin"))]
router = APIRouter(prefix="/cases", tags=["Cases"], dependencies=[Depends(authenticate)])
ProgramParam = Annotated[
    str | None, Query(description=f"A program code: {', '.join(codes.PROGRAMS)}")
]


@router.get("/turnaround")
def program_turnaround(
    request: Request, viewer: Viewer, program: ProgramParam = None
) -> JSONResponse:
    """Per program: open cases by clock state; median and p90 business days of deliveries."""
    settings = hub_state(request).settings
    config = settings.turnaround
    now = utc_now()
    with hub_state(request).sessions() as session:
        figures = turnaround_figures(
            session,
            config,
            _programs_of(viewer, program),
            default_program=settings.default_program,
            now=now,
        )
    return JSONResponse(
        {
            "generated": instant(now),
            "timeZone": config.time_zone,
            "windowDays": config.figures_window_days,
            "atRiskFraction": config.at_risk_fraction,
            "programs": [entry.as_json() for entry in figures],
        }
    )


@router.get("/worklist")
def worklist(
    request: Request,
    viewer: Viewer,
    state: Annotated[
        Literal["overdue", "at-risk", "on-time", "awaiting-records"] | None,
        Query(description="Default: overdue and at-risk"),
    ] = None,
    program: ProgramParam = None,
) -> JSONResponse:
    """Open cases by clock state (default overdue and at risk), the one due first first."""
    settings = hub_state(request).settings
    programs = _programs_of(viewer, program)
    wanted = (state,) if state else ATTENTION
    now = utc_now()
    with hub_state(request).sessions() as session:
        cases = case_turnarounds(
            session,
            settings.turnaround,
            programs=programs,
            default_program=settings.default_program,
            now=now,
            closed_before=now,
        )
    chosen = sorted(
        (case for case in cases if case.state in wanted),
        key=lambda case: (case.due is None, case.due or now, case.task_id),
    )
    return JSONResponse(
        {
            "generated": instant(now),
            "timeZone": settings.turnaround.time_zone,
            "states": list(wanted),
            "total": len(chosen),
            "cases": [case.as_json() for case in chosen],
        }
    )


def _programs_of(caller: Principal, program: str | None) -> frozenset[str] | None:
    """The programs whose cases the caller sees here (None: all); InvalidRequest for a
    program code the hub does not know."""
    if program is not None and program not in codes.PROGRAMS:
        raise InvalidRequest(
            f"'{program}' is not a program (known: {', '.join(codes.PROGRAMS)}).",
            expression="program",
        )
    if caller.has_role("admin"):
        return None if program is None else frozenset({program})
    return caller.programs if program is None else caller.programs & {program}
