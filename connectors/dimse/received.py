"""A received C-STORE dataset, written as it came to a staged Part 10 file.

The file is the preamble, File Meta Information naming the negotiated transfer syntax,
and the dataset's encoded bytes exactly as the peer sent them: nothing is decoded or
re-encoded, so pixel data (JPEG, RLE, deflate) stays byte for byte what the sender had.
Used by the Storage SCP and by C-GET (whose instances arrive as C-STORE sub-operations).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from pydicom import config as pydicom_config
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_file_meta_info
from pynetdicom import _config, dimse_messages
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from connectors.dimse import encoding

Staging = Callable[[], Path]
"""Gives a new, unused path to write one instance into (ContentStore.staging_file)."""

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110
PREAMBLE = b"\x00" * 128 + b"DICM"

_configure_lock = threading.Lock()


_write_errors: dict[str, OSError] = {}
"""What writing a streamed dataset met (a full disk), by path, until `received_file` raises
it. Raised in pynetdicom's thread it would abort the association; the handler instead
answers out of resources, which the sender acts on (it keeps the instance, sends it later)."""


class _StagedFile:
    """What pynetdicom uses of the NamedTemporaryFile it streams a dataset into (its name,
    write, file.flush and close), on a path of the staging it was given; an error writing
    goes to `_write_errors`, and what is written after it is dropped."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self.file = self  # pynetdicom flushes `.file` after each fragment
        self._out: BinaryIO | None = None
        try:
            self._out = path.open("xb")
        except OSError as exc:
            _write_errors.setdefault(self.name, exc)

    def write(self, data: bytes) -> None:
        self._guarded(lambda out: out.write(data))

    def flush(self) -> None:
        self._guarded(lambda out: out.flush())

    def close(self) -> None:
        self._guarded(lambda out: out.close())

    def _guarded(self, step: Callable[[BinaryIO], object]) -> None:
        out = self._out
        if out is None:
            return
        try:
            step(out)
        except OSError as exc:
            _write_errors.setdefault(self.name, exc)
            self._out = None
            with contextlib.suppress(OSError):
                out.close()


def configure_pynetdicom(
    *, stream_to_disk: bool | None = None, staging: Staging | None = None
) -> None:
    """Set pynetdicom's process-wide switches the way the hub needs them.

    Identifiers are never logged (they hold PHI), nor is each PDU and DIMSE message
    (pynetdicom's "standard" event logging: per message, its text built even when not
    logged; the hub logs associations and refusals itself). pydicom does not check the
    values it reads (its reading_validation_mode, also process-wide): it would only warn,
    and the hub discards those warnings; on every DIMSE command pynetdicom decodes, the
    checks were a sixth of a small C-STORE's cost. The hub checks what it stores itself
    (dicom.instances). `stream_to_disk` (None: leave as is) makes received datasets go to
    a temporary file as they arrive instead of into memory; it is one switch for the whole
    process, and `stage_dataset` handles either way, so an SCP started later with another
    setting changes only where the next datasets wait. With `staging` (process-wide too),
    those files are made there, not in TMPDIR: the handler's move is then a rename even
    where TMPDIR is another file system (a tmpfs), and tempfile's random names and its
    wrapper around each call are spared. The file meta and command sets are encoded by
    connectors.dimse.encoding, the same bytes sooner.
    """
    with _configure_lock:
        encoding.install()
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        _config.LOG_HANDLER_LEVEL = "none"
        pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        if stream_to_disk is not None:
            _config.STORE_RECV_CHUNKED_DATASET = stream_to_disk
        if staging is not None:

            def staged_file(*_: object, **__: object) -> _StagedFile:
                return _StagedFile(staging())

            # setattr: the module does not export the name (its own import of tempfile's)
            setattr(dimse_messages, "NamedTemporaryFile", staged_file)  # noqa: B010


def stage_dataset(event: Event, staging: Staging) -> Path:
    """Write the C-STORE request's dataset, as received, to `staging()`; its path.

    Raises OSError when it cannot be written (the caller answers out of resources).
    """
    target = staging()
    received = received_file(event)
    if received is not None:
        move_file(received, target)
        return target
    request = cast(C_STORE, event.request)
    encoded = request.DataSet
    if encoded is None:
        raise OSError("the C-STORE request carried no dataset")
    try:
        with target.open("wb") as out:
            out.write(PREAMBLE)
            write_file_meta_info(DicomFileLike(out), event.file_meta, enforce_standard=True)
            out.write(encoded.getbuffer())
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target


def move_file(source: Path, target: Path) -> None:
    """Rename `source` to `target`, or copy it there (streamed) and remove it when they are
    on different file systems. Raises OSError; `target` is then not left half written."""
    try:
        try:
            os.replace(source, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.move(source, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def discard_received(event: Event) -> None:
    """Remove pynetdicom's temporary file of a dataset that was not staged (it does so
    itself for a Storage SCP, not for the C-STORE sub-operations of a C-GET)."""
    received = _streamed_to(event)
    if received is not None:
        _write_errors.pop(str(received), None)
        received.unlink(missing_ok=True)


def received_file(event: Event) -> Path | None:
    """The file pynetdicom streamed the dataset into, when it did. Raises the OSError that
    writing it met (see `_write_errors`)."""
    received = _streamed_to(event)
    if received is not None and (error := _write_errors.pop(str(received), None)):
        raise error
    return received


def _streamed_to(event: Event) -> Path | None:
    try:
        path = event.dataset_path
    except AttributeError:
        return None
    return Path(path) if path else None
