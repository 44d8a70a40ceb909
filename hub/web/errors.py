"""Failures on the pages: a readable page with the reason, never an OperationOutcome or a
bare 500; a missing or ended session sends a page request to sign-in instead."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

from hub.errors import HubError
from hub.web.session import SignInRequired
from hub.web.templating import render

WEB_PREFIX = "/ui"

HEADINGS = {
    400: "The request could not be used",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Changed by someone else",
    412: "Changed by someone else",
    413: "Too large",
    422: "Not accepted",
    429: "Too many requests",
    503: "Temporarily unavailable",
}


def is_page(request: Request) -> bool:
    path = request.url.path
    return path == WEB_PREFIX or path.startswith(WEB_PREFIX + "/")


def error_page(request: Request, status: int, message: str, issues: list[str]) -> Response:
    return render(
        request,
        "error.html",
        {
            "heading": HEADINGS.get(status, "Something went wrong"),
            "message": message,
            "issues": issues,
            "back": None,
            "back_label": None,
        },
        status_code=status,
    )


def hub_error_page(request: Request, error: HubError) -> Response:
    if isinstance(error, SignInRequired) and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303)
    issues = [
        f"{issue.diagnostics} ({', '.join(issue.expression)})"
        if issue.expression
        else issue.diagnostics
        for issue in error.issues
        if issue.diagnostics != str(error)
    ]
    return error_page(request, error.status_code, str(error), issues)
