"""Import reconciliation of one instance file (the IHE Import Reconciliation idea).

`reconcile_file` rewrites only the header: pydicom reads it (stopping before the pixel
data), `coerce_identity` edits it, pydicom writes it, and the rest of the original file,
from the pixel data element to the end, is copied after it in 1 MiB chunks without being
decoded. So Explicit and Implicit VR, native and encapsulated pixel data all move in
bounded memory whatever their size. A deflated dataset cannot be cut that way (the pixel
data is inside the compressed stream): it is inflated, edited and deflated whole by
pydicom, and refused above `deflated_limit` once inflated.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmwrite
from pydicom.dataset import FileDataset

from dicom._demographics import HubIdentity, demographic_differences
from dicom._header_edit import MODIFYING_SYSTEM, REASONS, coerce_identity
from dicom._part10 import DEFER_SIZE, DEFLATED_LIMIT, read_header, scan
from dicom.errors import InvalidDicom

__all__ = [
    "MODIFYING_SYSTEM",
    "REASONS",
    "HubIdentity",
    "demographic_differences",
    "reconcile_file",
]

_CHUNK = 1024 * 1024
# A TIFF header in the preamble makes a dual-personality DICOM/TIFF file (PS3.10 7.5);
# its offsets point into the file and the new header moves everything after it.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


def reconcile_file(
    source: Path,
    target: Path,
    identity: HubIdentity,
    *,
    reason: str,
    when: datetime,
    source_of_previous_values: str | None = None,
    defer_size: int = DEFER_SIZE,
    deflated_limit: int = DEFLATED_LIMIT,
) -> None:
    """Write to `target` the instance at `source` with the hub's identity.

    PatientID and IssuerOfPatientID become the hub's (and PatientName, PatientBirthDate,
    PatientSex where `identity` has them); the outside identifier is kept in
    OtherPatientIDsSequence (TypeOfPatientID TEXT); an OriginalAttributesSequence item
    records the previous values, `when`, ModifyingSystem SECOND-OPINION-HUB,
    `source_of_previous_values` (default: the outside issuer) and `reason` (COERCE or
    CORRECT). UIDs and pixel data are unchanged. If the instance already carries the
    identity, `target` is a byte-for-byte copy.

    `target` appears complete or not at all (written beside it, then renamed). Raises
    InvalidDicom for a file that is not well-formed Part 10 or a deflated one that is too
    large, ValueError for another reason.
    """
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {sorted(REASONS)}")
    layout = scan(source, deflated_limit=deflated_limit)
    deflated = layout.inflated is not None
    ds = read_header(source, layout, defer_size=defer_size, with_pixels=deflated)
    changed = coerce_identity(
        ds, identity, reason=reason, when=when, source=source_of_previous_values
    )
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        with partial.open("xb") as out:
            if not changed:
                _copy(source, 0, out)
            else:
                _write_header(ds, out)
                if not deflated and layout.pixel_data is not None:
                    _copy(source, layout.pixel_data.offset, out)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _write_header(ds: FileDataset, out: BinaryIO) -> None:
    if ds.preamble is not None and ds.preamble[:4] in _TIFF_MAGIC:
        ds.preamble = bytes(128)
    try:
        dcmwrite(out, ds, enforce_file_format=True)
    except (ValueError, TypeError, LookupError) as exc:
        raise InvalidDicom(f"cannot rewrite the header ({type(exc).__name__})") from exc


def _copy(source: Path, offset: int, out: BinaryIO) -> None:
    with source.open("rb") as original:
        original.seek(offset)
        while chunk := original.read(_CHUNK):
            out.write(chunk)
