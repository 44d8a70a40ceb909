"""Jinja2 pages: one environment, autoescaped, with what every page shows (navigation by
role, the signed-in person, the form token)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from hub.security.principal import Principal

TEMPLATES = Path(__file__).resolve().parent / "templates"

# Pages name scripts, styles and images of their own origin only; `data:` for the plot and
# thumbnails rendered inline.
PAGE_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

# (label, path, roles that see it) in the order of the navigation bar.
NAVIGATION = (
    ("My worklist", "/ui/worklist", frozenset({"specialist"})),
    ("Case board", "/ui/board", frozenset({"case-manager"})),
    ("Connectors", "/ui/it/connectors", frozenset({"admin"})),
    ("Message log", "/ui/it/messages", frozenset({"admin"})),
    ("Dead letters", "/ui/it/dead-letters", frozenset({"admin"})),
    ("Configuration", "/ui/it/config", frozenset({"admin"})),
)

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def navigation(principal: Principal | None) -> list[tuple[str, str]]:
    if principal is None:
        return []
    return [(label, path) for label, path, roles in NAVIGATION if principal.roles & roles]


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """`template` rendered for the request's signed-in person (if any)."""
    from hub.web.session import csrf_token  # the session module renders error pages too

    principal: Principal | None = getattr(request.state, "web_principal", None)
    page = environment.get_template(template).render(
        request=request,
        principal=principal,
        navigation=navigation(principal),
        csrf=csrf_token(request) if principal else "",
        path=request.url.path,
        **{"notice": None, **(context or {})},
    )
    return HTMLResponse(
        page, status_code=status_code, headers={"Content-Security-Policy": PAGE_SECURITY_POLICY}
    )
