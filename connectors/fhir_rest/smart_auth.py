"""SMART Backend Services, client side: a token for a system, by a signed JWT assertion.

authlib's PrivateKeyJWT signs the assertion; SMART wants it to live at most five minutes
and to be signed with RS384 or ES384, which the subclass below sees to.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import httpx

# authlib announces a move of its httpx integration to "httpx2"; httpx is what we use.
warnings.filterwarnings("ignore", message="The httpx module is deprecated")

from authlib.common.errors import AuthlibBaseError as OAuthError  # noqa: E402
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuth2Client  # noqa: E402
from authlib.oauth2.rfc7523 import PrivateKeyJWT  # noqa: E402
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign  # noqa: E402
from joserfc.jwk import ECKey, RSAKey  # noqa: E402

from connectors.fhir_rest.errors import TokenError  # noqa: E402

ASSERTION_LIFETIME_SECONDS = 300


class SmartPrivateKeyJWT(PrivateKeyJWT):  # type: ignore[misc]
    """private_key_jwt with the SMART limits: a short-lived assertion, RS384 or ES384."""

    def __init__(self, token_endpoint: str, alg: str = "RS384") -> None:
        super().__init__(token_endpoint=token_endpoint, alg=alg)

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        return private_key_jwt_sign(
            _import_key(auth.client_secret),
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


class SmartBackendServices(httpx.Auth):
    """httpx auth for a SMART Backend Services client: a cached access token, fetched with a
    signed assertion and renewed `renew_before` seconds before it expires, or when the
    source answers 401 (once per request: a token it refuses twice is refused).

    `token_url` None: discovered from the source's .well-known/smart-configuration.
    """

    requires_response_body = False

    def __init__(
        self,
        *,
        client_id: str,
        private_key: dict[str, Any] | str,
        scope: str,
        fhir_base: str,
        token_url: str | None = None,
        renew_before: float = 60.0,
        verify: bool | ssl.SSLContext = True,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client_id = client_id
        self._key = _import_key(private_key)
        self._alg = "ES384" if isinstance(self._key, ECKey) else "RS384"
        self._scope = scope
        self._fhir_base = fhir_base.rstrip("/")
        self._token_url = token_url
        self._renew_before = renew_before
        self._verify = verify
        self._timeout = timeout
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self.tokens_fetched = 0

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self._current_token(stale=None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            token = await self._current_token(stale=token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("SmartBackendServices works with httpx.AsyncClient only")

    async def _current_token(self, *, stale: str | None) -> str:
        async with self._lock:
            fresh = self._clock() < self._expires_at - self._renew_before
            if self._token is None or not fresh or self._token == stale:
                await self._fetch()
            assert self._token is not None
            return self._token

    async def _fetch(self) -> None:
        token_url = self._token_url or await self._discover()
        auth = SmartPrivateKeyJWT(token_url, alg=self._alg)
        try:
            async with AsyncOAuth2Client(
                client_id=self._client_id,
                client_secret=self._key,
                token_endpoint_auth_method=auth,
                timeout=self._timeout,
                verify=self._verify,
            ) as client:
                token = await client.fetch_token(
                    token_url, grant_type="client_credentials", scope=self._scope
                )
        except (OAuthError, httpx.HTTPError) as exc:
            raise TokenError(f"the token endpoint refused the client: {exc}") from exc
        self._token = str(token["access_token"])
        self._expires_at = self._clock() + float(token.get("expires_in") or 300)
        self.tokens_fetched += 1

    async def _discover(self) -> str:
        url = f"{self._fhir_base}/.well-known/smart-configuration"
        try:
            async with httpx.AsyncClient(timeout=self._timeout, verify=self._verify) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            configuration = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            raise TokenError(f"no SMART configuration at the source: {exc}") from exc
        token_url = configuration.get("token_endpoint") if isinstance(configuration, dict) else None
        if not isinstance(token_url, str) or not token_url:
            raise TokenError(
                "the source's .well-known/smart-configuration names no token_endpoint "
                f"(HTTP {response.status_code}); set token_url"
            )
        methods = configuration.get("token_endpoint_auth_methods_supported") or []
        if methods and "private_key_jwt" not in methods:
            raise TokenError("the source's token endpoint does not take private_key_jwt")
        self._token_url = token_url
        return token_url


def _import_key(key: dict[str, Any] | str | ECKey | RSAKey) -> ECKey | RSAKey:
    if isinstance(key, ECKey | RSAKey):
        return key
    if isinstance(key, dict):
        return ECKey.import_key(key) if key.get("kty") == "EC" else RSAKey.import_key(key)
    return ECKey.import_key(key) if "EC PRIVATE" in key else RSAKey.import_key(key)
