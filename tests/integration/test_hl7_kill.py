"""Kill -9 the hub while a sender streams 1,000 messages; after a restart, every message the
hub ACKed is in the log once and is mapped exactly once.

On SQLite, the embedded default; on PostgreSQL the same promise is held under faults by
tests/reliability (a `hub serve` streamed to across database restarts, `hub worker`s
killed mid-batch)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from connectors.hl7v2_mllp import MllpSender
from hub.app import create_app
from hub.messages.mapping_job import MESSAGE_ID_SYSTEM
from hub.storage.db import make_engine
from hub.storage.tables import MessageRow, ResourceRow
from tests.backends import sqlite_only

HUB = Path(sys.executable).with_name("hub")
TOTAL = 1000
KILL_AFTER = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def oru(number: int) -> bytes:
    return (
        f"MSH|^~\\&|LAB|ST-MARY|HUB|SOH|20261101120000||ORU^R01^ORU_R01|K-{number}|P|2.5.1\r"
        "PID|1||MRN-KILL^^^ST-MARY^MR||Testchild^Robin||20170302|F\r"
        f"OBR|1|PL-{number}|FI-{number}|58410-2^CBC panel^LN|||20261101080000\r"
        "OBX|1|NM|718-7^Hemoglobin^LN||9.1|g/dL^^UCUM|11.5-15.5|L|||F\r"
        "OBX|2|NM|6690-2^WBC^LN||1.2|10*3/uL^^UCUM|4.5-13.5|L|||F\r"
    ).encode()


class Hub:
    """`hub serve` with an MLLP listener, as its own process."""

    def __init__(self, database_url: str, tmp_path: Path, signing_key_file: Path) -> None:
        self.mllp_port = free_port()
        self.env = {
            **os.environ,
            "HUB_DATABASE_URL": database_url,
            "HUB_PORT": str(free_port()),
            "HUB_SIGNING_KEY_FILE": str(signing_key_file),
            "HUB_JOB_LEASE_SECONDS": "3",
            "HUB_MLLP_LISTENERS": json.dumps([{"name": "lab", "port": self.mllp_port}]),
        }
        self.log = (tmp_path / "hub.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(HUB), "serve", "--log-level", "warning"],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.mllp_port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, "the hub died at start"
                assert time.monotonic() < deadline, "the hub did not start"
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


async def stream(hub: Hub, numbers: list[int], kill_after: int | None) -> set[int]:
    """Send `numbers` one by one; kill the hub after `kill_after` ACKs. Returns the ACKed."""
    acked: set[int] = set()
    async with MllpSender("127.0.0.1", hub.mllp_port, connect_timeout=5, ack_timeout=20) as sender:
        for number in numbers:
            result = await sender.send(oru(number))
            if result.accepted:
                acked.add(number)
            elif kill_after is not None and len(acked) >= kill_after:
                break  # the hub is gone, as intended
            if kill_after is not None and len(acked) == kill_after:
                hub.kill()
    return acked


def wait_until_mapped(database_url: str, expected: int, timeout: float = 180) -> None:
    engine = make_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with Session(engine) as session:
                mapped = session.scalar(
                    select(func.count())
                    .select_from(MessageRow)
                    .where(MessageRow.status == "mapped")
                )
            if mapped == expected:
                return
            time.sleep(0.5)
        raise AssertionError(f"{mapped} of {expected} messages mapped")
    finally:
        engine.dispose()


@sqlite_only
def test_the_embedded_worker_leases_jobs_for_job_lease_seconds(settings):
    """What lets the restarted hub below take over the jobs the killed one had claimed
    after HUB_JOB_LEASE_SECONDS (3 s), not after the 120 s default."""
    configured = settings.model_copy(update={"embedded_worker": True, "job_lease_seconds": 3.0})
    with TestClient(create_app(configured)) as client:
        assert client.app.state.worker.lease_seconds == 3.0


@sqlite_only
def test_kill_9_while_streaming_loses_no_acked_message(database_url, tmp_path, signing_key_file):
    hub = Hub(database_url, tmp_path, signing_key_file)
    hub.start()
    try:
        before_kill = asyncio.run(stream(hub, list(range(TOTAL)), kill_after=KILL_AFTER))
        assert len(before_kill) == KILL_AFTER
        hub.start()  # restart on the same database
        rest = [n for n in range(TOTAL) if n not in before_kill]
        after_restart = asyncio.run(stream(hub, rest, kill_after=None))
        assert before_kill | after_restart == set(range(TOTAL))
        wait_until_mapped(database_url, TOTAL)
    finally:
        hub.stop()

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(select(MessageRow.control_id, MessageRow.status)).all()
            observations = session.scalar(
                select(func.count())
                .select_from(ResourceRow)
                .where(ResourceRow.res_type == "Observation")
            )
            provenance = [
                json.loads(c)
                for c in session.scalars(
                    select(ResourceRow.content).where(ResourceRow.res_type == "Provenance")
                )
            ]
    finally:
        engine.dispose()
    control_ids = [control for control, _ in rows]
    assert sorted(control_ids) == sorted(f"K-{n}" for n in range(TOTAL))  # each once
    assert {status for _, status in rows} == {"mapped"}
    assert observations == 2 * TOTAL  # two OBX each, none twice
    mapped_from = [
        p["entity"][0]["what"]["identifier"]["value"]
        for p in provenance
        if p.get("entity", [{}])[0].get("what", {}).get("identifier", {}).get("system")
        == MESSAGE_ID_SYSTEM
    ]
    assert len(mapped_from) == TOTAL == len(set(mapped_from))  # mapped exactly once


pytestmark = pytest.mark.integration
