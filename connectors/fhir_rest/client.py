"""A FHIR R4 REST client for one outside server: capability, read, search with paging,
Patient/$everything and $match, attachments, writes, as the Connector protocol asks.

Every request goes through the shared retrying session (connectors.http): 429 and 503 wait
for Retry-After, other 5xx and lost connections back off, for a bounded number of attempts;
a page whose body is not JSON (cut off, garbage) is fetched again the same way. Concurrency
is bounded by the source's connection limit, the request rate by a leaky bucket.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from aiolimiter import AsyncLimiter

from connectors.base import ConnectorHealth, DeliveryResult, Envelope
from connectors.fhir_rest.config import FhirSource, SmartBackendAuth
from connectors.fhir_rest.errors import (
    FhirAuthError,
    FhirGone,
    FhirHttpError,
    FhirNotFound,
    FhirProtocolError,
    FhirSourceError,
    FhirUnavailable,
)
from connectors.fhir_rest.smart_auth import SmartBackendServices
from connectors.http import MissingSecret, RetryingSession, Sleep

FHIR_JSON = "application/fhir+json"
MAX_OUTCOME_BYTES = 64 * 1024
JsonObject = dict[str, Any]


class FhirSession(RetryingSession):
    """The retrying session of one FHIR source, its failures typed (with the diagnostics of
    the OperationOutcome the source sent)."""

    kind = "FHIR"

    def __init__(self, source: FhirSource, auth: httpx.Auth | None, **options: Any) -> None:
        super().__init__(
            source.name,
            auth=auth,
            retry=source.retry,
            timeouts=source.timeouts,
            max_concurrency=source.max_concurrency,
            verify=source.tls_verify(),
            headers={"Accept": FHIR_JSON},
            **options,
        )
        self.source = source

    def unavailable(self, operation: str, attempts: int, exc: Exception) -> Exception:
        return FhirUnavailable(
            f"FHIR source {self.name!r}: no answer to {operation} after {attempts} "
            f"attempt(s) ({type(exc).__name__})"
        )

    async def status_error(self, operation: str, response: httpx.Response) -> Exception:
        status = response.status_code
        outcome = await outcome_text(response)
        message = f"FHIR source {self.name!r}: {operation} answered HTTP {status}"
        if status in (401, 403):
            refused = "refused our credentials" if status == 401 else "refused access"
            return FhirAuthError(
                f"FHIR source {self.name!r} {refused} (HTTP {status}) to {operation}: check "
                f"{self.source.auth.describe()}",
                status,
                outcome,
            )
        if status == 404:
            return FhirNotFound(message, status, outcome)
        if status == 410:
            return FhirGone(message, status, outcome)
        return FhirHttpError(message, status, outcome)


class FhirClient:
    """One outside FHIR server. Close with `aclose()` or use as an async context manager.

    `transport`, `sleep` and `environ` are for tests. Raises MissingSecret when the
    source's secret is not set.
    """

    def __init__(
        self,
        source: FhirSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        self.name = source.name
        self.base_url = source.base_url
        self.auth = _auth(source, os.environ if environ is None else environ)
        self.session = FhirSession(source, self.auth, transport=transport, sleep=sleep)
        self.sleep = sleep
        # One request per 1/rate seconds, no burst: "at most N a second" in every second.
        rate = source.requests_per_second
        self._limiter = AsyncLimiter(1, 1.0 / rate) if rate else None
        self._capabilities: JsonObject | None = None

    async def __aenter__(self) -> FhirClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.session.aclose()

    # -- Connector --------------------------------------------------------------------

    async def health(self) -> ConnectorHealth:
        """The CapabilityStatement, one attempt: healthy when it is one."""
        try:
            statement = await self.get_json("metadata", "metadata", attempts=1)
        except (FhirSourceError, MissingSecret) as exc:
            return ConnectorHealth(False, str(exc))
        software = (statement.get("software") or {}).get("name", "")
        return ConnectorHealth(True, f"FHIR {statement.get('fhirVersion', '?')} {software}")

    async def deliver(self, envelope: Envelope) -> DeliveryResult:
        """POST a transaction or batch Bundle (or one resource) to the source."""
        try:
            document = json.loads(envelope.payload)
        except ValueError as exc:
            return DeliveryResult(False, "invalid", f"not JSON: {exc}")
        kind = document.get("resourceType", "")
        path = "" if kind == "Bundle" else kind
        try:
            answer = await self.post_json(f"deliver {kind}", path, document)
        except FhirHttpError as exc:
            retryable = exc.status_code >= 500 or exc.status_code in (401, 408, 429)
            return DeliveryResult(False, str(exc.status_code), str(exc), retryable)
        except (FhirUnavailable, FhirProtocolError) as exc:
            return DeliveryResult(False, "unavailable", str(exc), True)
        response = json.dumps(answer).encode()
        # A batch answers 200 whatever became of its entries: each entry says.
        for index, entry in enumerate(answer.get("entry") or []):
            status = str((entry.get("response") or {}).get("status", "200")).split()[0]
            if not status.startswith("2"):
                detail = f"entry {index} answered {status}"
                retryable = status.startswith("5") or status in ("408", "429")
                return DeliveryResult(False, status, detail, retryable, response)
        return DeliveryResult(True, "200", response=response)

    # -- reads ------------------------------------------------------------------------

    async def capabilities(self) -> JsonObject:
        if self._capabilities is None:
            self._capabilities = await self.get_json("metadata", "metadata")
        return self._capabilities

    async def offers(self, operation: str, resource_type: str = "Patient") -> bool:
        """Does the CapabilityStatement list `operation` (e.g. "everything") on the type or
        the system?"""
        statement = await self.capabilities()
        for rest in statement.get("rest") or []:
            named = [op.get("name") for op in rest.get("operation") or []]
            for resource in rest.get("resource") or []:
                if resource.get("type") == resource_type:
                    named += [op.get("name") for op in resource.get("operation") or []]
            if operation in named or f"${operation}" in named:
                return True
        return False

    async def read(self, resource_type: str, resource_id: str) -> JsonObject:
        resource = await self.get_json(f"read {resource_type}", f"{resource_type}/{resource_id}")
        if resource.get("resourceType") != resource_type:
            raise FhirProtocolError(
                f"FHIR source {self.name!r}: read {resource_type} returned a "
                f"{resource.get('resourceType')!r}"
            )
        return resource

    async def search(
        self, resource_type: str, params: Mapping[str, str] | list[tuple[str, str]]
    ) -> AsyncIterator[JsonObject]:
        """Every page of a search, following `next` links."""
        query = urlencode(list(params.items()) if isinstance(params, Mapping) else params)
        async for page in self.pages(f"search {resource_type}", f"{resource_type}?{query}"):
            yield page

    async def everything(
        self, patient_id: str, since: str | None = None
    ) -> AsyncIterator[JsonObject]:
        """The pages of Patient/$everything."""
        params = {"_count": str(self.source.page_size)}
        if since:
            params["_since"] = since
        url = f"Patient/{patient_id}/$everything?{urlencode(params)}"
        async for page in self.pages("Patient/$everything", url):
            yield page

    async def pages(self, operation: str, first: str) -> AsyncIterator[JsonObject]:
        """The Bundles from `first` (a path under the base, or an absolute URL) on, by
        `next` link; a link that leaves the source is refused."""
        url: str | None = first
        seen: set[str] = set()
        while url:
            seen.add(url)
            bundle = await self.get_json(operation, url)
            if bundle.get("resourceType") != "Bundle":
                raise FhirProtocolError(
                    f"FHIR source {self.name!r}: {operation} returned a "
                    f"{bundle.get('resourceType')!r}, not a Bundle"
                )
            yield bundle
            url = next_link(bundle)
            if url is not None:
                self._check_same_origin(operation, url)
                if url in seen:
                    raise FhirProtocolError(
                        f"FHIR source {self.name!r}: {operation} links back to a page it sent"
                    )

    async def match(self, patient: JsonObject, count: int = 5) -> list[JsonObject]:
        """Patient/$match: the entries (resource and search.score) of the candidates."""
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": patient},
                {"name": "count", "valueInteger": count},
            ],
        }
        bundle = await self.post_json("Patient/$match", "Patient/$match", parameters)
        return [e for e in bundle.get("entry") or [] if isinstance(e.get("resource"), dict)]

    async def attachment(self, url: str) -> tuple[bytes, str]:
        """The bytes and content type of an attachment (a Binary at the source, or a URL
        on its server); FhirProtocolError when larger than the source's limit."""
        target = self._absolute(url)
        self._check_same_origin("attachment", target)
        response = await self._send(
            "attachment", "GET", target, headers={"Accept": "*/*"}, stream=True
        )
        limit = self.source.max_attachment_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise FhirProtocolError(
                        f"FHIR source {self.name!r}: an attachment is larger than "
                        f"max_attachment_bytes ({limit})"
                    )
                chunks.append(chunk)
        finally:
            await response.aclose()
        content_type = response.headers.get("content-type", "application/octet-stream")
        data = b"".join(chunks)
        if content_type.startswith(FHIR_JSON):
            # The source sent the Binary resource itself: its data is the attachment.
            binary = _json(self.name, "attachment", data)
            return _binary_data(binary), str(
                binary.get("contentType") or "application/octet-stream"
            )
        return data, content_type.split(";")[0].strip()

    # -- writes -----------------------------------------------------------------------

    async def create(self, resource: JsonObject, *, if_none_exist: str | None = None) -> JsonObject:
        """POST the resource; with `if_none_exist` (search criteria) a conditional create,
        so that a retried write-back finds what the first attempt made."""
        kind = resource["resourceType"]
        headers = {"If-None-Exist": if_none_exist} if if_none_exist else {}
        return await self.post_json(f"create {kind}", kind, resource, headers)

    async def update(self, resource: JsonObject, *, if_match: str | None = None) -> JsonObject:
        """PUT the resource by its id; with `if_match` (an ETag) only over that version."""
        kind = resource["resourceType"]
        headers = {"Content-Type": FHIR_JSON, **({"If-Match": if_match} if if_match else {})}
        response = await self._send(
            f"update {kind}",
            "PUT",
            self._absolute(f"{kind}/{resource['id']}"),
            headers=headers,
            body=_encoded(resource),
            attempts=1,
        )
        return _json(self.name, f"update {kind}", response.content) if response.content else {}

    async def post_json(
        self,
        operation: str,
        path: str,
        document: JsonObject,
        headers: Mapping[str, str] | None = None,
    ) -> JsonObject:
        # Writes are sent once: a POST that timed out may have been carried out.
        response = await self._send(
            operation,
            "POST",
            self._absolute(path),
            headers={"Content-Type": FHIR_JSON, **(headers or {})},
            body=_encoded(document),
            attempts=1,
        )
        return _json(self.name, operation, response.content) if response.content else {}

    # -- plumbing ---------------------------------------------------------------------

    async def get_json(
        self, operation: str, path: str, *, attempts: int | None = None
    ) -> JsonObject:
        """GET a FHIR JSON document; a body that is not JSON is fetched again."""
        tries = attempts or self.source.retry.max_attempts
        for attempt in range(1, tries + 1):
            response = await self._send(operation, "GET", self._absolute(path), attempts=attempts)
            try:
                return _json(self.name, operation, response.content)
            except FhirProtocolError:
                if attempt == tries:
                    raise
                await self.sleep(self.session.backoff(attempt))
        raise AssertionError("unreachable")

    async def _send(self, operation: str, method: str, url: str, **options: Any) -> httpx.Response:
        if self._limiter is not None:
            await self._limiter.acquire()
        body = options.pop("body", None)
        return await self.session.send(
            operation, method, url, body=(lambda: body) if body is not None else None, **options
        )

    def _absolute(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def _check_same_origin(self, operation: str, url: str) -> None:
        ours, theirs = urlsplit(self.base_url), urlsplit(url)
        if (ours.scheme, ours.netloc) != (theirs.scheme, theirs.netloc):
            raise FhirProtocolError(
                f"FHIR source {self.name!r}: {operation} points to another server "
                f"({theirs.scheme}://{theirs.netloc}); not followed"
            )


def next_link(bundle: JsonObject) -> str | None:
    for link in bundle.get("link") or []:
        if link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None


def _auth(source: FhirSource, environ: Mapping[str, str]) -> httpx.Auth | None:
    auth = source.auth
    if isinstance(auth, SmartBackendAuth):
        return SmartBackendServices(
            client_id=auth.client_id,
            private_key=auth.private_key(source.name, environ),
            scope=auth.scope,
            fhir_base=source.base_url,
            token_url=auth.token_url,
            renew_before=auth.renew_before_seconds,
            verify=source.tls_verify(),
        )
    return auth.httpx_auth(source.name, environ)


def _encoded(document: JsonObject) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _json(source: str, operation: str, data: bytes) -> JsonObject:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise FhirProtocolError(
            f"FHIR source {source!r}: {operation} returned a body that is not JSON "
            f"({len(data)} bytes; {exc.__class__.__name__})"
        ) from exc
    if not isinstance(document, dict) or "resourceType" not in document:
        raise FhirProtocolError(f"FHIR source {source!r}: {operation} returned no FHIR resource")
    return document


def _binary_data(binary: JsonObject) -> bytes:
    return base64.b64decode(binary.get("data") or "")


async def outcome_text(response: httpx.Response) -> str:
    """The diagnostics of the OperationOutcome in an error response, if there is one."""
    try:
        data = await response.aread()
        outcome = json.loads(data[:MAX_OUTCOME_BYTES])
    except (httpx.HTTPError, ValueError):
        return ""
    if not isinstance(outcome, dict) or outcome.get("resourceType") != "OperationOutcome":
        return ""
    return diagnostics(outcome)


def diagnostics(outcome: JsonObject) -> str:
    """What an OperationOutcome's issues say, in one line."""
    texts = [
        issue.get("diagnostics") or (issue.get("details") or {}).get("text") or issue.get("code")
        for issue in outcome.get("issue") or []
    ]
    return "; ".join(str(t) for t in texts if t)[:1000]
