"""The configuration of one DICOMweb source (an outside PACS or archive).

Secrets never sit in the configuration: basic and bearer auth name the environment variable
that holds the password or token, and the client reads it when it is created.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Annotated, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.dicomweb.errors import MissingSecret

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class NoAuth(BaseModel):
    """No credentials (a PACS on a trusted network)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["none"] = "none"

    def httpx_auth(self, source: str, environ: Mapping[str, str]) -> httpx.Auth | None:
        return None


class BasicAuth(BaseModel):
    """HTTP basic auth; the password comes from the environment variable `password_env`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["basic"] = "basic"
    username: str = Field(min_length=1)
    password_env: str = Field(pattern=_ENV_NAME)

    def httpx_auth(self, source: str, environ: Mapping[str, str]) -> httpx.Auth | None:
        return httpx.BasicAuth(self.username, _secret(source, self.password_env, environ))


class BearerAuth(BaseModel):
    """A bearer token from the environment variable `token_env` (issued out of band)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["bearer"] = "bearer"
    token_env: str = Field(pattern=_ENV_NAME)

    def httpx_auth(self, source: str, environ: Mapping[str, str]) -> httpx.Auth | None:
        return _BearerToken(_secret(source, self.token_env, environ))


DicomWebAuth = Annotated[NoAuth | BasicAuth | BearerAuth, Field(discriminator="type")]


class DicomWebTimeouts(BaseModel):
    """Seconds; `read` is the longest silence between two chunks of an answer, not a bound
    on a whole retrieve (a large study takes as long as it takes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect: float = Field(default=10.0, gt=0)
    read: float = Field(default=60.0, gt=0)
    write: float = Field(default=60.0, gt=0)
    pool: float = Field(default=60.0, gt=0)

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


class DicomWebRetry(BaseModel):
    """Retries of a request that got 429 or 503, or no answer (connection refused, reset,
    timed out): exponential backoff from `backoff_seconds`, or the peer's Retry-After."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=1)
    backoff_seconds: float = Field(default=1.0, ge=0)
    max_backoff_seconds: float = Field(default=30.0, ge=0)
    max_retry_after_seconds: float = Field(default=120.0, ge=0)
    """A longer Retry-After is cut to this, so that a peer cannot park a job for hours."""


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


class _BearerToken(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _secret(source: str, variable: str, environ: Mapping[str, str]) -> str:
    value = environ.get(variable, "")
    if not value:
        raise MissingSecret(source, variable)
    return value
