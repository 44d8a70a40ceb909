"""Exception handlers: every failure leaves the API as an OperationOutcome, never a bare 500."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from hub.api.responses import FhirResponse
from hub.errors import HubError, Issue, operation_outcome

log = logging.getLogger("hub.api")

_HTTP_CODES = {404: "not-found", 405: "not-supported", 413: "too-costly"}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HubError, _hub_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyError, _storage_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected_error)


async def _hub_error(_request: Request, exc: HubError) -> FhirResponse:
    return FhirResponse(exc.operation_outcome(), status_code=exc.status_code, headers=exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> FhirResponse:
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


async def _validation_error(_request: Request, exc: RequestValidationError) -> FhirResponse:
    issues = [
        Issue(str(error.get("msg")), expression=(".".join(str(p) for p in error["loc"]),))
        for error in exc.errors()
    ]
    return FhirResponse(operation_outcome(issues), status_code=400)


async def _storage_error(_request: Request, exc: SQLAlchemyError) -> FhirResponse:
    # The statement may hold PHI: log only the error class.
    log.error("storage error: %s", type(exc).__name__)
    issue = Issue("The hub's storage is not available right now; retry later.", code="transient")
    return FhirResponse(operation_outcome([issue]), status_code=503, headers={"Retry-After": "5"})


async def _unexpected_error(_request: Request, exc: Exception) -> FhirResponse:
    log.exception("unexpected error: %s", type(exc).__name__)
    issue = Issue(
        "The hub failed to process the request; the failure was logged.",
        code="exception",
        severity="fatal",
    )
    return FhirResponse(operation_outcome([issue]), status_code=500)
