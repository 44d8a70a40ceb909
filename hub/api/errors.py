"""Exception handlers: every failure leaves the API as an OperationOutcome, never a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from hub.api.responses import FhirResponse
from hub.errors import HubError, Issue, operation_outcome
from hub.web.errors import error_page, hub_error_page, is_page

log = logging.getLogger("hub.api")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HubError, _hub_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyError, _storage_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


async def _hub_error(request: Request, exc: HubError) -> Response:
    if is_page(request):
        return hub_error_page(request, exc)
    return FhirResponse(exc.operation_outcome(), status_code=exc.status_code, headers=exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if is_page(request):
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return error_page(request, exc.status_code, message, [])
    if exc.status_code == 404:
        diagnostics = f"There is no endpoint at {request.url.path}."
    elif exc.status_code == 405:
        diagnostics = f"{request.method} is not allowed on {request.url.path}."
    else:
        diagnostics = str(exc.detail)
    issue = Issue(diagnostics, code=_HTTP_CODES.get(exc.status_code, "processing"))
    return FhirResponse(
        operation_outcome([issue]),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    if is_page(request):
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e.get('msg')}" for e in exc.errors()]
        return error_page(request, 400, "The request could not be used.", problems)
    issues = [
        Issue(str(error.get("msg")), expression=(".".join(str(p) for p in error["loc"]),))
        for error in exc.errors()
    ]
    return FhirResponse(operation_outcome(issues), status_code=400)


async def _storage_error(request: Request, exc: SQLAlchemyError) -> Response:
    # The statement may hold PHI: log only the error class.
    log.error("storage error: %s", type(exc).__name__)
    if is_page(request):
        message = "The hub's storage is not available right now; try again in a moment."
        return error_page(request, 503, message, [])
    issue = Issue("The hub's storage is not available right now; retry later.", code="transient")
    return FhirResponse(operation_outcome([issue]), status_code=503, headers={"Retry-After": "5"})


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error: %s", type(exc).__name__)
    if is_page(request):
        message = "The hub failed to show this page; the failure was logged."
        return error_page(request, 500, message, [])
    issue = Issue(
        "The hub failed to process the request; the failure was logged.",
        code="exception",
        severity="fatal",
    )
    return FhirResponse(operation_outcome([issue]), status_code=500)
