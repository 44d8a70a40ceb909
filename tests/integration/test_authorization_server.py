"""The built-in authorization server: SMART Backend Services on SQLite and PostgreSQL.

A client registered with `hub clients add` signs a JWT with its own key (RS384 or ES384),
trades it at POST /auth/token for an RFC 9068 access token, and the resource server
accepts that token. Every way a client assertion can be wrong is refused with an OAuth2
error, never with a token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from hub import codes
from hub.app import create_app
from hub.errors import Conflict, InvalidRequest
from hub.security.authorization_server import issue_token
from hub.security.clients import ClientRegistry, RegisteredClient
from hub.security.tokens import TokenAuthenticator
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from tests.backends import sqlite_only

HUB = Path(sys.executable).parent / "hub"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
REFERRER_SCOPES = "system/ServiceRequest.cruds system/Patient.cruds system/Observation.rs"

ClientKey = RSAKey | ECKey


@pytest.fixture
def settings(database_url: str, signing_key_file: Path) -> Settings:
    """The suite's settings, with the session's signing key (in a temporary folder rather
    than var/: made once, not a 2048-bit RSA key generated for every test)."""
    return Settings(
        database_url=database_url,
        max_request_bytes=256 * 1024,
        signing_key_file=signing_key_file,
    )


@pytest.fixture(scope="session")
def rsa_key() -> RSAKey:
    """The referring EHR's key pair: one for the session (keys are never changed; each
    test's database starts empty, so no registration or used jti carries over)."""
    return RSAKey.generate_key(2048, auto_kid=True)


@pytest.fixture
def referrer(settings: Settings, rsa_key: RSAKey) -> str:
    """A referring EHR registered (directly) with an RS384 key: its client id."""
    client_id = f"ehr-{uuid.uuid4().hex[:8]}"
    register(
        settings,
        client_id,
        jwks=public_jwks(rsa_key),
        roles=["referrer"],
        scopes=REFERRER_SCOPES,
        referrer_kind="clinician",
    )
    return client_id


# --- helpers ------------------------------------------------------------------------------


def public_jwks(*keys: ClientKey) -> dict[str, Any]:
    return {"keys": [key.as_dict(private=False) for key in keys]}


def register(settings: Settings, client_id: str, **fields: Any) -> RegisteredClient:
    fields.setdefault("name", "Test client")
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            client = ClientRegistry(session).add(client_id, **fields)
            session.commit()
    finally:
        engine.dispose()
    return client


def run_hub(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`hub ...` as an operator runs it, on the test's database and signing key."""
    environment = {
        **os.environ,
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_SIGNING_KEY_FILE": str(settings.signing_key_file),
    }
    return subprocess.run(
        [str(HUB), *arguments], env=environment, capture_output=True, text=True, timeout=120
    )


def register_with_cli(
    settings: Settings, tmp_path: Path, client_id: str, key: ClientKey, *options: str
) -> None:
    jwks_file = tmp_path / f"{client_id}.jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(key)), encoding="utf-8")
    result = run_hub(
        settings,
        "clients",
        "add",
        client_id,
        "--name",
        f"{client_id} system",
        "--jwks-file",
        str(jwks_file),
        *options,
    )
    assert result.returncode == 0, result.stderr


def assertion(
    key: ClientKey | OctKey,
    client_id: str,
    audience: str,
    *,
    alg: str = "RS384",
    expires_in: int = 240,
    jti: str | None = None,
    **claims: Any,
) -> str:
    """A client assertion: iss = sub = the client, aud = the token URL, exp, a fresh jti."""
    now = int(time.time())
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "exp": now + expires_in,
        "iat": now,
        "jti": jti or uuid.uuid4().hex,
        **claims,
    }
    header = {"alg": alg, "typ": "JWT"}
    if key.kid:
        header["kid"] = key.kid
    return jwt.encode(header, body, key, algorithms=[alg])


def token_request(
    client: TestClient, signed: str, scope: str = REFERRER_SCOPES, **extra: str
) -> Any:
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        **extra,
    }
    return client.post("/auth/token", content=urlencode(form), headers=FORM)


def assert_oauth_error(response: Any, error: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: 400 or 401, JSON `error` (+ description), not cacheable."""
    assert response.status_code in (400, 401), response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    return body


# --- a registered client gets a token the API accepts --------------------------------------


def test_an_rs384_client_registered_with_the_cli_gets_a_token_the_api_accepts(
    client: TestClient, settings: Settings, tmp_path: Path, rsa_key: RSAKey
) -> None:
    register_with_cli(
        settings,
        tmp_path,
        "st-mary-ehr",
        rsa_key,
        "--role",
        "referrer",
        "--scope",
        "system/ServiceRequest.cruds system/Patient.rs",
        "--referrer-kind",
        "clinician",
    )
    signed = assertion(rsa_key, "st-mary-ehr", settings.token_url)

    response = token_request(
        client, signed, scope="system/ServiceRequest.cruds system/Patient.rs system/Task.rs"
    )

    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.token_lifetime_seconds
    assert body["scope"] == "system/ServiceRequest.cruds system/Patient.rs"
    assert "refresh_token" not in body
    principal = TokenAuthenticator(settings).authenticate(
        "Bearer " + body["access_token"], "127.0.0.1"
    )
    assert principal.subject == principal.client_id == "st-mary-ehr"
    assert principal.roles == {"referrer"}
    assert principal.referrer_kind == "clinician"
    assert [str(s) for s in principal.scopes] == [
        "system/ServiceRequest.cruds",
        "system/Patient.rs",
    ]
    assert principal.allows("ServiceRequest", "c") and not principal.allows("Task", "r")


def test_an_es384_client_registered_with_the_cli_gets_its_roles_and_programs(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    ec_key = ECKey.generate_key("P-384", auto_kid=True)
    register_with_cli(
        settings,
        tmp_path,
        "routing-service",
        ec_key,
        "--role",
        "case-manager",
        "--scope",
        "system/Task.cruds",
        "--program",
        "oncology",
        "--program",
        "neuro",
        "--fhir-user",
        "Practitioner/cm-1",
    )
    signed = assertion(ec_key, "routing-service", settings.token_url, alg="ES384")

    response = token_request(client, signed, scope="system/Task.rs")

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Task.rs"
    principal = TokenAuthenticator(settings).authenticate(
        "Bearer " + response.json()["access_token"], "127.0.0.1"
    )
    assert principal.roles == {"case-manager"}
    assert principal.programs == {"oncology", "neuro"}
    assert principal.fhir_user == "Practitioner/cm-1"
    assert principal.referrer_kind is None


def test_the_access_token_is_an_rfc9068_jwt_with_the_hubs_kid(
    client: TestClient, settings: Settings, rsa_key: RSAKey, referrer: str
) -> None:
    response = token_request(client, assertion(rsa_key, referrer, settings.token_url))
    assert response.status_code == 200, response.text
    keys = client.get("/auth/jwks").json()["keys"]

    token = jwt.decode(response.json()["access_token"], RSAKey.import_key(keys[0]))

    assert token.header["typ"] == "at+jwt"
    assert token.header["alg"] == "RS256"
    assert token.header["kid"] == keys[0]["kid"]
    assert token.claims["iss"] == settings.issuer
    assert token.claims["aud"] == settings.audience
    assert token.claims["sub"] == token.claims["client_id"] == referrer
    assert token.claims["roles"] == ["referrer"]
    assert "fhirUser" not in token.claims
    assert all("d" not in key for key in keys)


def test_hub_clients_list_and_disable(
    client: TestClient, settings: Settings, tmp_path: Path, rsa_key: RSAKey
) -> None:
    register_with_cli(
        settings,
        tmp_path,
        "old-ehr",
        rsa_key,
        "--role",
        "referrer",
        "--scope",
        "system/ServiceRequest.cruds",
    )
    listed = run_hub(settings, "clients", "list")
    assert listed.returncode == 0, listed.stderr
    assert "old-ehr\tenabled\treferrer\tsystem/ServiceRequest.cruds" in listed.stdout

    disabled = run_hub(settings, "clients", "disable", "old-ehr")
    assert disabled.returncode == 0, disabled.stderr

    assert "old-ehr\tdisabled" in run_hub(settings, "clients", "list").stdout
    signed = assertion(rsa_key, "old-ehr", settings.token_url)
    response = token_request(client, signed, scope="system/ServiceRequest.cruds")
    assert "does not exist" in assert_oauth_error(response, "invalid_client")["error_description"]
    assert run_hub(settings, "clients", "disable", "no-such-client").returncode == 1


@sqlite_only  # refused before anything is written: nothing of the database is tested
def test_hub_clients_add_refuses_a_private_key_and_says_why(
    settings: Settings, tmp_path: Path, rsa_key: RSAKey
) -> None:
    jwks_file = tmp_path / "leaked.json"
    jwks_file.write_text(json.dumps({"keys": [rsa_key.as_dict(private=True)]}), "utf-8")

    result = run_hub(
        settings,
        "clients",
        "add",
        "leaky-ehr",
        "--name",
        "Leaky",
        "--role",
        "referrer",
        "--scope",
        "system/Patient.rs",
        "--jwks-file",
        str(jwks_file),
    )

    assert result.returncode == 1
    assert "private key material" in result.stderr


@sqlite_only  # `hub token issue` never opens the database
def test_hub_token_issue_prints_a_persons_token(client: TestClient, settings: Settings) -> None:
    result = run_hub(
        settings,
        "token",
        "issue",
        "--subject",
        "dr-ada",
        "--role",
        "specialist",
        "--scope",
        "user/Task.rs user/ServiceRequest.rs",
        "--fhir-user",
        "Practitioner/p-7",
    )

    assert result.returncode == 0, result.stderr
    principal = TokenAuthenticator(settings).authenticate(
        "Bearer " + result.stdout.strip(), "10.0.0.5"
    )
    assert principal.subject == "dr-ada"
    assert principal.roles == {"specialist"}
    assert principal.fhir_user == "Practitioner/p-7"
    assert [str(s) for s in principal.scopes] == ["user/Task.rs", "user/ServiceRequest.rs"]


def test_issue_token_narrows_to_the_clients_scopes(client: TestClient, settings: Settings) -> None:
    manager = RegisteredClient(
        client_id="hub-cli",
        name="test",
        roles=frozenset({"case-manager"}),
        scopes="user/Task.cruds",
        programs=frozenset({"oncology"}),
    )

    token = issue_token(settings, manager, "user/Task.rs user/Patient.rs", subject="cm-jo")

    principal = TokenAuthenticator(settings).authenticate(f"Bearer {token}", None)
    assert principal.subject == "cm-jo" and principal.client_id == "hub-cli"
    assert [str(s) for s in principal.scopes] == ["user/Task.rs"]
    assert principal.programs == {"oncology"}
    with pytest.raises(InvalidRequest):
        issue_token(settings, manager, "user/Patient.rs", subject="cm-jo")


class _JwksHandler(BaseHTTPRequestHandler):
    document: dict[str, Any] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = json.dumps(self.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, type[_JwksHandler]]]:
    """A loopback HTTP server publishing a JWKS (set `handler.document`): its URL."""
    handler = type("Handler", (_JwksHandler,), {"document": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_client_with_a_jwks_url_is_verified_against_the_published_keys(
    client: TestClient,
    settings: Settings,
    rsa_key: RSAKey,
    jwks_server: tuple[str, type[_JwksHandler]],
) -> None:
    url, handler = jwks_server
    handler.document = public_jwks(rsa_key)
    register(settings, "url-ehr", jwks_url=url, roles=["referrer"], scopes=REFERRER_SCOPES)

    ok = token_request(client, assertion(rsa_key, "url-ehr", settings.token_url))
    assert ok.status_code == 200, ok.text

    handler.document = {"keys": [rsa_key.as_dict(private=True)]}
    refused = token_request(client, assertion(rsa_key, "url-ehr", settings.token_url))
    assert "private key" in assert_oauth_error(refused, "invalid_client")["error_description"]

    handler.document = public_jwks(RSAKey.generate_key(2048, parameters={"kid": rsa_key.kid}))
    rotated = token_request(client, assertion(rsa_key, "url-ehr", settings.token_url))
    assert "signature" in assert_oauth_error(rotated, "invalid_client")["error_description"]


def test_a_token_endpoint_published_over_plain_http_refuses_to_issue(
    database_url: str, signing_key_file: Path, rsa_key: RSAKey
) -> None:
    exposed = Settings(
        database_url=database_url,
        public_url="http://hub.example.org",
        signing_key_file=signing_key_file,
    )
    register(
        exposed, "ehr", jwks=public_jwks(rsa_key), roles=["referrer"], scopes="system/Patient.rs"
    )
    with TestClient(create_app(exposed)) as plain:
        signed = assertion(rsa_key, "ehr", exposed.token_url)
        response = token_request(plain, signed, scope="system/Patient.rs")
    assert_oauth_error(response, "insecure_transport")


# --- refusals -----------------------------------------------------------------------------


def test_a_replayed_assertion_is_refused(
    client: TestClient, settings: Settings, rsa_key: RSAKey, referrer: str
) -> None:
    signed = assertion(rsa_key, referrer, settings.token_url)
    assert token_request(client, signed).status_code == 200

    body = assert_oauth_error(token_request(client, signed), "invalid_client")
    assert "JWT ID" in body["error_description"]


def test_the_same_jti_from_another_client_is_not_a_replay(
    client: TestClient, settings: Settings, rsa_key: RSAKey, referrer: str
) -> None:
    other_key = RSAKey.generate_key(2048, auto_kid=True)
    register(
        settings,
        "other-ehr",
        jwks=public_jwks(other_key),
        roles=["referrer"],
        scopes=REFERRER_SCOPES,
    )
    first = assertion(rsa_key, referrer, settings.token_url, jti="shared-jti")
    second = assertion(other_key, "other-ehr", settings.token_url, jti="shared-jti")

    assert token_request(client, first).status_code == 200
    assert token_request(client, second).status_code == 200


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"expires_in": -180}, "expired", id="expired"),
        pytest.param({"expires_in": 300 + 60 + 120}, "five minutes", id="exp-over-5-minutes"),
        pytest.param({"audience": "https://elsewhere.example/token"}, "'aud'", id="wrong-aud"),
        pytest.param({"audience": "FHIR-BASE"}, "'aud'", id="aud-the-fhir-base"),
        pytest.param({"client_id": "no-such-client"}, "does not exist", id="unknown-client"),
        pytest.param({"alg": "RS256"}, "'RS256' is not allowed", id="rs256"),
        pytest.param({"alg": "HS256"}, "'HS256' is not allowed", id="hs256"),
        pytest.param({"signer": "another-key"}, "signature", id="signed-by-another-key"),
        pytest.param({"issuer": "someone-else"}, "Issuer and Subject", id="iss-not-sub"),
        pytest.param({"jti": None}, "Missing JWT ID", id="no-jti"),
        pytest.param({"exp": float("nan")}, "not a number", id="exp-nan"),
        pytest.param({"client_id": "ehr\x00"}, "does not exist", id="nul-in-client-id"),
    ],
)
def test_a_bad_client_assertion_is_refused(
    client: TestClient,
    settings: Settings,
    rsa_key: RSAKey,
    referrer: str,
    change: dict[str, Any],
    reason: str,
) -> None:
    key: ClientKey | OctKey = rsa_key
    if change.get("signer") == "another-key":
        key = RSAKey.generate_key(2048, parameters={"kid": rsa_key.kid})
    if change.get("alg") == "HS256":
        key = OctKey.generate_key(256)
    audience = change.get("audience", settings.token_url)
    if audience == "FHIR-BASE":
        audience = settings.audience
    client_id = change.get("client_id", referrer)
    extra: dict[str, Any] = {"iss": change["issuer"]} if "issuer" in change else {}
    if "exp" in change:
        extra["exp"] = change["exp"]
    signed = assertion(
        key,
        client_id,
        audience,
        alg=change.get("alg", "RS384"),
        expires_in=change.get("expires_in", 240),
        **extra,
    )
    if "jti" in change:
        signed = _without_jti(rsa_key, client_id, audience)

    body = assert_oauth_error(token_request(client, signed), "invalid_client")

    assert reason in body["error_description"]


def _without_jti(key: RSAKey, client_id: str, audience: str) -> str:
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": audience, "exp": now + 240}
    return jwt.encode({"alg": "RS384", "kid": key.kid}, claims, key, algorithms=["RS384"])


def test_a_grant_type_other_than_client_credentials_is_refused(
    client: TestClient, settings: Settings, rsa_key: RSAKey, referrer: str
) -> None:
    signed = assertion(rsa_key, referrer, settings.token_url)
    response = token_request(client, signed, grant_type="password")
    assert_oauth_error(response, "unsupported_grant_type")


def test_a_client_secret_is_no_way_in(client: TestClient, referrer: str) -> None:
    form = {
        "grant_type": "client_credentials",
        "scope": REFERRER_SCOPES,
        "client_id": referrer,
        "client_secret": "guess",
    }
    response = client.post("/auth/token", content=urlencode(form), headers=FORM)
    assert_oauth_error(response, "invalid_client")


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("system/Task.cruds", id="not-registered"),
        pytest.param("user/Patient.rs", id="other-context"),
        pytest.param("launch openid", id="not-a-resource-scope"),
        pytest.param("", id="empty"),
    ],
)
def test_a_scope_the_client_has_not_got_is_invalid_scope(
    client: TestClient, settings: Settings, rsa_key: RSAKey, referrer: str, scope: str
) -> None:
    signed = assertion(rsa_key, referrer, settings.token_url)
    assert_oauth_error(token_request(client, signed, scope=scope), "invalid_scope")


def test_a_scope_wider_than_registered_is_left_out_of_the_grant(
    client: TestClient, settings: Settings, rsa_key: RSAKey, referrer: str
) -> None:
    # Observation is registered as .rs only: .cruds is not granted; Patient.cruds is.
    signed = assertion(rsa_key, referrer, settings.token_url)
    response = token_request(
        client, signed, scope="system/Patient.cruds system/Observation.cruds launch"
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.cruds"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"grant_type=%ff%fe", FORM["Content-Type"], id="not-utf8"),
        pytest.param(b"grant_type=\xe9", FORM["Content-Type"], id="not-ascii"),
        pytest.param(b'{"grant_type": "client_credentials"}', "application/json", id="json"),
        pytest.param(b"", FORM["Content-Type"], id="empty"),
        pytest.param(
            b"grant_type=client_credentials&grant_type=client_credentials",
            FORM["Content-Type"],
            id="repeated-parameter",
        ),
    ],
)
def test_a_malformed_form_body_is_invalid_request(
    client: TestClient, content: bytes, content_type: str
) -> None:
    response = client.post("/auth/token", content=content, headers={"Content-Type": content_type})
    body = assert_oauth_error(response, "invalid_request")
    assert body["error_description"]


# --- discovery and keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/.well-known/smart-configuration", "/fhir/.well-known/smart-configuration"]
)
def test_smart_configuration(client: TestClient, settings: Settings, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200, response.text
    document = response.json()
    assert document["issuer"] == settings.issuer
    assert document["token_endpoint"] == settings.token_url
    assert document["jwks_uri"] == f"{settings.issuer}/jwks"
    assert document["grant_types_supported"] == ["client_credentials", "authorization_code"]
    assert document["token_endpoint_auth_methods_supported"] == ["private_key_jwt", "none"]
    assert document["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert "system/*.cruds" in document["scopes_supported"]
    assert set(document["capabilities"]) >= {"client-confidential-asymmetric", "permission-v2"}


# --- registration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"jwks": "PRIVATE"}, "private key material", id="private-key"),
        pytest.param({"roles": ["referrer", "superuser"]}, "Unknown role", id="unknown-role"),
        pytest.param({"roles": []}, "At least one role", id="no-role"),
        pytest.param(
            {"scopes": "system/Patient.rs patient/*.write extra"}, "extra", id="not-a-scope"
        ),
        pytest.param({"jwks_url": "https://ehr.example/jwks"}, "exactly one", id="both-keys"),
        pytest.param({"jwks": None}, "exactly one", id="no-keys"),
        pytest.param({"jwks": {"keys": []}}, "at least one key", id="empty-jwks"),
        pytest.param({"jwks": "OCT"}, "private key material", id="symmetric-key"),
        pytest.param({"jwks": "P-256"}, "P-384", id="ec-p256"),
        pytest.param({"jwks": "NO-KID"}, "kid", id="no-kid"),
        pytest.param({"referrer_kind": "insurer"}, "not one of", id="bad-referrer-kind"),
        pytest.param(
            {"roles": ["specialist"], "referrer_kind": "family"},
            "only for",
            id="referrer-kind-of-a-specialist",
        ),
        pytest.param(
            {"jwks": None, "jwks_url": "http://ehr.example/jwks"}, "https", id="plain-http-jwks-url"
        ),
    ],
)
def test_the_registry_refuses_a_bad_registration(
    settings: Settings, rsa_key: RSAKey, fields: dict[str, Any], message: str
) -> None:
    special = {
        "PRIVATE": {"keys": [rsa_key.as_dict(private=True)]},
        "OCT": {"keys": [OctKey.generate_key(256, auto_kid=True).as_dict()]},
        "P-256": public_jwks(ECKey.generate_key("P-256", auto_kid=True)),
        "NO-KID": {"keys": [RSAKey.generate_key(2048).as_dict(private=False)]},
    }
    if isinstance(fields.get("jwks"), str):
        fields = {**fields, "jwks": special[fields["jwks"]]}
    registration: dict[str, Any] = {
        "jwks": public_jwks(rsa_key),
        "roles": ["referrer"],
        "scopes": "system/Patient.rs",
        **fields,
    }

    with pytest.raises(InvalidRequest) as refused:
        register(settings, "bad-client", **registration)

    assert message in refused.value.diagnostics
    engine = make_engine(settings.database_url)
    with make_session_factory(engine)() as session:
        assert ClientRegistry(session).list() == []
    engine.dispose()


def test_the_registry_refuses_the_id_of_the_hubs_own_pages(
    settings: Settings, rsa_key: RSAKey
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        register(
            settings,
            "hub-web",
            jwks=public_jwks(rsa_key),
            roles=["referrer"],
            scopes="system/Patient.rs",
        )

    assert "web pages' client id" in refused.value.diagnostics


def test_the_registry_refuses_a_second_client_with_the_same_id(
    settings: Settings, rsa_key: RSAKey, referrer: str
) -> None:
    with pytest.raises(Conflict):
        register(
            settings,
            referrer,
            jwks=public_jwks(rsa_key),
            roles=["referrer"],
            scopes="system/Patient.rs",
        )


def test_a_registered_referrer_submits_a_referral_and_cannot_replay_its_assertion(
    client: TestClient, settings: Settings, tmp_path: Path, rsa_key: RSAKey
) -> None:
    scopes = "system/Patient.crus system/ServiceRequest.crus system/Task.rs"
    register_with_cli(
        settings,
        tmp_path,
        "county-ehr",
        rsa_key,
        "--role",
        "referrer",
        "--scope",
        scopes,
        "--referrer-kind",
        "clinician",
    )
    signed = assertion(rsa_key, "county-ehr", settings.token_url)
    granted = token_request(client, signed, scope=scopes)
    assert granted.status_code == 200, granted.text
    headers = {"Authorization": f"Bearer {granted.json()['access_token']}"}

    child = client.post(
        "/fhir/Patient",
        headers=headers,
        json={"resourceType": "Patient", "name": [{"family": "Referred"}]},
    )
    assert child.status_code == 201, child.text
    request = client.post(
        "/fhir/ServiceRequest",
        headers=headers,
        json={
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "category": [
                {"coding": [{"system": codes.CASE_CATEGORY_SYSTEM, "code": codes.SECOND_OPINION}]}
            ],
            "subject": {"reference": f"Patient/{child.json()['id']}"},
        },
    )
    assert request.status_code == 201, request.text
    case = client.get(
        "/fhir/Task", headers=headers, params={"focus": f"ServiceRequest/{request.json()['id']}"}
    ).json()
    assert case["entry"][0]["resource"]["status"] == "received"

    replayed = token_request(client, signed, scope=scopes)
    assert replayed.status_code == 400
    assert replayed.json()["error"] == "invalid_client"
