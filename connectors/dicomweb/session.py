"""One DICOMweb peer over HTTP: the shared retrying session (connectors.http), with the
HTTP errors made DICOMweb's typed exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx

from connectors.dicomweb.config import DicomWebSource
from connectors.dicomweb.errors import (
    DicomWebAuthError,
    DicomWebHttpError,
    DicomWebNotFound,
    DicomWebUnavailable,
)
from connectors.http import RetryingSession, Sleep

__all__ = ["DicomWebSession", "Sleep"]


class DicomWebSession(RetryingSession):
    """A RetryingSession bound to one DICOMweb source.

    `environ` replaces os.environ for the secret. Raises MissingSecret when the source's
    secret variable is unset.
    """

    kind = "DICOMweb"

    def __init__(
        self,
        source: DicomWebSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            source.name,
            auth=source.httpx_auth(environ),
            retry=source.retry,
            timeouts=source.timeouts,
            max_concurrency=source.max_concurrency,
            verify=source.tls_verify(),
            transport=transport,
            sleep=sleep,
        )
        self.source = source

    def url(self, path: str, query: str = "") -> str:
        """The absolute URL of `path` under the source's root, with a raw `query`."""
        return f"{self.source.base_url}{path}" + (f"?{query}" if query else "")

    def unavailable(self, operation: str, attempts: int, exc: Exception) -> Exception:
        return DicomWebUnavailable(
            f"DICOMweb source {self.name!r}: no answer to {operation} after {attempts} "
            f"attempt(s) ({type(exc).__name__})"
        )

    async def status_error(self, operation: str, response: httpx.Response) -> Exception:
        status = response.status_code
        if status in (401, 403):
            refused = "refused our credentials" if status == 401 else "refused access"
            return DicomWebAuthError(
                f"DICOMweb source {self.name!r} {refused} (HTTP {status}) to {operation}: "
                f"check {self.source.auth.describe()}",
                status,
            )
        if status == 404:
            return DicomWebNotFound(
                f"DICOMweb source {self.name!r}: {operation} found nothing (HTTP 404)", status
            )
        return DicomWebHttpError(
            f"DICOMweb source {self.name!r}: {operation} failed with HTTP {status}", status
        )
