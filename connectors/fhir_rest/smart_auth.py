"""SMART Backend Services, client side: a token for a system, by a signed JWT assertion.

authlib's PrivateKeyJWT signs the assertion; SMART wants it to live at most five minutes
and to be signed with RS384 or ES384, which the subclass below sees to.
"""

from __future__ import annotations

import warnings
from typing import Any

# authlib announces a move of its httpx integration to "httpx2"; httpx is what we use.
warnings.filterwarnings("ignore", message="The httpx module is deprecated")

from authlib.integrations.httpx_client import OAuth2Client  # noqa: E402
from authlib.oauth2.rfc7523 import PrivateKeyJWT  # noqa: E402
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign  # noqa: E402
from joserfc.jwk import ECKey, RSAKey  # noqa: E402

ASSERTION_LIFETIME_SECONDS = 300


class SmartPrivateKeyJWT(PrivateKeyJWT):  # type: ignore[misc]
    """private_key_jwt with the SMART limits: a short-lived assertion, RS384 or ES384."""

    def __init__(self, token_endpoint: str, alg: str = "RS384") -> None:
        super().__init__(token_endpoint=token_endpoint, alg=alg)

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        key = auth.client_secret
        if isinstance(key, dict):
            key = ECKey.import_key(key) if key.get("kty") == "EC" else RSAKey.import_key(key)
        return private_key_jwt_sign(
            key,
            client_id=auth.client_id,
            token_endpoint=token_endpoint,
            alg=self.alg,
            header=self.headers,
            expires_in=ASSERTION_LIFETIME_SECONDS,
        )


def fetch_backend_token(
    token_url: str,
    client_id: str,
    private_jwk: dict[str, Any],
    scope: str,
    *,
    alg: str = "RS384",
    timeout: float = 30.0,
) -> dict[str, Any]:
    """The token response (access_token, expires_in, scope) for a SMART backend client."""
    auth = SmartPrivateKeyJWT(token_url, alg=alg)
    with OAuth2Client(
        client_id=client_id,
        client_secret=private_jwk,
        token_endpoint_auth_method=auth,
        timeout=timeout,
    ) as client:
        token: dict[str, Any] = client.fetch_token(
            token_url, grant_type="client_credentials", scope=scope
        )
    return token
