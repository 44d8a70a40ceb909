"""The FHIR R4 RESTful API: instance, type and system interactions under /fhir."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from hub.api.capability import capability_statement
from hub.api.deps import (
    Caller,
    authenticate,
    base_url,
    fhir_body_schema,
    read_body,
    read_form,
    unit_of_work,
)
from hub.api.responses import FhirResponse, resource_response
from hub.errors import InvalidRequest, information_outcome
from hub.fhir import bundles
from hub.fhir.dates import date_range
from hub.fhir.interactions import parse_etag
from hub.fhir.search_parameters import supported_types
from hub.fhir.transactions import process_bundle
from hub.storage.search import whole_number

public = APIRouter(prefix="/fhir", tags=["FHIR"])
# Authentication runs first, before any body is read: no token, no further answer but 401.
router = APIRouter(prefix="/fhir", tags=["FHIR"], dependencies=[Depends(authenticate)])
Body = Annotated[Any, Depends(read_body)]
Base = Annotated[str, Depends(base_url)]


def _query(request: Request) -> list[tuple[str, str]]:
    return list(request.query_params.multi_items())


@public.get("/metadata")
def metadata(base: Base) -> FhirResponse:
    """The CapabilityStatement: what this server supports."""
    return FhirResponse(capability_statement(base))


@router.post("", openapi_extra=fhir_body_schema("Bundle"))
@router.post("/", include_in_schema=False)
def batch_or_transaction(request: Request, caller: Caller, body: Body, base: Base) -> FhirResponse:
    """Process a batch or transaction Bundle."""
    with unit_of_work(request, caller) as fhir:
        return FhirResponse(process_bundle(fhir, body, base))


@router.get("/_history")
def system_history(request: Request, caller: Caller, base: Base) -> FhirResponse:
    """Every version of every resource, newest first."""
    return _history(request, caller, base, None, None)


@router.get("/{resource_type}")
def search(request: Request, caller: Caller, resource_type: str, base: Base) -> FhirResponse:
    """Search resources of a type."""
    return _search(request, caller, resource_type, _query(request), base)


@router.post("/{resource_type}/_search")
async def search_by_post(
    request: Request,
    caller: Caller,
    resource_type: str,
    base: Base,
    form: Annotated[list[tuple[str, str]], Depends(read_form)],
) -> FhirResponse:
    """Search with the parameters in an application/x-www-form-urlencoded body."""
    params = _query(request) + form
    return await run_in_threadpool(_search, request, caller, resource_type, params, base)


@router.post("/{resource_type}", openapi_extra=fhir_body_schema(*supported_types()))
def create(
    request: Request,
    caller: Caller,
    resource_type: str,
    body: Body,
    base: Base,
    if_none_exist: Annotated[str | None, Header()] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Create a resource (conditionally with If-None-Exist)."""
    with unit_of_work(request, caller) as fhir:
        stored, created = fhir.create(resource_type, body, if_none_exist=if_none_exist)
        fhir.finish()
    return resource_response(stored, base, status=201 if created else 200, prefer=prefer)


@router.get("/{resource_type}/_history")
def type_history(request: Request, caller: Caller, resource_type: str, base: Base) -> FhirResponse:
    """Every version of every resource of a type, newest first."""
    return _history(request, caller, base, resource_type, None)


@router.get("/{resource_type}/{resource_id}", response_model=None)
def read(
    request: Request,
    caller: Caller,
    resource_type: str,
    resource_id: str,
    base: Base,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Read the current version of a resource."""
    with unit_of_work(request, caller) as fhir:
        stored = fhir.read(resource_type, resource_id)
    if resource_type == "Binary" and _wants_raw(accept):
        return Response(
            base64.b64decode(stored.content.get("data", "")),
            media_type=stored.content.get("contentType", "application/octet-stream"),
            headers={"ETag": stored.etag},
        )
    return resource_response(stored, base)


@router.put("/{resource_type}/{resource_id}", openapi_extra=fhir_body_schema(*supported_types()))
def update(
    request: Request,
    caller: Caller,
    resource_type: str,
    resource_id: str,
    body: Body,
    base: Base,
    if_match: Annotated[str | None, Header()] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> FhirResponse:
    """Update a resource (or create it with this id); If-Match guards against lost updates."""
    with unit_of_work(request, caller) as fhir:
        stored, created = fhir.update(
            resource_type, resource_id, body, if_match=parse_etag(if_match)
        )
        fhir.finish()
    return resource_response(stored, base, status=201 if created else 200, prefer=prefer)


@router.delete("/{resource_type}/{resource_id}")
def delete(request: Request, caller: Caller, resource_type: str, resource_id: str) -> FhirResponse:
    """Delete a resource (its history is kept)."""
    with unit_of_work(request, caller) as fhir:
        stored = fhir.delete(resource_type, resource_id)
    text = (
        f"{resource_type}/{resource_id} deleted."
        if stored
        else f"{resource_type}/{resource_id} did not exist or was already deleted."
    )
    headers = {"ETag": stored.etag} if stored else {}
    return FhirResponse(information_outcome(text), headers=headers)


@router.get("/{resource_type}/{resource_id}/_history")
def instance_history(
    request: Request, caller: Caller, resource_type: str, resource_id: str, base: Base
) -> FhirResponse:
    """Every version of one resource, newest first."""
    return _history(request, caller, base, resource_type, resource_id)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
def vread(
    request: Request,
    caller: Caller,
    resource_type: str,
    resource_id: str,
    version_id: str,
    base: Base,
) -> FhirResponse:
    """Read one version of a resource."""
    with unit_of_work(request, caller) as fhir:
        stored = fhir.vread(resource_type, resource_id, version_id)
    return resource_response(stored, base)


def _search(
    request: Request, caller: Caller, resource_type: str, params: list[tuple[str, str]], base: str
) -> FhirResponse:
    with unit_of_work(request, caller) as fhir:
        query = fhir.parse_search(resource_type, params)
        page = fhir.search(query)
    return FhirResponse(bundles.searchset(base, query, params, page))


def _history(
    request: Request, caller: Caller, base: str, resource_type: str | None, resource_id: str | None
) -> FhirResponse:
    params = dict(request.query_params)
    unknown = set(params) - {"_count", "_offset", "_since", "_format"}
    if unknown:
        raise InvalidRequest(
            f"History does not support {', '.join(sorted(unknown))}.", expression="_history"
        )
    with unit_of_work(request, caller) as fhir:
        count = whole_number(params.get("_count", str(fhir.default_count)), "_count")
        versions, total = fhir.history(
            resource_type,
            resource_id,
            since=_since(params.get("_since")),
            count=min(count, fhir.max_count),
            offset=whole_number(params.get("_offset", "0"), "_offset"),
        )
    return FhirResponse(bundles.history(base, str(request.url), versions, total))


def _since(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return date_range(raw)[0]
    except ValueError as exc:
        raise InvalidRequest(f"_since={raw} is not a FHIR instant.", expression="_since") from exc


def _wants_raw(accept: str | None) -> bool:
    return bool(accept) and "json" not in str(accept) and "*/*" not in str(accept)
