"""Outbound HL7 v2 over MLLP: queue in the message log, deliver as a job, retry with
backoff, and after `max_attempts` leave the message in the dead letters for replay.

A delivery is confirmed only by the peer's ACK to that message's control id (MSA-2).
A destination can also be the way back to senders (`answers_for`): see `return_channel`.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import DeliveryResult
from connectors.hl7v2_mllp import MllpSender
from hub.fhir.dates import utc_now
from hub.jobs.outbox import Job, enqueue, mark_done, mark_failed
from hub.jobs.worker import JobFailed, OwnTransactions
from hub.storage.tables import MessageRow
from mappings.hl7v2.tokenizer import parse_message

DELIVER_JOB = "deliver-hl7"


class MllpDestination(BaseModel):
    """A peer the hub sends HL7 v2 to (a referrer's interface engine)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    host: str
    port: int = Field(gt=0, lt=65536)
    cafile: Path | None = None
    """Send over TLS, trusting these CAs (the system's when tls is on and this is unset)."""
    tls: bool = False
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    ack_timeout_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    answers_for: list[str] = Field(default_factory=list)
    """The senders this destination is the way back to, each `APPLICATION/FACILITY`: MSH-3
    and MSH-4 of their messages (the namespace ids, compared exactly), written as the message
    log writes a sender (`EHR/ST-MARY`). `*` stands for any application or any facility; a
    bare `APPLICATION` means `APPLICATION/*`. Where several destinations answer for a sender,
    the first one (in configuration order) with the flag in question on carries the message."""
    application_acks: bool = True
    """Send the application ACKs that these senders ask for in MSH-16 (enhanced mode)."""
    order_status_updates: bool = False
    """Send OSU^O51 when a case opened by a referral from these senders changes state."""
    opinions: bool = True
    """Send the finished opinions of the cases these senders referred."""
    opinion_message: Literal["MDM^T02", "ORU^R01"] = "MDM^T02"
    """As a document (MDM^T02) or as the result of the referral order (ORU^R01)."""

    @field_validator("answers_for")
    @classmethod
    def _sender_patterns(cls, patterns: list[str]) -> list[str]:
        normalised = []
        for pattern in patterns:
            parts = [part.strip() for part in pattern.split("/")]
            if len(parts) > 2 or not all(parts):
                raise ValueError(
                    f"'{pattern}' is not a sender: write APPLICATION/FACILITY (MSH-3/MSH-4), "
                    "either part may be '*'"
                )
            normalised.append("/".join(parts))
        return normalised

    def answers(self, application: str | None, facility: str | None) -> bool:
        """Whether this destination is the way back to the sender MSH-3 `application`,
        MSH-4 `facility`."""
        for pattern in self.answers_for:
            wanted_application, _, wanted_facility = pattern.partition("/")
            if wanted_application in ("*", application or "") and (
                wanted_facility in ("", "*", facility or "")
            ):
                return True
        return False


def queue_outbound(session: Session, destination: MllpDestination, payload: bytes) -> int:
    """Log an outbound message and its delivery job in the caller's transaction."""
    message = parse_message(payload)
    row = MessageRow(
        direction="out",
        channel=destination.name,
        peer=f"{destination.host}:{destination.port}",
        received_at=utc_now(),
        status="queued",
        raw=payload,
        duplicates=0,
        sending_application=message.sender[0],
        sending_facility=message.sender[1],
        control_id=message.control_id or None,
        message_type=message.type_name[:32],
        version=message.version[:16],
    )
    session.add(row)
    session.flush()
    enqueue(session, DELIVER_JOB, str(row.message_id), max_attempts=destination.max_attempts)
    return row.message_id


class MllpDeliveries:
    """One MllpSender per destination on one event loop, so connections are reused; the job
    worker's thread calls `deliver` synchronously."""

    def __init__(self, destinations: list[MllpDestination]) -> None:
        self.destinations = {d.name: d for d in destinations}
        self._loop: asyncio.AbstractEventLoop | None = None  # made on the first delivery
        self._senders: dict[str, MllpSender] = {}
        self._lock = threading.Lock()

    def deliver(self, destination_name: str, payload: bytes) -> DeliveryResult:
        destination = self.destinations.get(destination_name)
        if destination is None:
            return DeliveryResult(
                False,
                "unknown-destination",
                f"No MLLP destination '{destination_name}' is configured.",
                retryable=False,
            )
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            sender = self._senders.get(destination_name) or self._sender(destination)
            return self._loop.run_until_complete(sender.send(payload))

    def _sender(self, destination: MllpDestination) -> MllpSender:
        context = None
        if destination.tls or destination.cafile:
            context = ssl.create_default_context(cafile=destination.cafile)
        sender = MllpSender(
            destination.host,
            destination.port,
            tls=context,
            connect_timeout=destination.connect_timeout_seconds,
            ack_timeout=destination.ack_timeout_seconds,
        )
        self._senders[destination.name] = sender
        return sender

    def close(self) -> None:
        with self._lock:
            if self._loop is None:
                return
            for sender in self._senders.values():
                self._loop.run_until_complete(sender.close())
            self._loop.close()
            self._loop = None
            self._senders.clear()


Delivered = Callable[[Session, MessageRow], None]
"""Told of each message the peer accepted, in the transaction that records it."""


def deliver_hl7_job(
    deliveries: MllpDeliveries, on_delivered: Delivered | None = None
) -> OwnTransactions:
    """The `deliver-hl7` job handler, bound to the configured destinations: no transaction
    is open while it waits for the peer's ACK."""

    def deliver(sessions: sessionmaker[Session], job: Job) -> None:
        with sessions() as session:
            row = session.get(MessageRow, int(job.subject))
            if row is None:
                raise JobFailed(f"message {job.subject} is not in the log", retryable=False)
            channel, payload = row.channel, row.raw
        result = deliveries.deliver(channel, payload)
        with sessions() as session:
            row = session.get(MessageRow, int(job.subject))
            assert row is not None  # a logged message is never deleted
            _record_delivery(session, row, job, result)
            if result.accepted and on_delivered is not None:
                on_delivered(session, row)
            session.commit()

    return OwnTransactions(deliver)


def _record_delivery(session: Session, row: MessageRow, job: Job, result: DeliveryResult) -> None:
    row.ack = result.response or None
    row.ack_code = result.code[:2] if result.code in ("AA", "AE", "AR", "CA", "CE", "CR") else None
    if result.accepted:
        row.status, row.error = "delivered", None
        mark_done(session, job)
        return
    row.error = f"attempt {job.attempts}: {result.code} {result.detail}"[:4000]
    status = mark_failed(session, job, row.error, retryable=result.retryable)
    row.status = "dead" if status == "dead" else "queued"
