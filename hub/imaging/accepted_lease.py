"""One DICOM store, several Storage SCP processes: whose accepted instances are whose.

The InstanceIndexer's `recover` indexes everything in its accepted folder and closes those
transfers, which is right only when no other process writes there. When processes share
the store and the SCP's port (`worker_runs_listeners`), each keeps its accepted instances
in `accepted/<owner>/`, a folder of its own held by an exclusive lock (flock) on
`accepted/<owner>/.lock` for as long as the process lives. The kernel drops the lock when
the process ends, however it ends (kill -9 included), so at start a process recovers the
folders whose lock it can take (their owner is gone) and leaves those of live siblings
alone: a recovery never indexes an instance a sibling has just accepted, nor closes its
transfer under it. Claiming a folder and recovering the orphans happen under one more
lock, `accepted/.recover.lock`, so that two processes starting together do not both
recover the same orphan, nor one take a folder another has made and not yet locked.

Transfer folders left directly in `accepted/` by a process that did not share the store
(the layout of `hub serve` alone) are recovered too. flock works on local file systems
and, on Linux, on NFS v4 (as a lock on the whole file).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from hub.imaging.indexer import ACCEPTED_FOLDER, InstanceIndexer, writer_lock_path

log = logging.getLogger("hub.imaging")

_LOCK = ".lock"
_RECOVER_LOCK = ".recover.lock"
_OWNER_PREFIX = "owner-"

MakeIndexer = Callable[[Path], InstanceIndexer]
"""An InstanceIndexer on this accepted folder."""


class AcceptedFolderLease:
    """This process's own accepted folder, locked until `release` (or the process ends)."""

    def __init__(self, folder: Path, lock: int) -> None:
        self.folder = folder
        self._lock = lock

    @classmethod
    def claim(cls, store_root: Path, make_indexer: MakeIndexer) -> AcceptedFolderLease:
        """Make and lock a new owner folder, and recover the accepted instances of the
        processes that are gone (see the module). Raises what the database raises."""
        accepted = store_root / ACCEPTED_FOLDER
        accepted.mkdir(parents=True, exist_ok=True)
        with _locked(accepted / _RECOVER_LOCK):
            name = f"{_OWNER_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            folder = accepted / name
            folder.mkdir()
            lock = _try_lock(folder / _LOCK)
            assert lock is not None, "a folder made just now is nobody else's"
            lease = cls(folder, lock)
            try:
                recovered = make_indexer(accepted).recover()  # the layout without owners
                for orphan in sorted(accepted.glob(f"{_OWNER_PREFIX}*")):
                    if orphan != folder:
                        recovered += _recover_orphan(orphan, make_indexer)
            except BaseException:
                lease.release()
                raise
        if recovered:
            log.warning("recovered %d instance(s) accepted by processes now gone", recovered)
        return lease

    def release(self) -> None:
        """Give the folder up (removed when empty: what is left waits for a recovery)."""
        with contextlib.suppress(OSError):
            if not any(p.name != _LOCK for p in self.folder.iterdir()):
                (self.folder / _LOCK).unlink()
                self.folder.rmdir()
                writer_lock_path(self.folder).unlink(missing_ok=True)
        os.close(self._lock)


def _recover_orphan(folder: Path, make_indexer: MakeIndexer) -> int:
    """Index a folder whose owner is gone; 0 (and untouched) if its owner is alive."""
    lock = _try_lock(folder / _LOCK)
    if lock is None:
        return 0
    try:
        recovered = make_indexer(folder).recover()
        if not any(p.is_dir() for p in folder.iterdir()):  # else kept for an operator
            shutil.rmtree(folder, ignore_errors=True)
            writer_lock_path(folder).unlink(missing_ok=True)
        return recovered
    finally:
        os.close(lock)


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on `path`, or None if another holds it."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (waiting for it)."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
