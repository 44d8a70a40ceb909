"""The FHIR REST connector's client against a real outside FHIR server (Medplum's FHIR router,
tests/fhir_peer) and the hub's own SMART authorization server: SMART Backend Services tokens
(reuse, renewal, refusal, discovery), static credentials, paging, the retry policy on the
peer's own injected faults, the rate limit, $everything, $match, attachments, health,
delivery, writes and a patient-level Bulk Data export.

Every test starts from an emptied peer; the record is the synthetic 120-resource
neuroblastoma record of hub.demo.outside_record.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import re
import socket
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from joserfc.jwk import RSAKey

import connectors.fhir_rest.client as client_module
from connectors.base import Envelope
from connectors.fhir_rest.bulk import export_patient
from connectors.fhir_rest.client import FhirClient
from connectors.fhir_rest.config import FhirSource, SmartBackendAuth
from connectors.fhir_rest.errors import (
    ExportFailed,
    FhirAuthError,
    FhirGone,
    FhirHttpError,
    FhirNotFound,
    FhirProtocolError,
    TokenError,
)
from connectors.fhir_rest.smart_auth import SmartBackendServices
from connectors.http import BasicAuth, BearerAuth, HttpRetry, MissingSecret
from hub.demo.outside_record import build_outside_record, counts, patient_id
from tests.fhir_server_peer import FhirPeer, TokenServer

pytestmark = pytest.mark.integration

T = TypeVar("T")

SOURCE = "outside-ehr"
FAST_RETRY = HttpRetry(max_attempts=3, backoff_seconds=0.01, retry_server_errors=True)
TOKEN_ENV = "FHIR_TEST_TOKEN"
PASSWORD_ENV = "FHIR_TEST_PASSWORD"
KEY_ENV = "FHIR_TEST_PRIVATE_KEY"
TOKEN_LIFETIME = 300.0
"""The hub's authorization server's default token lifetime (Settings.token_lifetime_seconds)."""
RENEW_BEFORE = 60.0
EXPORT_TYPES = ("Condition", "Encounter", "Observation", "MedicationRequest")


# --- helpers --------------------------------------------------------------------------------


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def collect(items: AsyncIterator[T]) -> list[T]:
    return [item async for item in items]


def source(peer: FhirPeer, **changes: Any) -> FhirSource:
    fields: dict[str, Any] = {"name": SOURCE, "base_url": peer.base_url, "retry": FAST_RETRY}
    return FhirSource(**(fields | changes))


def client_for(peer: FhirPeer, environ: dict[str, str] | None = None, **changes: Any) -> FhirClient:
    """A client of the peer; secrets only from `environ` (never the process environment)."""
    return FhirClient(source(peer, **changes), environ=environ or {})


def of_type(record: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in record["entry"] if e["resource"]["resourceType"] == resource_type
    ]


def logged(peer: FhirPeer, pattern: str, method: str = "GET") -> list[dict[str, Any]]:
    """The peer's logged FHIR requests of `method` whose path (under the base) matches."""
    return [
        r
        for r in peer.requests()
        if r["method"] == method and re.search(pattern, r["path"].removeprefix("/fhir/R4/"))
    ]


def patient_read(record: dict[str, Any]) -> str:
    """A fault path regex for exactly the read of the record's Patient."""
    return rf"^/fhir/R4/Patient/{re.escape(patient_id(record))}$"


def spread_seconds(requests: list[dict[str, Any]]) -> float:
    """Seconds between the peer receiving the first and the last of `requests`."""
    return (int(requests[-1]["time_ms"]) - int(requests[0]["time_ms"])) / 1000


def most_in_any_second(requests: list[dict[str, Any]]) -> int:
    """The most requests the peer received within any window of one second."""
    times = [r["time_ms"] for r in requests]
    return max(sum(1 for t in times if start <= t < start + 1000) for start in times)


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordedSleep:
    """A `sleep` for the client that returns at once and keeps the delays asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


def jwt_mode(peer: FhirPeer, tokens: TokenServer, **changes: Any) -> None:
    """The peer checks tokens against the hub's authorization server and names its token
    endpoint in .well-known/smart-configuration."""
    options = {
        "jwks_url": tokens.jwks_url,
        "issuer": tokens.issuer,
        "token_endpoint": tokens.token_url,
    }
    peer.set_auth("jwt", **(options | changes))


def smart(tokens: TokenServer, **changes: Any) -> SmartBackendAuth:
    fields: dict[str, Any] = {
        "client_id": tokens.client_id,
        "private_key_file": tokens.private_key_file,
        "renew_before_seconds": RENEW_BEFORE,
    }
    return SmartBackendAuth(**(fields | changes))


def smart_auth_of(client: FhirClient) -> SmartBackendServices:
    assert isinstance(client.auth, SmartBackendServices)
    return client.auth


def transaction(*resources: dict[str, Any]) -> dict[str, Any]:
    entries = [
        {
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}",
            "resource": r,
            "request": {"method": "POST", "url": r["resourceType"]},
        }
        for i, r in enumerate(resources)
    ]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def communication(record: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{patient_id(record)}"},
        "payload": [{"contentString": text}],
    }


def envelope(document: dict[str, Any]) -> Envelope:
    return Envelope(json.dumps(document).encode(), transport="fhir-rest", channel=SOURCE)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    return build_outside_record(resources=120, cancer="neuroblastoma", seed=11)


@pytest.fixture
def peer(fhir_peer: FhirPeer) -> Iterator[FhirPeer]:
    """The session's peer, emptied and back to its defaults (no auth)."""
    fhir_peer.reset()
    yield fhir_peer


@pytest.fixture
def loaded(peer: FhirPeer, record: dict[str, Any]) -> FhirPeer:
    """The peer holding the record; its request log empty."""
    peer.load(record)
    assert peer.requests() == []
    return peer


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A fake clock given to every SmartBackendServices the FhirClient makes (the client has
    no seam of its own for it)."""
    fake = FakeClock()
    with_clock = functools.partial(SmartBackendServices, clock=fake)
    monkeypatch.setattr(client_module, "SmartBackendServices", with_clock)
    return fake


# --- SMART Backend Services -----------------------------------------------------------------


def test_smart_token_is_fetched_once_and_reused_for_many_requests(
    loaded: FhirPeer, record: dict[str, Any], smart_token_server: TokenServer
) -> None:
    jwt_mode(loaded, smart_token_server)
    pid = patient_id(record)

    async def scenario() -> tuple[list[str], int]:
        async with client_for(loaded, auth=smart(smart_token_server)) as client:
            read = [(await client.read("Patient", pid))["id"] for _ in range(20)]
            return read, smart_auth_of(client).tokens_fetched

    read, fetched = run(scenario())
    assert read == [pid] * 20
    assert fetched == 1
    reads = logged(loaded, r"^Patient/")
    assert [(r["status"], r["auth"]) for r in reads] == [(200, "Bearer")] * 20
    assert len(logged(loaded, r"^\.well-known/smart-configuration$")) == 1  # discovery, once


def test_smart_token_is_renewed_renew_before_seconds_before_it_expires(
    loaded: FhirPeer, record: dict[str, Any], smart_token_server: TokenServer, clock: FakeClock
) -> None:
    jwt_mode(loaded, smart_token_server)
    pid = patient_id(record)

    async def scenario() -> list[int]:
        async with client_for(loaded, auth=smart(smart_token_server)) as client:
            auth = smart_auth_of(client)
            fetched = []
            await client.read("Patient", pid)
            fetched.append(auth.tokens_fetched)
            clock.advance(TOKEN_LIFETIME - RENEW_BEFORE - 1)  # still fresh
            await client.read("Patient", pid)
            fetched.append(auth.tokens_fetched)
            clock.advance(2)  # now within renew_before of the expiry
            await client.read("Patient", pid)
            await client.read("Patient", pid)
            fetched.append(auth.tokens_fetched)
            return fetched

    assert run(scenario()) == [1, 1, 2]
    assert [r["status"] for r in logged(loaded, r"^Patient/")] == [200] * 4


def test_a_refused_token_is_fetched_again_once_per_request_then_fhir_auth_error(
    loaded: FhirPeer, record: dict[str, Any], smart_token_server: TokenServer
) -> None:
    jwt_mode(loaded, smart_token_server)
    pid = patient_id(record)

    async def scenario() -> tuple[list[FhirAuthError], list[int]]:
        async with client_for(loaded, auth=smart(smart_token_server)) as client:
            auth = smart_auth_of(client)
            await client.read("Patient", pid)
            fetched = [auth.tokens_fetched]
            # Every token of the hub's server is refused from now on.
            jwt_mode(loaded, smart_token_server, issuer="https://another-issuer.example")
            errors = []
            for _ in range(2):
                with pytest.raises(FhirAuthError) as refused:
                    await client.read("Patient", pid)
                errors.append(refused.value)
                fetched.append(auth.tokens_fetched)
            return errors, fetched

    errors, fetched = run(scenario())
    assert fetched == [1, 2, 3]  # one new token per refused request, not more
    for error in errors:
        assert error.status_code == 401
        assert error.outcome.startswith("Invalid access token:")
        assert error.outcome in str(error)
    reads = logged(loaded, r"^Patient/")
    assert [r["status"] for r in reads] == [200, 401, 401, 401, 401]


def test_a_source_naming_no_token_endpoint_raises_token_error_naming_token_url(
    loaded: FhirPeer, record: dict[str, Any], smart_token_server: TokenServer
) -> None:
    loaded.set_auth("jwt", jwks_url=smart_token_server.jwks_url, issuer=smart_token_server.issuer)

    async def scenario() -> None:
        async with client_for(loaded, auth=smart(smart_token_server)) as client:
            await client.read("Patient", patient_id(record))

    with pytest.raises(TokenError, match="token_url"):
        run(scenario())
    assert [r["path"] for r in loaded.requests()] == ["/fhir/R4/.well-known/smart-configuration"]


def test_a_client_key_the_token_server_does_not_know_raises_token_error(
    loaded: FhirPeer, record: dict[str, Any], smart_token_server: TokenServer
) -> None:
    jwt_mode(loaded, smart_token_server)
    stranger = RSAKey.generate_key(2048, parameters={"alg": "RS384", "use": "sig"})
    key = json.dumps(stranger.as_dict(private=True) | {"kid": stranger.thumbprint()})
    auth = smart(
        smart_token_server,
        private_key_file=None,
        private_key_env=KEY_ENV,
        token_url=smart_token_server.token_url,
    )

    async def scenario() -> None:
        async with client_for(loaded, {KEY_ENV: key}, auth=auth) as client:
            await client.read("Patient", patient_id(record))

    with pytest.raises(TokenError, match="refused the client"):
        run(scenario())
    assert loaded.requests() == []  # nothing reached the FHIR server


# --- static credentials ---------------------------------------------------------------------

STATIC_AUTH = {
    "bearer": (
        {"mode": "bearer", "token": "s3cret-token"},
        BearerAuth(token_env=TOKEN_ENV),
        TOKEN_ENV,
        "s3cret-token",
    ),
    "basic": (
        {"mode": "basic", "username": "hub", "password": "s3cret-password"},
        BasicAuth(username="hub", password_env=PASSWORD_ENV),
        PASSWORD_ENV,
        "s3cret-password",
    ),
}


@pytest.mark.parametrize("scheme", sorted(STATIC_AUTH))
def test_static_credentials_from_the_environment_read_the_record(
    loaded: FhirPeer, record: dict[str, Any], scheme: str
) -> None:
    peer_auth, auth, variable, value = STATIC_AUTH[scheme]
    loaded.set_auth(**peer_auth)

    async def scenario() -> dict[str, Any]:
        async with client_for(loaded, {variable: value}, auth=auth) as client:
            return await client.read("Patient", patient_id(record))

    assert run(scenario())["id"] == patient_id(record)
    assert [r["auth"] for r in loaded.requests()] == [scheme.capitalize()]


@pytest.mark.parametrize("scheme", sorted(STATIC_AUTH))
def test_wrong_static_credentials_raise_fhir_auth_error(
    loaded: FhirPeer, record: dict[str, Any], scheme: str
) -> None:
    peer_auth, auth, variable, _ = STATIC_AUTH[scheme]
    loaded.set_auth(**peer_auth)

    async def scenario() -> None:
        async with client_for(loaded, {variable: "not-the-s3cret"}, auth=auth) as client:
            await client.read("Patient", patient_id(record))

    with pytest.raises(FhirAuthError) as refused:
        run(scenario())
    assert refused.value.status_code == 401
    assert variable in str(refused.value)  # says which secret to check
    assert "not-the-s3cret" not in str(refused.value)
    assert len(loaded.requests()) == 1  # a 401 is not retried


@pytest.mark.parametrize("scheme", sorted(STATIC_AUTH))
def test_a_missing_secret_raises_missing_secret_when_the_client_is_made(
    peer: FhirPeer, scheme: str
) -> None:
    _, auth, variable, _ = STATIC_AUTH[scheme]
    with pytest.raises(MissingSecret) as missing:
        client_for(peer, {"UNRELATED": "x"}, auth=auth)
    assert (missing.value.source, missing.value.variable) == (SOURCE, variable)


# --- paging ---------------------------------------------------------------------------------


def test_search_follows_next_links_and_returns_every_match_once(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with client_for(loaded) as client:
            return await collect(client.search("Observation", {"_count": "7"}))

    pages = run(scenario())
    found = [e["resource"]["id"] for page in pages for e in page.get("entry", [])]
    expected = [r["id"] for r in of_type(record, "Observation")]
    assert len(found) == len(set(found))
    assert sorted(found) == sorted(expected)
    assert len(pages) == -(-len(expected) // 7)
    assert all(len(page["entry"]) <= 7 for page in pages)
    assert len(logged(loaded, r"^Observation\?")) == len(pages)


def test_a_next_link_to_another_origin_is_refused(loaded: FhirPeer) -> None:
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": "http://evil.example/fhir/Observation?page=2"}],
        "entry": [],
    }
    loaded.set_faults(
        [{"path_regex": r"/Observation\?", "kind": "status", "status": 200, "body": page}]
    )
    received: list[dict[str, Any]] = []

    async def scenario() -> None:
        async with client_for(loaded) as client:
            async for bundle in client.search("Observation", {"_count": "7"}):
                received.append(bundle)

    with pytest.raises(FhirProtocolError, match=r"another server \(http://evil\.example\)"):
        run(scenario())
    assert received == [page]
    assert len(loaded.requests()) == 1


def test_a_next_link_back_to_a_page_already_fetched_is_refused(loaded: FhirPeer) -> None:
    again = f"{loaded.base_url}/Observation?_count=7&_offset=7"
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": again}],
    }
    loaded.set_faults(
        [
            {
                "path_regex": r"/Observation\?",
                "kind": "status",
                "status": 200,
                "body": page,
                "count": 5,
            }
        ]
    )

    async def scenario() -> None:
        async with client_for(loaded) as client:
            await collect(client.search("Observation", {"_count": "7"}))

    with pytest.raises(FhirProtocolError, match="links back"):
        run(scenario())
    assert len(loaded.requests()) == 2


# --- retries --------------------------------------------------------------------------------


def test_503_twice_then_200_on_a_read_succeeds(loaded: FhirPeer, record: dict[str, Any]) -> None:
    loaded.set_faults(
        [{"path_regex": patient_read(record), "kind": "status", "status": 503, "count": 2}]
    )

    async def scenario() -> dict[str, Any]:
        async with client_for(loaded) as client:
            return await client.read("Patient", patient_id(record))

    assert run(scenario())["id"] == patient_id(record)
    assert [r["status"] for r in loaded.requests()] == [503, 503, 200]


def test_429_waits_for_retry_after_before_the_next_attempt(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    loaded.set_faults(
        [{"path_regex": patient_read(record), "kind": "status", "status": 429, "retry_after": 1}]
    )

    async def scenario() -> dict[str, Any]:
        async with client_for(loaded) as client:
            return await client.read("Patient", patient_id(record))

    assert run(scenario())["id"] == patient_id(record)
    log = loaded.requests()
    assert [r["status"] for r in log] == [429, 200]
    assert spread_seconds(log) >= 0.95  # Retry-After: 1 (ms clock, small tolerance)


def test_404_raises_fhir_not_found_without_retrying(loaded: FhirPeer) -> None:
    async def scenario() -> None:
        async with client_for(loaded) as client:
            await client.read("Patient", "no-such-patient")

    with pytest.raises(FhirNotFound) as missing:
        run(scenario())
    assert missing.value.status_code == 404
    assert missing.value.outcome  # the peer's OperationOutcome diagnostics
    assert [r["status"] for r in loaded.requests()] == [404]


def test_410_raises_fhir_gone_without_retrying(loaded: FhirPeer, record: dict[str, Any]) -> None:
    loaded.set_faults(
        [{"path_regex": patient_read(record), "kind": "status", "status": 410, "count": 5}]
    )

    async def scenario() -> None:
        async with client_for(loaded) as client:
            await client.read("Patient", patient_id(record))

    with pytest.raises(FhirGone) as gone:
        run(scenario())
    assert gone.value.status_code == 410
    assert gone.value.outcome == "Injected fault: HTTP 410"
    assert len(loaded.requests()) == 1


def test_500_on_a_read_is_retried_then_raises_fhir_http_error(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    loaded.set_faults(
        [{"path_regex": patient_read(record), "kind": "status", "status": 500, "count": 10}]
    )

    async def scenario() -> None:
        async with client_for(loaded) as client:
            await client.read("Patient", patient_id(record))

    with pytest.raises(FhirHttpError) as failed:
        run(scenario())
    assert type(failed.value) is FhirHttpError
    assert failed.value.status_code == 500
    assert failed.value.outcome == "Injected fault: HTTP 500"
    assert [r["status"] for r in loaded.requests()] == [500] * FAST_RETRY.max_attempts


def test_a_body_that_is_not_json_once_is_fetched_again(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    loaded.set_faults([{"path_regex": patient_read(record), "kind": "invalid-json"}])

    async def scenario() -> dict[str, Any]:
        async with client_for(loaded) as client:
            return await client.read("Patient", patient_id(record))

    assert run(scenario())["id"] == patient_id(record)
    assert [r["fault"] for r in loaded.requests()] == ["invalid-json", None]


def test_a_body_that_is_never_json_raises_fhir_protocol_error(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    loaded.set_faults([{"path_regex": patient_read(record), "kind": "invalid-json", "count": 10}])

    async def scenario() -> None:
        async with client_for(loaded) as client:
            await client.read("Patient", patient_id(record))

    with pytest.raises(FhirProtocolError, match="not JSON"):
        run(scenario())
    assert len(loaded.requests()) == FAST_RETRY.max_attempts


# --- rate limit -----------------------------------------------------------------------------


def test_requests_per_second_spaces_the_requests(loaded: FhirPeer, record: dict[str, Any]) -> None:
    async def scenario() -> None:
        async with client_for(loaded, requests_per_second=5) as client:
            for _ in range(10):
                await client.read("Patient", patient_id(record))

    run(scenario())
    log = loaded.requests()
    assert len(log) == 10
    # One every 0.2 s, no burst: 9 intervals, less a few ms between the limiter and the
    # peer's clock.
    assert spread_seconds(log) >= 1.7


def test_requests_per_second_is_never_exceeded_in_any_second(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    async def scenario() -> None:
        async with client_for(loaded, requests_per_second=5) as client:
            for _ in range(10):
                await client.read("Patient", patient_id(record))

    run(scenario())
    assert most_in_any_second(loaded.requests()) <= 5


def test_a_rate_below_one_request_per_second_is_honoured(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    async def scenario() -> dict[str, Any]:
        async with client_for(loaded, requests_per_second=0.5) as client:
            return await client.read("Patient", patient_id(record))

    assert run(scenario())["id"] == patient_id(record)


# --- $everything, $match, capabilities ------------------------------------------------------


def test_everything_pages_through_the_patients_compartment(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with client_for(loaded, page_size=25) as client:
            assert await client.offers("everything")
            return await collect(client.everything(patient_id(record)))

    pages = run(scenario())
    resources = [e["resource"] for page in pages for e in page.get("entry", [])]
    keys = [f"{r['resourceType']}/{r['id']}" for r in resources]
    assert len(keys) == len(set(keys)) == pages[0]["total"]
    assert len(pages) == -(-pages[0]["total"] // 25)
    held = Counter(r["resourceType"] for r in resources)
    expected = counts(record)
    assert held["Patient"] == 1
    for resource_type in ("Condition", "Observation", "Encounter", "DocumentReference"):
        assert held[resource_type] == expected[resource_type], resource_type
    assert "Binary" not in held


def test_everything_switched_off_is_not_offered(peer: FhirPeer) -> None:
    peer.set_capabilities(everything=False)

    async def scenario() -> list[bool]:
        async with client_for(peer) as client:
            return [await client.offers("everything"), await client.offers("match")]

    assert run(scenario()) == [False, True]


def test_match_finds_the_patient_when_offered(loaded: FhirPeer, record: dict[str, Any]) -> None:
    child = of_type(record, "Patient")[0]

    async def scenario() -> tuple[bool, list[dict[str, Any]]]:
        async with client_for(loaded) as client:
            return await client.offers("match"), await client.match(child)

    offered, entries = run(scenario())
    assert offered is True
    assert [e["resource"]["id"] for e in entries] == [child["id"]]
    assert entries[0]["search"]["score"] == 1  # the same identifier


def test_match_switched_off_is_not_offered_and_not_found(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    loaded.set_capabilities(match=False)
    child = of_type(record, "Patient")[0]

    async def scenario() -> bool:
        async with client_for(loaded) as client:
            offered = await client.offers("match")
            with pytest.raises(FhirNotFound, match=r"\$match is not supported"):
                await client.match(child)
            return offered

    assert run(scenario()) is False


# --- attachments ----------------------------------------------------------------------------


def test_an_attachment_comes_back_as_bytes_with_its_content_type(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    binaries = of_type(record, "Binary")
    types = {b["contentType"].split(";")[0] for b in binaries}
    assert len(types) > 1, "the record should hold Binaries of more than one type"

    async def scenario() -> list[tuple[bytes, str]]:
        async with client_for(loaded) as client:
            return [await client.attachment(f"Binary/{b['id']}") for b in binaries]

    fetched = run(scenario())
    assert fetched == [
        (base64.b64decode(b["data"]), b["contentType"].split(";")[0].strip()) for b in binaries
    ]


def test_an_attachment_larger_than_max_attachment_bytes_is_refused(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    binary = of_type(record, "Binary")[0]
    size = len(base64.b64decode(binary["data"]))

    async def scenario() -> None:
        async with client_for(loaded, max_attachment_bytes=size - 1) as client:
            await client.attachment(f"Binary/{binary['id']}")

    with pytest.raises(FhirProtocolError, match=f"max_attachment_bytes \\({size - 1}\\)"):
        run(scenario())


def test_an_attachment_on_another_server_is_not_fetched(loaded: FhirPeer) -> None:
    async def scenario() -> None:
        async with client_for(loaded) as client:
            await client.attachment("http://evil.example/fhir/Binary/1")

    with pytest.raises(FhirProtocolError, match="another server"):
        run(scenario())
    assert loaded.requests() == []


# --- health and delivery --------------------------------------------------------------------


def test_health_of_the_peer_names_its_fhir_version(peer: FhirPeer) -> None:
    async def scenario() -> Any:
        async with client_for(peer) as client:
            return await client.health()

    health = run(scenario())
    assert health.healthy is True
    assert health.detail.startswith("FHIR 4.0.1 Medplum")


def test_health_of_an_unreachable_server_is_unhealthy_without_raising() -> None:
    unreachable = FhirSource(
        name=SOURCE, base_url=f"http://127.0.0.1:{unused_port()}/fhir", retry=FAST_RETRY
    )

    async def scenario() -> Any:
        async with FhirClient(unreachable, environ={}) as client:
            return await client.health()

    health = run(scenario())
    assert health.healthy is False
    assert "no answer to metadata after 1 attempt" in health.detail


def test_deliver_posts_a_transaction_bundle(loaded: FhirPeer, record: dict[str, Any]) -> None:
    bundle = transaction(communication(record, "The second opinion is ready."))

    async def scenario() -> Any:
        async with client_for(loaded) as client:
            return await client.deliver(envelope(bundle))

    result = run(scenario())
    assert (result.accepted, result.code) == (True, "200")
    answer = json.loads(result.response)
    assert answer["type"] == "transaction-response"
    assert answer["entry"][0]["response"]["status"].startswith("201")
    stored = loaded.resources("Communication")
    assert [c["payload"][0]["contentString"] for c in stored] == ["The second opinion is ready."]
    assert [(r["method"], r["path"].rstrip("/")) for r in loaded.requests()] == [
        ("POST", "/fhir/R4")
    ]


def test_deliver_of_a_bundle_the_peer_refuses_is_not_accepted_nor_retryable(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    # Neither a batch nor a transaction.
    bad = transaction(communication(record, "x")) | {"type": "searchset"}

    async def scenario() -> Any:
        async with client_for(loaded) as client:
            return await client.deliver(envelope(bad))

    result = run(scenario())
    assert (result.accepted, result.code, result.retryable) == (False, "400", False)
    assert "Unrecognized bundle type" in result.detail  # the peer's OperationOutcome
    assert loaded.resources("Communication") == []
    assert len(loaded.requests()) == 1  # a write is sent once


def test_deliver_of_a_batch_with_a_failed_entry_is_not_accepted(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    # A batch answers 200 whatever became of its entries; the failed one must be seen.
    batch = transaction(communication(record, "kept"), communication(record, "x")) | {
        "type": "batch"
    }
    del batch["entry"][1]["request"]  # an entry that says nothing to do is refused

    async def scenario() -> Any:
        async with client_for(loaded) as client:
            return await client.deliver(envelope(batch))

    result = run(scenario())
    assert result.accepted is False and result.code.startswith("4")
    assert result.detail.startswith("entry 1 answered")


def test_a_transaction_with_a_failed_entry_changes_nothing(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    bundle = transaction(communication(record, "undone"), communication(record, "x"))
    del bundle["entry"][1]["request"]

    async def scenario() -> Any:
        async with client_for(loaded) as client:
            return await client.deliver(envelope(bundle))

    result = run(scenario())
    assert (result.accepted, result.code) == (False, "400")
    assert loaded.resources("Communication") == []


# --- writes ---------------------------------------------------------------------------------


def test_a_conditional_create_makes_the_resource_once(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    note = communication(record, "once") | {
        "identifier": [{"system": "urn:test:notes", "value": "note-1"}]
    }

    async def scenario() -> list[dict[str, Any]]:
        async with client_for(loaded) as client:
            criteria = "identifier=urn:test:notes|note-1"
            return [await client.create(note, if_none_exist=criteria) for _ in range(2)]

    first, second = run(scenario())
    assert first["id"] == second["id"]
    assert len(loaded.resources("Communication")) == 1


def test_an_update_over_a_stale_version_is_refused(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    async def scenario() -> tuple[str, dict[str, Any], FhirHttpError]:
        async with client_for(loaded) as client:
            current = await client.read("Patient", patient_id(record))
            version = current["meta"]["versionId"]
            changed = await client.update(current | {"gender": "female"}, if_match=f'W/"{version}"')
            with pytest.raises(FhirHttpError) as stale:
                await client.update(current | {"gender": "male"}, if_match=f'W/"{version}"')
            return version, changed, stale.value

    version, changed, refused = run(scenario())
    assert changed["meta"]["versionId"] != version  # a new version was written
    assert changed["gender"] == "female"
    assert refused.status_code == 412
    assert loaded.resources("Patient", _id=patient_id(record))[0]["gender"] == "female"
    assert [r["method"] for r in loaded.requests()].count("PUT") == 2  # never retried


# --- Bulk Data export -----------------------------------------------------------------------


def test_export_patient_returns_the_patients_resources_of_the_types_asked(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with client_for(loaded, export_poll_seconds=0.05) as client:
            return await collect(export_patient(client, patient_id(record), EXPORT_TYPES))

    exported = run(scenario())
    expected = counts(record)
    assert Counter(r["resourceType"] for r in exported) == {t: expected[t] for t in EXPORT_TYPES}
    keys = [f"{r['resourceType']}/{r['id']}" for r in exported]
    assert len(keys) == len(set(keys))
    assert logged(loaded, r"^\$export-status/", "DELETE")  # the files released afterwards


def test_export_patient_polls_as_retry_after_says_until_the_manifest(
    loaded: FhirPeer, record: dict[str, Any]
) -> None:
    loaded.set_capabilities(export_polls=3)
    sleep = RecordedSleep()

    async def scenario() -> list[dict[str, Any]]:
        async with FhirClient(source(loaded), sleep=sleep, environ={}) as client:
            return await collect(export_patient(client, patient_id(record), ["Condition"]))

    exported = run(scenario())
    assert len(exported) == counts(record)["Condition"]
    assert sleep.delays == [1.0, 1.0, 1.0]  # the peer's Retry-After: 1, not export_poll_seconds
    steps = [
        (r["method"], r["path"].removeprefix("/fhir/R4/").split("/")[0], r["status"])
        for r in loaded.requests()
    ]
    assert steps == [
        ("POST", "Patient", 202),
        *[("GET", "$export-status", 202)] * 3,
        ("GET", "$export-status", 200),
        ("GET", "$export-file", 200),
        ("DELETE", "$export-status", 202),
    ]


@pytest.mark.parametrize(("status", "attempts"), [(404, 1), (500, FAST_RETRY.max_attempts)])
def test_an_export_whose_status_url_answers_an_error_raises_export_failed(
    loaded: FhirPeer, record: dict[str, Any], status: int, attempts: int
) -> None:
    loaded.set_faults(
        [
            {
                "method": "GET",
                "path_regex": r"/\$export-status/",
                "kind": "status",
                "status": status,
                "count": 10,
            }
        ]
    )

    async def scenario() -> None:
        async with client_for(loaded) as client:
            await collect(export_patient(client, patient_id(record), ["Condition"]))

    with pytest.raises(ExportFailed, match=f"HTTP {status}: Injected fault: HTTP {status}"):
        run(scenario())
    assert len(logged(loaded, r"^\$export-status/")) == attempts  # 500 retried, 404 not
    assert not logged(loaded, r"^\$export-file/")
