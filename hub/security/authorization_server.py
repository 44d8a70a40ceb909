"""The built-in authorization server on authlib: SMART Backend Services for systems, the
authorization code grant with PKCE for people.

A registered system client (`hub clients add`) asks POST /auth/token for an access token
with grant_type=client_credentials, authenticating with a JWT it signed with its private
key (`private_key_jwt`, RFC 7523: RS384 or ES384, aud = the token URL, exp at most five
minutes ahead, a jti never used before). The hub answers with an RFC 9068 JWT access token
signed with its own key, carrying the client's roles, narrowed scopes, fhirUser, programs
and referrer kind; the resource server (hub.security.tokens) checks exactly those.

A person (`hub users add`) signs in at /auth/authorize through the pages' public client
`hub-web` (hub.security.code_grant, hub.security.authorize); the code is exchanged at the
same token endpoint for the same kind of token, its `sub` the person's user id and its
claims the person's, lasting user_token_lifetime_seconds.

Tokens are not stored: they are self-contained and short-lived. What is stored is the jti
of every accepted client assertion, so that a replayed assertion is refused, and a hash of
each authorization code until it is spent.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from authlib.oauth2.base import invalid_error_characters
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientCredentialsGrant,
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Request,
    UnsupportedGrantTypeError,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import Response

from hub.errors import InvalidRequest
from hub.security.clients import (
    ASSERTION_ALGORITHMS,
    AUTH_METHOD,
    GRANT_TYPE,
    WEB_CLIENT_ID,
    ClientRegistry,
    RegisteredClient,
    check_public_jwks,
    is_client_id,
)
from hub.security.code_grant import (
    CODE_GRANT_TYPE,
    AuthorizeRequest,
    HubAuthorizationCodeGrant,
    S256CodeChallenge,
    WebClient,
    web_client_for,
)
from hub.security.keys import SIGNING_ALGORITHM, signing_key_set
from hub.security.users import Person
from hub.settings import Settings
from hub.storage.tables import UsedAssertionRow

ASSERTION_MAX_LIFETIME_SECONDS = 300
"""SMART Backend Services: an assertion's exp is no more than five minutes in the future."""
PURGE_INTERVAL_SECONDS = 60.0
JWKS_FETCH_TIMEOUT_SECONDS = 10.0
MAX_JTI_LENGTH = 255

_next_purge = 0.0


def token_response(
    settings: Settings, sessions: sessionmaker[Session], form: list[tuple[str, str]]
) -> Response:
    """The token endpoint's answer to the pairs of a form body (blocking: DB, JWKS fetch)."""
    with sessions() as session:
        return HubAuthorizationServer(settings, session).create_token_response(form)


def oauth_error_response(error: OAuth2Error) -> Response:
    """An RFC 6749 §5.2 JSON error (with Cache-Control: no-store)."""
    status, body, headers = error()
    return _json_response(status, body, headers)


def issue_token(
    settings: Settings, client: RegisteredClient, scope: str, *, subject: str | None = None
) -> str:
    """An access token for `client`, as the token endpoint would issue it.

    `scope` is narrowed to the client's registered scopes (InvalidRequest if nothing is
    left). With `subject`, the token's `sub` is that person rather than the client: the
    operator's tool for a person's token without a sign-in (`hub token issue`).
    """
    granted = client.get_allowed_scope(scope)
    if granted is None:
        raise InvalidRequest(f"None of the scopes {scope!r} is a scope of {client.client_id}.")
    user = _Person(subject) if subject is not None else None
    token: str = HubTokenGenerator(settings).access_token_generator(
        client=client, grant_type=GRANT_TYPE, user=user, scope=granted
    )
    return token


@dataclass(frozen=True)
class _Person:
    """The resource owner of a person's token: authlib only asks for its id (`sub`)."""

    subject: str

    def get_user_id(self) -> str:
        return self.subject


class TokenRequest(OAuth2Request):  # type: ignore[misc]
    """A token request as authlib sees it: the parsed form body.

    The URI is the configured token URL (what the client's assertion names as `aud`), not
    the URL the request reached, which behind a TLS-terminating proxy is plain http.
    """

    def __init__(self, uri: str, form: dict[str, str]) -> None:
        super().__init__("POST", uri)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class HubAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    """authlib's AuthorizationServer for one request, on one database session.

    `base_url` is the origin an authorize request reached: the pages' client hub-web
    accepts only that origin's /ui/callback as its redirect URI.
    """

    def __init__(self, settings: Settings, session: Session, *, base_url: str | None = None):
        super().__init__()
        self.settings = settings
        self.session = session
        self.registry = ClientRegistry(session)
        self.web_client = web_client_for(base_url) if base_url is not None else WebClient()
        self.register_client_auth_method(AUTH_METHOD, PrivateKeyJWTAssertion(settings, session))
        self.register_grant(HubClientCredentialsGrant)
        self.register_grant(HubAuthorizationCodeGrant, [S256CodeChallenge(required=True)])
        self.register_token_generator("default", HubTokenGenerator(settings))

    def query_client(self, client_id: Any) -> RegisteredClient | WebClient | None:
        if client_id == WEB_CLIENT_ID:
            return self.web_client
        # Read from an unverified assertion: look up only what could be a registered id.
        if not isinstance(client_id, str) or not is_client_id(client_id):
            return None
        return self.registry.get(client_id)

    def authorization_request(self, method: str, pairs: list[tuple[str, str]]) -> AuthorizeRequest:
        """The authorize request of these parameters (InsecureTransportError over http)."""
        return AuthorizeRequest(f"{self.settings.issuer}/authorize", method, pairs)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        """Nothing to save: the JWT access token is self-contained."""

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        """No signals."""

    def create_oauth2_request(
        self, request: list[tuple[str, str]] | AuthorizeRequest
    ) -> TokenRequest | AuthorizeRequest:
        if isinstance(request, AuthorizeRequest):
            return request  # made by authorization_request, handed back by get_consent_grant
        form: dict[str, str] = {}
        for name, value in request:
            if name in form:
                # RFC 6749 §3.2: parameters MUST NOT be included more than once.
                raise InvalidRequestError(
                    safe_description(f"The parameter {name} is given more than once.")
                )
            form[name] = value
        if not form.get("grant_type"):
            raise InvalidRequestError("The grant_type parameter is required.")
        return TokenRequest(self.settings.token_url, form)

    def create_token_response(self, request: list[tuple[str, str]] | None = None) -> Response:
        try:
            oauth_request = self.create_oauth2_request(request or [])
            grant = self.get_token_grant(oauth_request)
            grant.validate_token_request()
            response: Response = self.handle_response(*grant.create_token_response())
        except UnsupportedGrantTypeError as error:
            error.description = (
                "Only grant_type=client_credentials and authorization_code are supported."
            )
            return oauth_error_response(error)
        except OAuth2Error as error:
            return oauth_error_response(error)
        return response

    def handle_response(
        self, status: int, body: dict[str, Any], headers: list[tuple[str, str]]
    ) -> Response:
        return _json_response(status, body, headers)


class HubClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """client_credentials, with the client authenticated by a signed JWT only."""

    TOKEN_ENDPOINT_AUTH_METHODS = [AUTH_METHOD]

    def validate_requested_scope(self) -> None:
        scope = self.request.payload.scope
        if not scope or not scope.strip():
            raise InvalidScopeError(
                "The scope parameter is required: the SMART scopes wanted, "
                "like system/ServiceRequest.cruds."
            )
        if self.client.get_allowed_scope(scope) is None:
            raise InvalidScopeError("None of the requested scopes is registered for this client.")


class PrivateKeyJWTAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
    """SMART's `private_key_jwt`: RS384 / ES384, aud the token URL, exp <= 5 min, jti once."""

    CLIENT_AUTH_METHOD = AUTH_METHOD

    def __init__(self, settings: Settings, session: Session) -> None:
        super().__init__(validate_jti=True, leeway=settings.clock_skew_seconds)
        self.settings = settings
        self.session = session

    def get_audiences(self) -> list[str]:
        return [self.settings.token_url]

    def resolve_client_public_key(self, client: RegisteredClient | WebClient) -> KeySet:
        if not isinstance(client, RegisteredClient):
            raise InvalidClientError(description="This client does not sign assertions.")
        if client.jwks is not None:
            return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]
        return _fetch_jwks(str(client.jwks_url))

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        # joserfc's defaults leave out RS384 and ES384, the two SMART names: allow exactly those.
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ASSERTION_ALGORITHMS))
        except BadSignatureError as exc:
            raise InvalidClientError(
                description="The client assertion's signature does not verify with the "
                "client's registered keys."
            ) from exc
        except (JoseError, ValueError) as exc:
            detail = (exc.description or exc.error) if isinstance(exc, JoseError) else str(exc)
            raise InvalidClientError(
                description=safe_description(f"The client assertion is not valid: {detail}")
            ) from exc
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: dict[str, Any]) -> None:
        expires = claims.get("exp")
        if expires is not None and not _is_finite_number(expires):
            raise InvalidClientError(description="The client assertion's exp is not a number.")
        if expires is not None and expires > (
            time.time() + ASSERTION_MAX_LIFETIME_SECONDS + self.leeway
        ):
            raise InvalidClientError(
                description="The client assertion's exp is more than five minutes ahead."
            )
        super().verify_claims(claims)

    def validate_jti(self, claims: dict[str, Any], jti: Any) -> bool:
        """Record the jti; False if this client already used it (a replay)."""
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_LENGTH or not jti.isprintable():
            raise InvalidClientError(
                description=f"The client assertion's jti must be 1 to {MAX_JTI_LENGTH} "
                "printable characters."
            )
        self._purge_expired_now_and_then()
        expires_at = datetime.fromtimestamp(float(claims["exp"]), UTC).replace(tzinfo=None)
        self.session.add(UsedAssertionRow(client_id=claims["sub"], jti=jti, expires_at=expires_at))
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            return False
        return True

    def _purge_expired_now_and_then(self) -> None:
        """Forget jtis of assertions so old that their exp alone refuses them (once a minute)."""
        global _next_purge
        if time.monotonic() < _next_purge:
            return
        _next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        cutoff = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=self.leeway + 1)
        self.session.execute(delete(UsedAssertionRow).where(UsedAssertionRow.expires_at < cutoff))


class HubTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """RFC 9068 access tokens signed with the hub's key, with the claims the API reads."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            issuer=settings.issuer, alg=SIGNING_ALGORITHM, expires_generator=self.lifetime
        )
        self.settings = settings

    def lifetime(self, client: Any, grant_type: str) -> int:
        """A person's token lasts a working session; a system's, minutes."""
        if grant_type == CODE_GRANT_TYPE:
            return self.settings.user_token_lifetime_seconds
        return self.settings.token_lifetime_seconds

    def get_jwks(self) -> KeySet:
        # A key set rather than the bare key, so that joserfc writes the kid header.
        return signing_key_set(self.settings.signing_key_file)

    def get_audiences(self, client: Any, user: Any, scope: str) -> str:
        return self.settings.audience

    def get_extra_claims(
        self, client: RegisteredClient | WebClient, grant_type: str, user: Any, scope: str
    ) -> dict[str, Any]:
        # A person signed in: their own claims, whichever client they came through.
        holder = user if isinstance(user, Person) else client
        if not isinstance(holder, (Person, RegisteredClient)):
            raise InvalidClientError(description="This client is issued tokens for people only.")
        claims: dict[str, Any] = {
            "roles": sorted(holder.roles),
            "programs": sorted(holder.programs),
        }
        if holder.fhir_user is not None:
            claims["fhirUser"] = holder.fhir_user
        if isinstance(holder, RegisteredClient) and holder.referrer_kind is not None:
            claims["referrer_kind"] = holder.referrer_kind
        if isinstance(holder, Person):
            claims["name"] = holder.display_name  # what the pages call the signed-in person
        return claims


def _fetch_jwks(url: str) -> KeySet:
    """The client's public keys, fetched from its jwks_url (each time: keys rotate)."""
    try:
        response = httpx.get(url, timeout=JWKS_FETCH_TIMEOUT_SECONDS, follow_redirects=False)
        response.raise_for_status()
        jwks = response.json()
        check_public_jwks(jwks)
        return KeySet.import_key_set(jwks)
    except (httpx.HTTPError, ValueError) as exc:
        raise InvalidClientError(
            description="The client's JWKS could not be fetched from its jwks_url."
        ) from exc
    except InvalidRequest as exc:
        raise InvalidClientError(
            description=safe_description(
                f"The JWKS at the client's jwks_url is refused: {exc.diagnostics}"
            )
        ) from exc


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def safe_description(text: str) -> str:
    """`text` with what RFC 6749 forbids in error_description (quotes, backslash) removed."""
    bad = set(invalid_error_characters(text))
    return "".join("'" if char == '"' else char for char in text if char not in bad - {'"'})


def _json_response(status: int, body: dict[str, Any], headers: list[tuple[str, str]]) -> Response:
    merged = dict(headers)
    merged["Cache-Control"] = "no-store"
    merged["Pragma"] = "no-cache"
    merged["Content-Type"] = "application/json"
    return Response(json.dumps(body), status_code=status, headers=merged)
