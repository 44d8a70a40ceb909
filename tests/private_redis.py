"""A Redis server of a test's own, for tests that kill and restart the broker.

The machine's Redis on 127.0.0.1:6379 is shared (CI and other tests use it): it is never
stopped here. `PrivateRedis` runs Debian's redis-server on a free loopback port with no
persistence at all (`--save '' --appendonly no`): killing it loses every message it held,
which is the broker failure the hub must survive. `kill()` is SIGKILL; `start()` again
brings up an empty server on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

REDIS_SERVER = os.environ.get("HUB_TEST_REDIS_SERVER") or shutil.which("redis-server")
START_GUARD_SECONDS = 30.0  # a guard against a hung start, not a performance expectation


class PrivateRedisError(RuntimeError):
    """redis-server is missing or did not come up; the message carries its log."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """redis-server on 127.0.0.1:`port`, its log in `folder`."""

    def __init__(self, folder: Path) -> None:
        if REDIS_SERVER is None:
            raise PrivateRedisError("no redis-server (apt-get install redis-server)")
        self.folder = folder
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        log = self.folder / "redis.log"
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                "--logfile",
                str(log),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_GUARD_SECONDS
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        while True:
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text(errors="replace") if log.exists() else ""
                raise PrivateRedisError(f"redis-server did not start:\n{text[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: whatever the server held is lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None


@contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    """A started private Redis, killed when the block ends."""
    server = PrivateRedis(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()
