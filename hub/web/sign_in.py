"""Signing in to the pages: the authorization code flow with PKCE against the hub's own
authorization server (/auth/authorize, /auth/token), the pages being its public client."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from hub.api.deps import hub_state
from hub.security.authorization_server import token_response
from hub.security.clients import WEB_CLIENT_ID
from hub.security.code_grant import WEB_CALLBACK_PATH as CALLBACK_PATH
from hub.web.session import SIGN_IN_COOKIE, end_session, is_secure, set_session
from hub.web.templating import render

router = APIRouter(prefix="/ui", include_in_schema=False)

SIGN_IN_SECONDS = 600


def callback_uri(request: Request) -> str:
    return str(request.base_url).rstrip("/") + CALLBACK_PATH


def _safe_next(target: str | None) -> str:
    """Only a page of the hub itself: never an open redirect."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/"


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@router.get("/login")
def login(request: Request, next: str | None = None) -> Response:
    """Start the authorization code flow: a fresh state and PKCE verifier, kept in a
    short-lived cookie only the callback reads."""
    state = secrets.token_urlsafe(24)
    verifier = secrets.token_urlsafe(48)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": WEB_CLIENT_ID,
            "redirect_uri": callback_uri(request),
            "state": state,
            "code_challenge": _challenge(verifier),
            "code_challenge_method": "S256",
        }
    )
    response = RedirectResponse(f"/auth/authorize?{query}", status_code=303)
    response.set_cookie(
        SIGN_IN_COOKIE,
        json.dumps([state, verifier, _safe_next(next)]),
        max_age=SIGN_IN_SECONDS,
        path=CALLBACK_PATH,
        httponly=True,
        secure=is_secure(request),
        samesite="lax",
    )
    return response


@router.get("/callback")
async def callback(
    request: Request,
    code: str | None = None,
    state: str | None = None,
    error: str | None = None,
    error_description: str | None = None,
) -> Response:
    try:
        expected_state, verifier, target = json.loads(request.cookies.get(SIGN_IN_COOKIE, ""))
    except (ValueError, TypeError):
        return _failed(request, "The sign-in took too long or was started elsewhere.")
    if error:
        return _failed(request, error_description or f"The sign-in was refused ({error}).")
    if not code or not state or not secrets.compare_digest(state, str(expected_state)):
        return _failed(request, "The sign-in answer does not match the sign-in this browser began.")
    hub = hub_state(request)
    form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", callback_uri(request)),
        ("client_id", WEB_CLIENT_ID),
        ("code_verifier", str(verifier)),
    ]
    answer = await run_in_threadpool(token_response, hub.settings, hub.sessions, form)
    body = json.loads(bytes(answer.body))
    if answer.status_code != 200 or "access_token" not in body:
        reason = body.get("error_description") or body.get("error") or "unknown error"
        return _failed(request, f"The hub did not accept the sign-in: {reason}")
    response = RedirectResponse(_safe_next(str(target)), status_code=303)
    set_session(request, response, body["access_token"], int(body.get("expires_in", 300)))
    response.delete_cookie(SIGN_IN_COOKIE, path=CALLBACK_PATH)
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/signed-out", status_code=303)
    end_session(response)
    return response


@router.get("/signed-out")
def signed_out(request: Request) -> Response:
    return render(request, "signed_out.html")


def _failed(request: Request, reason: str) -> Response:
    response = render(request, "sign_in_failed.html", {"reason": reason}, status_code=400)
    response.delete_cookie(SIGN_IN_COOKIE, path=CALLBACK_PATH)
    return response
