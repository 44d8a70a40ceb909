"""The built-in authorization server's HTTP face: token endpoint, JWKS, SMART discovery;
the sign-in page (authorization endpoint) is in hub.api.sign_in_form."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hub.api import sign_in_form
from hub.api.deps import hub_state, read_form
from hub.errors import HubError
from hub.security.authorization_server import oauth_error_response, safe_description, token_response
from hub.security.clients import ASSERTION_ALGORITHMS, AUTH_METHOD, GRANT_TYPE
from hub.security.code_grant import CHALLENGE_METHOD, CODE_GRANT_TYPE
from hub.security.keys import public_jwks
from hub.settings import Settings

router = APIRouter(tags=["Authorization"])
router.include_router(sign_in_form.router)

SCOPES_SUPPORTED = (
    "system/*.cruds",
    "system/*.rs",
    "user/*.cruds",
    "user/*.rs",
    "patient/*.rs",
)


@router.post("/auth/token")
async def token(request: Request) -> Response:
    """Token request: client_credentials with a signed JWT assertion (SMART Backend
    Services), or authorization_code with its PKCE code_verifier (the pages' sign-in)."""
    state = hub_state(request)
    # Token requests are limited per address: the client is not known before its assertion.
    state.rate_limiter.take(f"token-endpoint:{request.client.host if request.client else '-'}")
    try:
        form = await read_form(request)
    except HubError as exc:
        return oauth_error_response(InvalidRequestError(safe_description(exc.diagnostics)))
    response: Response = await run_in_threadpool(
        token_response, state.settings, state.sessions, form
    )
    return response


@router.get("/auth/jwks")
def jwks(request: Request) -> JSONResponse:
    """The public keys that verify the hub's access tokens."""
    keys = public_jwks(hub_state(request).settings.signing_key_file)
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=300"})


@router.get("/.well-known/smart-configuration")
@router.get("/fhir/.well-known/smart-configuration")
def smart_configuration(request: Request) -> JSONResponse:
    """SMART discovery (also under the FHIR base, where SMART clients look for it)."""
    return JSONResponse(smart_configuration_document(hub_state(request).settings))


def smart_configuration_document(settings: Settings) -> dict[str, Any]:
    return {
        "issuer": settings.issuer,
        "authorization_endpoint": f"{settings.issuer}/authorize",
        "token_endpoint": settings.token_url,
        "jwks_uri": f"{settings.issuer}/jwks",
        "grant_types_supported": [GRANT_TYPE, CODE_GRANT_TYPE],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": [CHALLENGE_METHOD],
        # "none": the pages' public client hub-web, bound by PKCE instead of a secret.
        "token_endpoint_auth_methods_supported": [AUTH_METHOD, "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": list(SCOPES_SUPPORTED),
        "capabilities": [
            "client-confidential-asymmetric",
            "client-public",
            "permission-v2",
            "permission-user",
        ],
    }
