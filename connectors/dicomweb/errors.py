"""The exceptions of the DICOMweb transport.

What a peer answers about content (a STOW-RS instance refused, a retrieve that broke after
some instances) is reported as values where the caller can act on them; these exceptions
mean that a call could not do its job at all. None of them carries response content or a
query value: both may hold PHI. UIDs and HTTP statuses are fine.

    DicomWebError
    ├── DicomWebAuthError ........ the peer refused our credentials (HTTP 401 or 403)
    ├── DicomWebHttpError ........ any other unexpected HTTP status (after retries for
    │   │                          429 and 503); `.status_code`
    │   └── DicomWebNotFound ..... 404: no such study, series or instance
    ├── DicomWebUnavailable ...... no answer: connection refused, reset or timed out,
    │                              on every attempt
    ├── DicomWebProtocolError .... an answer that does not follow PS3.18: a retrieve that
    │   │                          is not multipart/related, JSON that is not DICOM JSON
    │   └── MultipartError ....... a multipart body that breaks RFC 2046 (a delimiter
    │       │                      line with trailing garbage, headers too large)
    │       └── MultipartTruncated  the body ended before its closing delimiter
    └── RetrieveInterrupted ...... a WADO-RS retrieve broke mid-transfer; `.completed`
                                   lists the instances handed over before it broke, so
                                   the caller can fetch only what is missing

A source whose secret variable is unset raises connectors.http.MissingSecret (re-exported
here), shared with the other HTTP connectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.http.auth import MissingSecret

__all__ = [
    "DicomWebAuthError",
    "DicomWebError",
    "DicomWebHttpError",
    "DicomWebNotFound",
    "DicomWebProtocolError",
    "DicomWebUnavailable",
    "MissingSecret",
    "MultipartError",
    "MultipartTruncated",
    "RetrieveInterrupted",
]

if TYPE_CHECKING:
    from connectors.dicomweb.results import RetrievedInstance


class DicomWebError(Exception):
    """Base of every exception of this package."""


class DicomWebHttpError(DicomWebError):
    """The peer answered with an HTTP status the operation cannot use."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


class DicomWebAuthError(DicomWebHttpError):
    """The peer refused our credentials (401) or our access (403)."""


class DicomWebNotFound(DicomWebHttpError):
    """The peer has no such resource (404)."""


class DicomWebUnavailable(DicomWebError):
    """The peer could not be reached or stopped answering, on every attempt."""


class DicomWebProtocolError(DicomWebError):
    """The peer's answer does not follow DICOMweb (PS3.18) or HTTP."""


class MultipartError(DicomWebProtocolError):
    """A multipart body that breaks RFC 2046."""


class MultipartTruncated(MultipartError):
    """The multipart body ended before its closing delimiter."""


class RetrieveInterrupted(DicomWebError):
    """A WADO-RS retrieve stopped before its closing delimiter.

    `completed` holds the instances that were complete, and already handed to
    `on_instance`, before the transfer broke; the partial one was removed.
    """

    def __init__(self, message: str, completed: Sequence[RetrievedInstance]) -> None:
        super().__init__(message)
        self.completed: tuple[RetrievedInstance, ...] = tuple(completed)

    @property
    def completed_sop_instance_uids(self) -> frozenset[str]:
        """The SOP Instance UIDs of the complete instances (those whose header was read)."""
        return frozenset(item.sop_instance_uid for item in self.completed if item.sop_instance_uid)
