"""The layout of a Part 10 file, found by walking element headers without reading values.

pydicom reads values; it does not say where the pixel data starts, and it accepts a file
that ends inside an element. This walk seeks over every value (one 8 or 12 byte header
read per element, per sequence item and per pixel data fragment), so it costs the same for
a 64 KiB slice and a 2 GB slide, and it refuses a file whose declared lengths run past its
end. The deflated transfer syntax is inflated first, in memory, up to a limit.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

from pydicom import dcmread
from pydicom.datadict import dictionary_description
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from dicom.errors import InvalidDicom

__all__ = [
    "DEFER_SIZE",
    "DEFLATED_LIMIT",
    "KEPT_VALUE_LIMIT",
    "KeptElement",
    "PIXEL_DATA_TAGS",
    "Part10Layout",
    "PixelDataElement",
    "describe_tag",
    "read_header",
    "scan",
]

PREAMBLE_LENGTH = 128
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})  # Float, Double, Pixel Data
DEFLATED_LIMIT = 64 * 1024 * 1024
DEFER_SIZE = 64 * 1024  # values larger than this stay in the file until asked for
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_ITEM_GROUP = {True: b"\xfe\xff", False: b"\xff\xfe"}  # group FFFE, little / big endian
_UNDEFINED = 0xFFFFFFFF
# PS3.5 7.1.2: these VRs have a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
)
_MAX_DEPTH = 32
_META_VALUE_LIMIT = 1024
KEPT_VALUE_LIMIT = 64 * 1024  # a kept value longer than this is refused (see `scan`)
_CHUNK = 1024 * 1024
_IN_MEMORY = 1024 * 1024  # a file up to this size is walked in memory
_TRANSFER_SYNTAX = 0x00020010


@dataclass(frozen=True)
class PixelDataElement:
    """Where the pixel data element is and how it is encoded."""

    tag: int  # Pixel Data, Float Pixel Data or Double Float Pixel Data
    vr: str | None  # as written; None in implicit VR
    offset: int  # of the element's tag: the dataset from here on is copied verbatim
    length: int | None  # value length; None when encapsulated (undefined length)
    fragments: int  # items of encapsulated pixel data, Basic Offset Table included


class KeptElement(NamedTuple):
    """A top-level element the walk was asked to keep, as written: its VR (None in
    implicit VR), its value (None for a sequence) and where the value starts."""

    vr: str | None
    value: bytes | None
    offset: int


@dataclass(frozen=True)
class Part10Layout:
    """What the walk found: sizes, offsets, the meta's key UIDs, the pixel data element.

    For the deflated transfer syntax, offsets are into `inflated` (the dataset after the
    file meta, inflated), not into the file. `elements` holds the top-level elements the
    walk was asked to keep, undecoded (a sequence's value is not read: None).
    """

    size: int
    meta_end: int
    transfer_syntax: UID
    media_storage_sop_class: str | None
    media_storage_sop_instance: str | None
    pixel_data: PixelDataElement | None
    inflated: bytes | None = None
    elements: Mapping[int, KeptElement] = field(default_factory=dict)


def scan(
    path: Path, *, deflated_limit: int = DEFLATED_LIMIT, keep: frozenset[int] = frozenset()
) -> Part10Layout:
    """Walk the file at `path`; raise InvalidDicom when it is not a well-formed Part 10 file
    in a transfer syntax we know, or when its declared lengths run past its end.

    The values of the top-level elements whose tags are in `keep` are read on the way,
    as pydicom would hold them before decoding (Part10Layout.elements): one pass gives
    both the layout and what an index needs. A kept value over KEPT_VALUE_LIMIT bytes
    (the tags to keep are short text, numbers and UIDs) is refused as malformed.
    """
    descriptor = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(descriptor).st_size
        if size == 0:
            raise InvalidDicom("empty file (0 bytes)")
        if size <= _IN_MEMORY:
            # Read at once, with as few system calls as can be (each lets another thread
            # take the interpreter): the walk then makes none.
            data = _read_all(descriptor, size)
            return _scan(io.BytesIO(data), data, len(data), deflated_limit, keep)
        with open(descriptor, "rb", closefd=False) as opened:
            return _scan(opened, _FileBuffer(opened), size, deflated_limit, keep)
    finally:
        os.close(descriptor)


def _read_all(descriptor: int, size: int) -> bytes:
    chunks = []
    while size > 0 and (chunk := os.read(descriptor, size)):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _scan(
    fp: BinaryIO,
    buffer: bytes | _FileBuffer,
    size: int,
    deflated_limit: int,
    keep: frozenset[int],
) -> Part10Layout:
    head = fp.read(PREAMBLE_LENGTH + 4)
    if len(head) < PREAMBLE_LENGTH + 4 or head[PREAMBLE_LENGTH:] != b"DICM":
        raise InvalidDicom("not a DICOM file (no DICM preamble)")
    meta, meta_end = _read_meta(fp, size)
    if _TRANSFER_SYNTAX not in meta or not meta[_TRANSFER_SYNTAX]:
        raise InvalidDicom("no TransferSyntaxUID (0002,0010) in the file meta")
    transfer_syntax = UID(meta[_TRANSFER_SYNTAX])
    if not is_known_transfer_syntax(transfer_syntax):
        raise InvalidDicom(f"transfer syntax {_printable(transfer_syntax)} not supported")
    inflated: bytes | None = None
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        inflated = _inflate(fp, deflated_limit)
        walker = _Walker(inflated, len(inflated), implicit=False, little=True, keep=keep)
        pixel_data = walker.dataset(0)
    else:
        walker = _Walker(
            buffer,
            size,
            implicit=transfer_syntax.is_implicit_VR,
            little=transfer_syntax.is_little_endian,
            keep=keep,
        )
        pixel_data = walker.dataset(meta_end)
    return Part10Layout(
        size=size,
        meta_end=meta_end,
        transfer_syntax=transfer_syntax,
        media_storage_sop_class=meta.get(0x00020002),
        media_storage_sop_instance=meta.get(0x00020003),
        pixel_data=pixel_data,
        inflated=inflated,
        elements=walker.kept,
    )


def read_header(
    path: Path, layout: Part10Layout, *, defer_size: int | None, with_pixels: bool = False
) -> FileDataset:
    """pydicom's reading of the file that `scan` accepted: the header only (up to the pixel
    data), values over `defer_size` bytes left in the file until accessed.

    A deflated dataset is read from `layout.inflated` instead, never deferred, and with
    its pixel data when `with_pixels` (it is bounded by the inflation limit).
    Raises InvalidDicom when pydicom cannot parse it.
    """
    try:
        if layout.inflated is None:
            return dcmread(str(path), defer_size=defer_size, stop_before_pixels=True)
        meta = read_file_meta_info(path)
        with path.open("rb") as fp:
            preamble = fp.read(PREAMBLE_LENGTH)
        dataset = read_dataset(
            io.BytesIO(layout.inflated),
            is_implicit_VR=False,
            is_little_endian=True,
            stop_when=None if with_pixels else _at_pixel_data,
        )
        parsed = FileDataset(str(path), dataset, preamble, meta, False, True)
        parsed.set_original_encoding(False, True, dataset._character_set)
        return parsed
    except OSError:
        raise
    except (
        InvalidDicomError,
        EOFError,
        LookupError,
        ValueError,
        TypeError,
        NotImplementedError,
        struct.error,
    ) as exc:
        # The exception's text may quote values from the file: keep only its kind.
        raise InvalidDicom(f"unreadable header ({type(exc).__name__})") from exc


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag in PIXEL_DATA_TAGS


def is_known_transfer_syntax(uid: str) -> bool:
    """A transfer syntax of the standard (retired ones included) that pydicom can parse.

    Papyrus 3 Implicit VR is left out: pydicom treats it as explicit VR, which it is not.
    """
    known = UID(uid)
    return not known.is_private and known.is_transfer_syntax and known != "1.2.840.10008.1.20"


def describe_tag(tag: int) -> str:
    """`Pixel Data (7FE0,0010)`, or just the tag for private and unknown elements."""
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    try:
        return f"{dictionary_description(tag)} {text}"
    except KeyError:
        return f"element {text}"


def _read_meta(fp: BinaryIO, size: int) -> tuple[dict[int, str], int]:
    """The small values of group 0002 (always explicit VR little endian, PS3.10 7.1)."""
    values: dict[int, str] = {}
    while True:
        start = fp.tell()
        head = fp.read(8)
        if len(head) < 8:
            if head:
                raise InvalidDicom("truncated: the file ends inside the file meta information")
            return values, start
        group, element = struct.unpack("<HH", head[:4])
        if group != 0x0002:
            fp.seek(start)
            return values, start
        if head[4:6] in _LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                raise InvalidDicom("truncated: the file ends inside the file meta information")
            (length,) = struct.unpack("<L", extra)
        else:
            (length,) = struct.unpack("<H", head[6:8])
        if length == _UNDEFINED or fp.tell() + length > size:
            raise InvalidDicom("truncated: the file ends inside the file meta information")
        if length <= _META_VALUE_LIMIT:
            raw = fp.read(length)
            values[group << 16 | element] = raw.rstrip(b"\x00 ").decode("ascii", "replace")
        else:
            fp.seek(length, io.SEEK_CUR)


def _inflate(fp: BinaryIO, limit: int) -> bytes:
    # Bounded, so that a small deflated file cannot expand into gigabytes (a zip bomb).
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    try:
        while not inflater.eof and (chunk := fp.read(_CHUNK)):
            out += inflater.decompress(chunk, limit + 1 - len(out))
            if len(out) > limit or inflater.unconsumed_tail:
                raise InvalidDicom(
                    f"deflated dataset larger than {_size_text(limit)} once inflated: "
                    "not accepted in this transfer syntax"
                )
    except zlib.error as exc:
        raise InvalidDicom("corrupt deflated dataset (zlib could not inflate it)") from exc
    if not inflater.eof:
        raise InvalidDicom("truncated: the deflated dataset ends early")
    return bytes(out)


class _FileBuffer:
    """`buffer[start:stop]` of an open file, read when asked (os.pread): what the walk
    reads of a file too large to hold, a few bytes at a time."""

    def __init__(self, fp: BinaryIO) -> None:
        self._fd = fp.fileno()

    def __getitem__(self, index: slice) -> bytes:
        return os.pread(self._fd, index.stop - index.start, index.start)


class _Walker:
    """Walks a dataset's element headers, skipping over values, checking every length.

    `buffer` is the file's bytes (or the inflated dataset), or a _FileBuffer; positions are
    offsets into it."""

    def __init__(
        self,
        buffer: bytes | _FileBuffer,
        size: int,
        *,
        implicit: bool,
        little: bool,
        keep: frozenset[int] = frozenset(),
    ) -> None:
        self._buffer = buffer
        self._size = size
        self._implicit = implicit
        self._little = little
        endian = "<" if little else ">"
        self._tag_length = struct.Struct(endian + "HHL").unpack
        self._tag_short = struct.Struct(endian + "HH2sH").unpack
        self._long = struct.Struct(endian + "L").unpack
        self._tag_short_from = struct.Struct(endian + "HH2sH").unpack_from
        self._long_from = struct.Struct(endian + "L").unpack_from
        self._keep = keep
        self._watched = keep | PIXEL_DATA_TAGS  # elements the walk does more than step over
        self._pos = 0
        self.kept: dict[int, KeptElement] = {}

    def dataset(self, start: int) -> PixelDataElement | None:
        """Walk the top-level dataset from `start` to the end; return its pixel data."""
        self._pos = start
        pixel_data: PixelDataElement | None = None
        while True:
            self._step_over_plain()
            if (remaining := self._size - self._pos) <= 0:
                break
            if remaining < 8 and not self._buffer[self._pos : self._size].strip(b"\x00"):
                break  # zero padding some media writers leave at the end
            tag, vr, length, offset = self._header(self._implicit)
            if tag >> 16 == 0xFFFE:
                raise InvalidDicom(f"malformed dataset: a stray item tag at byte {offset}")
            if length != _UNDEFINED and tag not in self._watched:
                self._skip_value(tag, length)  # most elements: a value to step over
            elif tag in PIXEL_DATA_TAGS and pixel_data is None:
                if length == _UNDEFINED:
                    fragments = self._fragments(tag)
                    pixel_data = PixelDataElement(tag, vr, offset, None, fragments)
                else:
                    self._skip_value(tag, length)
                    pixel_data = PixelDataElement(tag, vr, offset, length, 0)
            elif tag in self._keep:
                self._keep_value(tag, vr, length)
            else:
                self._skip(tag, vr, length, self._implicit, 0)
        return pixel_data

    def _step_over_plain(self) -> None:
        """Walk on from here over the elements that need no more than a step (explicit VR,
        a defined length that stays inside the buffer) or a value kept (a short one, not a
        sequence): most of a header, in one tight loop over an in-memory buffer. Stops at
        the first element that needs more, which the general path then reads (and
        refuses, if malformed)."""
        buffer = self._buffer
        if self._implicit or not isinstance(buffer, bytes):
            return
        tag_short, long_length = self._tag_short_from, self._long_from
        watched, keep, kept = self._watched, self._keep, self.kept
        size, pos = self._size, self._pos
        while size - pos >= 12:  # the longest header fits; the tail is the general path's
            group, element, vr, length = tag_short(buffer, pos)
            if group == 0xFFFE:
                break
            if vr in _LONG_VRS:
                (length,) = long_length(buffer, pos + 8)
                value_at = pos + 12
            elif 0x41 <= vr[0] <= 0x5A and 0x41 <= vr[1] <= 0x5A:
                value_at = pos + 8
            else:
                break
            end = value_at + length
            if length == _UNDEFINED or end > size:
                break
            tag = group << 16 | element
            if tag in watched:
                if tag not in keep or vr == b"SQ" or length > KEPT_VALUE_LIMIT:
                    break
                kept[tag] = KeptElement(vr.decode("ascii"), buffer[value_at:end], value_at)
            pos = end
        self._pos = pos

    def _keep_value(self, tag: int, vr: str | None, length: int) -> None:
        value_tell = self._pos
        if length == _UNDEFINED or vr == "SQ":
            value = None  # a sequence: its presence is kept, not its items
            self._skip(tag, vr, length, self._implicit, 0)
        elif length > KEPT_VALUE_LIMIT:
            raise InvalidDicom(
                f"malformed {describe_tag(tag)}: a value of {length} bytes, "
                f"over {_size_text(KEPT_VALUE_LIMIT)}"
            )
        else:
            self._skip_value(tag, length)
            value = self._buffer[value_tell : self._pos]
        self.kept[tag] = KeptElement(vr, value, value_tell)

    def _header(self, implicit: bool) -> tuple[int, str | None, int, int]:
        offset = self._pos
        head = self._buffer[offset : offset + 8]
        if len(head) < 8:
            raise InvalidDicom(
                f"truncated: the file ends inside an element header at byte {offset}"
            )
        self._pos = offset + 8
        # Item and delimiter tags have no VR in either encoding (PS3.5 7.5).
        if implicit or head[0:2] == _ITEM_GROUP[self._little]:
            group, element, length = self._tag_length(head)
            return group << 16 | element, None, length, offset
        group, element, vr, length = self._tag_short(head)
        if vr in _LONG_VRS:
            extra = self._buffer[self._pos : self._pos + 4]
            if len(extra) < 4:
                raise InvalidDicom(
                    f"truncated: the file ends inside an element header at byte {offset}"
                )
            self._pos += 4
            return group << 16 | element, vr.decode("ascii"), self._long(extra)[0], offset
        if 0x41 <= vr[0] <= 0x5A and 0x41 <= vr[1] <= 0x5A:  # two letters A-Z
            return group << 16 | element, vr.decode("ascii"), length, offset
        # A writer that slipped into implicit VR (pydicom reads these the same way).
        group, element, length = self._tag_length(head)
        return group << 16 | element, None, length, offset

    def _skip(self, tag: int, vr: str | None, length: int, implicit: bool, depth: int) -> None:
        if length != _UNDEFINED:
            self._skip_value(tag, length)
            return
        if depth >= _MAX_DEPTH:
            raise InvalidDicom(f"sequences nested deeper than {_MAX_DEPTH} levels")
        # PS3.5 6.2.2: UN of undefined length is a sequence encoded in implicit VR.
        inner_implicit = implicit or vr == "UN"
        while True:
            item_tag, _, item_length, offset = self._header(True)
            if item_tag == _SEQUENCE_END:
                return
            if item_tag != _ITEM:
                raise InvalidDicom(
                    f"malformed sequence {describe_tag(tag)}: no item at byte {offset}"
                )
            if item_length != _UNDEFINED:
                self._skip_value(tag, item_length)
                continue
            while True:
                header = self._header(inner_implicit)
                inner_tag, inner_vr, inner_length, inner_offset = header
                if inner_tag == _ITEM_END:
                    break
                if inner_tag >> 16 == 0xFFFE:
                    raise InvalidDicom(
                        f"malformed sequence {describe_tag(tag)}: "
                        f"a stray item tag at byte {inner_offset}"
                    )
                self._skip(inner_tag, inner_vr, inner_length, inner_implicit, depth + 1)

    def _fragments(self, tag: int) -> int:
        count = 0
        while True:
            item_tag, _, item_length, offset = self._header(True)
            if item_tag == _SEQUENCE_END:
                return count
            if item_tag != _ITEM or item_length == _UNDEFINED:
                raise InvalidDicom(
                    f"malformed encapsulated {describe_tag(tag)}: no fragment at byte {offset}"
                )
            self._skip_value(tag, item_length)
            count += 1

    def _skip_value(self, tag: int, length: int) -> None:
        end = self._pos + length
        if end > self._size:
            raise InvalidDicom(f"truncated: the file ends inside {describe_tag(tag)}")
        self._pos = end


def _size_text(size: int) -> str:
    mib = 1024 * 1024
    return f"{size // mib} MiB" if size >= mib and size % mib == 0 else f"{size} bytes"


def _printable(text: str) -> str:
    # The UID comes from the sender's file: keep a reason printable and short.
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned[:64]
