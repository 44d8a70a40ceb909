"""Runs outbox jobs: a thread in the embedded hub (`hub serve`), or `hub worker` processes.

Handlers form a closed table (kind → handler). A handler does its work in the session it is
given and marks the job done there, so the effect and `done` commit together.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from hub.jobs.outbox import LEASE_SECONDS, Job, claim_next, mark_failed

log = logging.getLogger("hub.jobs")


class JobFailed(Exception):
    """A handler's failure; `retryable=False` sends the job straight to the dead letters."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.retryable = retryable


JobHandler = Callable[[Session, Job], None]


class JobWorker:
    """Claims due jobs and runs their handlers until stopped."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        handlers: dict[str, JobHandler],
        *,
        poll_seconds: float = 0.5,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.sessions = sessions
        self.handlers = handlers
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        """A job was just enqueued: look now rather than at the next poll."""
        self._wake.set()

    def run_once(self) -> bool:
        """Run one due job if there is one; True if one ran."""
        with self.sessions() as session:
            job = claim_next(session, set(self.handlers), self.lease_seconds)
            if job is None:
                return False
            try:
                self.handlers[job.kind](session, job)
                session.commit()
            except Exception as exc:  # noqa: BLE001 - every failure is recorded on the job
                session.rollback()
                retryable = exc.retryable if isinstance(exc, JobFailed) else True
                reason = str(exc) if isinstance(exc, JobFailed) else type(exc).__name__
                status = mark_failed(session, job, reason, retryable=retryable)
                session.commit()
                log.warning(
                    "job %s (%s) failed, now %s: %s",
                    job.job_id,
                    job.kind,
                    status,
                    reason if isinstance(exc, JobFailed) else type(exc).__name__,
                )
            return True

    def run_until_idle(self, limit: int = 100_000) -> int:
        """Run due jobs until none is left (tests, batch files); returns how many ran."""
        ran = 0
        while ran < limit and self.run_once():
            ran += 1
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
