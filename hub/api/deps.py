"""What every route needs: settings, the unit of work, the public base URL, the request body."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.errors import (
    Conflict,
    HubError,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from hub.fhir.interactions import FhirInteractions
from hub.fhir.validation import parse_json
from hub.security.audit import MINOR_FAILURE, SERIOUS_FAILURE, audit_event, write_audit_event
from hub.security.principal import Principal
from hub.security.rate_limit import RateLimiter
from hub.security.tokens import TokenAuthenticator
from hub.settings import Settings
from hub.storage.repository import ResourceRepository


def fhir_body_schema(*resource_types: str) -> dict[str, Any]:
    """OpenAPI text for a route that reads its FHIR JSON body itself (read_body)."""
    schema = {
        "type": "object",
        "properties": {"resourceType": {"type": "string", "enum": list(resource_types)}},
        "required": ["resourceType"],
    }
    return {
        "requestBody": {"required": True, "content": {"application/fhir+json": {"schema": schema}}}
    }


ACCEPTED_BODY_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass
class HubState:
    """Held on `app.state.hub`: built once by create_app."""

    settings: Settings
    sessions: sessionmaker[Session]
    authenticator: TokenAuthenticator
    rate_limiter: RateLimiter


def hub_state(request: Request) -> HubState:
    state: HubState = request.app.state.hub
    return state


def authenticate(request: Request) -> Principal:
    """The caller, from its bearer token; Unauthorized without a valid one, 429 over its rate."""
    state = hub_state(request)
    address = request.client.host if request.client else None
    principal = state.authenticator.authenticate(request.headers.get("authorization"), address)
    request.state.principal = principal
    state.rate_limiter.take(principal.subject)
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def base_url(request: Request) -> str:
    """The public base of the FHIR API: configured, or taken from the request."""
    configured = hub_state(request).settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


@contextmanager
def unit_of_work(request: Request, principal: Principal) -> Iterator[FhirInteractions]:
    """FhirInteractions for `principal` on a fresh session, committed with its audit events if
    the block succeeds; else rolled back, and the failure audited on its own."""
    state = hub_state(request)
    session = state.sessions()
    try:
        yield FhirInteractions(
            session,
            principal=principal,
            default_count=state.settings.default_page_size,
            max_count=state.settings.max_page_size,
            default_program=state.settings.default_program,
        )
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        error = Conflict("A concurrent write touched the same resource; retry.")
        _audit_failure(state, request, principal, error)
        raise error from exc
    except HubError as exc:
        session.rollback()
        _audit_failure(state, request, principal, exc)
        raise
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def _audit_failure(
    state: HubState, request: Request, principal: Principal, error: HubError
) -> None:
    """An AuditEvent for a refused or failed request (a probe for ids is worth recording)."""
    outcome = MINOR_FAILURE if error.status_code < 500 else SERIOUS_FAILURE
    event = audit_event(
        principal,
        _interaction_of(request),
        [],
        outcome=outcome,
        description=f"{request.method} {request.url.path}: {error.status_code}",
    )
    with state.sessions.begin() as session:
        write_audit_event(ResourceRepository(session, author=principal.subject), event)


def _interaction_of(request: Request) -> str:
    """The restful-interaction code of a request, by method and path shape."""
    parts = [p for p in request.url.path.split("/") if p][1:]  # after "fhir"
    if any(p.startswith("$") for p in parts):
        return "operation"
    if "_history" in parts:
        return "vread" if parts[-2:-1] == ["_history"] else "history-instance"
    by_method = {
        "POST": "create" if parts else "transaction",
        "PUT": "update",
        "DELETE": "delete",
        "GET": "read" if len(parts) >= 2 else "search-type",
    }
    return by_method.get(request.method, "operation")


async def read_body(request: Request) -> Any:
    """The JSON request body, refused if of the wrong media type or larger than allowed."""
    _require_media_type(request, ACCEPTED_BODY_TYPES)
    return parse_json(await _limited_body(request))


async def read_form(request: Request) -> list[tuple[str, str]]:
    """The pairs of an application/x-www-form-urlencoded body (POST [type]/_search).

    Parsed here rather than by Starlette, whose form parser needs python-multipart.
    """
    body = await _limited_body(request)
    if not body:
        return []
    _require_media_type(request, (FORM_TYPE,))
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("A form body must be percent-encoded ASCII.") from exc
    try:
        return parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The form body's percent-encoding is not UTF-8.") from exc


def _require_media_type(request: Request, accepted: tuple[str, ...]) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in accepted:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type or '(none)'}' is not accepted; send {accepted[0]}."
        )


async def _limited_body(request: Request) -> bytes:
    limit = hub_state(request).settings.max_request_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"The request body of {declared} bytes exceeds the limit of {limit} bytes."
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def wake_worker(request: Request) -> None:
    """Tell the embedded job worker (if this process runs one) that a job was queued."""
    worker = getattr(request.app.state, "worker", None)
    if worker is not None:
        worker.wake()
