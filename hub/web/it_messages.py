"""The message log for hospital IT: search and paging (the filters of GET /admin/messages),
one message with its ACK and conversion report, and a replay button."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from hub.api.deps import hub_state, read_form, wake_worker
from hub.messages.log import (
    MessageQuery,
    audited_detail,
    moment_bound,
    replay_message,
    search_messages,
)
from hub.security.principal import Principal
from hub.web.it_pages import require_admin, utc_text
from hub.web.session import Person, check_csrf
from hub.web.templating import render

router = APIRouter(prefix="/ui/it/messages", include_in_schema=False)
PAGE_SIZE = 50
STATUSES = ("accepted", "mapped", "failed", "rejected", "queued", "delivered", "dead")
FILTERS = ("sender", "type", "control_id", "status", "direction", "since", "until")
NOTICES = {"replayed": "The message is queued to be mapped again."}
Text = Annotated[str | None, Query(max_length=255)]


@router.get("")
def message_log(
    request: Request,
    person: Person,
    sender: Text = None,
    type: Text = None,  # noqa: A002 - the API's name for the filter
    control_id: Text = None,
    status: Text = None,
    direction: Text = None,
    since: Text = None,
    until: Text = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Response:
    """Search the message log."""
    require_admin(request, person)
    given = {
        name: value.strip()
        for name, value in zip(
            FILTERS, (sender, type, control_id, status, direction, since, until), strict=True
        )
        if value and value.strip()
    }
    query = MessageQuery(
        sender=given.get("sender"),
        message_type=given.get("type"),
        control_id=given.get("control_id"),
        status=given.get("status"),
        direction=given.get("direction"),
        since=moment_bound(given.get("since"), "since", 0),
        until=moment_bound(given.get("until"), "until", 1),
        count=PAGE_SIZE,
        offset=offset,
    )
    with hub_state(request).sessions() as session:
        rows, total = search_messages(session, query)
        messages = [
            {
                "id": row.message_id,
                "received": utc_text(row.received_at),
                "direction": row.direction,
                "channel": row.channel,
                "sender": "/".join(p for p in (row.sending_application, row.sending_facility) if p),
                "type": row.message_type,
                "control_id": row.control_id or "",
                "status": row.status,
                "ack": row.ack_code or "",
            }
            for row in rows
        ]
    return render(
        request,
        "it_messages.html",
        {
            "messages": messages,
            "total": total,
            "filters": given,
            "statuses": STATUSES,
            "first": offset + 1 if messages else 0,
            "last": offset + len(messages),
            "previous": _page_link(given, offset - PAGE_SIZE) if offset > 0 else None,
            "next": _page_link(given, offset + PAGE_SIZE) if offset + PAGE_SIZE < total else None,
            "notice": None,
        },
    )


@router.get("/{message_id}")
def message_page(
    request: Request, person: Person, message_id: int, notice: str | None = None
) -> Response:
    """One message: raw text, ACK, conversion report, what it produced."""
    require_admin(request, person)
    with hub_state(request).sessions.begin() as session:
        shown = audited_detail(session, person, message_id)
    return render(
        request,
        "it_message.html",
        {
            "message": shown,
            "report": conversion_report(shown.get("report")),
            "replayable": shown["direction"] == "in" and shown["status"] != "rejected",
            "notice": NOTICES.get(notice or ""),
        },
    )


@router.post("/{message_id}/replay")
async def replay(request: Request, person: Person, message_id: int) -> Response:
    """Map an inbound message again."""
    form = dict(await read_form(request))
    await run_in_threadpool(_replay, request, person, message_id, form)
    wake_worker(request)
    return RedirectResponse(f"/ui/it/messages/{message_id}?notice=replayed", status_code=303)


def _replay(request: Request, person: Principal, message_id: int, form: dict[str, str]) -> None:
    require_admin(request, person)
    check_csrf(request, form)
    with hub_state(request).sessions.begin() as session:
        replay_message(session, message_id)


def conversion_report(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored conversion report (mappings.report.ConversionReport.to_json) as the page
    lists it: the segments, then the fields not mapped, defaulted, and mapped or used."""
    if not report:
        return None
    fields: dict[str, list[dict[str, Any]]] = {"not-mapped": [], "defaulted": [], "mapped": []}
    for segment in report.get("segments") or []:
        for field in segment.get("fields") or []:
            status = field.get("status")
            entry = {
                "location": field.get("location", ""),
                "status": status,
                "paths": ", ".join(field.get("paths") or []),
                "reason": field.get("reason") or "",
                "value": field.get("value"),
            }
            key = "mapped" if status in ("mapped", "used") else str(status)
            fields.setdefault(key, []).append(entry)
    return {
        "type": report.get("messageType", ""),
        "structure": report.get("structure", ""),
        "counts": report.get("counts") or {},
        "segments": report.get("segments") or [],
        "not_mapped": fields.get("not-mapped", []),
        "defaulted": fields.get("defaulted", []),
        "mapped": fields["mapped"],
    }


def _page_link(filters: dict[str, str], offset: int) -> str:
    return "/ui/it/messages?" + urlencode({**filters, "offset": max(offset, 0)})
