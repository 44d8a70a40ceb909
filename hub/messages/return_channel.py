"""The return channel: what the hub sends back, on its own initiative, to the system an HL7 v2
message came from.

- The application ACK of an inbound message whose MSH-16 asks for one (enhanced mode, HL7
  v2.5 §2.9.3), once the map-hl7 job has processed it: AA when it was mapped, AE with an ERR
  saying why when it failed. Queued in the mapping job's transaction. (Not for the messages
  of a batch file: a batch is answered by its batch report.)
- OSU^O51 order status updates when a case opened by an HL7 v2 referral moves, where the
  referrer asked for them (`order_status`). Queued in the transaction of the move.

The way back is configuration: the first MLLP destination (in configuration order) whose
`answers_for` names the message's sender (MSH-3/MSH-4) and whose flag for that kind of message
(`application_acks`, `order_status_updates`) is on. A message that asked for an application
ACK the hub has no way back for gets a note in the message log (its `error` text, shown by
`GET /admin/messages/{id}`), and a warning in the log.

Wiring (`hub.runtime`): `bind_sessions` on the API's sessionmaker, so case moves made through
the API reach `case_moved`; `mapping_handler` around the map-hl7 job handler.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker

from hub.jobs.outbox import Job
from hub.jobs.worker import InTransaction
from hub.messages.order_status import referral_of, referral_origin, state_changed, status_update
from hub.messages.outbound import MllpDestination, queue_outbound
from hub.storage.repository import StoredResource
from hub.storage.tables import MessageRow
from hub.workflow.case_events import add_case_listener
from mappings.hl7v2.ack import ErrorLocation, build_ack
from mappings.hl7v2.outbound import OutboundError
from mappings.hl7v2.tokenizer import Delimiters, Hl7ParseError, Message, parse_message

log = logging.getLogger("hub.messages")

LISTENER_NAME = "return-channel"
Flag = Literal["application_acks", "order_status_updates"]
# MSH-16 application acknowledgment type (HL7 table 0155) → the outcomes (mapped or not) it
# asks an application ACK for. Enhanced mode with MSH-16 empty reads as AL, the way the
# intake reads an empty MSH-15.
_ACK_WHEN: dict[str, frozenset[bool]] = {
    "AL": frozenset({True, False}),
    "ER": frozenset({False}),
    "SU": frozenset({True}),
    "NE": frozenset(),
}
APPLICATION_ERROR = "207"  # HL7 table 0357: application internal error (the mapping failed)
_ERROR_TEXT_LIMIT = 250
# Case moves whose referral's message is being mapped in this session: its Provenance, the
# link to the sender, is written after the case opens, so they are told once the job is done.
_PENDING_MOVES = "hub.return_channel.pending_moves"


@dataclass(frozen=True)
class Route:
    """Where a message back to one sender goes, or why nowhere (`problem`)."""

    destination: MllpDestination | None
    problem: str = ""


def wants_application_ack(message: Message, mapped: bool) -> bool:
    """Whether `message` asked for an application ACK for this outcome (enhanced mode only:
    in original mode the ACK sent on receipt was the only one)."""
    msh = message.msh
    if not (msh.field(15) or msh.field(16)):
        return False
    return mapped in _ACK_WHEN.get(msh.value(16) or "AL", _ACK_WHEN["AL"])


def application_ack(message: Message, error: str | None = None) -> bytes:
    """The application ACK of `message`: AA, or AE with an ERR (207, the reason) for `error`.

    MSH-3/4 are the original MSH-5/6 and MSH-5/6 the original MSH-3/4, MSH-9 ACK^<trigger>^ACK,
    MSH-10 a new control id, MSA-2 the original MSH-10.
    """
    if error is None:
        ack = build_ack(message, "AA")
    else:
        reason = error.splitlines()[0][:_ERROR_TEXT_LIMIT] if error.strip() else "Not processed"
        problem = ErrorLocation(APPLICATION_ERROR, reason)
        ack = build_ack(message, "AE", text=reason, errors=(problem,))
    return _commit_acknowledged(ack, message.delimiters)


def _commit_acknowledged(ack: bytes, delimiters: Delimiters) -> bytes:
    """In enhanced mode an application ACK is a message of its own that the original sender
    commit-acknowledges (HL7 v2.5 §2.9.3.2): MSH-15 AL asks for the ACK our sender waits for,
    MSH-16 NE for nothing more, so ACKs never answer ACKs in a loop."""
    header, separator, rest = ack.partition(b"\r")
    field = delimiters.field.encode()
    fields = header.split(field)  # fields[n] is MSH-(n + 1): MSH-1 is the separator itself
    fields += [b""] * (16 - len(fields))
    fields[14], fields[15] = b"AL", b"NE"
    return field.join(fields) + separator + rest


class ReturnChannel:
    """Sends application ACKs and order status updates back to the configured destinations."""

    def __init__(self, destinations: Sequence[MllpDestination]) -> None:
        self.destinations = list(destinations)
        self._status_updates = any(
            d.order_status_updates and d.answers_for for d in self.destinations
        )

    def route(self, application: str | None, facility: str | None, flag: Flag) -> Route:
        """The destination for a message of kind `flag` back to sender `application/facility`."""
        sender = "/".join(p for p in (application, facility) if p) or "(no MSH-3/MSH-4)"
        answering = [d for d in self.destinations if d.answers(application, facility)]
        for destination in answering:
            if getattr(destination, flag):
                return Route(destination)
        if answering:
            names = ", ".join(f"'{d.name}'" for d in answering)
            return Route(None, f"mllp_destinations {names} answer for {sender} with {flag} off")
        return Route(None, f"no mllp_destinations entry answers for {sender} (answers_for)")

    # -- wiring --------------------------------------------------------------------------
    def bind(self, info: MutableMapping[str, Any]) -> None:
        """Listen to case moves in sessions with this `info` (a session's or a sessionmaker's)."""
        add_case_listener(info, LISTENER_NAME, self)

    def bind_sessions(self, sessions: sessionmaker[Session]) -> None:
        """Listen to case moves in every session `sessions` makes from now on."""
        info: dict[str, Any] = dict(sessions.kw.get("info") or {})
        self.bind(info)
        sessions.configure(info=info)

    def mapping_handler(self, handler: InTransaction) -> InTransaction:
        """The map-hl7 job `handler`, followed in its transaction by what goes back: the
        application ACK, and the state of any case the message opened."""

        def map_and_answer(session: Session, job: Job) -> None:
            self.bind(session.info)
            session.info[_PENDING_MOVES] = []
            try:
                handler(session, job)
                row = session.get(MessageRow, int(job.subject))
                if row is not None and row.status in ("mapped", "failed"):
                    self.after_mapping(session, row)
            finally:
                session.info.pop(_PENDING_MOVES, None)

        return map_and_answer

    # -- what goes back ------------------------------------------------------------------
    def after_mapping(self, session: Session, row: MessageRow) -> None:
        """`row` was just mapped or failed: queue its application ACK (or note why none can
        go), then the moves of the cases it opened."""
        self.acknowledge(session, row)
        pending: list[StoredResource] = session.info.get(_PENDING_MOVES) or []
        if row.status == "mapped":
            for task in pending:
                self._report(session, task, defer=False)
        pending.clear()

    def acknowledge(self, session: Session, row: MessageRow) -> int | None:
        """Queue the application ACK `row`'s message asked for; its outbound log id, or None
        when none was asked for or there is no way back (then noted on `row`)."""
        if row.batch_id is not None:
            return None  # a batch file is answered as a batch, by its report (v2.5 §2.10.3)
        try:
            message = parse_message(row.raw)
        except Hl7ParseError:
            return None  # never accepted, so never mapped: nothing was promised
        mapped = row.status == "mapped"
        if not wants_application_ack(message, mapped):
            return None
        route = self.route(row.sending_application, row.sending_facility, "application_acks")
        if route.destination is None:
            _note(row, f"No application ACK sent (MSH-16 asked for one): {route.problem}.")
            log.warning("message %s: no return route for its application ACK", row.message_id)
            return None
        payload = application_ack(message, None if mapped else (row.error or ""))
        return queue_outbound(session, route.destination, payload)

    def case_moved(self, session: Session, task: StoredResource, old: StoredResource) -> None:
        """The case listener: an OSU^O51 to the referrer of an HL7 v2 case that asked for it."""
        if self._status_updates and state_changed(task, old):
            self._report(session, task, defer=True)

    def _report(self, session: Session, task: StoredResource, *, defer: bool) -> None:
        referral_id = referral_of(task)
        if referral_id is None:
            return
        origin = referral_origin(session, referral_id)
        if origin is None:
            pending = session.info.get(_PENDING_MOVES)
            if defer and pending is not None:
                pending.append(task)
            return
        route = self.route(
            origin.sending_application, origin.sending_facility, "order_status_updates"
        )
        if route.destination is None:
            return  # the referrer did not ask for status updates
        try:
            payload = status_update(session, origin, task)
        except OutboundError as exc:
            # The move stands: a status update that cannot be expressed never refuses it.
            log.warning("case %s: no OSU^O51 sent: %s", task.resource_id, exc)
            return
        queue_outbound(session, route.destination, payload)


def _note(row: MessageRow, text: str) -> None:
    row.error = "\n".join(part for part in (row.error, text) if part)[:4000]
