"""One DICOMweb peer over HTTP: auth, timeouts, retries, and HTTP errors made typed.

Every request goes through `DicomWebSession.send`, which retries what a later attempt can
fix (429 and 503, honouring Retry-After; no connection, a reset, a timeout) and nothing
else. Logs name the source, the operation and the status, never a URL: a query string
holds patient identifiers.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime

import httpx

from connectors.dicomweb.config import BasicAuth, BearerAuth, DicomWebSource
from connectors.dicomweb.errors import (
    DicomWebAuthError,
    DicomWebHttpError,
    DicomWebNotFound,
    DicomWebUnavailable,
)

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})
Sleep = Callable[[float], Awaitable[None]]
Body = bytes | AsyncIterable[bytes]


class DicomWebSession:
    """An httpx.AsyncClient bound to one source, with its retry policy.

    `transport` replaces the network (tests of the retry logic); `sleep` replaces
    asyncio.sleep between attempts; `environ` replaces os.environ for the secret. Raises
    MissingSecret when the source's secret variable is unset.
    """

    def __init__(
        self,
        source: DicomWebSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        self._sleep = sleep
        limits = httpx.Limits(
            max_connections=source.max_concurrency,
            max_keepalive_connections=source.max_concurrency,
        )
        self._client = httpx.AsyncClient(
            auth=source.httpx_auth(environ),
            timeout=source.timeouts.httpx_timeout(),
            limits=limits,
            verify=source.tls_verify(),
            transport=transport,
            follow_redirects=True,
        )

    def url(self, path: str, query: str = "") -> str:
        """The absolute URL of `path` under the source's root, with a raw `query`."""
        return f"{self.source.base_url}{path}" + (f"?{query}" if query else "")

    async def send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Body] | None = None,
        stream: bool = False,
        attempts: int | None = None,
        answered: Collection[int] = (),
    ) -> httpx.Response:
        """Send one request, retrying as configured; the response, its status checked.

        `body` makes a fresh body for each attempt (an async generator cannot be replayed).
        With `stream=True` the body of the response is not read: the caller reads and
        closes it. Statuses in `answered` are returned like a success, for the caller to
        read. Raises DicomWebAuthError (401, 403), DicomWebNotFound (404),
        DicomWebHttpError (any other status of 300 or more, including 429 and 503 once the
        attempts are spent) and DicomWebUnavailable (no answer on any attempt).
        """
        max_attempts = attempts or self.source.retry.max_attempts
        for attempt in range(1, max_attempts + 1):
            request = self._client.build_request(
                method, url, headers=headers, content=body() if body else None
            )
            try:
                response = await self._client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt == max_attempts:
                    raise DicomWebUnavailable(
                        f"DICOMweb source {self.source.name!r}: no answer to {operation} "
                        f"after {attempt} attempt(s) ({type(exc).__name__})"
                    ) from exc
                delay = self._backoff(attempt)
                logger.warning(
                    "DICOMweb %s: %s failed (%s), attempt %d of %d; retrying in %.1f s",
                    self.source.name,
                    operation,
                    type(exc).__name__,
                    attempt,
                    max_attempts,
                    delay,
                )
                await self._sleep(delay)
                continue
            if response.status_code in RETRY_STATUSES and attempt < max_attempts:
                delay = self._retry_after(response) or self._backoff(attempt)
                await response.aclose()
                logger.warning(
                    "DICOMweb %s: %s answered %d, attempt %d of %d; retrying in %.1f s",
                    self.source.name,
                    operation,
                    response.status_code,
                    attempt,
                    max_attempts,
                    delay,
                )
                await self._sleep(delay)
                continue
            if response.status_code >= 300 and response.status_code not in answered:
                await response.aclose()
                raise self._status_error(operation, response.status_code)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def aclose(self) -> None:
        await self._client.aclose()

    def _backoff(self, attempt: int) -> float:
        retry = self.source.retry
        ceiling = min(retry.max_backoff_seconds, retry.backoff_seconds * 2.0 ** (attempt - 1))
        # Jitter, so that the jobs a peer's outage stopped together do not return together.
        return ceiling * random.uniform(0.5, 1.0)

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after", "").strip()
        if not value:
            return None
        seconds: float
        if value.isdigit():
            seconds = float(value)
        else:
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            seconds = max(0.0, (when - datetime.now(UTC)).total_seconds())
        return min(seconds, self.source.retry.max_retry_after_seconds)

    def _status_error(self, operation: str, status: int) -> DicomWebHttpError:
        name = self.source.name
        if status in (401, 403):
            refused = "refused our credentials" if status == 401 else "refused access"
            return DicomWebAuthError(
                f"DICOMweb source {name!r} {refused} (HTTP {status}) to {operation}: "
                f"check {self._credentials()}",
                status,
            )
        if status == 404:
            return DicomWebNotFound(
                f"DICOMweb source {name!r}: {operation} found nothing (HTTP 404)", status
            )
        return DicomWebHttpError(
            f"DICOMweb source {name!r}: {operation} failed with HTTP {status}", status
        )

    def _credentials(self) -> str:
        auth = self.source.auth
        if isinstance(auth, BasicAuth):
            return f"the user {auth.username!r} and the password in ${auth.password_env}"
        if isinstance(auth, BearerAuth):
            return f"the bearer token in ${auth.token_env}"
        return "its auth setting: the source is configured without credentials"
