"""Frames of an instance's pixel data, read from its file one at a time (WADO-RS frames and
bulk data, what a viewer such as OHIF asks for to draw an image).

Native pixel data is cut at Rows x Columns x SamplesPerPixel x BitsAllocated / 8 per frame,
read at its offset in the file; encapsulated pixel data is walked fragment by fragment with
pydicom's own frame generator on the open file. Either way one frame at a time is in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from pydicom.encaps import generate_frames
from pydicom.uid import UID

from dicom._part10 import DEFER_SIZE, read_header, scan
from dicom.errors import DicomError

_LONG_HEADER_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})


class FrameNotFound(DicomError):
    """The instance has no pixel data, or not the frame asked for."""


def read_frames(path: Path, numbers: Sequence[int]) -> Iterator[bytes]:
    """The frames `numbers` (1-based, in the order asked) of the instance at `path`."""
    layout = scan(path)
    element = layout.pixel_data
    if element is None:
        raise FrameNotFound("the instance has no pixel data")
    ds = read_header(path, layout, defer_size=DEFER_SIZE)
    count = int(ds.get("NumberOfFrames") or 1)
    wrong = [n for n in numbers if not 1 <= n <= count]
    if wrong:
        raise FrameNotFound(f"the instance has {count} frame(s), not frame {wrong[0]}")
    if layout.inflated is not None:
        raise FrameNotFound("frames of a deflated instance are served as the whole instance")
    explicit = not UID(layout.transfer_syntax).is_implicit_VR
    header = 12 if explicit and element.vr in _LONG_HEADER_VRS else 8
    start = element.offset + header
    with path.open("rb") as file:
        if element.length is not None:  # native: frames side by side
            size = _frame_length(ds)
            for number in numbers:
                file.seek(start + (number - 1) * size)
                yield file.read(size)
            return
        file.seek(start)
        wanted = set(numbers)
        found: dict[int, bytes] = {}
        for number, frame in enumerate(generate_frames(file, number_of_frames=count), 1):
            if number in wanted:
                found[number] = frame
            if len(found) == len(wanted):
                break
    for number in numbers:
        yield found[number]


def _frame_length(ds: object) -> int:
    rows = int(getattr(ds, "Rows", 0))
    columns = int(getattr(ds, "Columns", 0))
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    bits = int(getattr(ds, "BitsAllocated", 8))
    pixels = rows * columns * samples
    return (pixels + 7) // 8 if bits == 1 else pixels * bits // 8
