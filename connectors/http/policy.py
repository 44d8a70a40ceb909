"""How patient to be with an HTTP peer: timeouts and retries (configuration)."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field


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
