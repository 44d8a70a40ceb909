"""Outbox jobs dispatched through a Celery broker (Redis or RabbitMQ) to `hub worker`s.

The database stays the source of truth; the broker only says "look now":

- **Publishing.** `JobPublisher.install(sessions)` watches a sessionmaker: the ids of the
  jobs a unit of work inserts are collected at flush and queued once its transaction
  commits (never before: the worker must find the row; a rolled-back job is never
  announced). A thread of the publisher's own sends one `run_job` message per id, so a
  broker that is slow or down never delays the response or the ACK that enqueued the job;
  what cannot be sent is logged and dropped, and the sweep runs it. The HL7 intake writes
  its mapping jobs through the DBAPI, without a session: it calls `nudge()`, which sends
  one `run_due` message, and the worker that takes it runs due jobs until none is left
  (the mapping jobs then still run 25 to a transaction).
- **Consuming.** `worker_app(broker_url, job_worker)`: `run_job(job_id)` claims that job
  by id under the outbox's lease rules (`JobWorker.run_job`), so a message delivered twice,
  late, or for a job another worker holds does nothing. A message is also spent on a job
  held back: a patient's next mapping while an earlier one runs elsewhere. So a worker
  that ran jobs goes on with the due ones until none is left (as `run_due` does), and the
  worker that held the earlier job runs the one held back. Messages are acknowledged after
  the task (acks_late) and one at a time (prefetch 1); a worker killed mid-job leaves its
  message to be redelivered after the broker's visibility timeout, set above the lease.
- **Sweeping.** `Sweeper`: every worker also polls the outbox slowly for jobs overdue by
  a sweep period: messages lost while the broker was down, leases that ran out after a
  kill -9, and retries once their backoff has passed (no message announces those).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction, sessionmaker

from hub.jobs.worker import JobWorker
from hub.storage.tables import JobRow

if TYPE_CHECKING:
    from celery import Celery  # type: ignore[import-untyped]  # no stubs, no py.typed

log = logging.getLogger("hub.jobs")

QUEUE = "hub-jobs"
"""The Celery queue of the hub's job messages."""
RUN_JOB = "hub.run_job"
RUN_DUE = "hub.run_due"
SWEEP_SECONDS = 10.0
"""How often a broker-fed worker sweeps the outbox, and how long a job must have been due
before the sweep takes it (until then its broker message is expected to)."""
PUBLISH_TIMEOUT_SECONDS = 3.0
MAX_UNSENT = 100_000
"""Ids waiting to be sent beyond this are dropped (and left to the sweep)."""

_PENDING_KEY: Final = "hub.jobs.unannounced"
_NUDGE: Final = -1


def celery_app(broker_url: str, *, lease_seconds: float) -> Celery:
    """A Celery app on the hub's broker, configured for at-least-once delivery of ids.

    The visibility timeout (Redis, SQS) is twice the lease: a message is redelivered only
    after its job's lease has run out, when another worker may claim it again.
    """
    from celery import Celery  # only where a broker is configured: it takes a while to import

    app = Celery("hub", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": max(2 * lease_seconds, 60.0)},
        broker_connection_timeout=PUBLISH_TIMEOUT_SECONDS,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # never give up: the sweep works meanwhile
        # A job running when the connection drops finishes: its lease guards it, and the
        # threads pool cannot cancel it anyway. (Celery warns that 6.0 will cancel.)
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


class JobPublisher:
    """Announces committed jobs on the broker, from a thread of its own (see the module)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._unsent: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def install(self, sessions: sessionmaker[Session]) -> None:
        """Announce the jobs enqueued in sessions of this factory once they commit."""
        event.listen(sessions, "after_flush", _collect)
        event.listen(sessions, "after_commit", self._committed)
        event.listen(sessions, "after_soft_rollback", _forget)

    def publish(self, job_ids: list[int]) -> None:
        """Queue these committed jobs' messages; returns at once."""
        for job_id in job_ids:
            self._put(job_id)

    def nudge(self) -> None:
        """Jobs were committed without their ids at hand: a worker should run due jobs."""
        self._put(_NUDGE)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within `timeout`), then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is None:
                return
            self._unsent.put(None)
        thread.join(timeout)

    def _committed(self, session: Session) -> None:
        job_ids = session.info.pop(_PENDING_KEY, None)
        if job_ids:
            self.publish(job_ids)

    def _put(self, item: int) -> None:
        if self._unsent.qsize() >= MAX_UNSENT:
            return  # the broker is away for long: the sweep runs what was not announced
        with self._lock:
            self._unsent.put(item)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send_loop, name="hub-job-publisher", daemon=True
                )
                self._thread.start()

    def _send_loop(self) -> None:
        while True:
            first = self._unsent.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < 1000:
                try:
                    item = self._unsent.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._send(batch)
            if stop:
                return

    def _send(self, batch: list[int]) -> None:
        job_ids = list(dict.fromkeys(item for item in batch if item != _NUDGE))
        messages: list[tuple[str, list[int]]] = [(RUN_JOB, [job_id]) for job_id in job_ids]
        if _NUDGE in batch:
            messages.append((RUN_DUE, []))
        for sent, (name, args) in enumerate(messages):
            try:
                self.app.send_task(
                    name,
                    args=args,
                    queue=QUEUE,
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0, "interval_max": 0.5},
                )
            except Exception as exc:  # noqa: BLE001 - a broker failure never fails the cause
                log.warning(
                    "broker unavailable (%s): %d job message(s) not sent, left to the sweep",
                    type(exc).__name__,
                    len(messages) - sent,
                )
                return


def _collect(session: Session, flush: UOWTransaction) -> None:
    """After a flush: remember the new jobs' ids (assigned by now) until the commit."""
    new = [row.job_id for row in session.new if isinstance(row, JobRow)]
    if new:
        session.info.setdefault(_PENDING_KEY, []).extend(new)


def _forget(session: Session, previous: SessionTransaction) -> None:
    """The transaction rolled back: its jobs are gone. (A savepoint's rollback keeps the
    list: announcing a job that was rolled back with it is harmless, run_job finds none.)"""
    if previous.parent is None:
        session.info.pop(_PENDING_KEY, None)


def worker_app(broker_url: str, job_worker: JobWorker) -> Celery:
    """The Celery app of a `hub worker`: its tasks run `job_worker`'s jobs."""
    app = celery_app(broker_url, lease_seconds=job_worker.lease_seconds)

    @app.task(name=RUN_JOB, shared=False)  # type: ignore[untyped-decorator]
    def run_job(job_id: int) -> int:
        """Run this job unless it is done, dead or held (idempotent); having run any, run
        the due jobs until none is left (see the module: the jobs its run held back)."""
        ran = job_worker.run_job(job_id)
        return ran + job_worker.run_until_idle() if ran else 0

    @app.task(name=RUN_DUE, shared=False)  # type: ignore[untyped-decorator]
    def run_due() -> int:
        """Run due jobs until none is left (several workers share them)."""
        return job_worker.run_until_idle()

    return app


def run_celery_worker(
    app: Celery, *, concurrency: int, hostname: str, log_level: str = "info"
) -> int:
    """Consume the hub's queue until a TERM or INT signal (Celery's warm shutdown); the
    worker's exit code (not 0 after an unrecoverable error, for the supervisor to see).

    The threads pool: the handlers' sessions and engines stay in one process (a fork
    after the engine is made would share its connections), the handlers that wait on a
    network peer do not hold up the others, and SQLite works the same as PostgreSQL.
    """
    worker: Any = app.Worker(
        pool="threads",
        concurrency=concurrency,
        queues=[QUEUE],
        hostname=hostname,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
        loglevel=log_level.upper(),
    )
    worker.start()
    return int(worker.exitcode or 0)


class Sweeper:
    """Runs jobs overdue by `every_seconds`, every `every_seconds`, in a thread (see the
    module: what the broker did not announce, or announced to a worker that died)."""

    def __init__(self, job_worker: JobWorker, every_seconds: float = SWEEP_SECONDS) -> None:
        self.job_worker = job_worker
        self.every_seconds = every_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep(self) -> int:
        """Run the overdue jobs now; how many ran."""
        ran = 0
        while batch := self.job_worker.run_once(overdue_seconds=self.every_seconds):
            ran += batch
        return ran

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="hub-job-sweeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_seconds):
            try:
                if ran := self.sweep():
                    log.info("sweep: %d overdue job(s) run", ran)
            except Exception as exc:  # noqa: BLE001 - the database may be away for a while
                log.error("sweep: %s", type(exc).__name__)
