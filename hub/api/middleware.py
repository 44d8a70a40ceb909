"""HTTP hardening around every response: security headers and a PHI-free access log."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

log = logging.getLogger("hub.access")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def install_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def harden(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
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
