"""What every route needs: settings, the unit of work, the public base URL, the request body."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from hub.errors import Conflict, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from hub.fhir.interactions import FhirInteractions
from hub.fhir.validation import parse_json
from hub.settings import Settings

ACCEPTED_BODY_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass
class HubState:
    """Held on `app.state.hub`: built once by create_app."""

    settings: Settings
    sessions: sessionmaker[Session]


def hub_state(request: Request) -> HubState:
    state: HubState = request.app.state.hub
    return state


def base_url(request: Request) -> str:
    """The public base of the FHIR API: configured, or taken from the request."""
    configured = hub_state(request).settings.base_url
    if configured:
        return configured.rstrip("/")
    return str(request.base_url).rstrip("/") + "/fhir"


@contextmanager
def unit_of_work(request: Request) -> Iterator[FhirInteractions]:
    """FhirInteractions on a fresh session, committed if the block succeeds, else rolled back."""
    state = hub_state(request)
    session = state.sessions()
    try:
        yield FhirInteractions(
            session,
            default_count=state.settings.default_page_size,
            max_count=state.settings.max_page_size,
        )
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("A concurrent write touched the same resource; retry.") from exc
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


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
