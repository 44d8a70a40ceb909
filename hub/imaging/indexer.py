"""Instances the Storage SCP accepted, indexed by one writer thread, many per transaction.

The acknowledgement model of the HL7 listener (persist, answer, then process), for C-STORE:

1. `accept` (in the association's thread, before the sender is answered): the checked file
   is renamed into `<store>/accepted/<transfer id>/`. A success status means the instance is
   there, under a name that says which transfer it belongs to.
2. The writer thread takes accepted instances in batches: each file is linked into the
   content-addressed store under its digest, the objects are flushed to disk (data and
   names, concurrently), the batch's rows are written in ONE transaction (group commit:
   one commit for up to `batch_size` instances), then the accepted files are removed.
3. `close` (the association ended) queues behind its instances: the transfer is closed, and
   its studies go to attachment, only once every instance accepted on it is indexed, so a
   half-indexed study is never attached.

Nothing accepted is lost to a crash or a kill -9 at any point: until its row is committed
an instance's file is in `accepted/`, and `recover` (at start, before the SCP listens)
indexes what it finds there, then closes those transfers (no association outlives its
process). A row committed before the crash is not written or counted twice. The
`accepted/` folder belongs to the one Storage SCP that writes into this store.

What a success survives (StorageScpConfig.flush_before_success, in a durable store): on,
the file and its folder entry are flushed (fsync) before the answer, so it survives a power
cut too, at the cost of two flushes in each C-STORE's round trip; off, the answer comes
once the file is written (the page cache survives the death of the process, not of the
machine), and the writer flushes it with its batch, a fraction of a second later, before
its rows are committed: an operating system crash or a power cut in that window can lose
instances already answered, as it can in Orthanc, which does not flush the files it
stores.

The queue is bounded: if the database falls behind, `accept` waits, and so do senders.

In service the writer runs in a process of its own (hub.imaging.indexer_process); the
SCP's process keeps `open_transfer`, `keep` (step 1) and the recovery at start.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from connectors.dimse.received import move_file
from dicom.errors import InvalidDicom
from dicom.instances import InstanceInfo, inspect_instance
from dicom.store import fsync_all, fsync_folder
from hub.errors import HubError
from hub.imaging.importer import Checked, DicomImporter
from hub.storage.tables import DicomTransferRow

log = logging.getLogger("hub.imaging")

ACCEPTED_FOLDER = "accepted"
ACCEPTED_SUFFIX = ".dcm"
BATCH_SIZE = 256
LINGER_SECONDS = 0.1
QUEUE_SIZE = 4096
FLUSHERS = 4
_RETRY_SECONDS = (0.1, 0.5, 2.0, 5.0)


@dataclass(frozen=True)
class _Accepted:
    transfer_id: int
    path: Path
    info: InstanceInfo
    adopted: bool = False  # found in its folder by `adopt`: its row may be committed already


@dataclass(frozen=True)
class _Close:
    transfer_id: int
    source: str


_Stop = object()


class InstanceIndexer:
    """Accepts checked instances for their transfer and indexes them in the background.

    `recover()` then `start()` before the SCP listens; `accept`, `close` from association
    threads; `drain()` waits until all that was queued is indexed; `stop()` indexes what is
    queued and ends the thread (what it cannot index stays in `accepted/`).
    """

    def __init__(
        self,
        importer: DicomImporter,
        *,
        flush_before_success: bool = False,
        batch_size: int = BATCH_SIZE,
        linger_seconds: float = LINGER_SECONDS,
        queue_size: int = QUEUE_SIZE,
        folder: Path | None = None,  # accepted/<owner>/ when processes share the store
    ) -> None:
        self.importer = importer
        self.batch_size = batch_size
        self.linger_seconds = linger_seconds
        self.folder = folder or importer.store.root / ACCEPTED_FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.flush_before_success = flush_before_success
        self._durable = importer.store.durable
        self._flush_on_accept = importer.store.durable and flush_before_success
        self._queue: queue.Queue[object] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()  # ends a batch's wait: a close, a drain, the stop
        self._flusher: ThreadPoolExecutor | None = None  # concurrent fsyncs, while started

    # -- the SCP's side ---------------------------------------------------------------------

    def open_transfer(self, source: str) -> int:
        """A push transfer and its folder of accepted instances."""
        transfer_id = self.importer.open_transfer("push", source)
        folder = self._transfer_folder(transfer_id)
        folder.mkdir(exist_ok=True)
        if self._durable:
            fsync_folder(self.folder)
        return transfer_id

    def accept(self, transfer_id: int, staged: Path, info: InstanceInfo) -> None:
        """Take over a staged file that passed the checks: on disk under the transfer's
        folder when this returns, indexed later. Raises OSError (the staged file is then
        removed) when it cannot be kept."""
        self.enqueue(transfer_id, self.keep(transfer_id, staged), info)

    def keep(self, transfer_id: int, staged: Path) -> Path:
        """Move a received file that passed the checks into the transfer's folder (a copy
        if it is on another file system); its path there. Raises OSError (the received
        file is then removed) when it cannot be kept."""
        folder = self._transfer_folder(transfer_id)
        target = folder / (staged.stem + ACCEPTED_SUFFIX)
        try:
            move_file(staged, target)
            if self._flush_on_accept:  # its data and its name, flushed together
                fsync_all([target, folder], self._flusher)
        except OSError:
            staged.unlink(missing_ok=True)
            target.unlink(missing_ok=True)
            raise
        return target

    def enqueue(self, transfer_id: int, path: Path, info: InstanceInfo) -> None:
        """Index a file `keep` put in the transfer's folder (by the writer, in a batch)."""
        self._queue.put(_Accepted(transfer_id, path, info))

    def close(self, transfer_id: int, source: str) -> None:
        """The association ended: close its transfer once its instances are indexed."""
        self._queue.put(_Close(transfer_id, source))
        self._wake.set()

    # -- lifecycle --------------------------------------------------------------------------

    def recover(self, *, only: Collection[int] | None = None, wait_for_writer: bool = True) -> int:
        """Index the instances a previous process accepted and did not index, and close
        their transfers: those of every folder there, or of the transfers `only` names.
        Before the SCP listens. The number indexed. A database failure is raised: the hub
        cannot start without its database anyway.

        `wait_for_writer`: first wait until no indexer process holds this folder's
        writer lock (one whose SCP's process was killed indexes what it was told, then
        ends); an indexer process recovering for itself already holds it."""
        if wait_for_writer:
            lock = hold_writer_lock(self.folder)
            try:
                return self.recover(only=only, wait_for_writer=False)
            finally:
                os.close(lock)
        indexed = 0
        for transfer_id in self.accepted_transfers():
            if only is not None and transfer_id not in only:
                continue
            folder = self._transfer_folder(transfer_id)
            try:
                accepted = self._accepted_in(transfer_id, folder)
                for start in range(0, len(accepted), self.batch_size):
                    self._index(accepted[start : start + self.batch_size], recovering=True)
                    indexed += len(accepted[start : start + self.batch_size])
                self._close_if_open(transfer_id)
            except HubError as exc:  # its transfer is gone: the files stay, for an operator
                log.error("accepted instances of transfer %d not recovered: %s", transfer_id, exc)
                continue
            _remove_folder(folder)
        if indexed:
            log.warning("recovered %d accepted instance(s) that were not indexed", indexed)
        return indexed

    def accepted_transfers(self) -> list[int]:
        """The transfers that have a folder of accepted instances here, in order."""
        folders = (f for f in self.folder.iterdir() if f.is_dir() and f.name.isdigit())
        return sorted(int(folder.name) for folder in folders)

    def adopt(self, transfer_ids: Collection[int]) -> set[str]:
        """Queue the files already in these transfers' folders (an indexer process started
        again while their associations go on: they are closed when those end); their paths."""
        adopted: set[str] = set()
        for transfer_id in transfer_ids:
            for found in self._accepted_in(transfer_id, self._transfer_folder(transfer_id)):
                self._queue.put(_Accepted(transfer_id, found.path, found.info, adopted=True))
                adopted.add(str(found.path))
        return adopted

    def _accepted_in(self, transfer_id: int, folder: Path) -> list[_Accepted]:
        accepted = []
        for path in sorted(folder.glob(f"*{ACCEPTED_SUFFIX}")):
            try:
                info = inspect_instance(path)
            except InvalidDicom as exc:  # checked once already: should not happen
                path.unlink(missing_ok=True)
                self.importer.record_refusal(transfer_id, path.name, exc.reason)
                continue
            accepted.append(_Accepted(transfer_id, path, info))
        return accepted

    def start(self) -> None:
        if self._thread is None:
            self._stopping.clear()
            self._flusher = ThreadPoolExecutor(FLUSHERS, thread_name_prefix="dicom-fsync")
            self._thread = threading.Thread(target=self._run, name="dicom-indexer", daemon=True)
            self._thread.start()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is indexed (or closed); False on timeout."""
        done = threading.Event()
        self._queue.put(done)
        self._wake.set()
        return done.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Index what is queued, then end the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_Stop)
        self._wake.set()
        thread.join(timeout)
        if thread.is_alive():
            self._stopping.set()  # give up retrying: what is left stays in accepted/
            thread.join(timeout)
        if self._flusher is not None:
            self._flusher.shutdown()
            self._flusher = None

    # -- the writer thread ------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch, then = self._next_batch()
            if batch:
                self._retrying(partial(self._index, batch))
            if isinstance(then, _Close):
                self._retrying(partial(self._close, then))
            elif isinstance(then, threading.Event):
                then.set()
            elif then is _Stop:
                return

    def _next_batch(self) -> tuple[list[_Accepted], object | None]:
        """Accepted instances in arrival order, and the item that ended the batch (a close,
        a drain, the stop; None when the batch is full or the queue empty).

        After its first instance a batch waits `linger_seconds` (less if a close, a drain or
        the stop comes) for more to arrive, without waking for each: one transaction for
        many instances, and the writer's work, which shares the interpreter with the
        associations' threads, done in a few large steps rather than many small ones."""
        item = self._queue.get()
        if not isinstance(item, _Accepted):
            return [], item
        self._wake.wait(self.linger_seconds)
        self._wake.clear()
        batch = [item]
        while len(batch) < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _Accepted):
                return batch, item
            batch.append(item)
        return batch, None

    def _retrying(self, work: Callable[[], None]) -> None:
        """Run `work` until it succeeds: a database or disk failure is retried with a
        growing delay, the files staying in accepted/ meanwhile. A refusal of the hub's
        (a transfer no longer open) is not retried: the files stay for `recover`."""
        for delay in _delays():
            try:
                work()
                return
            except HubError as exc:
                log.error("DICOM indexer: %s; left for recovery at the next start", exc)
                return
            except Exception as exc:  # a database or disk failure above all; never end the thread
                # Only the type: a message could quote the dataset (PHI).
                log.error(
                    "DICOM indexer: failed (%s); retrying in %.1f s", type(exc).__name__, delay
                )
            if self._stopping.wait(delay):
                return

    def _index(self, batch: list[_Accepted], *, recovering: bool = False) -> None:
        store = self.importer.store
        folders: set[Path] = set()
        checked = []
        for accepted in batch:
            try:
                stored = store.link_file(accepted.path, synced=True, folders=folders)
            except FileNotFoundError:  # removed behind the hub's back: nothing to index
                log.error("DICOM indexer: accepted file %s is gone", accepted.path.name)
                continue
            checked.append(Checked(accepted.transfer_id, accepted.info, stored))
        if self._durable:  # the objects on disk, data and names, before their rows
            unflushed = [] if self._flush_on_accept else [c.stored.path for c in checked]
            fsync_all([*unflushed, *folders], self._flusher)
        # An adopted file's row may have been committed by the process that died (before
        # it removed the file): counted once, as in a recovery.
        recovering = recovering or any(accepted.adopted for accepted in batch)
        with self.importer.sessions() as session:
            self.importer.record(session, checked, recovering=recovering)
            session.commit()
        for accepted in batch:
            accepted.path.unlink(missing_ok=True)

    def _close(self, closing: _Close) -> None:
        summary = self.importer.close_transfer(closing.transfer_id)
        _remove_folder(self._transfer_folder(closing.transfer_id))
        log.info(
            "push from %s: %d stored, %d refused, %d study(ies)",
            closing.source,
            summary.accepted,
            summary.rejected,
            len(summary.studies),
        )

    def _close_if_open(self, transfer_id: int) -> None:
        with self.importer.sessions() as session:
            transfer = session.get(DicomTransferRow, transfer_id)
            still_open = transfer is not None and transfer.status == "open"
        if still_open:
            self.importer.close_transfer(transfer_id)

    def _transfer_folder(self, transfer_id: int) -> Path:
        return self.folder / str(transfer_id)


def writer_lock_path(folder: Path) -> Path:
    """The file whose flock says an indexer process writes what is accepted in `folder`:
    beside it, hidden (not in it: an accepted folder holds transfers only)."""
    return folder.parent / f".{folder.name}.writer.lock"


def hold_writer_lock(folder: Path) -> int:
    """An exclusive flock on `folder`'s writer lock (waiting for it): held by the indexer
    process that writes what is accepted there, for its whole life. Its descriptor."""
    descriptor = os.open(writer_lock_path(folder), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def _delays() -> Iterator[float]:
    yield from _RETRY_SECONDS
    while True:
        yield _RETRY_SECONDS[-1]


def _remove_folder(folder: Path) -> None:
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:  # not empty: a file that could not be indexed stays for recovery
        log.error("accepted folder %s kept (%s)", folder.name, type(exc).__name__)
