"""The broker side of the outbox (hub.jobs.dispatch), on both backends: job ids are
announced only once their transaction commits, a broker failure never fails the commit,
and a job claimed by id runs once however many messages name it.

The broker is a recording stand-in here (our own publishing logic is under test); the
real Redis is in tests/integration/test_scale_out.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from hub.fhir.dates import utc_now
from hub.jobs.dispatch import RUN_DUE, RUN_JOB, JobPublisher, Sweeper, worker_app
from hub.jobs.outbox import Job, claim_due, claim_job, enqueue, mark_done
from hub.jobs.worker import JobWorker, OwnTransactions
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import JobRow


class RecordingBroker:
    """Stands in for a Celery app: records what `send_task` was given, or fails."""

    def __init__(self, *, down: bool = False) -> None:
        self.down = down
        self.sent: list[tuple[str, list[int]]] = []

    def send_task(self, name: str, *, args: list[int], **_: Any) -> None:
        if self.down:
            raise ConnectionRefusedError("broker down")
        self.sent.append((name, list(args)))


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def published(broker: RecordingBroker, publisher: JobPublisher) -> list[tuple[str, list[int]]]:
    publisher.close()  # sends what is queued
    return broker.sent


class WatchedPublisher(JobPublisher):
    """Records, as they happen, the ids handed to `publish` by the session hooks."""

    def __init__(self, broker: RecordingBroker) -> None:
        super().__init__(broker)
        self.announced: list[list[int]] = []

    def publish(self, job_ids: list[int]) -> None:
        self.announced.append(list(job_ids))
        super().publish(job_ids)


def test_job_ids_are_published_only_after_their_transaction_commits(
    sessions: sessionmaker[Session],
) -> None:
    broker = RecordingBroker()
    publisher = WatchedPublisher(broker)
    publisher.install(sessions)
    with sessions() as session:
        first = enqueue(session, "demo", "a")
        second = enqueue(session, "demo", "b")
        session.flush()
        assert first.job_id and publisher.announced == []  # flushed, not committed: silent
        session.commit()
        assert publisher.announced == [[first.job_id, second.job_id]]
    assert published(broker, publisher) == [
        (RUN_JOB, [first.job_id]),
        (RUN_JOB, [second.job_id]),
    ]


def test_a_rolled_back_job_is_never_announced(sessions: sessionmaker[Session]) -> None:
    broker = RecordingBroker()
    publisher = JobPublisher(broker)
    publisher.install(sessions)
    with sessions() as session:
        enqueue(session, "demo", "gone")
        session.flush()
        session.rollback()
        kept = enqueue(session, "demo", "kept")
        session.commit()
    assert published(broker, publisher) == [(RUN_JOB, [kept.job_id])]


def test_a_broker_that_is_down_fails_neither_the_commit_nor_the_job(
    sessions: sessionmaker[Session],
) -> None:
    publisher = JobPublisher(RecordingBroker(down=True))
    publisher.install(sessions)
    with sessions() as session:
        row = enqueue(session, "demo", "a")
        session.commit()
    publisher.close()
    with sessions() as session:
        assert session.get(JobRow, row.job_id) is not None  # the sweep will find it


def test_nudges_send_run_due_messages_at_most_one_each() -> None:
    broker = RecordingBroker()
    publisher = JobPublisher(broker)
    for _ in range(3):
        publisher.nudge()
    sent = published(broker, publisher)
    assert 1 <= len(sent) <= 3  # nudges queued together are sent as one
    assert all(message == (RUN_DUE, []) for message in sent)


def counting_worker(sessions: sessionmaker[Session], ran: list[str]) -> JobWorker:
    def handler(session: Session, job: Job) -> None:
        ran.append(job.subject)
        mark_done(session, job)

    return JobWorker(sessions, {"demo": handler, "batched": handler}, batch_sizes={"batched": 3})


def test_a_job_claimed_by_id_runs_once_however_often_it_is_named(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        row = enqueue(session, "demo", "once")
        session.commit()
    job_id = row.job_id
    ran: list[str] = []
    worker = counting_worker(sessions, ran)
    assert worker.run_job(job_id) == 1
    assert worker.run_job(job_id) == 0  # redelivered: already done
    assert worker.run_job(job_id + 1000) == 0  # unknown (a rolled-back job's message)
    assert ran == ["once"]


def test_a_job_leased_by_another_worker_is_left_to_it_until_its_lease_runs_out(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        row = enqueue(session, "demo", "held")
        session.commit()
    job_id = row.job_id
    with sessions() as session:
        (held,) = claim_job(session, job_id, lease_seconds=60)
    ran: list[str] = []
    worker = counting_worker(sessions, ran)
    assert worker.run_job(job_id) == 0
    with sessions() as session:  # the holder was killed: its lease ran out
        session.execute(
            update(JobRow)
            .where(JobRow.job_id == held.job_id)
            .values(lease_until=utc_now() - timedelta(seconds=1))
        )
        session.commit()
    assert worker.run_job(job_id) == 1
    assert ran == ["held"]


def test_a_job_not_yet_due_is_not_run_early_by_its_message(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        row = enqueue(session, "demo", "later", run_after=utc_now() + timedelta(minutes=5))
        session.commit()
    assert counting_worker(sessions, []).run_job(row.job_id) == 0


def test_a_batched_kind_claimed_by_id_takes_due_jobs_of_its_kind_along(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        rows = [enqueue(session, "batched", f"m{n}") for n in range(5)]
        session.commit()
    ids = [row.job_id for row in rows]
    ran: list[str] = []
    worker = counting_worker(sessions, ran)
    assert worker.run_job(ids[4]) == 3
    assert ran[0] == "m4"
    assert sum(worker.run_job(job_id) for job_id in ids) == 2  # the rest, once each
    assert sorted(ran) == [f"m{n}" for n in range(5)]


def test_a_message_spent_on_a_job_held_back_leaves_it_to_the_worker_of_the_one_before(
    sessions: sessionmaker[Session],
) -> None:
    """One patient's two mappings: the second's message arrives while the first runs, and
    is spent on nothing (the partition holds the second back). The worker that ran the
    first runs the second after it, with no message and no sweep."""
    with sessions() as session:
        first, second = (enqueue(session, "own", name, partition_key="MRN-1") for name in "ab")
        session.commit()
    ran: list[str] = []
    spent: list[int] = []

    def run(own_sessions: sessionmaker[Session], job: Job) -> None:
        if job.subject == "a":
            spent.append(run_job(second.job_id))  # another worker thread takes the message
        ran.append(job.subject)
        with own_sessions.begin() as session:
            mark_done(session, job)

    job_worker = JobWorker(sessions, {"own": OwnTransactions(run)})
    run_job = worker_app("redis://127.0.0.1:9/0", job_worker).tasks[RUN_JOB]  # never sent to
    assert run_job(first.job_id) == 2
    assert spent == [0] and ran == ["a", "b"]


def test_the_sweep_leaves_fresh_jobs_to_their_messages_and_runs_overdue_ones(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        enqueue(session, "demo", "fresh")
        enqueue(session, "demo", "lost", run_after=utc_now() - timedelta(minutes=5))
        session.commit()
    ran: list[str] = []
    assert Sweeper(counting_worker(sessions, ran), every_seconds=60).sweep() == 1
    assert ran == ["lost"]
    with sessions() as session:
        assert claim_due(session, {"demo"}, overdue_seconds=60) == []
        statuses = dict(session.execute(select(JobRow.subject, JobRow.status)).all())
    assert statuses == {"fresh": "pending", "lost": "done"}


FAILING_WORKER = """
import sys
from celery import bootsteps
from hub.jobs.dispatch import run_celery_worker, worker_app
from hub.jobs.worker import JobWorker
from hub.storage.db import make_engine, make_session_factory

class Broken(bootsteps.StartStopStep):
    def start(self, worker):
        raise RuntimeError("a step that cannot start")

app = worker_app("memory://", JobWorker(make_session_factory(make_engine("sqlite://")), {}))
app.steps["worker"].add(Broken)
sys.exit(100 + run_celery_worker(app, concurrency=1, hostname="broken@test"))
"""


def test_a_worker_that_fails_unrecoverably_returns_a_failing_exit_code() -> None:
    # In a process of its own: Celery's worker installs signal handlers in the main thread.
    finished = subprocess.run(
        [sys.executable, "-c", FAILING_WORKER],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "Unrecoverable error" in finished.stderr, finished.stderr[-2000:]
    assert finished.returncode == 101, finished.stderr[-2000:]
