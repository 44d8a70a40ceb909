"""Jobs in the database: enqueue inside the caller's transaction, claim with a lease, finish
or retry with exponential backoff, and after `max_attempts` move to the dead letters.

A job is claimed by a conditional UPDATE (status pending → running), so two workers never
run it at once; a worker that dies leaves a lease that runs out, and the job is retried.
On PostgreSQL the candidates are read FOR UPDATE SKIP LOCKED: claimers working at once
(several `hub worker`s) take different rows instead of waiting on (or deadlocking over)
each other's; SQLite has one writer at a time and no such clause.
Jobs must be idempotent: one may run again after a crash between its effect and `done`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, or_, select, update
from sqlalchemy.orm import Session

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


def enqueue(
    session: Session,
    kind: str,
    subject: str,
    *,
    max_attempts: int = 8,
    run_after: datetime | None = None,
) -> JobRow:
    """Record a job in the caller's transaction: it exists only if the cause commits."""
    row = JobRow(**enqueue_values(kind, subject, max_attempts=max_attempts, run_after=run_after))
    session.add(row)
    return row


def enqueue_values(
    kind: str, subject: str, *, max_attempts: int = 8, run_after: datetime | None = None
) -> dict[str, Any]:
    """The column values of a new job (for a Core insert on a hot path)."""
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
    """
    now = utc_now()
    due = _due(now, kinds, overdue_seconds)
    candidates = session.execute(due.limit(8).with_for_update(skip_locked=True)).all()
    if candidates:
        size = (batch_sizes or {}).get(candidates[0].kind, 1)
        if size > 1:
            same_kind = due.where(JobRow.kind == candidates[0].kind).limit(size)
            candidates = session.execute(same_kind.with_for_update(skip_locked=True)).all()
    return _claim(session, now, candidates, lease_seconds, batch_sizes)


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
    broker message delivered twice, late or for a rolled-back job does nothing.
    """
    now = utc_now()
    claimable = _claimable(now)
    query = select(JobRow.job_id, JobRow.kind).where(JobRow.job_id == job_id, claimable)
    if kinds:
        query = query.where(JobRow.kind.in_(kinds))
    first = session.execute(query.with_for_update(skip_locked=True)).first()
    if first is None:
        session.rollback()
        return []
    candidates = [first]
    size = (batch_sizes or {}).get(first.kind, 1)
    if size > 1:
        more = _due(now, {first.kind}, 0.0).where(JobRow.job_id != job_id)
        candidates += session.execute(more.limit(size - 1).with_for_update(skip_locked=True)).all()
    return _claim(session, now, candidates, lease_seconds, batch_sizes)


def _claimable(now: datetime, overdue_seconds: float = 0.0) -> ColumnElement[bool]:
    """Pending and due (for `overdue_seconds` at least), or running on a lease that ran out."""
    return or_(
        (JobRow.status == "pending")
        & (JobRow.run_after <= now - timedelta(seconds=overdue_seconds)),
        (JobRow.status == "running") & (JobRow.lease_until < now),
    )


def _due(now: datetime, kinds: set[str] | None, overdue_seconds: float) -> Select[int, str]:
    """Claimable jobs, oldest due first."""
    due = select(JobRow.job_id, JobRow.kind).where(_claimable(now, overdue_seconds))
    if kinds:
        due = due.where(JobRow.kind.in_(kinds))
    return due.order_by(JobRow.run_after, JobRow.job_id)


def _claim(
    session: Session,
    now: datetime,
    candidates: Sequence[Row[int, str]],
    lease_seconds: float,
    batch_sizes: Mapping[str, int] | None,
) -> list[Job]:
    """Lease the candidates of the first one's kind by conditional UPDATEs (a job another
    worker took meanwhile is skipped), up to the kind's batch size; commit the claim."""
    claimed: list[int] = []
    for job_id, kind in candidates:
        if claimed and kind != candidates[0].kind:
            break
        taken = session.execute(
            update(JobRow)
            .where(JobRow.job_id == job_id, _claimable(now))
            .values(
                status="running",
                attempts=JobRow.attempts + 1,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            claimed.append(job_id)
            if (batch_sizes or {}).get(kind, 1) <= len(claimed):
                break
    if not claimed:
        session.rollback()
        return []
    session.commit()
    rows = session.scalars(select(JobRow).where(JobRow.job_id.in_(claimed))).all()
    jobs = {r.job_id: Job(r.job_id, r.kind, r.subject, r.attempts, r.max_attempts) for r in rows}
    return [jobs[job_id] for job_id in claimed]


def mark_done(session: Session, job: Job) -> None:
    """In the transaction that holds the job's effect: the job is done with it."""
    session.execute(
        update(JobRow)
        .where(JobRow.job_id == job.job_id)
        .values(status="done", lease_until=None, last_error=None, updated_at=utc_now())
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
