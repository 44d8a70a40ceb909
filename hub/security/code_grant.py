"""The authorization code grant with PKCE (RFC 6749 §4.1, RFC 7636) for people signing in.

The hub's own pages are its one public client, `hub-web`: built in rather than registered,
with no secret (token_endpoint_auth_method `none`), so PKCE is what binds the code to the
browser that asked for it: a `code_challenge` with method S256 is required (`plain` is
refused, RFC 9700 §2.1.1). Its only redirect URI is `/ui/callback` on the very origin the
authorize request reached: the pages work on any host and port the hub is served on, and a
code is never sent anywhere else.

A code lives 60 seconds and is spent by its first exchange, successful or not (RFC 6749
§4.1.2: used once). The table holds a SHA-256 of each code, never the code.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749 import (
    AuthorizationCodeGrant,
    ClientMixin,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from hub.security.clients import WEB_CLIENT_ID
from hub.security.scopes import parse_scopes
from hub.security.users import Person, UserDirectory
from hub.storage.tables import AuthorizationCodeRow

WEB_CALLBACK_PATH = "/ui/callback"
CODE_GRANT_TYPE = "authorization_code"
CHALLENGE_METHOD = "S256"
CODE_LIFETIME_SECONDS = 60
PURGE_INTERVAL_SECONDS = 60.0

_next_purge = 0.0


@dataclass(frozen=True)
class WebClient(ClientMixin):  # type: ignore[misc]
    """The pages' public client, as authlib sees it for one request."""

    callback_uri: str | None = None
    """`<the authorize request's base URL>/ui/callback`; None at the token endpoint, where
    the redirect URI is checked against the code's instead."""

    def get_client_id(self) -> str:
        return WEB_CLIENT_ID

    def get_default_redirect_uri(self) -> None:
        # None makes redirect_uri required: it is compared exactly, never filled in.
        return None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return self.callback_uri is not None and redirect_uri == self.callback_uri

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == CODE_GRANT_TYPE

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "none" and endpoint == "token"

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def get_allowed_scope(self, scope: str | None) -> str:
        # The client limits nothing: the person does (narrowed at sign-in to their scopes).
        return scope or ""


def web_client_for(base_url: str) -> WebClient:
    """hub-web as the authorize request that reached `base_url` sees it."""
    return WebClient(callback_uri=base_url.rstrip("/") + WEB_CALLBACK_PATH)


@dataclass(frozen=True)
class IssuedCode:
    """A stored authorization code, as authlib's grant and PKCE extension read it."""

    client_id: str
    redirect_uri: str
    user_id: str
    scope: str
    code_challenge: str
    code_challenge_method: str

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class AuthorizeRequest(OAuth2Request):  # type: ignore[misc]
    """An authorization request as authlib sees it: the query (GET) or the sign-in form's
    carried parameters (POST), repeated names kept so that authlib can refuse them.

    The URI is the configured issuer's authorize URL, as for the token endpoint: a hub
    published over plain http (not loopback) refuses, before any password is typed.
    """

    def __init__(self, uri: str, method: str, pairs: list[tuple[str, str]]) -> None:
        super().__init__(method, uri)
        self._pairs = dict(pairs)
        self.payload = _ListPayload(pairs)

    @property
    def args(self) -> dict[str, str]:
        return self._pairs

    @property
    def form(self) -> dict[str, str]:
        return {}


class _ListPayload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._data = dict(pairs)
        self._datalist: dict[str, list[str]] = {}
        for name, value in pairs:
            self._datalist.setdefault(name, []).append(value)

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> dict[str, list[str]]:
        return self._datalist


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE required, S256 only: authlib's own lets a request without a challenge through
    and defaults a missing method to `plain`."""

    DEFAULT_CODE_CHALLENGE_METHOD = CHALLENGE_METHOD
    SUPPORTED_CODE_CHALLENGE_METHOD = [CHALLENGE_METHOD]
    CODE_CHALLENGE_METHODS = {CHALLENGE_METHOD: compare_s256_code_challenge}

    def validate_code_challenge(self, grant: AuthorizationCodeGrant, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError(
                "PKCE is required: send a code_challenge with code_challenge_method=S256."
            )
        if data.get("code_challenge_method") != CHALLENGE_METHOD:
            # RFC 7636 §4.4.1: a method the server does not support is invalid_request.
            raise InvalidRequestError(
                "Only code_challenge_method=S256 is supported (plain is not accepted)."
            )
        super().validate_code_challenge(grant, redirect_uri)


class HubAuthorizationCodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    """authorization_code for the public client hub-web, its codes in the database."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

    @property
    def session(self) -> Session:
        session: Session = self.server.session
        return session

    def validate_requested_scope(self) -> None:
        scope = self.request.payload.scope
        if scope is not None and not parse_scopes(scope):
            raise InvalidScopeError(
                "None of the requested scopes is a SMART resource scope like user/Task.rs."
            )

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        self._purge_expired_now_and_then()
        data = request.payload.data
        self.session.add(
            AuthorizationCodeRow(
                code_hash=code_hash(code),
                client_id=request.client.get_client_id(),
                redirect_uri=request.payload.redirect_uri,
                user_id=request.user.get_user_id(),
                scope=request.scope,
                code_challenge=data["code_challenge"],
                code_challenge_method=data["code_challenge_method"],
                expires_at=_now() + timedelta(seconds=CODE_LIFETIME_SECONDS),
                used=False,
            )
        )
        self.session.commit()

    def query_authorization_code(self, code: Any, client: WebClient) -> IssuedCode:
        """The code's record, spent now: a second exchange (a replay, or a retry after a
        failed one) finds it used."""
        if not isinstance(code, str) or not code:
            raise InvalidGrantError("The authorization code is missing.")
        row = self.session.get(AuthorizationCodeRow, code_hash(code))
        if row is None or row.client_id != client.get_client_id():
            raise InvalidGrantError("The authorization code is not known.")
        if row.used:
            raise InvalidGrantError("The authorization code was already used.")
        if row.expires_at <= _now():
            raise InvalidGrantError("The authorization code has expired; sign in again.")
        # One statement that only one of two concurrent exchanges can win.
        spent = self.session.execute(
            update(AuthorizationCodeRow)
            .where(
                AuthorizationCodeRow.code_hash == row.code_hash,
                AuthorizationCodeRow.used.is_(False),
            )
            .values(used=True)
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        if getattr(spent, "rowcount", 0) != 1:
            raise InvalidGrantError("The authorization code was already used.")
        return IssuedCode(
            client_id=row.client_id,
            redirect_uri=row.redirect_uri,
            user_id=row.user_id,
            scope=row.scope,
            code_challenge=row.code_challenge,
            code_challenge_method=row.code_challenge_method,
        )

    def delete_authorization_code(self, authorization_code: IssuedCode) -> None:
        """Nothing left to do: the code was spent when it was looked up."""

    def authenticate_user(self, authorization_code: IssuedCode) -> Person | None:
        # Looked up again: a person disabled since the sign-in gets no token.
        return UserDirectory(self.session).get(authorization_code.user_id)

    def _purge_expired_now_and_then(self) -> None:
        """Forget codes well past their expiry (once a minute per process)."""
        global _next_purge
        if time.monotonic() < _next_purge:
            return
        _next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        cutoff = _now() - timedelta(seconds=CODE_LIFETIME_SECONDS)
        self.session.execute(
            delete(AuthorizationCodeRow).where(AuthorizationCodeRow.expires_at < cutoff)
        )


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
