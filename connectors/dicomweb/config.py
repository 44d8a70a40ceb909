"""The configuration of one DICOMweb source (an outside PACS or archive); its auth, timeouts
and retries are the shared HTTP ones (connectors.http)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.http import BasicAuth, BearerAuth, HttpRetry, HttpTimeouts, NoAuth

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


class DicomWebSource(BaseModel):
    """One DICOMweb peer: where it is, how to authenticate, how patient to be with it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    """The DICOMweb root, e.g. https://pacs.example.org/dicom-web (no trailing slash
    needed): /studies is appended to it."""
    auth: DicomWebAuth = Field(default_factory=NoAuth)
    timeouts: DicomWebTimeouts = Field(default_factory=DicomWebTimeouts)
    retry: DicomWebRetry = Field(default_factory=DicomWebRetry)
    max_concurrency: int = Field(default=4, ge=1)
    """Connections open at once to this peer."""
    stow_batch_size: int = Field(default=50, ge=1)
    """Instances per STOW-RS request."""
    verify_tls: bool = True
    ca_file: Path | None = None
    """CA bundle for a peer whose certificate a private CA signed."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an http:// or https:// URL")
        return value.rstrip("/")

    def httpx_auth(self, environ: Mapping[str, str] | None = None) -> httpx.Auth | None:
        """The httpx auth of this source, its secret read from `environ` (os.environ by
        default); raises MissingSecret when the variable is unset or empty."""
        return self.auth.httpx_auth(self.name, os.environ if environ is None else environ)

    def tls_verify(self) -> bool | ssl.SSLContext:
        """What httpx's `verify` takes: a context trusting `ca_file`, or the flag."""
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.ca_file))
        return self.verify_tls
