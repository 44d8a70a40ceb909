"""The Storage SCP's indexer (hub.imaging.indexer) in a process of its own.

The indexer's work (hashing and linking each file, flushing, the rows) and the Storage
SCP's (pynetdicom's two threads per association, the checks) are both Python: in one
process they take turns on one interpreter, and every C-STORE's round trip waited for the
indexer's turns. Here the SCP's process only checks each instance and moves it into its
transfer's folder (InstanceIndexer.keep), then tells this process, which indexes it: the
two run on two cores.

What is accepted is safe in either process's death, as before: until its row is
committed an instance's file is in its transfer's folder.
- The SCP's process dies: the indexer process reads the end of its pipe, indexes what it
  was told of, and exits; the next start recovers the rest (InstanceIndexer.recover, which
  first waits for the folder's writer lock, held by the indexer process while it lives).
- The indexer process dies: the next message the SCP sends it finds the pipe broken, and
  a new one is started. It queues the files already in the folders of transfers whose
  associations are still going (they are closed when those end, as usual) and recovers
  the folders of the others; the files it was told of and not yet indexed are among them.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Literal, cast

from dicom.instances import InstanceInfo
from dicom.store import ContentStore
from hub.imaging.importer import DicomImporter
from hub.imaging.indexer import InstanceIndexer, hold_writer_lock
from hub.logs import configure_logging
from hub.storage.db import make_engine, make_session_factory

log = logging.getLogger("hub.imaging")

STOP_SECONDS = 60.0
SEND_LINGER_SECONDS = 0.005
RESTART_SECONDS = 1.0
# The writer's wait for more instances before a batch: shorter than in the SCP's process,
# where it also spared the associations' threads; here it only makes transactions larger,
# and the last batch of a push, which its transfer's close waits for, longer.
WRITER_LINGER_SECONDS = 0.02

# What the SCP's process tells the indexer process, in lists: ("accepted", transfer id,
# path, InstanceInfo), ("close", transfer id, source), ("drain", token), ("stop",).
_Message = tuple[object, ...]


class IndexerProcess:
    """What PushIntake needs of an indexer, with the writer in a child process.

    `indexer` is this process's InstanceIndexer, never started: its `open_transfer`,
    `keep` and (before `start`) `recover` run here, on the same folder the child indexes.
    What the child is told goes through an outbox: a sender thread takes what came in
    SEND_LINGER_SECONDS and sends it as one message, so that a C-STORE's answer waits for
    neither pickling nor the pipe.
    """

    def __init__(
        self,
        indexer: InstanceIndexer,
        *,
        database_url: str,
        log_level: str = "INFO",
        log_format: Literal["text", "json"] = "text",
    ) -> None:
        self.local = indexer
        self.importer = indexer.importer
        self._arguments = (
            database_url,
            str(indexer.importer.store.root),
            str(indexer.folder),
            indexer.flush_before_success,
            log_level,
            log_format,
        )
        self._outbox: queue.SimpleQueue[_Message] = queue.SimpleQueue()
        self._lock = threading.Lock()  # the child and `_open`
        self._open: set[int] = set()  # transfers not closed yet, as far as the child was told
        self._process: BaseProcess | None = None
        self._messages: Connection | None = None
        self._replies: Connection | None = None
        self._sender: threading.Thread | None = None
        self._drains = itertools.count(1)

    # -- PushIntake's side -------------------------------------------------------------------

    def open_transfer(self, source: str) -> int:
        transfer_id = self.local.open_transfer(source)
        with self._lock:
            self._open.add(transfer_id)
        return transfer_id

    def accept(self, transfer_id: int, staged: Path, info: InstanceInfo) -> None:
        """As InstanceIndexer.accept: on disk in the transfer's folder when this returns
        (OSError when it cannot be kept), indexed by the child."""
        path = self.local.keep(transfer_id, staged)
        self._outbox.put(("accepted", transfer_id, str(path), info))

    def close(self, transfer_id: int, source: str) -> None:
        self._outbox.put(("close", transfer_id, source))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._spawn(recover=[], adopt=[])
        self._sender = threading.Thread(target=self._send, name="dicom-indexer-outbox")
        self._sender.start()

    def drain(self, timeout: float = STOP_SECONDS) -> bool:
        """Wait until the child has indexed (or closed) all it was told; False on timeout."""
        token = next(self._drains)
        self._outbox.put(("drain", token))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            replies = self._replies
            try:
                if replies is not None and replies.poll(min(left, 0.5)) and replies.recv() == token:
                    return True
            except (OSError, EOFError):  # replaced meanwhile: a restarted child
                time.sleep(0.05)
        return False

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """The child indexes what it was told, then ends."""
        sender, self._sender = self._sender, None
        if sender is None:
            return
        self._outbox.put(("stop",))
        sender.join()
        with self._lock:
            process, self._process = self._process, None
            if process is not None:
                process.join(timeout)
                if process.is_alive():
                    log.error(
                        "the DICOM indexer process did not stop in %.0f s; ending it", timeout
                    )
                    process.terminate()
                    process.join(timeout)
            self._close_pipes()

    @property
    def pid(self) -> int | None:
        """The child's process id (operations and tests)."""
        return self._process.pid if self._process is not None else None

    # -- the sender thread ---------------------------------------------------------------------

    def _send(self) -> None:
        while True:
            batch = [self._outbox.get()]
            time.sleep(SEND_LINGER_SECONDS)  # what comes meanwhile goes in the same message
            with contextlib.suppress(queue.Empty):
                while True:
                    batch.append(self._outbox.get_nowait())
            self._deliver(batch)
            if batch[-1][0] == "stop":
                return

    def _deliver(self, batch: list[_Message]) -> None:
        """Send `batch`, starting another child if this one is gone (until it can)."""
        while True:
            with self._lock:
                try:
                    if self._messages is None:
                        raise BrokenPipeError("no indexer process")
                    self._messages.send(batch)
                    for message in batch:
                        if message[0] == "close":
                            self._open.discard(cast(int, message[1]))
                    return
                except OSError:
                    exit_code = self._process.exitcode if self._process is not None else None
                    log.error(
                        "the DICOM indexer process ended (exit code %s); starting another",
                        exit_code,
                    )
                try:
                    self._restart()
                    continue
                except OSError as exc:
                    log.error("no DICOM indexer process (%s)", type(exc).__name__)
                if batch[-1][0] == "stop":  # shutting down: the next start recovers the rest
                    return
            time.sleep(RESTART_SECONDS)

    def _restart(self) -> None:
        """A new child: it queues the files of the transfers still going and recovers the
        other folders there are now (not those opened after: their files come by message)."""
        if self._process is not None:
            self._process.join(STOP_SECONDS)
        self._close_pipes()
        existing = set(self.local.accepted_transfers())
        self._spawn(recover=sorted(existing - self._open), adopt=sorted(self._open & existing))

    def _spawn(self, *, recover: list[int], adopt: list[int]) -> None:
        # spawn, not fork: this process has threads (the SCP's, the API's, the job worker).
        context = multiprocessing.get_context("spawn")
        child_reads, messages = context.Pipe(duplex=False)
        replies, child_writes = context.Pipe(duplex=False)
        process = context.Process(
            target=_serve,
            args=(child_reads, child_writes, *self._arguments, recover, adopt),
            name="dicom-indexer",
            daemon=True,
        )
        process.start()
        child_reads.close()  # the child's ends, closed here: its death then breaks the pipe
        child_writes.close()
        self._process, self._messages, self._replies = process, messages, replies

    def _close_pipes(self) -> None:
        for end in (self._messages, self._replies):
            if end is not None:
                end.close()
        self._messages = self._replies = None


def _serve(
    messages: Connection,
    replies: Connection,
    database_url: str,
    store_root: str,
    folder: str,
    flush_before_success: bool,
    log_level: str,
    log_format: Literal["text", "json"],
    recover: list[int],
    adopt: list[int],
) -> None:
    """The child: index what the SCP's process sends until it says stop or is gone."""
    _run_as_batch_work()
    configure_logging(log_level, log_format)
    importer = DicomImporter(
        make_session_factory(make_engine(database_url)), ContentStore(Path(store_root))
    )
    indexer = InstanceIndexer(
        importer,
        flush_before_success=flush_before_success,
        folder=Path(folder),
        linger_seconds=WRITER_LINGER_SECONDS,
    )
    # Held until this process ends, killed or not: a recovery of this folder waits for it.
    hold_writer_lock(Path(folder))
    indexer.start()
    adopted = indexer.adopt(adopt)
    if recover:
        indexer.recover(only=recover, wait_for_writer=False)
    try:
        while _handle(indexer, replies, adopted, messages):
            pass
    finally:
        indexer.stop()


def _run_as_batch_work() -> None:
    """On Linux, schedule this process as batch work (SCHED_BATCH): its wake-ups do not
    preempt a running thread of another process, and it keeps its fair share of the CPU
    over time. An instance's indexing can wait a few milliseconds for a core; the C-STORE
    round trips between a modality and the SCP's process, on a busy machine, cannot."""
    if hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def _handle(
    indexer: InstanceIndexer, replies: Connection, adopted: set[str], messages: Connection
) -> bool:
    """One list of messages; False once told to stop or the SCP's process is gone (what
    it told is indexed before the end: `indexer.stop`)."""
    try:
        batch: list[_Message] = messages.recv()
    except EOFError:
        return False
    for message in batch:
        kind = message[0]
        if kind == "accepted":
            _, transfer_id, path, info = message
            if path in adopted:  # queued already, from its folder
                adopted.discard(path)
                continue
            indexer.enqueue(cast(int, transfer_id), Path(cast(str, path)), cast(InstanceInfo, info))
        elif kind == "close":
            _, transfer_id, source = message
            indexer.close(cast(int, transfer_id), cast(str, source))
        elif kind == "drain":
            indexer.drain()
            replies.send(message[1])
        elif kind == "stop":
            return False
    return True
