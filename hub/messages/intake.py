"""HL7 v2 intake: persist the raw message, then ACK; the mapping runs later as a job.

The order is the promise to the sender: an AA (or CA) leaves only after the message and its
mapping job are committed together. A duplicate (same MSH-3, MSH-4, MSH-10) gets the ACK
that was sent the first time and is not processed again. If the database cannot take the
message, no ACK is sent at all (the connection closes), so the sender sends it again.

Messages arriving together on several connections share one commit (group commit): the
durable write, not the parsing, is what limits how many messages a second one disk takes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Envelope
from hub.fhir.dates import utc_now
from hub.jobs.outbox import enqueue_values
from hub.messages.acceptance import rejection
from hub.storage.tables import JobRow, MessageRow
from mappings.hl7v2.ack import build_ack
from mappings.hl7v2.tokenizer import Hl7ParseError, Message, parse_message

log = logging.getLogger("hub.messages")

MAP_JOB = "map-hl7"
MAX_GROUP = 256
# MSH-15 accept acknowledgment type (HL7 table 0155) → the commit ACKs it asks for.
_SEND_ACCEPT = {"AL": {"CA", "CE", "CR"}, "NE": set(), "ER": {"CE", "CR"}, "SU": {"CA"}}
_SENDER_KEY = ["direction", "sending_application", "sending_facility", "control_id"]


@dataclass(frozen=True)
class IntakeResult:
    ack: bytes
    message_id: int | None
    duplicate: bool = False


@dataclass(frozen=True)
class _Decision:
    """What to store for one received message and what to answer."""

    values: dict[str, Any]
    answer: bytes
    """The ACK to send now (b"" where enhanced mode asks for none); the log keeps the ACK."""
    job: bool
    message: Message | None


class Hl7Intake:
    """The InboundHandler of every MLLP listener (and of batch files)."""

    def __init__(
        self, sessions: sessionmaker[Session], on_enqueued: Callable[[], None] | None = None
    ) -> None:
        self.sessions = sessions
        self.on_enqueued = on_enqueued
        self._queue: asyncio.Queue[tuple[Envelope, asyncio.Future[bytes]]] | None = None
        self._writer: asyncio.Task[None] | None = None

    async def __call__(self, envelope: Envelope) -> bytes:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._writer = asyncio.get_running_loop().create_task(self._write_groups())
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        await self._queue.put((envelope, answer))
        return await answer

    async def _write_groups(self) -> None:
        assert self._queue is not None
        while True:
            group = [await self._queue.get()]
            while not self._queue.empty() and len(group) < MAX_GROUP:
                group.append(self._queue.get_nowait())
            try:
                results = await asyncio.to_thread(self.receive_many, [e for e, _ in group])
            except Exception as exc:  # noqa: BLE001 - no commit, so no ACK for any of them
                log.error("message log unavailable: %s", type(exc).__name__)
                for _, answer in group:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_, answer), result in zip(group, results, strict=True):
                if not answer.done():
                    answer.set_result(result.ack)

    def receive(self, envelope: Envelope, *, batch_id: str | None = None) -> IntakeResult:
        """Persist one message and return the ACK to send (b"" when none is to be sent)."""
        return self.receive_many([envelope], batch_id=batch_id)[0]

    def receive_many(
        self, envelopes: list[Envelope], *, batch_id: str | None = None
    ) -> list[IntakeResult]:
        """Persist messages in one transaction; one result (ACK) each, in order."""
        decisions = [self._decide(envelope, batch_id) for envelope in envelopes]
        results: list[IntakeResult] = []
        enqueued = False
        with self.sessions.begin() as session:
            for decision in decisions:
                message_id = session.execute(self._insert(session, decision.values)).scalar()
                if message_id is None:  # the sender sent this control id before
                    assert decision.message is not None
                    results.append(self._duplicate(session, decision.message))
                    continue
                if decision.job:
                    session.execute(insert(JobRow).values(enqueue_values(MAP_JOB, str(message_id))))
                    enqueued = True
                results.append(IntakeResult(decision.answer, int(message_id)))
        if enqueued and self.on_enqueued:
            self.on_enqueued()
        return results

    def _decide(self, envelope: Envelope, batch_id: str | None) -> _Decision:
        try:
            message = parse_message(envelope.payload)
        except Hl7ParseError as exc:
            ack = build_ack(None, "AR", text=str(exc))
            return _Decision(
                _values(envelope, None, "rejected", ack, "AR", str(exc), batch_id),
                ack,
                False,
                None,
            )
        enhanced = bool(message.msh.field(15) or message.msh.field(16))
        problem = rejection(message)
        if problem is not None:
            code, location = problem
            code = ("CR" if code == "AR" else "CE") if enhanced else code
            ack = build_ack(message, code, text=location.text, errors=(location,))
            values = _values(envelope, message, "rejected", ack, code, location.text, batch_id)
            return _Decision(values, _filtered(message, ack, code, enhanced), False, message)
        code = "CA" if enhanced else "AA"
        ack = build_ack(message, code)
        values = _values(envelope, message, "accepted", ack, code, None, batch_id)
        return _Decision(values, _filtered(message, ack, code, enhanced), True, message)

    @staticmethod
    def _insert(session: Session, values: dict[str, Any]) -> Any:
        # INSERT ... ON CONFLICT DO NOTHING RETURNING: a duplicate returns no row instead of
        # failing the whole group's transaction.
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        return (
            dialect.insert(MessageRow)
            .values(values)
            .on_conflict_do_nothing(index_elements=_SENDER_KEY)
            .returning(MessageRow.message_id)
        )

    @staticmethod
    def _duplicate(session: Session, message: Message) -> IntakeResult:
        application, facility = message.sender
        row = session.scalar(
            select(MessageRow).where(
                MessageRow.direction == "in",
                MessageRow.sending_application == application,
                MessageRow.sending_facility == facility,
                MessageRow.control_id == message.control_id,
            )
        )
        assert row is not None  # the conflict says it exists (this transaction sees it)
        session.execute(
            update(MessageRow)
            .where(MessageRow.message_id == row.message_id)
            .values(duplicates=MessageRow.duplicates + 1)
        )
        log.info("duplicate of message %s re-acknowledged", row.message_id)
        return IntakeResult(row.ack or b"", row.message_id, duplicate=True)


def _values(
    envelope: Envelope,
    message: Message | None,
    status: str,
    ack: bytes,
    code: str,
    error: str | None,
    batch_id: str | None,
) -> dict[str, Any]:
    return {
        "direction": "in",
        "channel": envelope.channel,
        "peer": envelope.peer,
        "received_at": utc_now(),
        "status": status,
        "raw": envelope.payload,
        "ack": ack,
        "ack_code": code,
        "error": error,
        "duplicates": 0,
        "batch_id": batch_id,
        "sending_application": message.sender[0] if message else None,
        "sending_facility": message.sender[1] if message else None,
        "control_id": (message.control_id or None) if message else None,
        "message_type": message.type_name[:32] if message else "",
        "version": message.version[:16] if message else "",
    }


def _filtered(message: Message, ack: bytes, code: str, enhanced: bool) -> bytes:
    """In enhanced mode MSH-15 says whether a commit ACK is wanted at all."""
    if not enhanced:
        return ack
    wanted = _SEND_ACCEPT.get(message.msh.value(15) or "AL", {"CA", "CE", "CR"})
    return ack if code in wanted else b""
