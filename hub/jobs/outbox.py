"""Jobs in the database: enqueue inside the caller's transaction, claim with a lease, finish
or retry with exponential backoff, and after `max_attempts` move to the dead letters.

A job is claimed by a conditional UPDATE (status pending → running), so two workers never
run it at once; a worker that dies leaves a lease that runs out, and the job is retried.
Jobs must be idempotent: one may run again after a crash between its effect and `done`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
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
) -> list[Job]:
    """Take the oldest due job (or one whose lease ran out), and, if its kind has a batch
    size, more due jobs of that kind up to it; commits the claim. [] if none is due.

    The lease outlives any run of a job; if the worker dies, the jobs are claimed again when
    it runs out.
    """
    now = utc_now()
    claimable = or_(
        (JobRow.status == "pending") & (JobRow.run_after <= now),
        (JobRow.status == "running") & (JobRow.lease_until < now),
    )
    due = select(JobRow.job_id, JobRow.kind).where(claimable)
    if kinds:
        due = due.where(JobRow.kind.in_(kinds))
    due = due.order_by(JobRow.run_after, JobRow.job_id)
    candidates = session.execute(due.limit(8)).all()
    if candidates:
        size = (batch_sizes or {}).get(candidates[0].kind, 1)
        if size > 1:
            same_kind = due.where(JobRow.kind == candidates[0].kind).limit(size)
            candidates = session.execute(same_kind).all()
    claimed: list[int] = []
    for job_id, kind in candidates:
        if claimed and kind != candidates[0].kind:
            break
        taken = session.execute(
            update(JobRow)
            .where(JobRow.job_id == job_id, claimable)
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
