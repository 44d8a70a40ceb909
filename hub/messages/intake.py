"""HL7 v2 intake: persist the raw message, then ACK; the mapping runs later as a job.

The order is the promise to the sender: an AA (or CA) leaves only after the message and its
mapping job are committed together. A duplicate (same MSH-3, MSH-4, MSH-10) gets the ACK
that was sent the first time and is not processed again. If the database cannot take the
message, no ACK is sent at all (the connection closes), so the sender sends it again.

Messages arriving together on several connections share one commit (group commit): the
commit, not the parsing, is what limits how many messages a second the log takes. So the
listeners' messages go to one writer thread, which commits whatever has arrived while it
wrote the previous group, with the same four statements whatever the group's size: BEGIN,
one multi-row INSERT … ON CONFLICT DO NOTHING RETURNING (which also tells the duplicates
apart), one INSERT of the mapping jobs, COMMIT. Small messages are parsed and answered on
the event loop while the writer waits for the disk.

Each message gets a correlation id at receipt (hub.logs), stored with it: the receipt line,
the mapping job's lines and the resources' line all carry it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Engine, Table
from sqlalchemy.engine.interfaces import DBAPICursor, Dialect
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import PoolProxiedConnection

from connectors.base import Envelope
from hub.fhir.dates import utc_now
from hub.jobs.outbox import enqueue_values
from hub.logs import correlated, correlation_id, new_correlation_id
from hub.messages.acceptance import rejection
from hub.storage.tables import JobRow, MessageRow
from mappings.hl7v2.ack import build_ack
from mappings.hl7v2.tokenizer import Hl7ParseError, Message, parse_message

log = logging.getLogger("hub.messages")

MAP_JOB = "map-hl7"
MAX_GROUP = 256
INLINE_DECIDE_BYTES = 64 * 1024
"""Messages up to this size are parsed on the event loop; larger ones (embedded documents)
on the writer thread, so that one of them never holds up the other connections."""
WRITER_IDLE_SECONDS = 60.0
"""The writer thread ends, and gives back its connection, after this long without a message."""
# MSH-15 accept acknowledgment type (HL7 table 0155) → the commit ACKs it asks for.
_SEND_ACCEPT = {"AL": {"CA", "CE", "CR"}, "NE": set(), "ER": {"CE", "CR"}, "SU": {"CA"}}

_Key = tuple[str, str, str]
"""(MSH-3, MSH-4, MSH-10) of an inbound message: what makes it a duplicate (HL7 v2 §2.10.1)."""


@dataclass(frozen=True)
class IntakeResult:
    """What became of one received message: the ACK to send (b"" for none), its row in the
    message log, and whether it had been received before (then message_id is the first's)."""

    ack: bytes
    message_id: int
    duplicate: bool = False


@dataclass(frozen=True)
class _Decision:
    """What to store for one received message and what to answer."""

    row: tuple[Any, ...]
    """The message log row, in the order of _COLUMNS."""
    ack: bytes
    """The ACK the log keeps, and that a duplicate gets."""
    answer: bytes
    """The ACK to send now (b"" where enhanced mode asks for none)."""
    job: bool
    partition: str | None
    """The mapping job's partition key (`patient_partition`)."""
    key: _Key | None
    """None when the message has no control id: it cannot be a duplicate of anything."""
    correlation_id: str


_Undecided = tuple[Envelope, str]
"""A large message, parsed on the writer thread, and its correlation id."""
_Pending = tuple["_Decision | _Undecided", "asyncio.Future[bytes]"]


class Hl7Intake:
    """The InboundHandler of every MLLP listener (and of batch files)."""

    def __init__(
        self, sessions: sessionmaker[Session], on_enqueued: Callable[[], None] | None = None
    ) -> None:
        self.sessions = sessions
        self.on_enqueued = on_enqueued
        self._engine: Engine | None = None
        self._sql: _Statements | None = None
        self._inbox: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        """What the listeners have handed over; None asks the writer thread to end."""
        self._writer_lock = threading.Lock()
        self._writer: threading.Thread | None = None

    async def __call__(self, envelope: Envelope) -> bytes:
        """The ACK for one message (b"" for none), once the message is committed.

        Raises what the database raised if the message could not be stored: then no ACK
        may leave, and the listener closes the connection.

        Binds the message's correlation id in the caller's context and leaves it bound, so
        that the listener's own lines about this message (the ACK sent) carry it too; the
        next message on the connection binds its own.
        """
        correlation = new_correlation_id()
        correlation_id.set(correlation)
        item: _Decision | _Undecided = (envelope, correlation)
        if len(envelope.payload) <= INLINE_DECIDE_BYTES:
            item = _decide(envelope, None, correlation)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        with self._writer_lock:
            self._inbox.put((item, answer))
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_groups, name="hl7-intake", daemon=True
                )
                self._writer.start()
        try:
            return await answer
        except Exception as exc:
            log.error(
                "HL7 message received on %s not stored (%s): no ACK sent",
                envelope.channel,
                type(exc).__name__,
            )
            raise

    def close(self) -> None:
        """Let the writer thread commit and answer what it has been handed, then end it
        (releasing its connection). A later message starts a new one."""
        with self._writer_lock:
            writer = self._writer
            if writer is None:
                return
            self._inbox.put(None)
        writer.join()

    def receive(self, envelope: Envelope, *, batch_id: str | None = None) -> IntakeResult:
        """Persist one message and return the ACK to send (b"" when none is to be sent)."""
        return self.receive_many([envelope], batch_id=batch_id)[0]

    def receive_many(
        self, envelopes: list[Envelope], *, batch_id: str | None = None
    ) -> list[IntakeResult]:
        """Persist messages in one transaction; one result (ACK) each, in order."""
        decisions = [_decide(envelope, batch_id, new_correlation_id()) for envelope in envelopes]
        connection = self._connect()
        try:
            results = self._commit(connection, decisions)
        finally:
            connection.close()
        _log_receipts(decisions, results)
        return results

    def _write_groups(self) -> None:
        """The writer thread: takes what has arrived, commits it as one group, answers.

        A thread of its own rather than asyncio.to_thread per group, whose hand-off costs
        as much CPU as the group's inserts; and one connection, for the same reason. It
        ends after WRITER_IDLE_SECONDS without a message, or when close() asks.
        """
        connection: PoolProxiedConnection | None = None
        try:
            while True:
                group, stop = self._next_group()
                if group:
                    outcome: list[IntakeResult] | Exception
                    decisions: list[_Decision] = []
                    try:
                        if connection is None:
                            connection = self._connect()
                        decisions = [
                            i if isinstance(i, _Decision) else _decide(i[0], None, i[1])
                            for i, _ in group
                        ]
                        outcome = self._commit(connection, decisions)
                    except Exception as exc:  # noqa: BLE001 - no commit, so no ACK for any
                        log.error("message log unavailable: %s", type(exc).__name__)
                        if connection is not None:  # it may be broken: the next group opens another
                            connection.invalidate()
                            connection.close()
                            connection = None
                        outcome = exc
                    _answer(group, outcome)
                    if not isinstance(outcome, Exception):
                        _log_receipts(decisions, outcome)
                if stop:
                    return
        finally:
            with self._writer_lock:
                if self._writer is threading.current_thread():
                    self._writer = None
            if connection is not None:
                connection.close()

    def _next_group(self) -> tuple[list[_Pending], bool]:
        """What has arrived, waiting for the first (at most MAX_GROUP); and whether to end."""
        group: list[_Pending] = []
        try:
            first = self._inbox.get(timeout=WRITER_IDLE_SECONDS)
        except queue.Empty:
            with self._writer_lock:
                if self._inbox.empty():
                    self._writer = None  # a message from now on starts a new writer
                    return group, True
            return group, False
        item: _Pending | None = first
        while item is not None:
            group.append(item)
            if len(group) == MAX_GROUP:
                return group, False
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return group, False
        return group, True

    def _connect(self) -> PoolProxiedConnection:
        if self._engine is None:
            with self.sessions() as session:
                bind = session.get_bind()
            if not isinstance(bind, Engine):
                raise TypeError("Hl7Intake needs a sessionmaker bound to an Engine.")
            self._engine, self._sql = bind, _Statements(bind.dialect)
        return self._engine.raw_connection()

    def _commit(
        self, connection: PoolProxiedConnection, decisions: Sequence[_Decision]
    ) -> list[IntakeResult]:
        sql = self._sql
        assert sql is not None, "_connect() comes first"
        cursor = connection.cursor()
        try:
            if sql.begin:
                cursor.execute(sql.begin)
            results = _write(cursor, sql, decisions)
            connection.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection: the cause matters more
                connection.rollback()
            raise
        finally:
            cursor.close()
        if self.on_enqueued and any(
            d.job and not r.duplicate for d, r in zip(decisions, results, strict=True)
        ):
            self.on_enqueued()
        return results


def _log_receipts(decisions: Sequence[_Decision], results: Sequence[IntakeResult]) -> None:
    """One line per message received: stored (or a duplicate), and its ACK; written after
    the ACKs are handed over, so that the lines do not delay them."""
    if log.isEnabledFor(logging.INFO):
        for decision, result in zip(decisions, results, strict=True):
            _log_receipt(decision, result)


def _log_receipt(decision: _Decision, result: IntakeResult) -> None:
    channel, control_id, message_type = (
        decision.row[_CHANNEL],
        decision.row[_CONTROL_ID],
        decision.row[_TYPE],
    )
    ids = {"message_id": result.message_id, "control_id": control_id}
    with correlated(decision.correlation_id):
        if result.duplicate:
            log.info(
                "HL7 message received on %s: duplicate of message %d (control id %s), "
                "first ACK sent again",
                channel,
                result.message_id,
                control_id,
                extra=ids,
            )
        else:
            log.info(
                "HL7 message received on %s: %s control id %s stored as message %d, ACK %s",
                channel,
                message_type or "(unparsed)",
                control_id,
                result.message_id,
                decision.row[_ACK_CODE],
                extra=ids,
            )


def _answer(group: list[_Pending], outcome: list[IntakeResult] | Exception) -> None:
    """Hand each waiting call its ACK (or the failure), on the event loop it waits on."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[bytes], bytes]]] = {}
    for index, (_, future) in enumerate(group):
        ack = b"" if isinstance(outcome, Exception) else outcome[index].ack
        by_loop.setdefault(future.get_loop(), []).append((future, ack))
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, answers, outcome)


def _settle(
    answers: list[tuple[asyncio.Future[bytes], bytes]], outcome: list[IntakeResult] | Exception
) -> None:
    for future, ack in answers:
        if future.done():  # its connection was cancelled meanwhile
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(ack)


# --- the message log, written through the DBAPI connection --------------------------------
#
# SQLAlchemy's Core costs about 100 µs a row and 300 µs a transaction here, more than the
# database's own insert and commit, and this is the one path where that decides the
# throughput: the statements are plain SQL, the same in SQLite (3.35 or later) and
# PostgreSQL, built once from the table definitions, with the dialect's own conversion
# of values (SQLite stores datetimes as text).

_LOG = cast(Table, MessageRow.__table__)
_JOBS = cast(Table, JobRow.__table__)
_COLUMNS = (
    "direction",
    "channel",
    "peer",
    "received_at",
    "status",
    "raw",
    "ack",
    "ack_code",
    "error",
    "duplicates",
    "batch_id",
    "sending_application",
    "sending_facility",
    "control_id",
    "message_type",
    "version",
    "correlation_id",
)
_CHANNEL, _ACK_CODE, _CONTROL_ID, _TYPE = (
    _COLUMNS.index(name) for name in ("channel", "ack_code", "control_id", "message_type")
)
_SENDER_KEY = "sending_application, sending_facility, control_id"
_JOB_COLUMNS = tuple(enqueue_values(MAP_JOB, "").keys())


class _Statements:
    """The intake's SQL for one dialect, and the conversion of values it needs."""

    def __init__(self, dialect: Dialect) -> None:
        marks = {"qmark": "?", "format": "%s", "pyformat": "%s"}
        if dialect.paramstyle not in marks:
            raise TypeError(f"No SQL for the {dialect.paramstyle} parameter style.")
        self.mark = mark = marks[dialect.paramstyle]
        self.row_marks = f"({', '.join([mark] * len(_COLUMNS))})"
        self.begin = "BEGIN IMMEDIATE" if dialect.name == "sqlite" else None
        """SQLite's driver runs without transactions of its own (hub.storage.db), so the
        transaction is opened here as the engine's begin hook would, taking the write lock."""
        self.insert_one = (
            f"INSERT INTO {_LOG.name} ({', '.join(_COLUMNS)}) VALUES {self.row_marks}"
            " RETURNING message_id"
        )
        self.insert_job = (
            f"INSERT INTO {_JOBS.name} ({', '.join(_JOB_COLUMNS)})"
            f" VALUES ({', '.join([mark] * len(_JOB_COLUMNS))})"
        )
        self.count_duplicate = (
            f"UPDATE {_LOG.name} SET duplicates = duplicates + {mark} WHERE message_id = {mark}"
        )
        self._log_converters = _converters(dialect, _LOG, _COLUMNS)
        self._job_converters = _converters(dialect, _JOBS, _JOB_COLUMNS)
        self._insert_new: dict[int, str] = {}

    def insert_new(self, rows: int) -> str:
        """Many rows at once; a duplicate returns no row instead of failing the transaction."""
        sql = self._insert_new.get(rows)
        if sql is None:
            sql = self._insert_new[rows] = (
                f"INSERT INTO {_LOG.name} ({', '.join(_COLUMNS)}) VALUES "
                + ", ".join([self.row_marks] * rows)
                + f" ON CONFLICT (direction, {_SENDER_KEY}) DO NOTHING"
                + f" RETURNING message_id, {_SENDER_KEY}"
            )
        return sql

    def find_earlier(self, keys: int) -> str:
        marks = f"({self.mark}, {self.mark}, {self.mark})"
        return (
            f"SELECT message_id, {_SENDER_KEY}, ack FROM {_LOG.name}"
            f" WHERE direction = 'in' AND ({_SENDER_KEY}) IN ({', '.join([marks] * keys)})"
        )

    def log_row(self, row: tuple[Any, ...]) -> list[Any]:
        values = list(row)
        for index, convert in self._log_converters:
            values[index] = convert(values[index])
        return values

    def job_rows(self, jobs: Sequence[tuple[int, str | None]]) -> list[list[Any]]:
        """A mapping job for each (message id, partition key), all due now."""
        template = list(enqueue_values(MAP_JOB, "").values())
        for index, convert in self._job_converters:
            template[index] = convert(template[index])
        subject, partition = _JOB_COLUMNS.index("subject"), _JOB_COLUMNS.index("partition_key")
        rows = []
        for message_id, partition_key in jobs:
            row = template.copy()
            row[subject], row[partition] = str(message_id), partition_key
            rows.append(row)
        return rows


def _converters(
    dialect: Dialect, table: Table, columns: Sequence[str]
) -> list[tuple[int, Callable[[Any], Any]]]:
    """(position, function) for the columns whose values the dialect converts."""
    found: list[tuple[int, Callable[[Any], Any]]] = []
    for index, name in enumerate(columns):
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            found.append((index, process))
    return found


def _write(
    cursor: DBAPICursor, sql: _Statements, decisions: Sequence[_Decision]
) -> list[IntakeResult]:
    """Store a group in the open transaction; the results in the order of `decisions`."""
    results: dict[int, IntakeResult] = {}
    first_of: dict[_Key, int] = {}
    echoes: list[tuple[int, int]] = []  # (index, index of the same key earlier in the group)
    for index, decision in enumerate(decisions):
        if decision.key is None:  # NULLs never conflict, so it is always new
            cursor.execute(sql.insert_one, sql.log_row(decision.row))
            results[index] = IntakeResult(decision.answer, cursor.fetchall()[0][0])
        elif (first := first_of.setdefault(decision.key, index)) != index:
            echoes.append((index, first))
    stored: dict[_Key, int] = {}
    if first_of:
        params = [value for i in first_of.values() for value in sql.log_row(decisions[i].row)]
        cursor.execute(sql.insert_new(len(first_of)), params)
        stored = {
            (app, facility, control): id_ for id_, app, facility, control in cursor.fetchall()
        }
    earlier = _earlier(cursor, sql, [key for key in first_of if key not in stored])
    for key, index in first_of.items():
        if key in stored:
            results[index] = IntakeResult(decisions[index].answer, stored[key])
        else:
            message_id, ack = earlier[key]
            results[index] = IntakeResult(ack, message_id, duplicate=True)
    for index, first in echoes:
        original = results[first]
        ack = original.ack if original.duplicate else decisions[first].ack
        results[index] = IntakeResult(ack, original.message_id, duplicate=True)
    jobs = [
        (result.message_id, decisions[index].partition)
        for index, result in sorted(results.items())
        if decisions[index].job and not result.duplicate
    ]
    if jobs:
        cursor.executemany(sql.insert_job, sql.job_rows(jobs))
    repeats = Counter(result.message_id for result in results.values() if result.duplicate)
    if repeats:
        cursor.executemany(sql.count_duplicate, [(n, id_) for id_, n in repeats.items()])
    return [results[index] for index in range(len(decisions))]


def _earlier(
    cursor: DBAPICursor, sql: _Statements, keys: list[_Key]
) -> dict[_Key, tuple[int, bytes]]:
    """(message id, ACK sent) of messages stored before, by sender key, in one query."""
    if not keys:
        return {}
    cursor.execute(sql.find_earlier(len(keys)), [part for key in keys for part in key])
    found = {
        (app, facility, control): (message_id, bytes(ack or b""))
        for message_id, app, facility, control, ack in cursor.fetchall()
    }
    if any(key not in found for key in keys):  # the conflict said it exists: it must be seen
        raise LookupError("A conflicting message is missing from the message log.")
    return found


# --- what to store and answer ---------------------------------------------------------------


def _decide(envelope: Envelope, batch_id: str | None, correlation: str) -> _Decision:
    try:
        message = parse_message(envelope.payload)
    except Hl7ParseError as exc:
        ack = build_ack(None, "AR", text=str(exc))
        row = _row(envelope, "rejected", ack, "AR", str(exc), batch_id, _NO_HEADER, correlation)
        return _Decision(row, ack, ack, False, None, None, correlation)
    enhanced = bool(message.msh.field(15) or message.msh.field(16))
    problem = rejection(message)
    if problem is None:
        status, code, error, job = "accepted", ("CA" if enhanced else "AA"), None, True
        ack = build_ack(message, code)
    else:
        code, location = problem
        status, error, job = "rejected", location.text, False
        code = ("CR" if code == "AR" else "CE") if enhanced else code
        ack = build_ack(message, code, text=location.text, errors=(location,))
    application, facility = message.sender
    control_id = message.control_id
    header = (
        application,
        facility,
        control_id or None,
        message.type_name[:32],
        message.version[:16],
    )
    return _Decision(
        _row(envelope, status, ack, code, error, batch_id, header, correlation),
        ack,
        _filtered(message, ack, code, enhanced),
        job,
        patient_partition(message) if job else None,
        (application, facility, control_id) if control_id else None,
        correlation,
    )


_NO_HEADER = (None, None, None, "", "")


def patient_partition(message: Message) -> str:
    """The mapping job's partition key: a hash (no PHI in the job table) of the patient's
    identity, PID-3's first repetition (CX.1 ID number, CX.4 assigning authority), else of
    the sender (MSH-3, MSH-4), so that one sender's unidentified messages stay in order.

    The jobs of one partition are mapped one at a time, in arrival order (hub.jobs.outbox):
    two messages of one patient mapped at once would both create the Patient."""
    pid = message.first("PID")
    identity = pid.repetitions(3)[:1] if pid is not None else []
    if identity:
        components = identity[0].split(message.delimiters.component)
        number = components[0]
        authority = components[3] if len(components) > 3 else ""
        if number:
            return _hash("patient", number, authority)
    return _hash("sender", *message.sender)


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _row(
    envelope: Envelope,
    status: str,
    ack: bytes,
    code: str,
    error: str | None,
    batch_id: str | None,
    header: tuple[str | None, str | None, str | None, str, str],
    correlation: str,
) -> tuple[Any, ...]:
    """The message log row, in the order of _COLUMNS; `header` holds MSH-3, MSH-4, MSH-10,
    MSH-9 and MSH-12."""
    return (
        "in",
        envelope.channel,
        envelope.peer,
        utc_now(),
        status,
        envelope.payload,
        ack,
        code,
        error,
        0,
        batch_id,
        *header,
        correlation,
    )


def _filtered(message: Message, ack: bytes, code: str, enhanced: bool) -> bytes:
    """In enhanced mode MSH-15 says whether a commit ACK is wanted at all."""
    if not enhanced:
        return ack
    wanted = _SEND_ACCEPT.get(message.msh.value(15) or "AL", {"CA", "CE", "CR"})
    return ack if code in wanted else b""
