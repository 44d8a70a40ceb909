"""The case managers' board under /ui/board: their programs' cases by state, one case's
page, and the two things done from them (reassign, write to the referrer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from hub.api.deps import hub_state, read_form, unit_of_work
from hub.errors import InvalidRequest, NotFound
from hub.fhir.dates import utc_now
from hub.security.principal import Principal
from hub.web.board_actions import accept_case, message_referrer, reassign_case
from hub.web.board_cases import (
    GROUP_LABELS,
    OPEN,
    STATE_CHOICES,
    case_board,
    local_time,
)
from hub.web.session import Person, check_csrf, require_role
from hub.web.templating import render

ROLE = "case-manager"
router = APIRouter(prefix="/ui/board", include_in_schema=False)
TaskId = Annotated[str, Path(pattern=r"^[A-Za-z0-9\-.]{1,64}$")]
# Fixed texts for `?notice=`: a link cannot make the page say something of its own.
NOTICES = {
    "reassigned": "The case was reassigned; the new specialist sees it now.",
    "messaged": "Your message was sent to the referrer.",
    "accepted": "The case is accepted: its specialist can now write the opinion.",
}
STATES = {value for value, _ in STATE_CHOICES}


@router.get("")
def board(
    request: Request,
    person: Person,
    state: str = OPEN,
    attention: bool = False,
    notice: str | None = None,
) -> Response:
    """The case board."""
    if state not in STATES:
        raise InvalidRequest(f"'{state}' is not a state of the board.", expression="state")
    settings = hub_state(request).settings
    now = utc_now()
    with unit_of_work(request, person) as fhir:
        require_role(person, ROLE)
        shown = case_board(fhir, settings, now, state=state, attention=attention)
    return render(
        request,
        "board.html",
        {
            "board": shown,
            "state": state,
            "attention": attention,
            "state_choices": STATE_CHOICES,
            "programs": sorted(person.programs),
            "generated": local_time(now, settings.turnaround.time_zone),
            "notice": NOTICES.get(notice or ""),
        },
    )


@router.get("/cases/{task_id}")
def case_page(
    request: Request, person: Person, task_id: TaskId, notice: str | None = None
) -> Response:
    """One case of the board."""
    settings = hub_state(request).settings
    with unit_of_work(request, person) as fhir:
        require_role(person, ROLE)
        shown = case_board(fhir, settings, utc_now(), task_id=task_id)
    cases = [case for _, _, members in shown.groups for case in members]
    if not cases:
        raise NotFound(f"Task/{task_id} is not a case of your programs.")
    return render(
        request,
        "board_case.html",
        {
            "case": cases[0],
            "group_label": GROUP_LABELS[cases[0].group],
            "notice": NOTICES.get(notice or ""),
        },
    )


@router.post("/cases/{task_id}/reassign")
async def reassign(request: Request, person: Person, task_id: TaskId) -> Response:
    """Reassign a case to another specialist of its program."""
    form = dict(await read_form(request))
    return await run_in_threadpool(_reassign, request, person, task_id, form)


@router.post("/cases/{task_id}/accept")
async def accept(request: Request, person: Person, task_id: TaskId) -> Response:
    """Accept a received case for review by its specialist."""
    form = dict(await read_form(request))
    return await run_in_threadpool(_accept, request, person, task_id, form)


@router.post("/cases/{task_id}/message")
async def message(request: Request, person: Person, task_id: TaskId) -> Response:
    """Write to the referrer about a case."""
    form = dict(await read_form(request))
    return await run_in_threadpool(_message, request, person, task_id, form)


def _reassign(request: Request, person: Principal, task_id: str, form: dict[str, str]) -> Response:
    settings = hub_state(request).settings
    with unit_of_work(request, person) as fhir:
        require_role(person, ROLE)
        check_csrf(request, form)
        version = form.get("version", "")
        reassign_case(
            fhir,
            task_id,
            form.get("specialist", ""),
            form.get("reason", ""),
            version=int(version) if version.isdigit() else None,
            default_program=settings.default_program,
        )
    return _back(form, task_id, "reassigned")


def _accept(request: Request, person: Principal, task_id: str, form: dict[str, str]) -> Response:
    with unit_of_work(request, person) as fhir:
        require_role(person, ROLE)
        check_csrf(request, form)
        version = form.get("version", "")
        accept_case(fhir, task_id, version=int(version) if version.isdigit() else None)
    return _back(form, task_id, "accepted")


def _message(request: Request, person: Principal, task_id: str, form: dict[str, str]) -> Response:
    with unit_of_work(request, person) as fhir:
        require_role(person, ROLE)
        check_csrf(request, form)
        message_referrer(fhir, task_id, form.get("message", ""))
    return _back(form, task_id, "messaged")


def _back(form: dict[str, str], task_id: str, notice: str) -> RedirectResponse:
    """After a form: to the page it was sent from (the case's page, else the board)."""
    if form.get("back") == "case":
        return RedirectResponse(f"/ui/board/cases/{task_id}?notice={notice}", status_code=303)
    return RedirectResponse(f"/ui/board?notice={notice}#case-{task_id}", status_code=303)
