"""Pruning the message log by a retention policy, and giving the space back.

The log keeps every HL7 v2 message raw (patient data) with its ACK and conversion report,
in the message's row; its mapping or delivery job is a row of the outbox. A message older
than the policy goes with all of that, unless it is still at work: an inbound message not
yet mapped (accepted), an outbound one not delivered (queued, dead: a dead letter waits for
a replay), or any message with a pending or running job. What it produced (the FHIR
resources) stays: it belongs to the patient's record, not to the log.

Each chunk of PRUNE_CHUNK messages is deleted in a transaction of its own, with an
AuditEvent (a deletion of patient data: which patients' messages), so that the intake, which
needs the write lock on SQLite, waits for one short transaction at a time.

Then the space is freed. SQLite: VACUUM rewrites the file without the free pages
(PRAGMA incremental_vacuum where auto_vacuum is incremental), and a WAL checkpoint
truncates the write-ahead log; the file shrinks. PostgreSQL: plain VACUUM by default, which
takes no exclusive lock (the intake goes on) and makes the space reusable by new rows, but
gives back to the OS only the empty pages at the end of the table; `full` runs VACUUM FULL,
which rewrites the tables and returns the space to the OS but locks them while it runs (the
intake waits): for `hub messages prune --full` in a quiet hour, not for the periodic prune.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from hub.fhir.dates import instant, utc_now
from hub.messages.intake import MAP_JOB
from hub.messages.outbound import DELIVER_JOB
from hub.security.audit import audit_event, write_audit_event
from hub.security.principal import Principal
from hub.settings import Settings
from hub.storage.repository import ResourceRepository
from hub.storage.tables import JobRow, MessageRow

log = logging.getLogger("hub.messages.retention")

PRUNE_CHUNK = 500
"""Messages deleted per transaction."""
PRUNE_FIRST_SECONDS = 600.0
"""The running hub's first prune, this long after it starts (not during start-up)."""
PRUNE_EVERY_SECONDS = 24 * 3600.0
"""Then once a day: the policy is in days."""
FINISHED = {"in": ("mapped", "failed", "rejected"), "out": ("delivered",)}
"""The statuses of messages the log is done with, by direction."""
MESSAGE_JOBS = (MAP_JOB, DELIVER_JOB)
PRUNED_TABLES = (MessageRow.__tablename__, JobRow.__tablename__)
RETENTION = Principal(
    subject="hub-message-retention",
    client_id="hub-message-retention",
    roles=frozenset({"admin"}),
    scopes=(),
)
"""Who prunes, in the audit trail: the hub itself, applying its retention setting."""


@dataclass(frozen=True)
class PruneResult:
    """What a prune deleted, and the database's size (bytes) before and after."""

    messages: int
    jobs: int
    bytes_before: int
    bytes_after: int

    @property
    def bytes_freed(self) -> int:
        return self.bytes_before - self.bytes_after


def prune_messages(
    sessions: sessionmaker[Session],
    older_than_days: int,
    *,
    now: datetime | None = None,
    full: bool = False,
) -> PruneResult:
    """Delete the finished messages received more than `older_than_days` ago, their done
    jobs, with an AuditEvent each chunk; then vacuum (VACUUM FULL on PostgreSQL if `full`).
    """
    engine = _engine(sessions)
    before = database_bytes(engine)
    cutoff = (now or utc_now()) - timedelta(days=older_than_days)
    messages = jobs = 0
    while chunk := _prune_chunk(sessions, cutoff, older_than_days):
        messages += chunk
    while chunk := _prune_jobs(sessions, cutoff):
        jobs += chunk
    if messages or jobs:
        vacuum(engine, full=full)
    result = PruneResult(messages, jobs, before, database_bytes(engine))
    log.info(
        "message log pruned: %d messages and %d jobs older than %d days deleted, %d bytes freed",
        result.messages,
        result.jobs,
        older_than_days,
        result.bytes_freed,
    )
    return result


def start_pruning(settings: Settings, sessions: sessionmaker[Session]) -> asyncio.Task[None] | None:
    """The running hub's periodic prune (`message_retention_days`), as a task on the running
    loop; None when the policy keeps every message. Cancel the task to stop it."""
    days = settings.message_retention_days
    if days is None:
        return None
    return asyncio.create_task(_prune_periodically(sessions, days), name="message-retention")


async def _prune_periodically(sessions: sessionmaker[Session], days: int) -> None:
    await asyncio.sleep(PRUNE_FIRST_SECONDS)
    while True:
        try:
            await asyncio.to_thread(prune_messages, sessions, days)
        except Exception as exc:  # noqa: BLE001 - the next day's run tries again
            log.error("message log prune failed: %s", type(exc).__name__)
        await asyncio.sleep(PRUNE_EVERY_SECONDS)


def _prune_chunk(sessions: sessionmaker[Session], cutoff: datetime, days: int) -> int:
    """Delete up to PRUNE_CHUNK prunable messages, and audit it, in one transaction."""
    with sessions.begin() as session:
        busy = select(JobRow.subject).where(
            JobRow.status.in_(("pending", "running")), JobRow.kind.in_(MESSAGE_JOBS)
        )
        at_work = {int(subject) for subject in session.scalars(busy) if subject.isdigit()}
        finished = or_(
            *(
                (MessageRow.direction == direction) & MessageRow.status.in_(statuses)
                for direction, statuses in FINISHED.items()
            )
        )
        statement = (
            select(MessageRow.message_id, MessageRow.produced)
            .where(MessageRow.received_at < cutoff, finished)
            .order_by(MessageRow.message_id)
            .limit(PRUNE_CHUNK)
        )
        if at_work:
            statement = statement.where(MessageRow.message_id.not_in(at_work))
        rows = session.execute(statement).all()
        if not rows:
            return 0
        ids = [message_id for message_id, _ in rows]
        session.execute(delete(MessageRow).where(MessageRow.message_id.in_(ids)))
        patients = sorted(
            {
                ref
                for _, produced in rows
                for ref in json.loads(produced or "[]")
                if ref.startswith("Patient/")
            }
        )
        event = audit_event(
            RETENTION,
            "delete",
            [],
            patients=patients,
            description=(
                f"message log retention ({days} days): {len(ids)} messages received before "
                f"{instant(cutoff)} deleted (ids {ids[0]}-{ids[-1]})"
            ),
        )
        write_audit_event(ResourceRepository(session), event)
        return len(ids)


def _prune_jobs(sessions: sessionmaker[Session], cutoff: datetime) -> int:
    """Delete up to PRUNE_CHUNK done mapping and delivery jobs finished before `cutoff`:
    those of the pruned messages, found by the index on (status, updated_at)."""
    with sessions.begin() as session:
        ids = list(
            session.scalars(
                select(JobRow.job_id)
                .where(
                    JobRow.status == "done",
                    JobRow.updated_at < cutoff,
                    JobRow.kind.in_(MESSAGE_JOBS),
                )
                .limit(PRUNE_CHUNK)
            )
        )
        if ids:
            session.execute(delete(JobRow).where(JobRow.job_id.in_(ids)))
        return len(ids)


def vacuum(engine: Engine, *, full: bool = False) -> None:
    """Give the space of deleted rows back (see the module's docstring), outside any
    transaction, as both databases require."""
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA auto_vacuum")
            mode = cursor.fetchone()
            incremental = mode is not None and mode[0] == 2
            cursor.execute("PRAGMA incremental_vacuum" if incremental else "VACUUM")
            cursor.fetchall()
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.close()
        finally:
            raw.close()
        return
    command = "VACUUM (FULL, ANALYZE)" if full else "VACUUM (ANALYZE)"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for table in PRUNED_TABLES:
            connection.execute(text(f"{command} {table}"))


def database_bytes(engine: Engine) -> int:
    """SQLite: the size of the database file and its write-ahead log. PostgreSQL: the
    size of the pruned tables with their indexes and TOAST (pg_total_relation_size)."""
    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if not path or path == ":memory:":
            return 0
        return sum(os.path.getsize(name) for name in (path, f"{path}-wal") if os.path.exists(name))
    with engine.connect() as connection:
        return sum(
            int(connection.scalar(text("SELECT pg_total_relation_size(:t)"), {"t": table}) or 0)
            for table in PRUNED_TABLES
        )


def _engine(sessions: sessionmaker[Session]) -> Engine:
    with sessions() as session:
        bind = session.get_bind()
    if not isinstance(bind, Engine):
        raise TypeError("Pruning needs a sessionmaker bound to an Engine.")
    return bind
