"""Hospital IT's pages under /ui/it: the connectors' state, the dead letters (with replay)
and the configuration check. For the role admin; the message log is in it_messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from hub.api.deps import hub_state, read_form, unit_of_work, wake_worker
from hub.config_check import (
    TABLE_KINDS,
    ConfigProblem,
    TableKind,
    config_problems,
    table_file_problems,
    table_problems,
)
from hub.errors import InvalidRequest, NotFound
from hub.imaging.importer import ATTACH_JOB
from hub.imaging.pull import PULL_JOB
from hub.jobs.outbox import dead_letters, replay
from hub.messages.intake import MAP_JOB
from hub.messages.outbound import DELIVER_JOB
from hub.records.fhir_pull import PULL_RECORDS_JOB
from hub.records.write_back import WRITE_BACK_JOB
from hub.security.principal import Principal
from hub.storage.tables import JobRow, MessageRow
from hub.web.it_connectors import connector_statuses
from hub.web.session import Person, check_csrf, require_role
from hub.web.templating import render
from hub.workflow.checklist import CHECK_RECORDS_JOB

ROLE = "admin"
router = APIRouter(prefix="/ui/it", include_in_schema=False)
NOTICES = {
    "replayed": "The job is back in the queue with fresh attempts.",
}
# What each job kind does, in words.
JOB_LABELS = {
    MAP_JOB: "Map an HL7 v2 message to FHIR",
    DELIVER_JOB: "Deliver an HL7 v2 message",
    PULL_RECORDS_JOB: "Pull a case's records from a FHIR source",
    WRITE_BACK_JOB: "Send an opinion to a FHIR server",
    PULL_JOB: "Pull a case's studies from an imaging source",
    ATTACH_JOB: "Attach a DICOM study to its case",
    CHECK_RECORDS_JOB: "Check a case's records",
}
MAX_CANDIDATE_CHARS = 200_000


def require_admin(request: Request, person: Principal) -> None:
    """Forbidden unless `person` is an admin; refused inside a unit of work, so that the
    refusal is audited as the API audits it."""
    with unit_of_work(request, person):
        require_role(person, ROLE)


def utc_text(moment: datetime | None) -> str:
    """A naive UTC moment as the hub's logs write it."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


@router.get("/connectors")
def connectors(request: Request, person: Person) -> Response:
    """Each configured connector: health, last success, last error."""
    require_admin(request, person)
    state = request.app.state
    with hub_state(request).sessions() as session:
        statuses = connector_statuses(
            session,
            hub_state(request).settings,
            getattr(state, "listeners", []),
            getattr(state, "storage_scp", None),
        )
    return render(
        request,
        "it_connectors.html",
        {"connectors": statuses, "when": utc_text, "notice": None},
    )


@router.get("/dead-letters")
def dead_letter_list(request: Request, person: Person, notice: str | None = None) -> Response:
    """Jobs that failed every attempt, each with a replay button."""
    require_admin(request, person)
    with hub_state(request).sessions() as session:
        letters = [_dead_letter(row, where) for row, where in _targets(session)]
    return render(
        request,
        "it_dead_letters.html",
        {"letters": letters, "notice": NOTICES.get(notice or "")},
    )


@router.post("/dead-letters/{job_id}/replay")
async def replay_dead_letter(request: Request, person: Person, job_id: int) -> Response:
    """Put a dead job back in the queue."""
    form = dict(await read_form(request))
    await run_in_threadpool(_replay_job, request, person, job_id, form)
    wake_worker(request)
    return RedirectResponse("/ui/it/dead-letters?notice=replayed", status_code=303)


@router.get("/config")
def configuration(request: Request, person: Person) -> Response:
    """The configuration check of the files the hub runs with."""
    require_admin(request, person)
    return _config_page(request, None, "routing", "")


@router.post("/config/check")
async def check_candidate(request: Request, person: Person) -> Response:
    """Check a pasted routing table or checklist without saving it."""
    form = dict(await read_form(request))
    return await run_in_threadpool(_check_candidate, request, person, form)


def _check_candidate(request: Request, person: Principal, form: dict[str, str]) -> Response:
    require_admin(request, person)
    check_csrf(request, form)
    kind = form.get("kind", "")
    if kind not in TABLE_KINDS:
        raise InvalidRequest("Choose the kind of file: routing.yaml or checklist.yaml.")
    text = form.get("content", "")
    if not text.strip():
        raise InvalidRequest("Paste the YAML text to check.", expression="content")
    if len(text) > MAX_CANDIDATE_CHARS:
        raise InvalidRequest(f"The text is longer than {MAX_CANDIDATE_CHARS} characters.")
    problems = table_problems(kind, text, f"pasted {kind}.yaml")
    return _config_page(request, problems, kind, text)


def _config_page(
    request: Request, candidate: list[ConfigProblem] | None, kind: TableKind, text: str
) -> Response:
    settings = hub_state(request).settings
    checks = [
        ("Settings (hub.yaml)", settings.config_file, config_problems(settings.config_file)),
        (
            TABLE_KINDS["routing"],
            settings.routing_file,
            table_file_problems("routing", settings.routing_file),
        ),
        (
            TABLE_KINDS["checklist"],
            settings.checklist_file,
            table_file_problems("checklist", settings.checklist_file),
        ),
    ]
    return render(
        request,
        "it_config.html",
        {
            "checks": checks,
            "kinds": TABLE_KINDS,
            "kind": kind,
            "text": text,
            "candidate": candidate,
            "notice": None,
        },
    )


def _replay_job(request: Request, person: Principal, job_id: int, form: dict[str, str]) -> None:
    require_admin(request, person)
    check_csrf(request, form)
    with hub_state(request).sessions.begin() as session:
        if not replay(session, job_id):
            raise NotFound(f"Job {job_id} is not a dead letter (it may have been replayed).")


def _targets(session: Session) -> list[tuple[JobRow, MessageRow | None]]:
    """The dead letters, each with the logged message it delivers or maps (if any)."""
    rows = dead_letters(session)
    ids = [int(r.subject) for r in rows if r.kind in (DELIVER_JOB, MAP_JOB) and r.subject.isdigit()]
    messages = {
        m.message_id: m
        for m in session.scalars(select(MessageRow).where(MessageRow.message_id.in_(ids)))
    }
    return [
        (row, messages.get(int(row.subject)) if row.subject.isdigit() else None) for row in rows
    ]


def _dead_letter(row: JobRow, message: MessageRow | None) -> dict[str, Any]:
    """What the list shows of one dead job: what, about what, where to."""
    what = JOB_LABELS.get(row.kind, row.kind)
    about, _, target = row.subject.rpartition("|")
    link = None
    if row.kind in (DELIVER_JOB, MAP_JOB):
        about, link = f"message {row.subject}", f"/ui/it/messages/{row.subject}"
        if row.kind == DELIVER_JOB and message is not None:
            target = f"{message.channel} ({message.peer})"
        else:
            target = "the hub's FHIR store"
    elif row.kind in (PULL_RECORDS_JOB, PULL_JOB):
        about = f"case Task/{about}"
    elif row.kind == WRITE_BACK_JOB:
        about = f"DiagnosticReport/{about}"
    elif row.kind == ATTACH_JOB:
        about, target = f"study {row.subject}", "the hub's FHIR store"
    elif row.kind == CHECK_RECORDS_JOB:
        about, target = f"case Task/{row.subject}", "the hub"
    return {
        "id": row.job_id,
        "what": what,
        "about": about or row.subject,
        "link": link,
        "where": target,
        "attempts": row.attempts,
        "max_attempts": row.max_attempts,
        "error": row.last_error or "",
        "when": utc_text(row.updated_at),
    }
