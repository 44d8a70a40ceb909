"""Errors of the DICOM domain: instance validation, reconciliation and the content store.

    DicomError                    base of everything this package raises on purpose
     ├── InvalidDicom              a file the hub does not accept as a DICOM instance;
     │                             `.reason` says why, for hospital IT
     ├── ObjectNotFound            no object with that digest in the content store
     └── InvalidDigest             not a sha256 hex digest (also a ValueError)

Reasons and messages name tags, offsets, sizes and UIDs of SOP classes and transfer
syntaxes, never a patient's name, identifier or birth date.
"""

from __future__ import annotations

__all__ = ["DicomError", "InvalidDicom", "InvalidDigest", "ObjectNotFound"]


class DicomError(Exception):
    """Base class of the errors raised by `dicom`."""


class InvalidDicom(DicomError):
    """A file that is not acceptable DICOM: not Part 10, truncated, or not supported.

    `reason` reads as a sentence for whoever sent the file, e.g. "missing SOPInstanceUID
    (0008,0018)" or "transfer syntax 1.2.3 not supported".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ObjectNotFound(DicomError, LookupError):
    """The content store holds no object with this digest."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"no stored object {digest}")
        self.digest = digest


class InvalidDigest(DicomError, ValueError):
    """A digest that is not 64 lowercase hex characters (never a path into the store)."""

    def __init__(self, digest: str) -> None:
        super().__init__("not a sha256 hex digest")
        self.digest = digest
