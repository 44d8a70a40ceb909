"""HL7 v2 intake: persist the raw message, then ACK; the mapping runs later as a job.

The order is the promise to the sender: an AA (or CA) leaves only after the message and its
mapping job are committed together. A duplicate (same MSH-3, MSH-4, MSH-10) gets the ACK
that was sent the first time and is not processed again. If the database cannot take the
message, no ACK is sent at all (the connection closes), so the sender sends it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Envelope
from hub.fhir.dates import utc_now
from hub.jobs.outbox import enqueue
from hub.messages.acceptance import rejection
from hub.storage.tables import MessageRow
from mappings.hl7v2.ack import build_ack
from mappings.hl7v2.tokenizer import Hl7ParseError, Message, parse_message

log = logging.getLogger("hub.messages")

MAP_JOB = "map-hl7"
# MSH-15 accept acknowledgment type (HL7 table 0155) → send a commit ACK when...
_SEND_ACCEPT = {"AL": {"CA", "CE", "CR"}, "NE": set(), "ER": {"CE", "CR"}, "SU": {"CA"}}


@dataclass(frozen=True)
class IntakeResult:
    ack: bytes
    message_id: int | None
    duplicate: bool = False


class Hl7Intake:
    """The InboundHandler of every MLLP listener (and of batch files)."""

    def __init__(
        self, sessions: sessionmaker[Session], on_enqueued: Callable[[], None] | None = None
    ) -> None:
        self.sessions = sessions
        self.on_enqueued = on_enqueued

    async def __call__(self, envelope: Envelope) -> bytes:
        result = await asyncio.to_thread(self.receive, envelope)
        return result.ack

    def receive(self, envelope: Envelope, *, batch_id: str | None = None) -> IntakeResult:
        """Persist `envelope` and return the ACK to send (b"" when none is to be sent)."""
        try:
            message = parse_message(envelope.payload)
        except Hl7ParseError as exc:
            ack = build_ack(None, "AR", text=str(exc))
            row_id = self._store(envelope, None, "rejected", ack, "AR", str(exc), batch_id)
            return IntakeResult(ack, row_id)
        enhanced = bool(message.msh.field(15) or message.msh.field(16))
        problem = rejection(message)
        if problem is not None:
            code, location = problem
            code = ("CR" if code == "AR" else "CE") if enhanced else code
            ack = build_ack(message, code, text=location.text, errors=(location,))
            try:
                row_id = self._store(
                    envelope, message, "rejected", ack, code, location.text, batch_id
                )
            except IntegrityError:
                return self._duplicate(message)
            return IntakeResult(self._filtered(message, ack, code, enhanced), row_id)
        code = "CA" if enhanced else "AA"
        ack = build_ack(message, code)
        try:
            row_id = self._store(
                envelope, message, "accepted", ack, code, None, batch_id, job=MAP_JOB
            )
        except IntegrityError:
            return self._duplicate(message)
        if self.on_enqueued:
            self.on_enqueued()
        return IntakeResult(self._filtered(message, ack, code, enhanced), row_id)

    def _store(
        self,
        envelope: Envelope,
        message: Message | None,
        status: str,
        ack: bytes,
        code: str,
        error: str | None,
        batch_id: str | None,
        job: str | None = None,
    ) -> int:
        with self.sessions.begin() as session:
            row = MessageRow(
                direction="in",
                channel=envelope.channel,
                peer=envelope.peer,
                received_at=utc_now(),
                status=status,
                raw=envelope.payload,
                ack=ack,
                ack_code=code,
                error=error,
                duplicates=0,
                batch_id=batch_id,
                sending_application=message.sender[0] if message else None,
                sending_facility=message.sender[1] if message else None,
                control_id=(message.control_id or None) if message else None,
                message_type=message.type_name[:32] if message else "",
                version=message.version[:16] if message else "",
            )
            session.add(row)
            session.flush()
            if job:
                enqueue(session, job, str(row.message_id))
            return row.message_id

    def _duplicate(self, message: Message) -> IntakeResult:
        application, facility = message.sender
        with self.sessions.begin() as session:
            row = session.scalar(
                select(MessageRow).where(
                    MessageRow.direction == "in",
                    MessageRow.sending_application == application,
                    MessageRow.sending_facility == facility,
                    MessageRow.control_id == message.control_id,
                )
            )
            assert row is not None  # the unique index said it exists
            session.execute(
                update(MessageRow)
                .where(MessageRow.message_id == row.message_id)
                .values(duplicates=MessageRow.duplicates + 1)
            )
            log.info("duplicate of message %s re-acknowledged", row.message_id)
            return IntakeResult(row.ack or b"", row.message_id, duplicate=True)

    @staticmethod
    def _filtered(message: Message, ack: bytes, code: str, enhanced: bool) -> bytes:
        """In enhanced mode MSH-15 says whether a commit ACK is wanted at all."""
        if not enhanced:
            return ack
        wanted = _SEND_ACCEPT.get(message.msh.value(15) or "AL", {"CA", "CE", "CR"})
        return ack if code in wanted else b""
