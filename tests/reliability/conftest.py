"""What the reliability tests share: hub processes to start and kill, polling with deadlines,
row counts, and a private PostgreSQL cluster for the tests that restart the server.

Each fault is injected for real (SIGKILL, pg_ctl stop, a full filesystem) into real processes
on loopback; the tests wait for states (a job running, bytes at a peer), never for time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TypeVar

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from connectors.base import Envelope
from connectors.hl7v2_mllp import frame
from hub.storage.db import make_engine
from hub.storage.tables import JobRow
from tests.private_postgres import PrivatePostgres, PrivatePostgresError, private_postgres

HUB = Path(sys.executable).with_name("hub")
REPO = Path(__file__).resolve().parents[2]
GUARD_SECONDS = 90.0  # a guard against a hang, not a performance expectation
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def envelope(payload: bytes) -> Envelope:
    """A message as the St Mary lab feed's MLLP listener hands it to the intake."""
    return Envelope(payload, transport="mllp", channel="st-mary", peer="127.0.0.1")


def send(port: int, payload: bytes) -> bytes:
    """One message on a connection of its own; the ACK (b"" if the connection closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(frame(payload))
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def wait_for(
    probe: Callable[[], T], what: str, timeout: float = GUARD_SECONDS, every: float = 0.05
) -> T:
    """Call `probe` until it returns something truthy, and return that; AssertionError
    naming `what` (and the last value seen) when `timeout` runs out first."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
        time.sleep(every)
        last = probe()
    return last


class HubProcess:
    """`hub worker` or `hub serve` as a process of its own, configured by HUB_* variables,
    with its output in `log_path`. `kill()` is kill -9: no handler, no cleanup runs."""

    def __init__(self, command: str, env: Mapping[str, str], log_path: Path) -> None:
        self.command = command
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.orphans: list[int] = []

    def start(self) -> HubProcess:
        self._log = self.log_path.open("ab")
        args = [str(HUB), self.command]
        if self.command == "serve":
            args += ["--log-level", "warning"]
        self.process = subprocess.Popen(
            args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO
        )
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, then reap: the process is gone when this returns. Its descendants (the
        validation worker and its forkserver) are noted in `orphans`: nothing told them."""
        assert self.process is not None
        self.orphans = descendants(self.process.pid)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(GUARD_SECONDS)

    def orphans_gone(self) -> bool:
        """None of the killed process's descendants lives on (a zombie counts as gone)."""
        return not any(_state(pid) not in (None, "Z") for pid in self.orphans)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, Z, ...) from /proc, None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def descendants(pid: int) -> list[int]:
    """The ids of every process below `pid` (children, theirs, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending += children.get(child, [])
    return found


@pytest.fixture
def hub_processes() -> Iterator[list[HubProcess]]:
    """Processes a test starts (append them): every one left running is stopped after."""
    started: list[HubProcess] = []
    yield started
    for process in started:
        process.stop()


def job_counts(engine: Engine) -> dict[tuple[str, str], int]:
    """(kind, status) → how many jobs."""
    with Session(engine) as session:
        rows = session.execute(
            select(JobRow.kind, JobRow.status, func.count()).group_by(JobRow.kind, JobRow.status)
        )
        return {(kind, status): count for kind, status, count in rows}


def dead_jobs(engine: Engine) -> list[tuple[str, str, str | None]]:
    """The dead letters: (kind, subject, last error) of each job that gave up."""
    with Session(engine) as session:
        rows = session.execute(
            select(JobRow.kind, JobRow.subject, JobRow.last_error).where(JobRow.status == "dead")
        )
        return [(kind, subject, error) for kind, subject, error in rows]


@pytest.fixture
def engine_for() -> Iterator[Callable[[str], Engine]]:
    """Engines on databases the test reads for its assertions, disposed after."""
    engines: list[Engine] = []

    def make(url: str) -> Engine:
        engines.append(make_engine(url))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the module's own, which its tests may stop and restart."""
    try:
        with private_postgres() as cluster:
            yield cluster
    except PrivatePostgresError as exc:
        pytest.fail(str(exc), pytrace=False)
