"""Restart PostgreSQL under load: `hub serve` (MLLP listener, embedded worker) on a private
cluster while senders stream HL7 v2 over MLLP; the cluster is stopped `-m fast` (clients
disconnected, checkpoint) and later `-m immediate` (killed, WAL replayed at start) and
started again each time.

Senders behave as real ones do: a message that got no ACK (the connection closed) or a
negative one is sent again. Proves: the hub reconnects by itself; every message it ACKed
AA is stored exactly once (by control id) and mapped; readiness (/readyz) answered 503
while the database was down and 200 after, and neither it nor the FHIR API ever answered
500; no job is left unfinished.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.hl7v2_mllp import MllpSender
from hub.settings import Settings
from hub.storage.db import make_engine
from hub.storage.tables import MessageRow
from tests.fhir_client import bearer
from tests.private_postgres import PrivatePostgres, StopMode
from tests.reliability.conftest import HubProcess, dead_jobs, free_port, job_counts, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

SENDERS = 2
RETRY_PAUSE = 0.05  # a sender's pause before sending an unacknowledged message again
PACE = 0.01  # and between two messages: a steady stream, not a flood the test then waits on


def oru(sender: int, number: int) -> bytes:
    return (
        f"MSH|^~\\&|LAB{sender}|ST-MARY|HUB|SOH|20261101120000||ORU^R01^ORU_R01|"
        f"PG-{sender}-{number}|P|2.5.1\r"
        f"PID|1||MRN-PG-{sender}^^^ST-MARY^MR||Restart^Kim||20150505|F\r"
        f"OBR|1|PL-{number}|FI-{number}|58410-2^CBC panel^LN|||20261101080000\r"
        "OBX|1|NM|718-7^Hemoglobin^LN||9.1|g/dL^^UCUM|11.5-15.5|L|||F\r"
    ).encode()


@dataclass
class Load:
    """What the senders did: the control ids ACKed AA, and every other answer's code."""

    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    acked: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    async def _sender(self, sender: int) -> None:
        async with MllpSender("127.0.0.1", self.port, connect_timeout=5, ack_timeout=30) as link:
            number = 0
            while not self.stop.is_set():
                while True:  # this message until it is ACKed AA, as a real sender does
                    result = await link.send(oru(sender, number))
                    if result.accepted and result.code == "AA":
                        break
                    with self.lock:
                        self.refused[result.code] += 1
                    await asyncio.sleep(RETRY_PAUSE)
                with self.lock:
                    self.acked.append(f"PG-{sender}-{number}")
                number += 1
                await asyncio.sleep(PACE)

    def run(self) -> None:
        async def all_senders() -> None:
            await asyncio.gather(*(self._sender(n) for n in range(SENDERS)))

        asyncio.run(all_senders())


@dataclass
class Probe:
    """GET /readyz and a FHIR search, over and over: every status seen, by phase."""

    base_url: str
    headers: dict[str, str]
    phase: str = "up"
    seen: list[tuple[str, str, int | str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.stop.is_set():
                for path, headers in (("/readyz", {}), ("/fhir/Patient?_count=1", self.headers)):
                    phase = self.phase
                    try:
                        status: int | str = client.get(path, headers=headers).status_code
                    except httpx.TransportError as exc:
                        status = type(exc).__name__
                    self.seen.append((phase, path, status))
                self.stop.wait(0.05)

    def statuses(self, path: str, phase: str | None = None) -> set[int | str]:
        return {s for p, q, s in self.seen if q == path and (phase is None or p == phase)}

    def saw(self, path: str, phase: str, status: int) -> bool:
        return status in self.statuses(path, phase)


def test_messages_acked_across_postgres_restarts_are_stored_once_and_mapped(
    private_cluster: PrivatePostgres, hub_processes, tmp_path: Path, signing_key_file
):
    """Two restarts (fast, then immediate) under a steady MLLP stream; see the module."""
    url = private_cluster.create_database("hub_restart")
    http_port, mllp_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{http_port}"
    hub = HubProcess(
        "serve",
        {
            "HUB_DATABASE_URL": url,
            "HUB_PORT": str(http_port),
            "HUB_PUBLIC_URL": origin,
            "HUB_SIGNING_KEY_FILE": str(signing_key_file),
            "HUB_JOB_LEASE_SECONDS": "3",
            "HUB_DICOM_STORE_DIR": str(tmp_path / "dicom"),
            "HUB_MLLP_LISTENERS": json.dumps([{"name": "lab", "port": mllp_port}]),
        },
        tmp_path / "hub.log",
    )
    hub_processes.append(hub)
    hub.start()
    settings = Settings(database_url=url, public_url=origin, signing_key_file=signing_key_file)
    probe = Probe(origin, bearer(settings, subject="it-1", roles=("case-manager",)))

    def ready() -> bool:
        assert hub.alive, hub.log_tail()
        try:
            return httpx.get(f"{origin}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, "the hub to be ready", every=0.2)
    load = Load(mllp_port)
    threads = [threading.Thread(target=t, daemon=True) for t in (load.run, probe.run)]
    for thread in threads:
        thread.start()
    try:
        modes: tuple[StopMode, ...] = ("fast", "immediate")
        for mode in modes:
            restart_under_load(private_cluster, load, probe, mode)
        acked_before_end = load.count()
        wait_for(lambda: load.count() > acked_before_end + 10, "more messages after recovery")
    finally:
        load.stop.set()
        probe.stop.set()
        for thread in threads:
            thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a sender hung"

    engine = make_engine(url)
    try:

        def all_mapped() -> bool:
            with Session(engine) as session:
                statuses = set(session.scalars(select(MessageRow.status)))
            unfinished = [k for k in job_counts(engine) if k[1] != "done"]
            return statuses == {"mapped"} and not unfinished

        wait_for(all_mapped, "every message mapped and no job left", every=0.2)
        with Session(engine) as session:
            stored = Counter(session.scalars(select(MessageRow.control_id)))
        assert dead_jobs(engine) == []
    finally:
        engine.dispose()
    acked = Counter(load.acked)
    assert max(acked.values()) == 1  # each message ACKed AA once: a sender moves on after it
    assert stored == acked  # every ACKed message stored exactly once, nothing else stored
    assert load.refused, "the restarts were not felt by the senders"  # no ACK while down
    for path in ("/readyz", "/fhir/Patient?_count=1"):
        assert probe.statuses(path) <= {200, 503}, probe.statuses(path)  # never a 500
    assert probe.seen[-1][2] == 200 and probe.seen[-2][2] == 200  # ready again, the API too


def restart_under_load(cluster: PrivatePostgres, load: Load, probe: Probe, mode: StopMode) -> None:
    """Let messages flow, stop the cluster by `mode`, see the hub report it, start it, see
    the hub ready again and taking messages."""
    before = load.count()
    wait_for(lambda: load.count() >= before + 10, f"messages flowing before the {mode} stop")
    probe.phase = f"down-{mode}"
    cluster.stop(mode)
    wait_for(lambda: probe.saw("/readyz", f"down-{mode}", 503), "/readyz 503 while down")
    down_count = load.count()
    probe.phase = f"back-{mode}"
    cluster.start()
    wait_for(lambda: probe.saw("/readyz", f"back-{mode}", 200), "/readyz 200 after the start")
    wait_for(lambda: load.count() > down_count + 10, f"messages ACKed after the {mode} restart")
