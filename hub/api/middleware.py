"""HTTP hardening around every response: security headers, a PHI-free access log, a
correlation id, and CORS for the configured origins only.

The correlation id is the caller's X-Request-ID (or X-Correlation-ID) when it is a plain
token, else a new one; it is bound for the request's log lines (hub.logs) and sent back in
X-Request-ID, so that a caller's report of a failure can be found in the logs."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from hub.logs import accepted_correlation_id, correlated

log = logging.getLogger("hub.access")

REQUEST_ID_HEADERS = ("X-Request-ID", "X-Correlation-ID")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def install_middleware(app: FastAPI, cors_origins: list[str] | None = None) -> None:
    if cors_origins:
        # A viewer (OHIF) or web app served from another origin reads the FHIR API and the
        # DICOMweb service with its bearer token: only the origins configured may.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Accept",
                "If-Match",
                "Prefer",
                *REQUEST_ID_HEADERS,
            ],
            expose_headers=["ETag", "Location", "Content-Location", "Warning", "X-Request-ID"],
            max_age=600,
        )

    @app.middleware("http")
    async def harden(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        offered = next(
            (request.headers[h] for h in REQUEST_ID_HEADERS if h in request.headers), None
        )
        with correlated(accepted_correlation_id(offered)) as request_id:
            response = await call_next(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            response.headers["X-Request-ID"] = request_id
            # The route template, not the URL: query strings and names can hold PHI.
            route = getattr(request.scope.get("route"), "path", "(no route)")
            principal = getattr(request.state, "principal", None)
            log.info(
                "%s %s %d %.1fms client=%s",
                request.method,
                route,
                response.status_code,
                (time.perf_counter() - started) * 1000,
                principal.client_id if principal else "-",
            )
        return response
