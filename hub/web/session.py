"""Who is signed in to the web pages: the hub's access token, held in an HttpOnly cookie.

The browser never sees the token in script; every page checks it exactly as the API checks
a bearer token (signature, issuer, audience, lifetime), so a page can do no more than the
same person could through the API. Forms carry a token derived from the session (CSRF).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import Response

from hub.api.deps import hub_state
from hub.errors import Forbidden, HubError, InvalidRequest
from hub.security.principal import Principal

SESSION_COOKIE = "hub_session"
SIGN_IN_COOKIE = "hub_sign_in"


class SignInRequired(HubError):
    """No valid session: a page asks the person to sign in (again)."""

    status_code = 401
    issue_code = "login"


def _access_token(request: Request) -> str | None:
    return request.cookies.get(SESSION_COOKIE) or None


def web_principal(request: Request) -> Principal:
    """The signed-in person, or SignInRequired (the page handler redirects to sign-in)."""
    token = _access_token(request)
    if token is None:
        raise SignInRequired("Please sign in.")
    state = hub_state(request)
    address = request.client.host if request.client else None
    try:
        principal = state.authenticator.authenticate(f"Bearer {token}", address)
    except HubError as exc:
        raise SignInRequired("Your session has ended; please sign in again.") from exc
    request.state.principal = principal
    request.state.web_principal = principal
    state.rate_limiter.take(principal.subject)
    return principal


Person = Annotated[Principal, Depends(web_principal)]


def require_role(principal: Principal, *roles: str) -> None:
    if not principal.has_role(*roles):
        raise Forbidden(f"This page is for the {' or '.join(roles)} role.")


def csrf_token(request: Request) -> str:
    """A form token bound to the session: a page of another site cannot know it."""
    token = _access_token(request) or ""
    return hmac.new(token.encode(), b"hub-web-form", hashlib.sha256).hexdigest()[:40]


def check_csrf(request: Request, form: dict[str, str]) -> None:
    if not hmac.compare_digest(form.get("csrf", ""), csrf_token(request)):
        raise InvalidRequest(
            "This form has expired or did not come from the hub's own page; "
            "reload the page and send it again."
        )


def is_secure(request: Request) -> bool:
    base = hub_state(request).settings.base_url or ""
    return request.url.scheme == "https" or base.startswith("https://")


def set_session(request: Request, response: Response, token: str, lifetime: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=lifetime,
        path="/ui",
        httponly=True,
        secure=is_secure(request),
        samesite="lax",
    )


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/ui")
