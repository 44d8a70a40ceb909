"""Scale-out on PostgreSQL with the real Redis as the Celery broker: two `hub worker`
processes consume the job ids the intake and the API's sessions announce; every job runs
exactly once; a message naming a job already done does nothing; two workers running the
listeners share one MLLP port and one DICOM Storage SCP port.

The system Redis on 127.0.0.1:6379 is shared: the test takes a database number nobody
uses (an empty one) and empties it after. Completion is read from the world (jobs done,
the broker's queue and its unacknowledged messages empty), never from elapsed time.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from hub.jobs.dispatch import QUEUE, JobPublisher, celery_app
from hub.jobs.outbox import enqueue
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.storage.db import make_session_factory
from hub.storage.tables import JobRow, MessageRow, ResourceRow
from tests.reliability.conftest import (
    HUB,
    REPO,
    HubProcess,
    envelope,
    free_port,
    job_counts,
    send,
    wait_for,
)

pytestmark = pytest.mark.integration

SYSTEM_REDIS = ("127.0.0.1", 6379)
ORUS = 20
PATIENTS = 4
NO_SWEEP = "600"  # the workers' sweep stays out of the way: the broker must do the work


def oru(tag: str, number: int) -> bytes:
    """A CBC result with two OBX: two Observations when mapped once. Of PATIENTS patients,
    taken in turn: each has several messages, which the two workers would map at once if
    the partitions did not keep them apart (each would create the Patient)."""
    return (
        f"MSH|^~\\&|LAB|ST-MARY|HUB|SOH|20261101120000||ORU^R01^ORU_R01|{tag}-{number}|P|2.5.1\r"
        f"PID|1||MRN-SO{number % PATIENTS}^^^ST-MARY^MR||Scaleout^Sam||20160101|M\r"
        f"OBR|1|PL-{tag}{number}|FI-{tag}{number}|58410-2^CBC panel^LN|||20261101080000\r"
        "OBX|1|NM|718-7^Hemoglobin^LN||9.1|g/dL^^UCUM|11.5-15.5|L|||F\r"
        "OBX|2|NM|6690-2^WBC^LN||1.2|10*3/uL^^UCUM|4.5-13.5|L|||F\r"
    ).encode()


class WorkerProcess(HubProcess):
    """`hub worker --sweep-seconds …` (HubProcess runs the bare command)."""

    def __init__(self, env: dict[str, str], log_path: Path, sweep_seconds: str) -> None:
        super().__init__("worker", env, log_path)
        self.sweep_seconds = sweep_seconds

    def start(self) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(HUB), "worker", "--sweep-seconds", self.sweep_seconds],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        return self


@pytest.fixture
def broker_url() -> Iterator[str]:
    """The system Redis, on a database number of the test's own, emptied after."""
    for number in range(15, 0, -1):
        client = redis.Redis(*SYSTEM_REDIS, db=number)
        if client.dbsize() == 0 and client.set("hub-test-owner", "1", nx=True):
            break
    else:
        pytest.fail("no empty Redis database on 127.0.0.1:6379", pytrace=False)
    yield f"redis://{SYSTEM_REDIS[0]}:{SYSTEM_REDIS[1]}/{number}"
    client.flushdb()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[HubProcess]]:
    started: list[HubProcess] = []
    yield started
    for process in started:
        process.stop()


def start_worker(
    started: list[HubProcess],
    tmp_path: Path,
    name: str,
    env: dict[str, str],
    sweep_seconds: str = NO_SWEEP,
) -> HubProcess:
    process = WorkerProcess(env, tmp_path / f"{name}.log", sweep_seconds)
    started.append(process)
    return process.start()


def broker_drained(url: str) -> bool:
    """No message waiting, none delivered and unacknowledged (acks come after the task)."""
    client = redis.Redis.from_url(url)
    return client.llen(QUEUE) == 0 and client.hlen("unacked") == 0


def every_job_done(engine: Engine) -> bool:
    return all(status == "done" for _, status in job_counts(engine))


def patients(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).where(ResourceRow.res_type == "Patient")) or 0


def observations(engine: Engine) -> int:
    with Session(engine) as session:
        return (
            session.scalar(select(func.count()).where(ResourceRow.res_type == "Observation")) or 0
        )


def test_two_workers_run_each_announced_job_exactly_once(
    new_database: Callable[[str], str],
    broker_url: str,
    workers: list[HubProcess],
    tmp_path: Path,
) -> None:
    url = new_database("postgresql")
    env = {
        "HUB_DATABASE_URL": url,
        "HUB_BROKER_URL": broker_url,
        "HUB_DICOM_STORE_DIR": str(tmp_path / "dicom"),
    }
    first = start_worker(workers, tmp_path, "w1", env)
    second = start_worker(workers, tmp_path, "w2", env)

    from hub.storage.db import make_engine

    engine = make_engine(url)
    try:
        sessions = make_session_factory(engine)
        publisher = JobPublisher(celery_app(broker_url, lease_seconds=120))
        publisher.install(sessions)
        # 1. The intake's mapping jobs (its DBAPI path): announced by a nudge (run_due).
        intake = Hl7Intake(sessions, on_enqueued=publisher.nudge)
        intake.receive_many([envelope(oru("NUDGE", n)) for n in range(ORUS)])
        # 2. Jobs enqueued in a session (the API's and the handlers' path): by id (run_job).
        stored = Hl7Intake(sessions).receive_many([envelope(oru("ID", n)) for n in range(ORUS)])
        with sessions() as session:  # their intake jobs replaced by jobs enqueued here
            keys = dict(
                session.execute(
                    delete(JobRow)
                    .where(JobRow.subject.in_([str(result.message_id) for result in stored]))
                    .returning(JobRow.subject, JobRow.partition_key)
                ).all()
            )
            for result in stored:
                subject = str(result.message_id)
                enqueue(session, MAP_JOB, subject, partition_key=keys[subject])
            session.commit()

        wait_for(lambda: every_job_done(engine), "every job done", every=0.1)
        assert first.alive and second.alive
        with Session(engine) as session:
            attempts = session.execute(select(JobRow.job_id, JobRow.attempts)).all()
            statuses = set(session.scalars(select(MessageRow.status)))
            control_ids = list(session.scalars(select(MessageRow.control_id)))
            errors = set(
                session.scalars(select(MessageRow.error).where(MessageRow.error.is_not(None)))
            )
        assert len(attempts) == 2 * ORUS and {n for _, n in attempts} == {1}  # claimed once
        assert statuses == {"mapped"}, errors
        assert len(control_ids) == len(set(control_ids)) == 2 * ORUS
        assert observations(engine) == 2 * 2 * ORUS  # two OBX each, none mapped twice
        assert patients(engine) == PATIENTS  # one per MRN: never created twice at once

        # 3. Messages naming jobs already done (a redelivery, a duplicate publish): nothing.
        publisher.publish([job_id for job_id, _ in attempts[:5]])
        publisher.nudge()
        publisher.close()
        wait_for(lambda: broker_drained(broker_url), "the duplicate messages consumed")
        with Session(engine) as session:
            assert set(session.scalars(select(JobRow.attempts))) == {1}
        assert observations(engine) == 2 * 2 * ORUS
    finally:
        engine.dispose()


def test_two_workers_running_the_listeners_share_their_ports(
    new_database: Callable[[str], str],
    broker_url: str,
    workers: list[HubProcess],
    tmp_path: Path,
) -> None:
    url = new_database("postgresql")
    mllp_port, scp_port = free_port(), free_port()
    store = tmp_path / "dicom"
    env = {
        "HUB_DATABASE_URL": url,
        "HUB_BROKER_URL": broker_url,
        "HUB_WORKER_RUNS_LISTENERS": "true",
        "HUB_DICOM_STORE_DIR": str(store),
        "HUB_MLLP_LISTENERS": json.dumps([{"name": "st-mary", "port": mllp_port}]),
        "HUB_DICOM_SCP": json.dumps({"ae_title": "HUB", "port": scp_port}),
    }
    first = start_worker(workers, tmp_path, "w1", env)
    second = start_worker(workers, tmp_path, "w2", env)
    owners = store / "accepted"
    # Each SCP keeps its accepted instances in a folder of its own: two, both live. A
    # worker that could not bind a port (no SO_REUSEPORT) would have exited instead; the
    # MLLP listener is bound before the SCP.
    wait_for(
        lambda: len(list(owners.glob("owner-*"))) == 2 or not (first.alive and second.alive),
        "both workers' listeners bound to the same ports",
    )
    assert first.alive and second.alive, first.log_tail() + second.log_tail()

    acks = [send(mllp_port, oru("SHARED", n)) for n in range(20)]
    assert all(b"MSA|AA|SHARED-" in ack for ack in acks)

    first.stop()  # the other still serves the port on its own
    assert second.alive
    later = [send(mllp_port, oru("LATER", n)) for n in range(5)]
    assert all(b"MSA|AA|LATER-" in ack for ack in later)
    assert len(list(owners.glob("owner-*"))) == 1  # the stopped one gave its folder up

    from hub.storage.db import make_engine

    engine = make_engine(url)
    try:
        wait_for(lambda: every_job_done(engine), "every message mapped", every=0.1)
        with Session(engine) as session:
            control_ids = list(session.scalars(select(MessageRow.control_id)))
            statuses = set(session.scalars(select(MessageRow.status)))
        assert sorted(control_ids) == sorted(
            [f"SHARED-{n}" for n in range(20)] + [f"LATER-{n}" for n in range(5)]
        )
        assert statuses == {"mapped"}
        assert observations(engine) == 2 * 25
        assert patients(engine) == PATIENTS
    finally:
        engine.dispose()
