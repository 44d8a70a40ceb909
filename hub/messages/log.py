"""Searching and replaying the message log (for the admin API and the CLI)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.errors import Conflict, InvalidRequest, NotFound
from hub.fhir.dates import date_range, instant
from hub.jobs.outbox import enqueue
from hub.messages.intake import MAP_JOB, patient_partition
from hub.security.audit import audit_event, write_audit_event
from hub.security.principal import Principal
from hub.storage.repository import ResourceRepository
from hub.storage.tables import MessageRow
from mappings.hl7v2.tokenizer import parse_message


@dataclass(frozen=True)
class MessageQuery:
    sender: str | None = None
    """MSH-3 sending application (and MSH-4 facility as `app/facility`)."""
    message_type: str | None = None
    control_id: str | None = None
    status: str | None = None
    direction: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    batch_id: str | None = None
    count: int = 50
    offset: int = 0


def moment_bound(raw: str | None, name: str, bound: int) -> datetime | None:
    """The start (`bound` 0) or end (1) of the date or instant `raw` of the filter `name`
    (None when absent); InvalidRequest if it is neither."""
    if raw is None:
        return None
    try:
        return date_range(raw)[bound]
    except ValueError as exc:
        raise InvalidRequest(f"{name}={raw} is not a date or instant.", expression=name) from exc


def search_messages(session: Session, query: MessageQuery) -> tuple[list[MessageRow], int]:
    """Messages matching `query`, newest first, and how many match in all."""
    statement = select(MessageRow)
    if query.sender:
        application, _, facility = query.sender.partition("/")
        statement = statement.where(MessageRow.sending_application == application)
        if facility:
            statement = statement.where(MessageRow.sending_facility == facility)
    for column, value in (
        (MessageRow.message_type, query.message_type),
        (MessageRow.control_id, query.control_id),
        (MessageRow.status, query.status),
        (MessageRow.direction, query.direction),
        (MessageRow.batch_id, query.batch_id),
    ):
        if value:
            statement = statement.where(column == value)
    if query.since:
        statement = statement.where(MessageRow.received_at >= query.since)
    if query.until:
        statement = statement.where(MessageRow.received_at < query.until)
    total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
    rows = session.scalars(
        statement.order_by(MessageRow.message_id.desc()).limit(query.count).offset(query.offset)
    )
    return list(rows), total


def get_message(session: Session, message_id: int) -> MessageRow:
    row = session.get(MessageRow, message_id)
    if row is None:
        raise NotFound(f"Message {message_id} is not in the log.")
    return row


def replay_message(session: Session, message_id: int) -> MessageRow:
    """Map an inbound message again (after a fix of the tables, say)."""
    row = get_message(session, message_id)
    if row.direction != "in" or row.status == "rejected":
        raise Conflict(
            f"Message {message_id} is {row.direction}/{row.status}: only accepted "
            "inbound messages can be mapped again."
        )
    row.status = "accepted"
    partition = patient_partition(parse_message(row.raw))  # in order with the patient's others
    enqueue(session, MAP_JOB, str(row.message_id), partition_key=partition)
    return row


def summary(row: MessageRow) -> dict[str, Any]:
    """What a list shows: no content, so no PHI."""
    return {
        "id": row.message_id,
        "direction": row.direction,
        "channel": row.channel,
        "peer": row.peer,
        "receivedAt": instant(row.received_at),
        "sender": "/".join(p for p in (row.sending_application, row.sending_facility) if p),
        "controlId": row.control_id,
        "type": row.message_type,
        "version": row.version,
        "status": row.status,
        "ackCode": row.ack_code,
        "duplicates": row.duplicates,
        "batchId": row.batch_id,
    }


def detail(row: MessageRow) -> dict[str, Any]:
    """Everything about one message: raw text, ACK, conversion report, what it produced."""
    return {
        **summary(row),
        "raw": _text(row.raw),
        "ack": _text(row.ack) if row.ack else None,
        "error": row.error,
        "report": json.loads(row.report) if row.report else None,
        "produced": json.loads(row.produced) if row.produced else [],
    }


def audited_detail(session: Session, reader: Principal, message_id: int) -> dict[str, Any]:
    """`detail` of one message, recorded in the audit trail as read by `reader` (a message
    holds patient data), in the caller's transaction."""
    shown = detail(get_message(session, message_id))
    patients = [p for p in shown["produced"] if p.startswith("Patient/")]
    event = audit_event(
        reader, "read", [], what=patients, description=f"message log entry {message_id}"
    )
    write_audit_event(ResourceRepository(session, author=reader.subject), event)
    return shown


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").replace("\r", "\n")
    except UnicodeDecodeError:
        return raw.decode("iso-8859-1").replace("\r", "\n")
