"""The authorization endpoint's HTTP face: the sign-in page at /auth/authorize.

HTML, not API: left out of the OpenAPI schema (it takes no token; a person's browser is
sent here by a client, hub-web being the one there is).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from hub.api.deps import hub_state, read_form
from hub.errors import HubError
from hub.security.authorize import (
    AuthorizeOutcome,
    RedirectToClient,
    RequestRefused,
    ShowSignIn,
    authorization_prompt,
    authorization_sign_in,
)
from hub.web.templating import render

router = APIRouter(prefix="/auth", include_in_schema=False)


@router.get("/authorize")
async def sign_in_page(request: Request) -> Response:
    """The sign-in form, once the authorize request is known to be valid."""
    state = hub_state(request)
    outcome = await run_in_threadpool(
        authorization_prompt,
        state.settings,
        state.sessions,
        _base_url(request),
        list(request.query_params.multi_items()),
    )
    return _answer(request, outcome)


@router.post("/authorize")
async def sign_in(request: Request) -> Response:
    """The user name and password: a code for the client, or the form again."""
    state = hub_state(request)
    address = request.client.host if request.client else None
    try:
        # Per address, as the token endpoint: who is signing in is not known yet.
        state.rate_limiter.take(f"sign-in:{address or '-'}")
        form = await read_form(request)
    except HubError as exc:
        return _refused(request, exc.status_code, exc.diagnostics)
    outcome = await run_in_threadpool(
        authorization_sign_in,
        state.settings,
        state.sessions,
        _base_url(request),
        form,
        address,
    )
    return _answer(request, outcome)


def _answer(request: Request, outcome: AuthorizeOutcome) -> Response:
    if isinstance(outcome, RedirectToClient):
        # 303: the browser follows a POST's answer with a GET.
        return RedirectResponse(outcome.location, status_code=303)
    if isinstance(outcome, RequestRefused):
        return _refused(request, 400, outcome.description)
    return _form(request, outcome)


def _form(request: Request, prompt: ShowSignIn) -> Response:
    context = {
        "parameters": prompt.parameters,
        "username": prompt.username,
        "message": prompt.message,
    }
    return render(request, "login.html", context, status_code=401 if prompt.refused else 200)


def _refused(request: Request, status: int, reason: str) -> Response:
    return render(
        request,
        "error.html",
        {
            "heading": "This sign-in cannot go on",
            "message": f"The request to sign in was refused: {reason}",
            "issues": [],
            "back": "/ui/",
            "back_label": "Go to the hub's start page",
        },
        status_code=status,
    )


def _base_url(request: Request) -> str:
    """The origin this request reached: hub-web's callback must be on it."""
    return str(request.base_url).rstrip("/")
