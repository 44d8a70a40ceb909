"""A real MLLP peer we did not write, for tests: python-hl7's asyncio MLLP server in a
background thread, serving each connection by a behaviour the test gives it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import hl7
import hl7.mllp

T = TypeVar("T")
GUARD_SECONDS = 20.0

Behaviour = Callable[["Hl7Peer", Any, Any, int], Awaitable[None]]
"""(peer, HL7StreamReader, HL7StreamWriter, connection number) → serve that connection."""


class LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(GUARD_SECONDS)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(GUARD_SECONDS)
        self.loop.close()


class Hl7Peer:
    """python-hl7's `start_hl7_server` on 127.0.0.1, serving each connection by a behaviour."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.connections = 0
        self.received: list[str] = []  # MSH-10 of every message read, in order
        self.events: queue.Queue[str] = queue.Queue()
        self.port = 0

    async def _client(self, reader: Any, writer: Any) -> None:
        self.connections += 1
        try:
            await self.behaviour(self, reader, writer, self.connections)
        except asyncio.IncompleteReadError:
            pass  # the sender closed the connection
        finally:
            writer.close()
            self.events.put("closed")

    async def read(self, reader: Any) -> Any:
        message = await reader.readmessage()
        self.received.append(str(message.segment("MSH")(10)))
        return message


@contextmanager
def hl7_peer(behaviour: Behaviour) -> Iterator[Hl7Peer]:
    thread = LoopThread()
    peer = Hl7Peer(behaviour)

    async def start() -> asyncio.Server:
        server: asyncio.Server = await hl7.mllp.start_hl7_server(
            peer._client, "127.0.0.1", 0, encoding="utf-8"
        )
        return server

    server = thread.run(start())
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:

        async def stop() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        thread.run(stop())
        thread.close()


async def acknowledge_all(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
    while True:
        message = await peer.read(reader)
        writer.writemessage(message.create_ack())
        await writer.drain()


# -- the same peer in a process of its own -----------------------------------------------
@contextmanager
def mllp_peer_process(inbox: Path) -> Iterator[int]:
    """python-hl7's MLLP server in another process (`python -m tests.mllp_peer INBOX`),
    acknowledging (CA) every message and appending it to `inbox`, one JSON string a line;
    yields its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mllp_peer", str(inbox)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.terminate()
        process.wait(GUARD_SECONDS)


def received(inbox: Path) -> list[str]:
    """The messages a `mllp_peer_process` kept, as ER7 text."""
    if not inbox.exists():
        return []
    return [json.loads(line) for line in inbox.read_text().splitlines() if line]


async def _serve_into(inbox: Path) -> None:
    async def keep(reader: Any, writer: Any) -> None:
        try:
            while True:
                message = await reader.readmessage()
                with inbox.open("a") as kept:
                    kept.write(json.dumps(str(message)) + "\n")
                writer.writemessage(message.create_ack(ack_code="CA"))
                await writer.drain()
        except asyncio.IncompleteReadError:
            writer.close()

    server = await hl7.mllp.start_hl7_server(keep, "127.0.0.1", 0, encoding="utf-8")
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_serve_into(Path(sys.argv[1])))
