"""How patient to be with an HTTP peer: timeouts, retries, TLS (configuration)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator


class HttpTimeouts(BaseModel):
    """Seconds; `read` is the longest silence between two chunks of an answer, not a bound
    on a whole transfer (a large study or export takes as long as it takes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connect: float = Field(default=10.0, gt=0)
    read: float = Field(default=60.0, gt=0)
    write: float = Field(default=60.0, gt=0)
    pool: float = Field(default=60.0, gt=0)

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


class HttpRetry(BaseModel):
    """Retries of a request that got 429 or 503 (or, with `retry_server_errors`, any 5xx), or
    no answer (connection refused, reset, timed out): exponential backoff from
    `backoff_seconds`, or the peer's Retry-After."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=1)
    backoff_seconds: float = Field(default=1.0, ge=0)
    max_backoff_seconds: float = Field(default=30.0, ge=0)
    max_retry_after_seconds: float = Field(default=120.0, ge=0)
    """A longer Retry-After is cut to this, so that a peer cannot park a job for hours."""
    retry_server_errors: bool = False
    """Also retry 500, 502 and 504: safe for reads, which is all the pulls send."""


class HttpPeer(BaseModel):
    """What every configured HTTP peer has: where it is, how patient to be, which TLS."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(min_length=1)
    timeouts: HttpTimeouts = Field(default_factory=HttpTimeouts)
    retry: HttpRetry = Field(default_factory=HttpRetry)
    max_concurrency: int = Field(default=4, ge=1, le=64)
    """Connections open at once to this peer."""
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

    def tls_verify(self) -> bool | ssl.SSLContext:
        """What httpx's `verify` takes: a context trusting `ca_file`, or the flag."""
        if self.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.ca_file))
        return self.verify_tls
