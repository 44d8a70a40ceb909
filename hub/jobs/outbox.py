"""Jobs in the database: enqueue inside the caller's transaction, claim with a lease, finish
or retry with exponential backoff, and after `max_attempts` move to the dead letters.

A job is claimed by a conditional UPDATE (status pending → running), so two workers never
run it at once; a worker that dies leaves a lease that runs out, and the job is retried.
On PostgreSQL claims take turns (an advisory lock, `_Claim`) and read their candidates
FOR UPDATE SKIP LOCKED, passing over a row a job's run is still writing; SQLite has one
writer at a time and no such clause.
Jobs given a partition key (the HL7 mapping: one per patient) run one at a time and in
job id order within their partition, partitions side by side (`_Claim`).
Jobs must be idempotent: one may run again after a crash between its effect and `done`.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from hub.fhir.dates import utc_now
from hub.storage.tables import JobRow

BASE_DELAY_SECONDS = 2.0
MAX_DELAY_SECONDS = 600.0
LEASE_SECONDS = 120


@dataclass(frozen=True)
class Job:
    job_id: int
    kind: str
    subject: str
    attempts: int
    max_attempts: int
    partition_key: str | None = None


def enqueue(
    session: Session,
    kind: str,
    subject: str,
    *,
    max_attempts: int = 8,
    run_after: datetime | None = None,
    partition_key: str | None = None,
) -> JobRow:
    """Record a job in the caller's transaction: it exists only if the cause commits."""
    row = JobRow(
        **enqueue_values(
            kind,
            subject,
            max_attempts=max_attempts,
            run_after=run_after,
            partition_key=partition_key,
        )
    )
    session.add(row)
    return row


def enqueue_values(
    kind: str,
    subject: str,
    *,
    max_attempts: int = 8,
    run_after: datetime | None = None,
    partition_key: str | None = None,
) -> dict[str, Any]:
    """The column values of a new job (for a Core insert on a hot path).

    `partition_key`: the jobs of one kind and key run one at a time, in job id order."""
    now = utc_now()
    return {
        "kind": kind,
        "subject": subject,
        "status": "pending",
        "attempts": 0,
        "max_attempts": max_attempts,
        "run_after": run_after or now,
        "created_at": now,
        "updated_at": now,
        "partition_key": partition_key,
    }


def claim_due(
    session: Session,
    kinds: set[str] | None = None,
    lease_seconds: float = LEASE_SECONDS,
    batch_sizes: Mapping[str, int] | None = None,
    *,
    overdue_seconds: float = 0.0,
) -> list[Job]:
    """Take the oldest due job (or one whose lease ran out), and, if its kind has a batch
    size, more due jobs of that kind up to it; commits the claim. [] if none is due.

    The lease outlives any run of a job; if the worker dies, the jobs are claimed again when
    it runs out. `overdue_seconds` > 0 takes only jobs due for at least that long: the
    sweep of a broker-fed worker, which leaves fresh jobs to their broker messages.
    A partitioned job is taken only as its partition's next (`_Claim`).
    """
    claim = _Claim(session, lease_seconds, batch_sizes)
    due = claim.due(kinds, overdue_seconds)
    candidates = claim.read(due.limit(8))
    if candidates:
        size = claim.size(candidates[0].kind)
        if size > 1:
            candidates = claim.read(due.where(JobRow.kind == candidates[0].kind).limit(size))
    claim.lease(candidates)
    claim.fill(overdue_seconds)
    return claim.commit()


def claim_job(
    session: Session,
    job_id: int,
    kinds: set[str] | None = None,
    lease_seconds: float = LEASE_SECONDS,
    batch_sizes: Mapping[str, int] | None = None,
) -> list[Job]:
    """Take this job if it is due (as `claim_due` would), and, if its kind has a batch size,
    more due jobs of that kind up to it; commits the claim.

    [] when the job is done, dead, not yet due, leased by another worker or unknown: a
    broker message delivered twice, late or for a rolled-back job does nothing. A due job
    that must wait for its partition's earlier jobs is not taken; due jobs of its kind
    are, as `claim_due` takes them, so that the message still moves its kind's queue on.
    """
    claim = _Claim(session, lease_seconds, batch_sizes)
    query = select(JobRow.job_id, JobRow.kind, JobRow.partition_key).where(
        JobRow.job_id == job_id, _claimable(claim.now)
    )
    if kinds:
        query = query.where(JobRow.kind.in_(kinds))
    first = claim.read(query)
    if not first:
        session.rollback()
        return []
    kind, candidates = first[0].kind, first
    if first[0].partition_key is not None:  # only as its partition's next
        candidates = claim.read(query.where(claim.partition_free()))
    if claim.size(kind) > len(candidates):
        more = claim.due({kind}, 0.0).where(JobRow.job_id != job_id)
        candidates += claim.read(more.limit(claim.size(kind) - len(candidates)))
    claim.lease(candidates)
    claim.fill(0.0)
    return claim.commit()


_CLAIM_LOCK = zlib.crc32(b"hub.jobs:partitioned-claims")
"""The PostgreSQL advisory lock that every claim holds until it commits."""

_Candidate = Row[int, str, str | None]
_Candidates = Select[int, str, str | None]


class _Claim:
    """One claim transaction: reads candidates, leases them, commits.

    Partitions. A job with a `partition_key` is claimable only as the next of its partition
    (same kind and key): no job of the partition is running on a live lease, and none older
    (by job id) is pending or running. So a partition's jobs run one at a time and in job id
    order (arrival order), while other partitions run side by side: the guarantee the
    mapping needs (two messages of one patient mapped at once would both create the
    Patient; mapped out of order, an older result would overwrite a newer one). An older
    job waiting out a retry's backoff holds its partition's later jobs back; a dead one
    does not; a killed worker's job frees its partition when its lease runs out (it is
    then the partition's next, and is taken again first). One claim may take several jobs
    of a partition (`fill`): they run in that order in the one batch transaction.

    That test reads other rows than those it locks, so two claimers must not make it at
    once: on PostgreSQL every claim takes a transaction-scoped advisory lock before it
    reads (under READ COMMITTED each statement then sees every claim committed before);
    claims, milliseconds long, take turns, the runs do not. SQLite's transactions take the
    write lock at BEGIN, one at a time already. Taking turns also means a claim never skips
    a job because another claim has it locked and may leave it: a job a claim reads and
    does not take is one a broker message may have named, and that message would have
    been spent on nothing.
    """

    def __init__(
        self, session: Session, lease_seconds: float, batch_sizes: Mapping[str, int] | None
    ) -> None:
        self.session = session
        self.now = utc_now()
        self.lease_until = self.now + timedelta(seconds=lease_seconds)
        self.batch_sizes = batch_sizes or {}
        if session.get_bind().dialect.name == "postgresql":
            session.execute(select(func.pg_advisory_xact_lock(_CLAIM_LOCK)))
        self.taken: list[int] = []
        self.partitions: set[str] = set()
        self.kind = ""

    def size(self, kind: str) -> int:
        return self.batch_sizes.get(kind, 1)

    def due(self, kinds: Collection[str] | None, overdue_seconds: float) -> _Candidates:
        """Claimable jobs that are their partition's next (or have none), oldest due first."""
        due = select(JobRow.job_id, JobRow.kind, JobRow.partition_key).where(
            _claimable(self.now, overdue_seconds), self.partition_free()
        )
        if kinds:
            due = due.where(JobRow.kind.in_(kinds))
        return due.order_by(JobRow.run_after, JobRow.job_id)

    def partition_free(self) -> ColumnElement[bool]:
        """No partition, or no other job of it running on a live lease or older and
        unfinished; the jobs this claim took do not count (the fill's next ones follow)."""
        other = aliased(JobRow)
        blocking = select(other.job_id).where(
            other.kind == JobRow.kind,
            other.partition_key == JobRow.partition_key,
            or_(
                (other.status == "running") & (other.lease_until >= self.now),
                (other.job_id < JobRow.job_id) & other.status.in_(("pending", "running")),
            ),
        )
        if self.taken:
            blocking = blocking.where(other.job_id.not_in(self.taken))
        return JobRow.partition_key.is_(None) | ~blocking.exists()

    def read(self, query: _Candidates) -> list[_Candidate]:
        """The rows of `query`, locked (skipping rows a job's run holds: a job it is
        marking done, or one whose lease ran out while its worker still finishes)."""
        return list(self.session.execute(query.with_for_update(skip_locked=True)).all())

    def lease(self, candidates: Sequence[_Candidate]) -> None:
        """Lease the candidates of the first one's kind by conditional UPDATEs (a job
        another worker took meanwhile is skipped), up to the kind's batch size."""
        for job_id, kind, partition_key in candidates:
            if self.taken and (kind != self.kind or len(self.taken) >= self.size(kind)):
                break
            taken = self.session.execute(
                update(JobRow)
                .where(JobRow.job_id == job_id, _claimable(self.now))
                .values(
                    status="running",
                    attempts=JobRow.attempts + 1,
                    lease_until=self.lease_until,
                    updated_at=self.now,
                )
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                self.kind = kind
                self.taken.append(job_id)
                if partition_key is not None:
                    self.partitions.add(partition_key)

    def fill(self, overdue_seconds: float) -> None:
        """Fill the batch with the next jobs of the partitions taken, one round each: a
        partition's jobs join in job id order, and so run in it."""
        while self.partitions and len(self.taken) < self.size(self.kind):
            before = len(self.taken)
            due = self.due({self.kind}, overdue_seconds).where(
                JobRow.partition_key.in_(self.partitions), JobRow.job_id.not_in(self.taken)
            )
            self.lease(self.read(due.limit(self.size(self.kind) - before)))
            if len(self.taken) == before:
                return

    def commit(self) -> list[Job]:
        """Commit the leases; the jobs taken, in the order they are to run."""
        if not self.taken:
            self.session.rollback()
            return []
        self.session.commit()
        rows = self.session.scalars(select(JobRow).where(JobRow.job_id.in_(self.taken))).all()
        jobs = {
            r.job_id: Job(r.job_id, r.kind, r.subject, r.attempts, r.max_attempts, r.partition_key)
            for r in rows
        }
        return [jobs[job_id] for job_id in self.taken]


def _claimable(now: datetime, overdue_seconds: float = 0.0) -> ColumnElement[bool]:
    """Pending and due (for `overdue_seconds` at least), or running on a lease that ran out."""
    return or_(
        (JobRow.status == "pending")
        & (JobRow.run_after <= now - timedelta(seconds=overdue_seconds)),
        (JobRow.status == "running") & (JobRow.lease_until < now),
    )


def mark_done(session: Session, job: Job) -> None:
    """In the transaction that holds the job's effect: the job is done with it."""
    session.execute(
        update(JobRow)
        .where(JobRow.job_id == job.job_id)
        .values(status="done", lease_until=None, last_error=None, updated_at=utc_now())
    )


def release(session: Session, jobs: Sequence[Job]) -> None:
    """Give claimed jobs back unrun: pending again, the attempt not counted (a batch's
    later jobs of a partition whose earlier job failed: they wait for its retry)."""
    session.execute(
        update(JobRow)
        .where(JobRow.job_id.in_([job.job_id for job in jobs]), JobRow.status == "running")
        .values(
            status="pending", attempts=JobRow.attempts - 1, lease_until=None, updated_at=utc_now()
        )
    )


def mark_failed(session: Session, job: Job, error: str, *, retryable: bool = True) -> str:
    """Schedule the next attempt with backoff, or move the job to the dead letters.

    Returns the new status (pending or dead).
    """
    now = utc_now()
    dead = not retryable or job.attempts >= job.max_attempts
    delay = min(BASE_DELAY_SECONDS * 2 ** max(job.attempts - 1, 0), MAX_DELAY_SECONDS)
    status = "dead" if dead else "pending"
    session.execute(
        update(JobRow)
        .where(JobRow.job_id == job.job_id)
        .values(
            status=status,
            lease_until=None,
            last_error=error[:2000],
            updated_at=now,
            run_after=now + timedelta(seconds=delay * random.uniform(0.5, 1.0)),
        )
    )
    return status


def replay(session: Session, job_id: int) -> bool:
    """Put a dead (or finished) job back in the queue with fresh attempts."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.job_id == job_id, JobRow.status.in_(("dead", "done")))
        .values(
            status="pending", attempts=0, run_after=utc_now(), last_error=None, updated_at=utc_now()
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def dead_letters(session: Session, limit: int = 100) -> list[JobRow]:
    return list(
        session.scalars(
            select(JobRow)
            .where(JobRow.status == "dead")
            .order_by(JobRow.updated_at.desc())
            .limit(limit)
        )
    )
