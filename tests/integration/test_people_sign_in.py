"""People sign in: the authorization code grant with PKCE, on SQLite and PostgreSQL.

A person added with `hub users add` is sent by the pages' public client hub-web to
GET /auth/authorize, types a user name and password, comes back to /ui/callback with a
code, and the code and its PKCE verifier buy an RFC 9068 access token with the person's
roles, scopes, fhirUser and programs. Every way the request, the password or the exchange
can be wrong is refused, and every sign-in attempt is audited without its password.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hub.cli import app as cli
from hub.security import code_grant, users
from hub.security.authorization_server import token_response
from hub.security.tokens import TokenAuthenticator
from hub.security.users import DEFAULT_SCOPES, UserDirectory
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import AuthorizationCodeRow, ResourceRow, UserRow
from hub.web.templating import PAGE_SECURITY_POLICY
from tests.backends import sqlite_only
from tests.fhir_client import bearer, patient, post, referral

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CALLBACK = "http://testserver/ui/callback"
PASSWORD = "correct horse battery staple"
VERIFIER = "v3rifier-" + "x" * 50
STATE = "state-8f2c"
WRONG = "The user name or the password is not right."


@pytest.fixture
def settings(database_url: str, signing_key_file: Path, tmp_path: Path) -> Settings:
    """The suite's settings on a loopback origin: the authorization server refuses to
    work for an origin published over plain http (as for /auth/token)."""
    return Settings(
        database_url=database_url,
        dicom_store_dir=tmp_path / "dicom",
        max_request_bytes=256 * 1024,
        signing_key_file=signing_key_file,
        embedded_worker=False,
    )


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its cheapest: the real cost (64 MiB, three passes) is paid per password
    check, and these tests check many. One test below keeps the real parameters."""
    monkeypatch.setattr(users, "PASSWORD_HASHER", PasswordHasher.from_parameters(CHEAPEST))


# --- helpers ------------------------------------------------------------------------------


@contextmanager
def database(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session:
            yield session
            session.commit()
    finally:
        engine.dispose()


def add_user(settings: Settings, username: str, role: str, **fields: Any) -> str:
    """Add a person (directly); their user id."""
    if role == "specialist":
        fields.setdefault("fhir_user", "Practitioner/dr-lee")
    if role == "case-manager":
        fields.setdefault("programs", ["oncology"])
    with database(settings) as session:
        person = UserDirectory(session).add(
            username,
            display_name=fields.pop("display_name", f"{username} (test)"),
            roles=[role],
            password=fields.pop("password", PASSWORD),
            **fields,
        )
    return person.user_id


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def oauth_parameters(**overrides: str | None) -> dict[str, str]:
    """What hub.web.sign_in sends: no scope, S256, the test client's own callback."""
    parameters: dict[str, str | None] = {
        "response_type": "code",
        "client_id": "hub-web",
        "redirect_uri": CALLBACK,
        "state": STATE,
        "code_challenge": challenge(VERIFIER),
        "code_challenge_method": "S256",
        **overrides,
    }
    return {name: value for name, value in parameters.items() if value is not None}


def sign_in(
    client: TestClient, username: str, password: str = PASSWORD, **overrides: str | None
) -> Any:
    form = {**oauth_parameters(**overrides), "username": username, "password": password}
    return client.post(
        "/auth/authorize", content=urlencode(form), headers=FORM, follow_redirects=False
    )


def redirect_query(response: Any) -> dict[str, str]:
    """The parameters of a 303 back to hub-web's callback (and nowhere else)."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.split("?")[0] == CALLBACK
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def code_of(response: Any) -> str:
    query = redirect_query(response)
    assert query["state"] == STATE
    assert "error" not in query
    return query["code"]


def exchange(client: TestClient, code: str, verifier: str = VERIFIER, **extra: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": "hub-web",
        "code_verifier": verifier,
        **extra,
    }
    return client.post("/auth/token", content=urlencode(form), headers=FORM)


def assert_oauth_error(response: Any, error: str) -> str:
    assert response.status_code in (400, 401), response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body
    return str(body.get("error_description", ""))


def assert_refused_page(response: Any) -> None:
    """Shown to the person, never redirected (RFC 6749 §4.1.2.1)."""
    assert response.status_code == 400, response.text
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert 'role="alert"' in response.text


def login_events(settings: Settings) -> list[dict[str, Any]]:
    with database(settings) as session:
        contents = session.scalars(
            select(ResourceRow.content).where(ResourceRow.res_type == "AuditEvent")
        ).all()
    events = [json.loads(content) for content in contents]
    return [e for e in events if e["type"]["code"] == "110114"]


def codes_stored(settings: Settings) -> int:
    with database(settings) as session:
        return len(session.scalars(select(AuthorizationCodeRow)).all())


# --- the whole flow -----------------------------------------------------------------------


def test_a_case_manager_signs_in_and_the_token_reads_their_programs_case(
    anonymous: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(users, "PASSWORD_HASHER", PasswordHasher())  # the real parameters
    ehr = bearer(settings)
    child = post(anonymous, patient(), **ehr)
    request = post(anonymous, referral(f"Patient/{child['id']}"), **ehr)
    user_id = add_user(settings, "Ana.Garcia", "case-manager", display_name="Ana García")
    with database(settings) as session:
        stored = session.scalars(select(UserRow)).one()
        assert stored.username == "ana.garcia"
        assert stored.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")

    page = anonymous.get("/auth/authorize", params=oauth_parameters())
    assert page.status_code == 200, page.text
    assert page.headers["content-security-policy"] == PAGE_SECURITY_POLICY
    assert f'<input type="hidden" name="state" value="{STATE}">' in page.text
    assert 'name="code_challenge_method" value="S256"' in page.text

    answer = sign_in(anonymous, "ana.garcia")
    token = exchange(anonymous, code_of(answer))

    assert token.status_code == 200, token.text
    body = token.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.user_token_lifetime_seconds == 3600
    assert body["scope"] == " ".join(DEFAULT_SCOPES["case-manager"])
    principal = TokenAuthenticator(settings).authenticate(f"Bearer {body['access_token']}", None)
    assert principal.subject == user_id
    assert principal.client_id == "hub-web"
    assert principal.roles == {"case-manager"}
    assert principal.programs == {"oncology"}
    assert principal.fhir_user is None
    found = anonymous.get(
        "/fhir/Task",
        params={"focus": f"ServiceRequest/{request['id']}"},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert found.status_code == 200, found.text
    assert found.json()["total"] == 1


def test_a_specialists_token_from_the_pages_exchange_carries_their_practitioner(
    anonymous: TestClient, settings: Settings
) -> None:
    user_id = add_user(settings, "dr.lee", "specialist", fhir_user="Practitioner/lee-7")
    code = code_of(sign_in(anonymous, "DR.LEE"))
    form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
        ("client_id", "hub-web"),
        ("code_verifier", VERIFIER),
    ]
    engine = make_engine(settings.database_url)
    try:
        # In process, as hub.web.sign_in's callback does.
        answer = token_response(settings, make_session_factory(engine), form)
    finally:
        engine.dispose()

    assert answer.status_code == 200, answer.body
    body = json.loads(bytes(answer.body))
    principal = TokenAuthenticator(settings).authenticate(f"Bearer {body['access_token']}", None)
    assert principal.subject == user_id
    assert principal.roles == {"specialist"}
    assert principal.fhir_user == "Practitioner/lee-7"
    assert principal.name == "dr.lee (test)"  # the pages greet the person by this name
    assert principal.allows("DiagnosticReport", "u") and not principal.allows("Task", "c")
    metadata = anonymous.get(
        "/fhir/metadata", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert metadata.status_code == 200


def test_a_requested_scope_is_narrowed_to_the_persons(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")

    narrowed = exchange(
        anonymous, code_of(sign_in(anonymous, "ana", scope="openid user/Task.rs user/Patient.d"))
    )
    assert narrowed.json()["scope"] == "user/Task.rs"

    nothing = redirect_query(sign_in(anonymous, "ana", scope="user/Patient.d"))
    assert nothing["error"] == "invalid_scope"
    assert nothing["state"] == STATE
    assert "code" not in nothing


# --- the exchange: PKCE, single use, expiry ------------------------------------------------


def test_a_wrong_verifier_is_refused_and_spends_the_code(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")
    code = code_of(sign_in(anonymous, "ana"))

    wrong = exchange(anonymous, code, verifier="not-the-verifier-" + "y" * 40)
    assert "challenge" in assert_oauth_error(wrong, "invalid_grant").lower()
    retried = exchange(anonymous, code)
    assert "already used" in assert_oauth_error(retried, "invalid_grant")


def test_a_missing_verifier_is_refused(anonymous: TestClient, settings: Settings) -> None:
    add_user(settings, "ana", "case-manager")
    code = code_of(sign_in(anonymous, "ana"))

    response = exchange(anonymous, code, verifier="")
    assert_oauth_error(response, "invalid_request")


def test_a_code_is_used_once(anonymous: TestClient, settings: Settings) -> None:
    add_user(settings, "ana", "case-manager")
    code = code_of(sign_in(anonymous, "ana"))

    assert exchange(anonymous, code).status_code == 200
    again = exchange(anonymous, code)
    assert "already used" in assert_oauth_error(again, "invalid_grant")


def test_an_expired_code_is_refused(anonymous: TestClient, settings: Settings) -> None:
    add_user(settings, "ana", "case-manager")
    code = code_of(sign_in(anonymous, "ana"))
    with database(settings) as session:
        past = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
        session.execute(update(AuthorizationCodeRow).values(expires_at=past))

    response = exchange(anonymous, code)
    assert "expired" in assert_oauth_error(response, "invalid_grant")


def test_the_code_is_stored_as_a_hash_that_lives_a_minute(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")
    code = code_of(sign_in(anonymous, "ana"))

    with database(settings) as session:
        row = session.scalars(select(AuthorizationCodeRow)).one()
        assert row.code_hash == hashlib.sha256(code.encode()).hexdigest() != code
        assert row.redirect_uri == CALLBACK
        assert row.code_challenge == challenge(VERIFIER)
        assert row.code_challenge_method == "S256"
        lifetime = row.expires_at - datetime.now(UTC).replace(tzinfo=None)
        assert timedelta(seconds=50) < lifetime <= timedelta(seconds=60)


def test_a_code_for_another_redirect_uri_or_client_is_refused(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")
    code = code_of(sign_in(anonymous, "ana"))

    other_uri = exchange(anonymous, code, redirect_uri="http://testserver/ui/other")
    assert_oauth_error(other_uri, "invalid_grant")
    unknown = exchange(anonymous, code_of(sign_in(anonymous, "ana")), client_id="ehr-x")
    assert_oauth_error(unknown, "invalid_client")


def test_expired_codes_are_purged(
    anonymous: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_user(settings, "ana", "case-manager")
    with database(settings) as session:
        session.add(
            AuthorizationCodeRow(
                code_hash="0" * 64,
                client_id="hub-web",
                redirect_uri=CALLBACK,
                user_id="gone",
                scope="user/Task.rs",
                code_challenge=challenge(VERIFIER),
                code_challenge_method="S256",
                expires_at=datetime(2020, 1, 1),
                used=False,
            )
        )
    monkeypatch.setattr(code_grant, "_next_purge", 0.0)

    code_of(sign_in(anonymous, "ana"))

    with database(settings) as session:
        hashes = session.scalars(select(AuthorizationCodeRow.code_hash)).all()
    assert len(hashes) == 1 and hashes[0] != "0" * 64


def test_a_person_disabled_after_signing_in_gets_no_token(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")
    code = code_of(sign_in(anonymous, "ana"))
    with database(settings) as session:
        UserDirectory(session).disable("ana")

    assert_oauth_error(exchange(anonymous, code), "invalid_grant")


# --- the authorize request -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "openid profile"}, "invalid_scope"),
    ],
)
def test_a_bad_request_of_a_known_client_goes_back_with_its_error(
    anonymous: TestClient, settings: Settings, overrides: dict[str, str | None], error: str
) -> None:
    add_user(settings, "ana", "case-manager")

    shown = anonymous.get(
        "/auth/authorize", params=oauth_parameters(**overrides), follow_redirects=False
    )
    query = redirect_query(shown)
    assert query["error"] == error
    assert query["state"] == STATE
    # The same answer to the form's POST, even with the right password: no code.
    posted = redirect_query(sign_in(anonymous, "ana", **overrides))
    assert posted["error"] == error and "code" not in posted
    assert codes_stored(settings) == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"redirect_uri": "http://evil.example/ui/callback"},
        {"redirect_uri": "http://testserver/ui/callback/../elsewhere"},
        {"redirect_uri": "http://testserver/ui/callback?next=x"},
        {"redirect_uri": None},
        {"client_id": "no-such-client"},
        {"client_id": None},
    ],
)
def test_an_unknown_client_or_foreign_redirect_uri_is_shown_never_followed(
    anonymous: TestClient, settings: Settings, overrides: dict[str, str | None]
) -> None:
    add_user(settings, "ana", "case-manager")

    assert_refused_page(
        anonymous.get(
            "/auth/authorize", params=oauth_parameters(**overrides), follow_redirects=False
        )
    )
    assert_refused_page(sign_in(anonymous, "ana", **overrides))
    assert codes_stored(settings) == 0
    assert login_events(settings) == []  # refused before any password was looked at


@sqlite_only
def test_the_redirect_uri_is_the_callback_on_the_origin_the_request_reached(
    settings: Settings,
) -> None:
    from hub.app import create_app

    add_user(settings, "ana", "case-manager")
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8123") as other:
        own = "http://127.0.0.1:8123/ui/callback"
        page = other.get("/auth/authorize", params=oauth_parameters(redirect_uri=own))
        assert page.status_code == 200, page.text
        foreign = other.get("/auth/authorize", params=oauth_parameters(), follow_redirects=False)
        assert_refused_page(foreign)  # http://testserver/ui/callback is not this origin's


@sqlite_only
def test_a_hub_published_over_plain_http_asks_for_no_password(
    database_url: str, signing_key_file: Path
) -> None:
    from hub.app import create_app

    exposed = Settings(
        database_url=database_url,
        public_url="http://hub.example.org",
        signing_key_file=signing_key_file,
    )
    with TestClient(create_app(exposed)) as plain:
        response = plain.get("/auth/authorize", params=oauth_parameters())
    assert_refused_page(response)
    assert 'name="password"' not in response.text
    assert "http://hub.example.org, over plain http" in response.text


def test_the_sign_in_page_is_accessible_and_escapes_what_it_carries(
    anonymous: TestClient,
) -> None:
    state = '"><script>alert(1)</script>'
    page = anonymous.get("/auth/authorize", params=oauth_parameters(state=state))

    assert page.status_code == 200, page.text
    html = page.text
    assert "<script>alert(1)" not in html
    assert "&#34;&gt;&lt;script&gt;" in html or "&quot;&gt;&lt;script&gt;" in html
    assert '<label for="username">' in html and 'id="username"' in html
    assert '<label for="password">' in html and 'id="password"' in html
    assert 'autocomplete="username"' in html and 'autocomplete="current-password"' in html
    assert "<h1" in html and 'role="alert"' not in html
    assert 'action="/auth/authorize"' in html


# --- the password -------------------------------------------------------------------------


def test_a_wrong_password_or_unknown_user_gets_the_form_again_and_no_code(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")

    wrong = sign_in(anonymous, "ana", "not the password")
    unknown = sign_in(anonymous, "nobody", PASSWORD)

    for response in (wrong, unknown):
        assert response.status_code == 401, response.text
        assert "location" not in response.headers
        assert 'role="alert"' in response.text and WRONG in response.text
        assert f'value="{STATE}"' in response.text  # the request goes on with the form
        assert "not the password" not in response.text
    assert codes_stored(settings) == 0


def test_five_wrong_passwords_in_a_row_lock_the_account_for_fifteen_minutes(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")

    answers = [sign_in(anonymous, "ana", f"wrong password {n}") for n in range(5)]
    assert [a.status_code for a in answers] == [401] * 5
    assert all(WRONG in a.text for a in answers[:4])
    assert "locked for 15 minutes" in answers[4].text

    locked = sign_in(anonymous, "ana", PASSWORD)
    assert locked.status_code == 401 and "locked for 15 minutes" in locked.text
    with database(settings) as session:
        row = session.scalars(select(UserRow)).one()
        assert row.locked_until is not None
        left = row.locked_until - datetime.now(UTC).replace(tzinfo=None)
        assert timedelta(minutes=14) < left <= timedelta(minutes=15)
        row.locked_until = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)

    assert sign_in(anonymous, "ana", PASSWORD).status_code == 303


def test_a_success_resets_the_count_of_wrong_passwords(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")
    for n in range(4):
        sign_in(anonymous, "ana", f"wrong password {n}")
    assert sign_in(anonymous, "ana").status_code == 303

    for n in range(4):
        assert WRONG in sign_in(anonymous, "ana", f"wrong password {n}").text
    assert sign_in(anonymous, "ana").status_code == 303


def test_a_disabled_person_cannot_sign_in(anonymous: TestClient, settings: Settings) -> None:
    add_user(settings, "ana", "case-manager")
    with database(settings) as session:
        assert UserDirectory(session).disable("ANA")

    right = sign_in(anonymous, "ana")
    wrong = sign_in(anonymous, "ana", "not the password")

    assert right.status_code == 401 and "disabled" in right.text
    assert wrong.status_code == 401 and WRONG in wrong.text  # says nothing without it
    assert codes_stored(settings) == 0


def test_a_hash_of_old_parameters_is_replaced_at_sign_in(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "ana", "case-manager")
    weak = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash(PASSWORD)
    with database(settings) as session:
        session.execute(update(UserRow).values(password_hash=weak))

    assert sign_in(anonymous, "ana").status_code == 303

    with database(settings) as session:
        renewed = session.scalars(select(UserRow.password_hash)).one()
    assert renewed != weak and renewed.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert PasswordHasher().verify(renewed, PASSWORD)


# --- the audit trail ----------------------------------------------------------------------


def test_every_sign_in_attempt_is_audited_without_its_password(
    anonymous: TestClient, settings: Settings
) -> None:
    user_id = add_user(settings, "dr.lee", "specialist", fhir_user="Practitioner/lee-7")

    sign_in(anonymous, "dr.lee", "Wrong-Password-1")
    sign_in(anonymous, "Secret-Typed-As-Name", "Wrong-Password-2")
    sign_in(anonymous, "dr.lee", PASSWORD)

    events = sorted(login_events(settings), key=lambda e: e["recorded"])
    assert [e["outcome"] for e in events] == ["4", "4", "0"]
    for event in events:
        assert event["type"] == {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110114",
            "display": "User Authentication",
        }
        assert event["subtype"][0]["code"] == "110122"
        assert event["agent"][0]["network"]["address"] == "testclient"
    wrong, unknown, success = (e["agent"][0]["who"] for e in events)
    assert wrong["identifier"]["value"] == success["identifier"]["value"] == user_id
    assert success["reference"] == "Practitioner/lee-7"
    assert events[0]["outcomeDesc"] == "wrong password"
    assert events[1]["outcomeDesc"] == "unknown user name"
    assert unknown["display"] == "unknown user name"
    text = json.dumps(events)
    for secret in ("Wrong-Password-1", "Wrong-Password-2", PASSWORD, "Secret-Typed-As-Name"):
        assert secret not in text


# --- discovery ----------------------------------------------------------------------------


@sqlite_only
def test_discovery_names_the_authorization_endpoint_and_s256(
    anonymous: TestClient, settings: Settings
) -> None:
    document = anonymous.get("/.well-known/smart-configuration").json()

    assert document["authorization_endpoint"] == f"{settings.issuer}/authorize"
    assert document["grant_types_supported"] == ["client_credentials", "authorization_code"]
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert {"client-public", "client-confidential-asymmetric"} <= set(document["capabilities"])
    assert "sso-openid-connect" not in document["capabilities"]


# --- the command line ---------------------------------------------------------------------


def run(settings: Settings, *arguments: str, stdin: str | None = None) -> Any:
    environment = {
        "HUB_DATABASE_URL": settings.database_url,
        "HUB_SIGNING_KEY_FILE": str(settings.signing_key_file),
    }
    return CliRunner().invoke(cli, list(arguments), env=environment, input=stdin)


def test_users_add_prints_a_generated_password_once_that_signs_in(
    anonymous: TestClient, settings: Settings
) -> None:
    added = run(
        settings,
        *("users", "add", "Dr.Okafor", "--name", "Chidi Okafor", "--role", "specialist"),
        *("--fhir-user", "Practitioner/okafor-1"),
    )

    assert added.exit_code == 0, added.output
    password = added.output.split("Password (shown once, not stored): ")[1].strip()
    assert len(password) >= 24
    assert "roles specialist" in added.output
    assert " ".join(DEFAULT_SCOPES["specialist"]) in added.output
    assert sign_in(anonymous, "dr.okafor", password).status_code == 303


def test_users_commands_add_list_disable_set_password(
    anonymous: TestClient, settings: Settings
) -> None:
    added = run(
        settings,
        *("users", "add", "ana", "--name", "Ana García", "--role", "case-manager"),
        *("--program", "oncology", "--program", "neuro-oncology", "--password-stdin"),
        stdin=PASSWORD + "\n",
    )
    assert added.exit_code == 0, added.output
    assert "Password" not in added.output

    listed = run(settings, "users", "list")
    assert listed.exit_code == 0, listed.output
    fields = listed.output.strip().split("\t")
    assert fields[0] == "ana" and fields[2] == "enabled"
    assert fields[3] == "case-manager" and fields[6] == "neuro-oncology oncology"
    assert "$argon2" not in listed.output and PASSWORD not in listed.output

    for n in range(5):
        sign_in(anonymous, "ana", f"wrong password {n}")
    assert run(settings, "users", "list").output.split("\t")[2] == "locked"
    new_password = "a new password of mine"
    reset = run(settings, "users", "set-password", "ANA", "--password-stdin", stdin=new_password)
    assert reset.exit_code == 0, reset.output
    assert sign_in(anonymous, "ana", new_password).status_code == 303  # lock lifted
    assert sign_in(anonymous, "ana", PASSWORD).status_code == 401

    disabled = run(settings, "users", "disable", "ana")
    assert disabled.exit_code == 0, disabled.output
    assert run(settings, "users", "list").output.split("\t")[2] == "disabled"
    assert "disabled" in sign_in(anonymous, "ana", new_password).text
    assert run(settings, "users", "disable", "nobody").exit_code == 1
    enabled = run(settings, "users", "enable", "ANA")
    assert enabled.exit_code == 0, enabled.output
    assert sign_in(anonymous, "ana", new_password).status_code == 303
    assert run(settings, "users", "enable", "nobody").exit_code == 1


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (("--role", "specialist"), "Practitioner/<id>"),
        (("--role", "case-manager"), "--program"),
        (("--role", "referrer"), "not for people"),
        (("--role", "wizard"), "not for people"),
        (("--role", "admin", "--scope", "user/Task.everything"), "Not a SMART resource scope"),
    ],
)
def test_users_add_refuses_a_person_who_could_not_work(
    settings: Settings, arguments: tuple[str, ...], reason: str
) -> None:
    result = run(settings, "users", "add", "someone", "--name", "Some One", *arguments)

    assert result.exit_code == 1
    assert "Refused" in result.output and reason in result.output
    with database(settings) as session:
        assert session.scalars(select(UserRow)).all() == []


def test_users_add_refuses_a_taken_name_in_any_case_and_a_short_password(
    settings: Settings,
) -> None:
    add_user(settings, "ana", "admin")

    taken = run(settings, "users", "add", "ANA", "--name", "Other Ana", "--role", "admin")
    short = run(
        settings,
        *("users", "add", "bo", "--name", "Bo", "--role", "admin", "--password-stdin"),
        stdin="short\n",
    )

    assert taken.exit_code == 1 and "already a user 'ana'" in taken.output
    assert short.exit_code == 1 and "12 to 256 characters" in short.output


def test_a_person_added_with_scopes_of_their_own_gets_those(
    anonymous: TestClient, settings: Settings
) -> None:
    add_user(settings, "it", "admin", scopes="user/AuditEvent.rs user/Task.s")

    token = exchange(anonymous, code_of(sign_in(anonymous, "it"))).json()
    assert token["scope"] == "user/AuditEvent.rs user/Task.s"
    assert token["token_type"] == "Bearer"
