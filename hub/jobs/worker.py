"""Runs outbox jobs: a thread in the embedded hub (`hub serve`), or `hub worker` processes
that poll the database or take job ids from a broker (hub.jobs.dispatch: `run_job`).

Handlers form a closed table (kind → handler). A handler does its work in the session it is
given and marks the job done there, so the effect and `done` commit together. A handler that
waits on a network peer is an `OwnTransactions`: it runs outside any transaction and opens
short ones itself, since a transaction open on SQLite holds the one write lock (the MLLP
intake would wait on a slow peer).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from hub.jobs.outbox import LEASE_SECONDS, Job, claim_due, claim_job, mark_failed, release

log = logging.getLogger("hub.jobs")


class JobFailed(Exception):
    """A handler's failure; `retryable=False` sends the job straight to the dead letters."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.retryable = retryable


@dataclass(frozen=True)
class OwnTransactions:
    """A handler run outside the worker's transaction: `run(sessions, job)` opens its own
    and marks the job done (or raises, and the worker records the failure)."""

    run: Callable[[sessionmaker[Session], Job], None]


InTransaction = Callable[[Session, Job], None]
"""A handler run in the worker's transaction (in a savepoint of its own)."""
JobHandler = InTransaction | OwnTransactions


class JobWorker:
    """Claims due jobs and runs their handlers until stopped."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        handlers: dict[str, JobHandler],
        *,
        poll_seconds: float = 0.5,
        lease_seconds: float = LEASE_SECONDS,
        batch_sizes: Mapping[str, int] | None = None,
    ) -> None:
        self.sessions = sessions
        self.batch_sizes = dict(batch_sizes or {})
        """Kinds whose jobs run many to a transaction (one commit for all), and how many."""
        self.handlers = handlers
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """A job was just enqueued: look now rather than at the next poll."""
        self._wake.set()

    def run_once(self, *, overdue_seconds: float = 0.0) -> int:
        """Run the oldest due job, or a batch of due jobs of a batched kind, in one
        transaction (a savepoint each); returns how many ran (0: none was due).

        `overdue_seconds`: only jobs due for at least that long (a broker-fed worker's sweep).
        """
        with self.sessions() as session:
            jobs = claim_due(
                session,
                set(self.handlers),
                self.lease_seconds,
                self.batch_sizes,
                overdue_seconds=overdue_seconds,
            )
            return self._run(session, jobs)

    def run_job(self, job_id: int) -> int:
        """Run this job if it is due and nobody holds it (with more due jobs of its kind if
        the kind is batched), as `run_once` runs what it claims; returns how many ran.

        0 for a job done, dead, leased by another worker or unknown: the broker's duplicate
        or late messages are harmless."""
        with self.sessions() as session:
            jobs = claim_job(
                session, job_id, set(self.handlers), self.lease_seconds, self.batch_sizes
            )
            return self._run(session, jobs)

    def _run(self, session: Session, jobs: list[Job]) -> int:
        """Run claimed jobs: the in-transaction ones in savepoints of `session`, committed
        together; an OwnTransactions one on its own. Failures are recorded on the jobs.

        A partition's jobs run in order (hub.jobs.outbox): after one fails, the batch's
        later jobs of its partition are given back unrun, to wait for its retry."""
        failures: list[tuple[Job, Exception]] = []
        held_back: list[Job] = []
        failed_partitions: set[str] = set()
        for job in jobs:
            if job.partition_key is not None and job.partition_key in failed_partitions:
                held_back.append(job)
                continue
            handler = self.handlers[job.kind]
            if isinstance(handler, OwnTransactions):  # never batched: one job
                session.close()
                try:
                    handler.run(self.sessions, job)
                except Exception as exc:  # noqa: BLE001 - recorded on the job
                    failures.append((job, exc))
                continue
            savepoint = session.begin_nested()
            try:
                handler(session, job)
                savepoint.commit()
            except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
                savepoint.rollback()
                failures.append((job, exc))
                if job.partition_key is not None:
                    failed_partitions.add(job.partition_key)
        try:
            session.commit()
        except Exception as lost:  # noqa: BLE001 - nothing of the batch was kept
            session.rollback()
            failures, held_back = [(job, lost) for job in jobs], []
        for job, error in failures:
            self._record_failure(session, job, error)
        if held_back:
            release(session, held_back)
            session.commit()
        return len(jobs) - len(held_back)

    def _record_failure(self, session: Session, job: Job, exc: Exception) -> None:
        retryable = exc.retryable if isinstance(exc, JobFailed) else True
        reason = str(exc) if isinstance(exc, JobFailed) else type(exc).__name__
        status = mark_failed(session, job, reason, retryable=retryable)
        session.commit()
        log.warning("job %s (%s) failed, now %s: %s", job.job_id, job.kind, status, reason)

    def run_until_idle(self, limit: int = 100_000) -> int:
        """Run due jobs until none is left (tests, batch files); returns how many ran."""
        ran = 0
        while ran < limit and (batch := self.run_once()):
            ran += batch
        return ran

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hub-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while
                log.error("job worker: %s", type(exc).__name__)
                busy = False
            if not busy:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
