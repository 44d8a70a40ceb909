"""The resource server: checks bearer tokens and turns their claims into a Principal.

Accepted: RFC 9068 JWT access tokens from the built-in authorization server or from a
trusted issuer of the configuration; signature against the issuer's JWKS; iss, aud, exp,
nbf, iat with a bounded clock skew.
"""

from __future__ import annotations

import base64
import json
import time
from functools import cache
from typing import Any

import httpx
from authlib.oauth2.rfc6750.errors import InvalidTokenError
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from authlib.oauth2.rfc9068.claims import JWTAccessTokenClaims
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from hub.errors import Unauthorized
from hub.security.keys import public_jwks
from hub.security.principal import Principal
from hub.security.scopes import parse_scopes
from hub.settings import Settings, TrustedIssuer

# Asymmetric algorithms only: SMART Backend Services names RS384 and ES384.
ALGORITHMS = ["RS256", "RS384", "ES256", "ES384", "PS256", "PS384"]


class IssuerTokenValidator(JWTBearerTokenValidator):  # type: ignore[misc]
    """Validates tokens of one issuer against its JWKS, with a bounded leeway."""

    def __init__(self, issuer: str, audience: str, jwks: KeySet, leeway: int) -> None:
        super().__init__(issuer=issuer, resource_server=audience)
        self._jwks = jwks
        self.leeway = leeway

    def get_jwks(self) -> KeySet:
        return self._jwks

    def authenticate_token(self, token_string: str) -> JWTAccessTokenClaims:
        # authlib's own version leaves joserfc at its default algorithms (no RS384/ES384).
        claims_options: dict[str, Any] = {
            "iss": {"essential": True, "validate": self.validate_iss},
            "exp": {"essential": True},
            "aud": {"essential": True, "value": self.resource_server},
            "sub": {"essential": True},
            "client_id": {"essential": True},
            "iat": {"essential": True},
            "jti": {"essential": True},
        }
        try:
            token = jwt.decode(token_string, self._jwks, algorithms=ALGORITHMS)
        except (JoseError, ValueError) as exc:
            raise InvalidTokenError() from exc
        return JWTAccessTokenClaims(token.claims, token.header, claims_options)

    def validate_token(
        self, token: JWTAccessTokenClaims, scopes: Any, request: Any, **_: Any
    ) -> None:
        try:
            token.validate(leeway=self.leeway)
        except JoseError as exc:
            raise InvalidTokenError(description=exc.description) from exc
        not_before = token.get("nbf")
        if isinstance(not_before, (int, float)) and not_before > time.time() + self.leeway:
            raise InvalidTokenError(description="The token is not valid yet (nbf).")


class TokenAuthenticator:
    """Turns an Authorization header into a Principal, or raises Unauthorized."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        own = IssuerTokenValidator(
            settings.issuer,
            settings.audience,
            _key_set(public_jwks(settings.signing_key_file)),
            settings.clock_skew_seconds,
        )
        self.validators = {settings.issuer: own}
        for trusted in settings.trusted_issuers:
            self.validators[trusted.issuer] = IssuerTokenValidator(
                trusted.issuer,
                settings.audience,
                _jwks_of(trusted),
                settings.clock_skew_seconds,
            )

    def authenticate(self, authorization: str | None, address: str | None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("This endpoint needs an access token: Authorization: Bearer ...")
        validator = self.validators.get(_unverified_issuer(token.strip()) or "")
        if validator is None:
            raise Unauthorized("The access token is not from an issuer the hub trusts.")
        try:
            claims = validator.authenticate_token(token.strip())
            validator.validate_token(claims, None, None)
        except InvalidTokenError as exc:
            detail = exc.description or "signature, issuer, audience or lifetime is wrong"
            raise Unauthorized(f"The access token is not valid: {detail}") from exc
        return _principal(claims, address)


def _unverified_issuer(token: str) -> str | None:
    """The `iss` claim, read before verification only to pick the issuer's keys."""
    try:
        payload = token.split(".")[1]
        padded = payload + "=" * (-len(payload) % 4)
        issuer = json.loads(base64.urlsafe_b64decode(padded)).get("iss")
    except (IndexError, ValueError, AttributeError):
        return None
    return issuer if isinstance(issuer, str) else None


def _principal(claims: JWTAccessTokenClaims, address: str | None) -> Principal:
    def as_set(value: Any) -> frozenset[str]:
        if isinstance(value, str):
            return frozenset(value.split())
        return frozenset(str(v) for v in value or [])

    return Principal(
        subject=str(claims["sub"]),
        client_id=str(claims["client_id"]),
        roles=as_set(claims.get("roles")),
        scopes=parse_scopes(str(claims.get("scope") or "")),
        fhir_user=claims.get("fhirUser"),
        programs=as_set(claims.get("programs")),
        patient=claims.get("patient"),
        referrer_kind=claims.get("referrer_kind"),
        address=address,
        name=claims.get("name"),
    )


def _jwks_of(trusted: TrustedIssuer) -> KeySet:
    if trusted.jwks_file is not None:
        return _key_set(json.loads(trusted.jwks_file.read_text(encoding="utf-8")))
    if trusted.jwks_url is not None:
        return _fetched_jwks(trusted.jwks_url)
    raise ValueError(f"Trusted issuer {trusted.issuer} has neither jwks_file nor jwks_url.")


@cache
def _fetched_jwks(url: str) -> KeySet:
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    return _key_set(response.json())


def _key_set(jwks: Any) -> KeySet:
    return KeySet.import_key_set(jwks)
