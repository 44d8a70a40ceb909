"""A PostgreSQL cluster of a test's own, for tests that must stop or restart the server.

The machine's PostgreSQL on 127.0.0.1:5432 is shared (CI and the other tests run against
it): it is never stopped here. `private_postgres()` runs initdb into a fresh folder and
starts that cluster with pg_ctl on a free loopback port, with fsync on as in production,
so a test may stop it (`-m fast`: clients are disconnected, a checkpoint is written;
`-m immediate`: the server is killed and recovers from its WAL at the next start) and start
it again on the same port and data. initdb refuses to run as root: as root the folder is
given to the `postgres` OS user and every command runs as that user (runuser).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import psycopg

START_GUARD_SECONDS = 60.0  # a guard against a hung start, not a performance expectation
OS_USER = "postgres"
StopMode = Literal["smart", "fast", "immediate"]


class PrivatePostgresError(RuntimeError):
    """initdb or pg_ctl failed; the message carries its output and the server's log."""


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl live: $HUB_TEST_PG_BINDIR, `pg_config --bindir`, or the
    newest Debian cluster version under /usr/lib/postgresql."""
    configured = os.environ.get("HUB_TEST_PG_BINDIR")
    candidates = [Path(configured)] if configured else []
    if not configured and shutil.which("pg_config"):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        candidates.append(Path(found.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PrivatePostgresError(f"no initdb and pg_ctl in {[str(c) for c in candidates]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """One cluster in `folder` (data/, server.log, the socket) on 127.0.0.1:`port`, user
    `postgres` trusted on loopback only."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.log_path = folder / "server.log"
        self.port = port or _free_port()
        self.bindir = postgres_bindir()
        self._as_user = os.geteuid() == 0

    # -- commands ------------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_user:
            command = ["runuser", "-u", OS_USER, "--", *command]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=START_GUARD_SECONDS, check=False
        )
        if check and done.returncode != 0:
            raise PrivatePostgresError(
                f"{args[0]} {args[1] if len(args) > 1 else ''} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\nserver log:\n{self.log_tail()}"
            )
        return done

    def init(self) -> None:
        """initdb (fsync on, trust on loopback: nothing outside this machine can connect)."""
        if self._as_user:
            user = pwd.getpwnam(OS_USER)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        self.folder.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.folder}",
                "-c fsync=on",
                "-c shared_buffers=16MB",
                "-c max_connections=60",
            ]
        )
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.log_path),
                  "-o", options)  # fmt: skip
        self.wait_until_accepting()

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server: `fast` disconnects clients and checkpoints, `immediate` kills
        it (the next start replays the WAL, as after a crash)."""
        self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop by `mode`, then start on the same port and data."""
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def wait_until_accepting(self) -> None:
        deadline = time.monotonic() + START_GUARD_SECONDS
        while True:
            try:
                with psycopg.connect(self.libpq_url(), connect_timeout=2) as connection:
                    connection.execute("SELECT 1")
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise PrivatePostgresError(
                        f"the cluster did not accept connections:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.1)

    # -- addresses -----------------------------------------------------------------------
    def libpq_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3), as HUB_DATABASE_URL takes it."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; its SQLAlchemy URL."""
        with psycopg.connect(self.libpq_url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A new cluster, started; stopped (immediately) and deleted afterwards.

    The folder is made directly under the system temporary folder, not pytest's (which is
    private to root and so out of the `postgres` user's reach)."""
    folder = Path(tempfile.mkdtemp(prefix="hub-test-pg-"))
    cluster = PrivatePostgres(folder)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        if cluster.data.exists() and cluster.running:
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
