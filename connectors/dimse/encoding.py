"""Quicker encodings of the two things pynetdicom encodes on every C-STORE, byte for byte
what it would have written.

A Storage SCP answers one C-STORE at a time per association, so the interpreter time of
each one bounds the rate. Profiled while storescu pushed small CT instances, over a
quarter of that time went to pydicom's general Dataset writer on two fixed shapes:
- the File Meta Information at the head of each received file (pynetdicom builds a
  FileMetaDataset and writes it with pydicom's write_file_meta_info), about 15%;
- the command set of each DIMSE message, encoded twice per response (once to measure the
  group length, once to send), about 12%.
Both are short runs of group 0000 or 0002 elements of a few value representations, written
here directly. A command set holding anything else (an AT, a multi-valued element) goes
to pynetdicom's own encoder. tests/unit/test_dimse_encoding.py checks that the bytes are
the same as those of pydicom's writer.

`install()` puts them in place of the names pynetdicom.dimse_messages calls.
"""

from __future__ import annotations

import logging
import struct
import threading
from typing import Any, BinaryIO, Final

import pynetdicom.dimse_messages as dimse_messages
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info as pydicom_write_file_meta_info
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import encode as pynetdicom_encode

log = logging.getLogger("connectors.dimse")

_INTEGERS: Final = {"US": "<H", "UL": "<L"}
_LIMITS: Final = {"US": 1 << 16, "UL": 1 << 32}
_TEXT_PADDING: Final = {"UI": b"\0", "AE": b" ", "CS": b" ", "LO": b" ", "SH": b" "}
_install_lock = threading.Lock()


def _padded(text: str, padding: bytes) -> bytes:
    raw = text.encode("ascii")
    return raw + padding if len(raw) % 2 else raw


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    """A group 0002 element in Explicit VR Little Endian, of a VR with a 2-byte length."""
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


_VERSION: Final = struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
_IMPLEMENTATION: Final = _explicit(
    0x0012, b"UI", _padded(PYNETDICOM_IMPLEMENTATION_UID, b"\0")
) + _explicit(0x0013, b"SH", _padded(PYNETDICOM_IMPLEMENTATION_VERSION, b" "))


def encode_file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The File Meta Information pynetdicom writes ahead of a received dataset (its
    create_file_meta, written by pydicom's write_file_meta_info), with its group length."""
    body = b"".join(
        (
            _VERSION,
            _explicit(0x0002, b"UI", _padded(sop_class_uid, b"\0")),
            _explicit(0x0003, b"UI", _padded(sop_instance_uid, b"\0")),
            _explicit(0x0010, b"UI", _padded(transfer_syntax, b"\0")),
            _IMPLEMENTATION,
        )
    )
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def write_file_meta(fp: BinaryIO, file_meta: bytes | Dataset, **options: Any) -> None:
    """Write what `encode_file_meta` made; a FileMetaDataset goes to pydicom's writer."""
    if isinstance(file_meta, bytes):
        fp.write(file_meta)
    else:
        pydicom_write_file_meta_info(fp, file_meta, **options)  # type: ignore[arg-type]


def encode_command_set(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    """pynetdicom's dsutils.encode, quicker for what a command set holds (Implicit VR
    Little Endian elements of single integers and ASCII text); anything else goes to it,
    and so does a value it cannot encode (its None, and its log, say so)."""
    if not (is_implicit_vr and is_little_endian) or deflated:
        return pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)
    parts: list[bytes] = []
    for element in ds:
        vr, value = element.VR, element.value
        if value is None or value == "":
            raw = b""
        elif vr in _INTEGERS and type(value) is int and 0 <= value < _LIMITS[vr]:
            raw = struct.pack(_INTEGERS[vr], value)
        elif vr in _TEXT_PADDING and isinstance(value, str) and value.isascii():
            raw = _padded(value, _TEXT_PADDING[vr])
        else:
            return pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)
        parts.append(struct.pack("<HHL", element.tag.group, element.tag.element, len(raw)))
        parts.append(raw)
    return b"".join(parts)


def install() -> bool:
    """Have pynetdicom's DIMSE messages use these encodings (process-wide, idempotent);
    False, with a warning, when its module no longer has the names replaced (a pynetdicom
    whose internals changed: it then keeps its own, slower but as correct)."""
    replacements = {
        "create_file_meta": encode_file_meta,
        "write_file_meta_info": write_file_meta,
        "encode": encode_command_set,
    }
    with _install_lock:
        if not all(hasattr(dimse_messages, name) for name in replacements):
            log.warning("pynetdicom's DIMSE messages changed: its own encoders are kept")
            return False
        for name, replacement in replacements.items():
            setattr(dimse_messages, name, replacement)
    return True
