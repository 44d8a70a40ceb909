"""A content-addressed file store for instances and other large binaries.

Objects live at `root/objects/ab/cd/<sha256>` and are immutable once there; transports
stream into `root/staging/` first, so a half-received file is never visible under a
digest. Data moves in 1 MiB chunks: nothing here holds a whole file in memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from dicom.errors import InvalidDigest, ObjectNotFound

__all__ = ["CHUNK_SIZE", "ContentStore", "ObjectWriter", "StoredObject"]

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
            _fsync_directory(target.parent)
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


def _fsync_directory(folder: Path) -> None:
    # A rename is durable only once its directory entry is on disk (POSIX).
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
