"""The configuration of one DICOMweb source (an outside PACS or archive); its auth, timeouts
and retries are the shared HTTP ones (connectors.http)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

import httpx
from pydantic import Field

from connectors.http import BasicAuth, BearerAuth, HttpPeer, HttpRetry, HttpTimeouts, NoAuth

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "DicomWebAuth",
    "DicomWebRetry",
    "DicomWebSource",
    "DicomWebTimeouts",
    "NoAuth",
]

DicomWebAuth = Annotated[NoAuth | BasicAuth | BearerAuth, Field(discriminator="type")]


# The names the DICOMweb configuration has always had.
DicomWebTimeouts = HttpTimeouts
DicomWebRetry = HttpRetry


class DicomWebSource(HttpPeer):
    """One DICOMweb peer: where it is (`base_url`, the DICOMweb root, e.g.
    https://pacs.example.org/dicom-web: /studies is appended to it), how to authenticate,
    how patient to be with it."""

    name: str = Field(min_length=1)
    auth: DicomWebAuth = Field(default_factory=NoAuth)
    stow_batch_size: int = Field(default=50, ge=1)
    """Instances per STOW-RS request."""

    def httpx_auth(self, environ: Mapping[str, str] | None = None) -> httpx.Auth | None:
        """The httpx auth of this source, its secret read from `environ` (os.environ by
        default); raises MissingSecret when the variable is unset or empty."""
        return self.auth.httpx_auth(self.name, os.environ if environ is None else environ)
