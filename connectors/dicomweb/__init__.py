"""DICOMweb (PS3.18): QIDO-RS searches, WADO-RS retrieves streamed to staged files,
STOW-RS stores, against one configured source per client.

from connectors.dicomweb import DicomWebClient, DicomWebSource
"""

from __future__ import annotations

from connectors.dicomweb.client import DicomWebClient
from connectors.dicomweb.config import (
    BasicAuth,
    BearerAuth,
    DicomWebAuth,
    DicomWebRetry,
    DicomWebSource,
    DicomWebTimeouts,
    NoAuth,
)
from connectors.dicomweb.errors import (
    DicomWebAuthError,
    DicomWebError,
    DicomWebHttpError,
    DicomWebNotFound,
    DicomWebProtocolError,
    DicomWebUnavailable,
    MissingSecret,
    MultipartError,
    MultipartTruncated,
    RetrieveInterrupted,
)
from connectors.dicomweb.multipart import (
    MultipartEvent,
    MultipartParser,
    PartData,
    PartEnded,
    PartStarted,
)
from connectors.dicomweb.results import (
    RetrievedInstance,
    RetrieveResult,
    StowFailure,
    StowResult,
)
from connectors.dicomweb.retrieve import OnInstance, Staging

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "DicomWebAuth",
    "DicomWebAuthError",
    "DicomWebClient",
    "DicomWebError",
    "DicomWebHttpError",
    "DicomWebNotFound",
    "DicomWebProtocolError",
    "DicomWebRetry",
    "DicomWebSource",
    "DicomWebTimeouts",
    "DicomWebUnavailable",
    "MissingSecret",
    "MultipartError",
    "MultipartEvent",
    "MultipartParser",
    "MultipartTruncated",
    "NoAuth",
    "OnInstance",
    "PartData",
    "PartEnded",
    "PartStarted",
    "RetrieveInterrupted",
    "RetrieveResult",
    "RetrievedInstance",
    "Staging",
    "StowFailure",
    "StowResult",
]
