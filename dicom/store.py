"""A content-addressed file store for instances and other large binaries.

Objects live at `root/objects/ab/cd/<sha256>` and are immutable once there; transports
stream into `root/staging/` first, so a half-received file is never visible under a
digest. Data moves in 1 MiB chunks: nothing here holds a whole file in memory.

`put_file` moves a staged file in; `link_file` gives a complete file elsewhere on the
store's file system (the Storage SCP's accepted instances) a second name under its digest,
so that its first name can stay until the object is recorded, then be removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Collection
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from dicom.errors import InvalidDigest, ObjectNotFound

__all__ = [
    "CHUNK_SIZE",
    "ContentStore",
    "ObjectWriter",
    "StoredObject",
    "fsync_file",
    "fsync_folder",
]

CHUNK_SIZE = 1024 * 1024
_DIGEST = re.compile(r"[0-9a-f]{64}")
_READ_ONLY = 0o444


@dataclass(frozen=True)
class StoredObject:
    """One object in the store: its sha256 (hex), its size in bytes and where it lives."""

    digest: str
    size: int
    path: Path


class ContentStore:
    """Files named by the sha256 of their content; the same content twice is one object.

    `durable` (default) flushes each object to disk before it becomes visible, so that a
    crash never leaves a truncated file under a digest; a benchmark may turn it off.
    """

    def __init__(self, root: Path, *, durable: bool = True) -> None:
        self.root = root
        self.durable = durable
        self._objects = root / "objects"
        self._staging = root / "staging"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._staging.mkdir(parents=True, exist_ok=True)

    def staging_file(self) -> Path:
        """A new unique path under `root/staging/` for a transport to stream into.

        The file is not created; hand it to `put_file` once complete, or delete it.
        """
        return self._staging / f"{uuid.uuid4().hex}.part"

    def writer(self) -> ObjectWriter:
        """A context manager that streams bytes into staging while hashing them.

        `commit()` makes the object visible and returns it; leaving the block without a
        commit (or with an exception) removes the partial file.
        """
        return ObjectWriter(self, self.staging_file())

    def put_file(self, staged: Path) -> StoredObject:
        """Move a fully written file into the store and return the object it became.

        The digest is computed reading 1 MiB at a time. A file in this store's staging
        folder is renamed; one elsewhere (possibly another file system) is copied and
        left in place. If the content is already stored, the staged file is discarded.
        """
        if staged.parent.resolve() != self._staging.resolve():
            return self._copy_in(staged)
        digest = hashlib.sha256()
        size = 0
        with staged.open("rb") as source:
            while chunk := source.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
            if self.durable:
                os.fsync(source.fileno())
        return self._publish(staged, digest.hexdigest(), size)

    def link_file(
        self, source: Path, *, synced: bool = False, folders: set[Path] | None = None
    ) -> StoredObject:
        """Store the content of `source`, a complete file on this store's file system, by
        a hard link under its digest; `source` itself stays (remove it once the object is
        recorded: until then a crash leaves it where a recovery finds it).

        In a durable store the file's data is flushed first unless `synced` says the caller
        did, and the folder of the new name is flushed after, or added to `folders` for the
        caller to flush with `sync_folders` (one flush per folder for a batch). Raises
        OSError when it cannot be read or linked (EXDEV: on another file system).
        """
        digest = hashlib.sha256()
        size = 0
        # Plain descriptors: this runs for every instance pushed, in a thread that shares
        # the interpreter with the Storage SCP's, and each system call lets another in.
        descriptor = os.open(source, os.O_RDONLY)
        try:
            while chunk := os.read(descriptor, CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
            if self.durable and not synced:
                os.fsync(descriptor)
            os.fchmod(descriptor, _READ_ONLY)  # one inode, two names: both read-only
        finally:
            os.close(descriptor)
        stored = StoredObject(digest.hexdigest(), size, self.path(digest.hexdigest()))
        changed = [stored.path.parent]
        try:
            os.link(source, stored.path)
        except FileExistsError:
            return stored  # the same content is stored already
        except FileNotFoundError:  # the first object in its folder
            changed += _make_folders(stored.path.parent)
            with contextlib.suppress(FileExistsError):
                os.link(source, stored.path)
        if self.durable:
            pending = folders if folders is not None else set()
            pending.update(changed)
            if folders is None:
                self.sync_folders(pending)
        return stored

    def sync_folders(self, folders: Collection[Path], executor: Executor | None = None) -> None:
        """Flush these folders' entries to disk (nothing in a store that is not durable);
        concurrently on `executor` if given."""
        if self.durable:
            fsync_all(folders, executor)

    def open(self, digest: str) -> BinaryIO:
        """Open a stored object for reading (binary). Raises ObjectNotFound."""
        try:
            return self.path(digest).open("rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(digest) from exc

    def path(self, digest: str) -> Path:
        """Where the object with this digest lives (whether or not it exists).

        Raises InvalidDigest for anything but 64 lowercase hex characters, so a digest
        from outside can never name a path outside the store.
        """
        if not _DIGEST.fullmatch(digest):
            raise InvalidDigest(digest)
        return self._objects / digest[:2] / digest[2:4] / digest

    def exists(self, digest: str) -> bool:
        """Whether an object with this digest is stored (False for a malformed digest)."""
        try:
            return self.path(digest).is_file()
        except InvalidDigest:
            return False

    def _copy_in(self, source_path: Path) -> StoredObject:
        with self.writer() as writer, source_path.open("rb") as source:
            while chunk := source.read(CHUNK_SIZE):
                writer.write(chunk)
            return writer.commit()

    def _publish(self, staged: Path, digest: str, size: int) -> StoredObject:
        target = self.path(digest)
        if target.is_file():
            staged.unlink()
            return StoredObject(digest, size, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(staged, _READ_ONLY)
        # Same file system (both under root), so the rename is atomic: readers see the
        # whole object or none; two writers of the same content both rename a full copy.
        os.replace(staged, target)
        if self.durable:
            fsync_folder(target.parent)
        return StoredObject(digest, size, target)


class ObjectWriter:
    """Streams one object into staging, hashing as it goes (see `ContentStore.writer`)."""

    def __init__(self, store: ContentStore, staged: Path) -> None:
        self._store = store
        self._staged = staged
        self._file: BinaryIO | None = None
        self._digest = hashlib.sha256()
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def __enter__(self) -> ObjectWriter:
        self._file = self._staged.open("xb")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._done:
            self.abort()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data` to the object. Raises RuntimeError outside the block or after it
        was committed or aborted."""
        if self._file is None or self._done:
            raise RuntimeError("writer is not open")
        self._file.write(data)
        self._digest.update(data)
        self._size += len(data)

    def commit(self) -> StoredObject:
        """Make the object visible under its digest and return it."""
        if self._file is None or self._done:
            raise RuntimeError("writer is not open")
        self._file.flush()
        if self._store.durable:
            os.fsync(self._file.fileno())
        self._file.close()
        self._done = True
        try:
            return self._store._publish(self._staged, self._digest.hexdigest(), self._size)
        except BaseException:
            self._staged.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        """Drop what was written; the staged file is removed."""
        self._done = True
        if self._file is not None:
            self._file.close()
        self._staged.unlink(missing_ok=True)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries: a rename, link or new file in it is durable only once its
    directory entry is on disk (POSIX)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_all(
    paths: Collection[Path], executor: Executor | None = None, *, concurrency: int = 4
) -> None:
    """Flush each file or folder to disk. On `executor`, `concurrency` threads share them
    out and flush at the same time, and a journaling file system commits their flushes
    together: much sooner than one after another, at the cost of a few thread switches."""
    ordered = list(paths)
    if executor is None or len(ordered) < 2:
        _fsync_each(ordered)
        return
    shares = [ordered[start::concurrency] for start in range(min(concurrency, len(ordered)))]
    for _ in executor.map(_fsync_each, shares):
        pass  # each raises here if it failed


def _fsync_each(paths: list[Path]) -> None:
    for path in paths:
        fsync_file(path)


def fsync_file(path: Path) -> None:
    """Flush a file's data and size (or a folder's entries) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the parents whose entries changed."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        return []  # made meanwhile by another writer
    except FileNotFoundError:
        changed = _make_folders(folder.parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
        return [*changed, folder.parent]
    return [folder.parent]
