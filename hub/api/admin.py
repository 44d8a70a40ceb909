"""Hospital IT's API: the message log, the dead letters, batch files. Admins only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from hub.api.deps import Caller, authenticate, hub_state, wake_worker
from hub.errors import Forbidden, InvalidRequest, NotFound
from hub.fhir.dates import instant
from hub.jobs.outbox import dead_letters, replay
from hub.messages.batch import process_batch
from hub.messages.log import (
    MessageQuery,
    audited_detail,
    moment_bound,
    replay_message,
    search_messages,
    summary,
)
from hub.security.principal import Principal
from mappings.hl7v2.batch import BatchError


def require_admin(caller: Caller) -> Principal:
    if not caller.has_role("admin"):
        raise Forbidden("The message log and the dead letters are for the admin role.")
    return caller


Admin = Annotated[Principal, Depends(require_admin)]
router = APIRouter(prefix="/admin", tags=["Admin"], dependencies=[Depends(authenticate)])


@router.get("/messages")
def list_messages(
    request: Request,
    admin: Admin,
    sender: str | None = None,
    type: Annotated[str | None, Query(description="e.g. ORU^R01")] = None,  # noqa: A002
    control_id: str | None = None,
    status: str | None = None,
    direction: str | None = None,
    batch_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    count: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JSONResponse:
    """Search the message log (no message content in the list)."""
    query = MessageQuery(
        sender=sender,
        message_type=type,
        control_id=control_id,
        status=status,
        direction=direction,
        batch_id=batch_id,
        since=moment_bound(since, "since", 0),
        until=moment_bound(until, "until", 1),
        count=count,
        offset=offset,
    )
    with hub_state(request).sessions() as session:
        rows, total = search_messages(session, query)
        return JSONResponse({"total": total, "messages": [summary(r) for r in rows]})


@router.get("/messages/{message_id}")
def show_message(request: Request, admin: Admin, message_id: int) -> JSONResponse:
    """One message: raw text, the ACK sent, the conversion report, what it produced."""
    with hub_state(request).sessions.begin() as session:
        shown = audited_detail(session, admin, message_id)
    return JSONResponse(shown)


@router.post("/messages/{message_id}/replay")
def replay_one_message(request: Request, admin: Admin, message_id: int) -> JSONResponse:
    """Map an inbound message again."""
    with hub_state(request).sessions.begin() as session:
        row = replay_message(session, message_id)
        result = summary(row)
    wake_worker(request)
    return JSONResponse(result, status_code=202)


@router.get("/dead-letters")
def list_dead_letters(request: Request, admin: Admin) -> JSONResponse:
    """Jobs that failed every attempt: what, how often, the last error."""
    with hub_state(request).sessions() as session:
        return JSONResponse({"jobs": [_job(row) for row in dead_letters(session)]})


@router.post("/dead-letters/{job_id}/replay")
def replay_dead_letter(request: Request, admin: Admin, job_id: int) -> JSONResponse:
    """Put a dead job back in the queue with fresh attempts."""
    with hub_state(request).sessions.begin() as session:
        if not replay(session, job_id):
            raise NotFound(f"Job {job_id} is not a dead letter.")
    wake_worker(request)
    return JSONResponse({"job": job_id, "status": "pending"}, status_code=202)


def _job(row: Any) -> dict[str, Any]:
    return {
        "id": row.job_id,
        "kind": row.kind,
        "subject": row.subject,
        "attempts": row.attempts,
        "lastError": row.last_error,
        "updatedAt": instant(row.updated_at),
    }


@router.post("/hl7/batch")
async def post_batch(request: Request, admin: Admin) -> JSONResponse:
    """An HL7 batch file (FHS/BHS … BTS/FTS) as the body: each message taken on its own."""
    raw = await request.body()
    if len(raw) > hub_state(request).settings.max_request_bytes:
        raise InvalidRequest("The batch file is larger than max_request_bytes.")
    intake = request.app.state.intake
    try:
        report = await run_in_threadpool(
            process_batch, intake, raw, channel="api-batch", peer=admin.subject
        )
    except BatchError as exc:
        raise InvalidRequest(f"Not an HL7 batch file: {exc}") from exc
    wake_worker(request)
    return JSONResponse(report)
