"""Drop the broker: HL7 messages keep arriving over MLLP at two `hub worker`s (sharing the
listener's port, on PostgreSQL) while their Redis is killed (SIGKILL, no persistence:
every message it held is lost) and started again empty. After recovery every message
that was acknowledged is in the log exactly once and mapped exactly once, and no job is
left pending, running or dead: the outbox's sweep ran what the broker never delivered.

The Redis is a private one (tests/private_redis.py): the machine's own is never stopped.
Messages are sent one by one, each waiting for its ACK, so "accepted while the broker was
down" is a fact of the sequence, not of timing.
"""

from __future__ import annotations

import json
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.messages.intake import MAP_JOB
from hub.messages.mapping_job import MESSAGE_ID_SYSTEM
from hub.storage.tables import MessageRow, ResourceRow
from tests.integration.test_scale_out import WorkerProcess, oru
from tests.private_redis import PrivateRedis, PrivateRedisError
from tests.reliability.conftest import HubProcess, free_port, job_counts, send, wait_for

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
