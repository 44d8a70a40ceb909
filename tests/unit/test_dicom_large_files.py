"""Bounded memory: a 200 MB whole-slide instance is validated, reconciled and stored while
the process allocates a few MiB, and its pixel data comes out byte for byte.

The big files are built by streaming (a pydicom header, then the pixel data element
written in 1 MiB chunks), never held in memory by the test either.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pytest
from pydicom import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit

from dicom._part10 import scan
from dicom.instances import read_instance
from dicom.reconcile import HubIdentity, reconcile_file
from dicom.store import ContentStore
from dicom.synthetic import make_patient, make_study

MIB = 1024 * 1024
SIDE = 512
FRAME_BYTES = SIDE * SIDE * 3
PEAK_PYTHON_BYTES = 16 * MIB  # what tracemalloc may see at most, for any file size
PEAK_RSS_KIB = 300 * 1024  # issue #5: a 2 GB study moves with peak RSS < 300 MB
IDENTITY = HubIdentity("HUB-000099", "SECOND-OPINION-HUB", family="Sample", given="Noor")
WHEN = datetime(2024, 6, 1, 12, 0, 0)
_T = TypeVar("_T")


@dataclass(frozen=True)
class BigInstance:
    path: Path
    pixel_element_sha256: str  # of the pixel data element, header and value, as written
    size: int


def _write_big_instance(path: Path, frames: int, transfer_syntax: UID, seed: int) -> BigInstance:
    ds = make_study(99, make_patient(99), "SM", 1, 1)[0]
    ds.Rows = ds.Columns = SIDE
    ds.NumberOfFrames = frames
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = SIDE * frames
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    dcmwrite(path, ds, enforce_file_format=True)
    rng = random.Random(seed)
    digest = hashlib.sha256()

    def emit(out: object, data: bytes) -> None:
        assert hasattr(out, "write")
        out.write(data)
        digest.update(data)

    with path.open("ab") as out:
        if transfer_syntax == JPEGBaseline8Bit:
            # Encapsulated (PS3.5 A.4): an empty offset table, one fragment per frame.
            emit(out, struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF))
            emit(out, struct.pack("<HHL", 0xFFFE, 0xE000, 0))
            for _ in range(frames):
                fragment = rng.randbytes(FRAME_BYTES // 4)
                emit(out, struct.pack("<HHL", 0xFFFE, 0xE000, len(fragment)) + fragment)
            emit(out, struct.pack("<HHL", 0xFFFE, 0xE0DD, 0))
        else:
            length = frames * FRAME_BYTES
            if transfer_syntax == ImplicitVRLittleEndian:
                emit(out, struct.pack("<HHL", 0x7FE0, 0x0010, length))
            else:
                emit(out, struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, length))
            while length:
                chunk = rng.randbytes(min(MIB, length))
                emit(out, chunk)
                length -= len(chunk)
    return BigInstance(path, digest.hexdigest(), path.stat().st_size)


def _pixel_element_sha256(path: Path) -> str:
    layout = scan(path)
    assert layout.pixel_data is not None
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        stream.seek(layout.pixel_data.offset)
        while chunk := stream.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _peak_python_bytes(action: Callable[[], _T]) -> tuple[_T, int]:
    tracemalloc.start()
    try:
        result = action()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture(scope="module")
def slide_200mb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigInstance]:
    folder = tmp_path_factory.mktemp("big")
    instance = _write_big_instance(folder / "slide.dcm", 272, ExplicitVRLittleEndian, seed=1)
    yield instance
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, emptied afterwards: pytest keeps the last runs' folders, not 200 MB each."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_a_200mb_instance_is_reconciled_in_bounded_memory(
    slide_200mb: BigInstance, scratch: Path
) -> None:
    assert slide_200mb.size > 200 * MIB
    target = scratch / "reconciled.dcm"

    _, peak_read = _peak_python_bytes(lambda: read_instance(slide_200mb.path))
    _, peak_reconcile = _peak_python_bytes(
        lambda: reconcile_file(slide_200mb.path, target, IDENTITY, reason="COERCE", when=WHEN)
    )
    (_, info), peak_check = _peak_python_bytes(lambda: read_instance(target))

    assert max(peak_read, peak_reconcile, peak_check) < PEAK_PYTHON_BYTES
    assert info.patient_id == "HUB-000099"
    assert info.number_of_frames == 272
    assert _pixel_element_sha256(target) == slide_200mb.pixel_element_sha256


def test_a_200mb_instance_is_stored_in_bounded_memory(
    slide_200mb: BigInstance, scratch: Path
) -> None:
    store = ContentStore(scratch / "store")
    staged = store.staging_file()
    staged.hardlink_to(slide_200mb.path)  # a transport would have streamed it here

    stored, peak = _peak_python_bytes(lambda: store.put_file(staged))

    assert peak < PEAK_PYTHON_BYTES
    assert stored.size == slide_200mb.size
    assert _pixel_element_sha256(stored.path) == slide_200mb.pixel_element_sha256

    _, peak = _peak_python_bytes(lambda: _stream_into(store, slide_200mb.path))
    assert peak < PEAK_PYTHON_BYTES
    assert _stream_into(store, slide_200mb.path) == stored  # same content, same object


def _stream_into(store: ContentStore, path: Path) -> object:
    with store.writer() as writer, path.open("rb") as source:
        while chunk := source.read(MIB):
            writer.write(chunk)
        return writer.commit()


def test_peak_rss_of_the_whole_path_stays_under_300mb(
    slide_200mb: BigInstance, scratch: Path
) -> None:
    """read, reconcile, read again and store, in a fresh process measured by the kernel.

    VmHWM, not ru_maxrss: the latter survives exec, so it would report pytest's own size.
    """
    script = textwrap.dedent(
        """
        import re, sys
        from datetime import datetime
        from pathlib import Path
        from dicom.instances import read_instance
        from dicom.reconcile import HubIdentity, reconcile_file
        from dicom.store import ContentStore

        def peak_kib():
            status = Path("/proc/self/status").read_text()
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))

        source, target, root = map(Path, sys.argv[1:4])
        before = peak_kib()
        read_instance(source)
        reconcile_file(source, target, HubIdentity("HUB-1", "SECOND-OPINION-HUB"),
                       reason="COERCE", when=datetime(2024, 1, 1))
        read_instance(target)
        ContentStore(root).put_file(target)
        print(before, peak_kib())
        """
    )
    target = scratch / "reconciled.dcm"
    run = subprocess.run(
        [sys.executable, "-c", script, str(slide_200mb.path), str(target), str(scratch / "s")],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    before_kib, peak_kib = map(int, run.stdout.split())
    print(f"peak RSS {peak_kib / 1024:.0f} MiB (after imports {before_kib / 1024:.0f} MiB)")
    assert peak_kib < PEAK_RSS_KIB


@pytest.mark.parametrize(
    "transfer_syntax", [ImplicitVRLittleEndian, JPEGBaseline8Bit], ids=lambda uid: UID(uid).name
)
def test_implicit_vr_and_encapsulated_instances_stream_too(
    scratch: Path, transfer_syntax: UID
) -> None:
    source = _write_big_instance(scratch / "source.dcm", 96, transfer_syntax, seed=2)
    assert source.size > 18 * MIB
    target = scratch / "reconciled.dcm"

    _, peak = _peak_python_bytes(
        lambda: reconcile_file(source.path, target, IDENTITY, reason="COERCE", when=WHEN)
    )

    assert peak < PEAK_PYTHON_BYTES
    _, info = read_instance(target)
    assert info.transfer_syntax_uid == transfer_syntax
    assert info.patient_id == "HUB-000099"
    assert _pixel_element_sha256(target) == source.pixel_element_sha256
