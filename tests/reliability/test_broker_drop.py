"""Drop the broker: HL7 messages keep arriving over MLLP at two `hub worker`s (sharing the
listener's port, on PostgreSQL) while their Redis is killed (SIGKILL, no persistence:
every message it held is lost) and started again empty. After recovery every message
that was acknowledged is in the log exactly once and mapped exactly once, and no job is
left pending, running or dead: the outbox's sweep ran what the broker never delivered.
And a worker whose broker drops while a job runs goes on consuming once it is back.

The Redis is a private one (tests/private_redis.py): the machine's own is never stopped.
Messages are sent one by one, each waiting for its ACK, so "accepted while the broker was
down" is a fact of the sequence, not of timing.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.app import trace
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.jobs.dispatch import QUEUE, RUN_JOB, worker_app
from hub.jobs.outbox import Job, enqueue, mark_done
from hub.jobs.worker import JobWorker
from hub.messages.intake import MAP_JOB
from hub.messages.mapping_job import MESSAGE_ID_SYSTEM
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import MessageRow, ResourceRow
from tests.integration.test_scale_out import WorkerProcess, oru
from tests.private_redis import PrivateRedis, PrivateRedisError
from tests.reliability.conftest import (
    GUARD_SECONDS,
    HubProcess,
    free_port,
    job_counts,
    send,
    wait_for,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

PER_PHASE = 8
SWEEP = "1"  # seconds: what the broker lost is run soon after


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateRedis]:
    try:
        server = PrivateRedis(tmp_path)
        server.start()
    except PrivateRedisError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.kill()


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def mapped_once(engine: Engine) -> tuple[Counter[str], Counter[str], int]:
    """(control ids in the log, messages a Provenance says were mapped, Observations)."""
    with Session(engine) as session:
        controls = Counter(session.scalars(select(MessageRow.control_id)))
        provenance = [
            json.loads(content)
            for content in session.scalars(
                select(ResourceRow.content).where(ResourceRow.res_type == "Provenance")
            )
        ]
        observations = session.scalar(
            select(func.count()).where(ResourceRow.res_type == "Observation")
        )
    sources = Counter(
        entity["what"]["identifier"]["value"]
        for p in provenance
        for entity in p.get("entity", [])
        if entity.get("what", {}).get("identifier", {}).get("system") == MESSAGE_ID_SYSTEM
    )
    return controls, sources, observations or 0


def test_messages_accepted_while_the_broker_is_down_are_mapped_once(
    new_database: Callable[[str], str],
    engine_for: Callable[[str], Engine],
    hub_processes: list[HubProcess],
    broker: PrivateRedis,
    tmp_path: Path,
) -> None:
    url = new_database("postgresql")
    engine = engine_for(url)
    port = free_port()
    env = {
        "HUB_DATABASE_URL": url,
        "HUB_BROKER_URL": broker.url,
        "HUB_WORKER_RUNS_LISTENERS": "true",
        "HUB_DICOM_STORE_DIR": str(tmp_path / "dicom"),
        "HUB_MLLP_LISTENERS": json.dumps([{"name": "st-mary", "port": port}]),
    }
    first = WorkerProcess(env, tmp_path / "w1.log", SWEEP)
    second = WorkerProcess(env, tmp_path / "w2.log", SWEEP)
    hub_processes += [first, second]
    first.start()
    second.start()
    wait_for(lambda: listening(port) or not first.alive, "a worker listening")

    acknowledged: list[str] = []

    def phase(tag: str) -> None:
        for number in range(PER_PHASE):
            ack = send(port, oru(tag, number))
            assert f"MSA|AA|{tag}-{number}".encode() in ack, ack
            acknowledged.append(f"{tag}-{number}")

    phase("UP")
    broker.kill()  # SIGKILL: the messages it held are gone
    phase("DOWN")  # the intake still commits and ACKs; the announcements fail
    broker.start()  # empty, on the same port
    phase("BACK")

    wait_for(lambda: set(job_counts(engine)) == {(MAP_JOB, "done")}, "every job done")
    assert first.alive and second.alive, first.log_tail() + second.log_tail()
    controls, sources, observations = mapped_once(engine)
    assert controls == Counter(acknowledged)  # every ACKed message logged exactly once
    with Session(engine) as session:
        statuses = Counter(session.scalars(select(MessageRow.status)))
    assert statuses == {"mapped": len(acknowledged)}
    assert len(sources) == len(acknowledged) and set(sources.values()) == {1}  # mapped once
    assert observations == 2 * len(acknowledged)  # two OBX each, none twice


def test_a_worker_whose_broker_drops_while_a_job_runs_goes_on_consuming(
    new_database: Callable[[str], str], broker: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """The consumer recovers from the lost connection holding the running job's message
    unacknowledged (acks_late). Celery 5.7.0 ended the worker there ("Unrecoverable
    error", an AttributeError closing the collected connection), and with it a `hub
    worker`'s listeners: hence the pin below 5.7 in pyproject.toml."""
    engine = make_engine(new_database("sqlite"))
    sessions = make_session_factory(engine)
    running, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def handler(session: Session, job: Job) -> None:
        if job.subject == "held":
            running.set()
            release.wait(GUARD_SECONDS)
        ran.append(job.subject)
        mark_done(session, job)

    def announce(subject: str) -> None:
        with sessions() as session:
            row = enqueue(session, "demo", subject)
            session.commit()
            job_id = row.job_id
        app.send_task(RUN_JOB, args=[job_id], queue=QUEUE)

    app = worker_app(broker.url, JobWorker(sessions, {"demo": handler}))
    # What `hub worker`'s app.Worker does first, short of the signal handlers a thread
    # cannot install: its tasks are looked up in this app, not in Celery's default one.
    trace.setup_worker_optimizations(app)
    consumer = app.WorkController(
        pool="threads",
        concurrency=2,
        queues=[QUEUE],
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    thread = threading.Thread(target=consumer.start, name="celery-consumer", daemon=True)
    thread.start()
    try:
        announce("held")
        assert running.wait(GUARD_SECONDS), "the first job never started"
        broker.kill()  # the running job's message is delivered and not yet acknowledged
        wait_for(
            lambda: any("Connection to broker lost" in m for m in caplog.messages),
            "the consumer seeing the broker go",
        )
        release.set()
        broker.start()
        announce("after")  # only the broker names it: this test runs no sweep
        wait_for(lambda: "after" in ran or not thread.is_alive(), "the next job run")
        assert thread.is_alive(), "the worker ended when its broker dropped"
        assert ran == ["held", "after"]
    finally:
        release.set()
        consumer.stop(in_sighandler=False)
        broker.kill()  # ends the consumer's blocking read, which the stop does not wake
        thread.join(GUARD_SECONDS)
        trace.reset_worker_optimizations(app)
        app.close()
        engine.dispose()
