"""One HTTP peer: an httpx.AsyncClient with the source's auth, timeouts, concurrency limit
and retry policy, and HTTP errors made typed by the transport that subclasses it.

`RetryingSession.send` retries what a later attempt can fix (429 and 503, honouring
Retry-After; with `retry_server_errors` also 500, 502 and 504; no connection, a reset, a
timeout) and nothing else. Logs name the source, the operation and the status, never a URL:
a query string holds patient identifiers.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime

import httpx

from connectors.http.policy import HttpRetry, HttpTimeouts

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})
SERVER_ERRORS = frozenset({500, 502, 504})
Sleep = Callable[[float], Awaitable[None]]
Body = bytes | AsyncIterable[bytes]


class RetryingSession:
    """The request loop; subclasses say what a failure is (`status_error`, `unavailable`).

    `transport` replaces the network (tests of the retry logic); `sleep` replaces
    asyncio.sleep between attempts.
    """

    kind = "HTTP"
    """How logs name the transport ("DICOMweb", "FHIR")."""

    def __init__(
        self,
        name: str,
        *,
        auth: httpx.Auth | None,
        retry: HttpRetry,
        timeouts: HttpTimeouts,
        max_concurrency: int,
        verify: bool | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.retry = retry
        self._sleep = sleep
        limits = httpx.Limits(
            max_connections=max_concurrency, max_keepalive_connections=max_concurrency
        )
        self.client = httpx.AsyncClient(
            auth=auth,
            timeout=timeouts.httpx_timeout(),
            limits=limits,
            verify=verify,
            transport=transport,
            follow_redirects=True,
            headers=headers,
        )

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
        read. Any other status of 300 or more raises `status_error` (429 and 503 once the
        attempts are spent); no answer on any attempt raises `unavailable`.
        """
        max_attempts = attempts or self.retry.max_attempts
        retried = RETRY_STATUSES | (SERVER_ERRORS if self.retry.retry_server_errors else set())
        for attempt in range(1, max_attempts + 1):
            request = self.client.build_request(
                method, url, headers=headers, content=body() if body else None
            )
            try:
                response = await self.client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if attempt == max_attempts:
                    raise self.unavailable(operation, attempt, exc) from exc
                delay = self.backoff(attempt)
                self._log_retry(operation, type(exc).__name__, attempt, max_attempts, delay)
                await self._sleep(delay)
                continue
            if response.status_code in retried and attempt < max_attempts:
                delay = self.retry_after(response) or self.backoff(attempt)
                await response.aclose()
                self._log_retry(operation, str(response.status_code), attempt, max_attempts, delay)
                await self._sleep(delay)
                continue
            if response.status_code >= 300 and response.status_code not in answered:
                try:
                    raise await self.status_error(operation, response)
                finally:
                    await response.aclose()
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def status_error(self, operation: str, response: httpx.Response) -> Exception:
        """The exception for an unusable status (the response is closed afterwards)."""
        return httpx.HTTPStatusError(
            f"{self.kind} source {self.name!r}: {operation} failed with HTTP "
            f"{response.status_code}",
            request=response.request,
            response=response,
        )

    def unavailable(self, operation: str, attempts: int, exc: Exception) -> Exception:
        """The exception for a peer that did not answer on any attempt."""
        return exc

    async def aclose(self) -> None:
        await self.client.aclose()

    def backoff(self, attempt: int) -> float:
        retry = self.retry
        ceiling = min(retry.max_backoff_seconds, retry.backoff_seconds * 2.0 ** (attempt - 1))
        # Jitter, so that the jobs a peer's outage stopped together do not return together.
        return ceiling * random.uniform(0.5, 1.0)

    def retry_after(self, response: httpx.Response) -> float | None:
        """The peer's Retry-After (seconds or an HTTP date), capped; None if absent."""
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
        return min(seconds, self.retry.max_retry_after_seconds)

    def _log_retry(
        self, operation: str, what: str, attempt: int, max_attempts: int, delay: float
    ) -> None:
        logger.warning(
            "%s %s: %s got %s, attempt %d of %d; retrying in %.1f s",
            self.kind,
            self.name,
            operation,
            what,
            attempt,
            max_attempts,
            delay,
        )
