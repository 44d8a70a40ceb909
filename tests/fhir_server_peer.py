"""A real outside FHIR server and a real SMART authorization server for the FHIR REST
connector's tests.

`fhir_peer` starts tests/fhir_peer/server.mjs (Medplum's FHIR router on its in-memory
repository, in Node) once per test session on a free loopback port; `FhirPeer` drives its
control API (data, faults, capabilities, auth, request log). Installing Node and the npm
packages is scripts/ensure_fhir_peer.sh's job; a peer that cannot start fails the tests
with its stderr, it never skips them. The peer's state lives for the whole session: a test
calls `reset()` first.

`smart_token_server` serves the hub's own authorization server (POST /auth/token,
GET /auth/jwks) over HTTP with uvicorn in a thread, on its own SQLite database, with one
system client registered for the connector: what the connector's SMART Backend Services
client gets its tokens from, and whose JWKS the peer checks them against in `jwt` mode.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from joserfc.jwk import RSAKey

from hub.app import create_app
from hub.security.clients import ClientRegistry
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade

PEER_DIR = Path(__file__).resolve().parent / "fhir_peer"
SERVER_SCRIPT = PEER_DIR / "server.mjs"
FHIR_BASE_PATH = "/fhir/R4"
START_GUARD_SECONDS = 60.0  # a guard against a hung start, not a performance expectation
START_ATTEMPTS = 3
CONNECTOR_CLIENT = "fhir-rest-connector"
CONNECTOR_SCOPES = "system/*.cruds"


class FhirPeerError(RuntimeError):
    """The peer could not be started, or its control API refused a request."""


@dataclass(frozen=True)
class FhirPeer:
    """The session's outside FHIR server: FHIR at `base_url` (http://127.0.0.1:<port>/fhir/R4,
    no trailing slash), its control API at `origin`/__control (no auth)."""

    origin: str
    base_url: str

    def _control(self, method: str, action: str, body: Any = None, **params: Any) -> Any:
        with httpx.Client(base_url=f"{self.origin}/__control", timeout=60.0) as client:
            response = client.request(method, action, json=body, params=params or None)
        if response.status_code != 200:
            raise FhirPeerError(
                f"{method} /__control{action} answered {response.status_code}: "
                + response.text[:2000]
            )
        return response.json()

    def reset(self) -> None:
        """Empty the repository, the fault rules and the request log; capabilities and auth
        back to their defaults (everything, match and export on, one 202 poll; no auth)."""
        self._control("POST", "/reset")

    def load(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """Store a batch or transaction Bundle (entries `PUT Type/id` keep their ids; a
        `meta.lastUpdated` given is kept); the response Bundle. FhirPeerError if any entry
        failed."""
        result: dict[str, Any] = self._control("POST", "/load", bundle)
        return result

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        """Replace the fault rules: each `{method?, path_regex, count, kind, status?,
        retry_after?, body?, delay_ms?}`, kind one of status, truncate, invalid-json, delay;
        the first rule matching a FHIR request's method and path+query is applied and
        counted down (dropped at 0)."""
        self._control("POST", "/faults", rules)

    def set_capabilities(
        self,
        *,
        everything: bool | None = None,
        match: bool | None = None,
        export: bool | None = None,
        export_polls: int | None = None,
    ) -> dict[str, Any]:
        """Turn the wrapper's operations on or off (only the ones given); `export_polls`: how
        many status polls answer 202 before the manifest. The capabilities now in force."""
        given = {"everything": everything, "match": match, "export": export}
        given["export_polls"] = export_polls
        body = {key: value for key, value in given.items() if value is not None}
        result: dict[str, Any] = self._control("POST", "/capabilities", body)
        return result

    def set_auth(self, mode: str, **options: Any) -> None:
        """Replace the auth settings. `none`; `jwt` (jwks_url, issuer, audience=None);
        `bearer` (token); `basic` (username, password). Any mode may take `token_endpoint`,
        which .well-known/smart-configuration and the CapabilityStatement then name."""
        self._control("POST", "/auth", {"mode": mode, **options})

    def requests(self) -> list[dict[str, Any]]:
        """The FHIR requests since the last reset, oldest first: method, path (with query),
        time_ms (epoch ms received), duration_ms, status, auth (scheme or None), fault."""
        result: list[dict[str, Any]] = self._control("GET", "/requests")
        return result

    def resources(self, resource_type: str, **params: Any) -> list[dict[str, Any]]:
        """Every stored resource of `resource_type` matching the search `params` (Medplum's
        search, no auth, no paging, not logged): for assertions on what was written."""
        bundle = self._control("GET", f"/search/{resource_type}", **params)
        return [entry["resource"] for entry in bundle.get("entry", [])]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def node_binary() -> str:
    found = os.environ.get("HUB_TEST_NODE") or shutil.which("node")
    if not found:
        raise FhirPeerError("no node on PATH: run scripts/ensure_fhir_peer.sh")
    if not (PEER_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        raise FhirPeerError(f"no npm packages in {PEER_DIR}: run scripts/ensure_fhir_peer.sh")
    return found


def _stop(process: subprocess.Popen[bytes], stderr_path: Path) -> str:
    """Stop the peer; the tail of its stderr."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    try:
        return "\n".join(stderr_path.read_text(errors="replace").splitlines()[-60:])
    except OSError:
        return "(no stderr)"


def _wait_for_listening(process: subprocess.Popen[bytes], stdout_path: Path) -> bool:
    """True once the peer printed `listening <port>`; False if it exited first."""
    deadline = time.monotonic() + START_GUARD_SECONDS
    while time.monotonic() < deadline:
        if stdout_path.read_text(errors="replace").startswith("listening "):
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    raise FhirPeerError(f"the FHIR peer did not start within {START_GUARD_SECONDS:.0f} s")


@contextmanager
def running_fhir_peer(folder: Path) -> Iterator[FhirPeer]:
    """Start server.mjs on a free loopback port, yield it once it answers, stop it after.

    Raises FhirPeerError, with the peer's stderr, when it cannot be started."""
    node = node_binary()
    failures = []
    for attempt in range(1, START_ATTEMPTS + 1):
        port = _free_port()
        stdout_path = folder / f"stdout-{attempt}.log"
        stderr_path = folder / f"stderr-{attempt}.log"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [node, str(SERVER_SCRIPT), "--port", str(port), "--host", "127.0.0.1"],
                cwd=PEER_DIR,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        origin = f"http://127.0.0.1:{port}"
        peer = FhirPeer(origin=origin, base_url=f"{origin}{FHIR_BASE_PATH}")
        try:
            started = _wait_for_listening(process, stdout_path)
            if started:
                peer.reset()  # the control API answers
        except (FhirPeerError, httpx.HTTPError) as exc:
            failures.append(f"{exc}; its stderr:\n{_stop(process, stderr_path)}")
            continue
        if not started:
            failures.append(f"exited with {process.returncode}:\n{_stop(process, stderr_path)}")
            continue
        try:
            yield peer
        finally:
            stderr = _stop(process, stderr_path)
            if process.returncode not in (0, -signal.SIGTERM):
                print(f"FHIR peer exited with {process.returncode}; its stderr:\n{stderr}")
        return
    raise FhirPeerError("the FHIR peer did not start:\n" + "\n".join(failures))


@pytest.fixture(scope="session")
def fhir_peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirPeer]:
    """The session's outside FHIR server: Medplum's FHIR router on loopback, in Node."""
    try:
        with running_fhir_peer(tmp_path_factory.mktemp("fhir-peer")) as peer:
            yield peer
    except FhirPeerError as exc:
        pytest.fail(str(exc), pytrace=False)


# --- the hub's authorization server, for real over HTTP -------------------------------------


@dataclass(frozen=True)
class TokenServer:
    """The hub's built-in authorization server on loopback, and the connector's client there:
    `client_id` with its RS384 private key (`private_jwk`, also written to
    `private_key_file`), registered for the scopes system/*.cruds (or any narrower)."""

    origin: str
    token_url: str
    jwks_url: str
    issuer: str
    client_id: str
    private_key_file: Path
    private_jwk: dict[str, Any]
    database_url: str

    def register(self, client_id: str, public_jwk: dict[str, Any]) -> None:
        """Register another system client with this public key (same roles and scopes)."""
        engine = make_engine(self.database_url)
        try:
            with make_session_factory(engine).begin() as session:
                ClientRegistry(session).add(
                    client_id,
                    name=client_id,
                    roles=["case-manager"],
                    scopes=CONNECTOR_SCOPES,
                    jwks={"keys": [public_jwk]},
                )
        finally:
            engine.dispose()


def _connector_key(folder: Path) -> tuple[dict[str, Any], Path]:
    key = RSAKey.generate_key(2048, parameters={"alg": "RS384", "use": "sig"})
    private = key.as_dict(private=True) | {"kid": key.thumbprint()}
    key_file = folder / f"{CONNECTOR_CLIENT}.jwk.json"
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(private, handle)
    return dict(private), key_file


@pytest.fixture(scope="session")
def smart_token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    """The hub's authorization server (authlib) over HTTP with one connector client."""
    folder = tmp_path_factory.mktemp("smart-token-server")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    settings = Settings(
        database_url=f"sqlite:///{folder / 'hub.db'}",
        signing_key_file=folder / "hub-signing-key.json",
        dicom_store_dir=folder / "dicom",
        host="127.0.0.1",
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        embedded_worker=False,
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    private, key_file = _connector_key(folder)
    public = RSAKey.import_key(private).as_dict(private=False) | {
        "kid": private["kid"],
        "alg": "RS384",
        "use": "sig",
    }
    with make_session_factory(engine).begin() as session:
        ClientRegistry(session).add(
            CONNECTOR_CLIENT,
            name="FHIR REST connector (tests)",
            roles=["case-manager"],
            scopes=CONNECTOR_SCOPES,
            jwks={"keys": [public]},
        )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_GUARD_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"the hub's authorization server did not start on port {port}")
        time.sleep(0.02)
    try:
        yield TokenServer(
            origin=settings.origin,
            token_url=settings.token_url,
            jwks_url=f"{settings.issuer}/jwks",
            issuer=settings.issuer,
            client_id=CONNECTOR_CLIENT,
            private_key_file=key_file,
            private_jwk=private,
            database_url=settings.database_url,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
        engine.dispose()
