"""Browser tests of the hub's pages: a real `hub serve` process on loopback, synthetic cases
referred through its FHIR API, the people who sign in, and Debian's Chromium driven by
Playwright (scripts/ensure_browser.sh installs it and axe-core).

Session fixtures (started once, on first use):

* ``hub_home``: the hub's files (database, key, routing table with two specialists' pools);
* ``referrer_fhir``: the referring EHR's own FHIR server (Medplum's FHIR router, in Node, on
  loopback: tests/fhir_server_peer.py), the hub's FHIR source ``larkfield-ehr``: the hub
  pulls a case's missing records from it and writes the signed opinions of the referrals
  the ``larkfield-ehr`` client sent back to it;
* ``hub_server``: the base URL of the running hub (``http://127.0.0.1:PORT``), with that
  FHIR source, an MLLP listener on ``mllp_port`` and a Storage SCP on ``scp_port``;
* ``hub_settings``: its Settings as the test process needs them (tokens, FHIR base);
* ``seeded``: the three referred cases (tests.e2e.seed.Seed);
* ``refer_case``: refers one more, ``refer_case("neuroblastoma", seed=11)``;
* ``deliver_case``: sends one more child over every channel of the referring hospital
  (record, referral, HL7 v2, DICOM), ``deliver_case("neuroblastoma", 11)``;
* ``imaged_case``: Ada's osteosarcoma child so delivered, for pages that only read it;
* ``users``: Ada and Ben (specialists), Carla (case manager), Ivan (admin);
* ``add_user``: adds another person, ``add_user(Account(...))``;
* ``browser``: Chromium;
* ``page_of``: a page of a person (or signed out) at a width, signed in once and kept:
  ``page_of(users.specialist, "tablet")``; for tests that only read pages.

Per test: ``new_page(viewport="laptop", **context_options)`` makes a page in a context of
its own (its own cookies: one per person when a test needs two), and ``page`` is one made
at each viewport in turn (laptop 1366x768, tablet 768x1024). The helpers a walk calls are
in tests.e2e.pages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from hub.demo.synthetic import DEFAULT_SEED
from hub.settings import Settings
from tests.e2e.pages import CHROMIUM, VIEWPORTS, forget_console, sign_in, watch
from tests.e2e.seed import (
    HUB,
    HUB_AE,
    REFERRER,
    Account,
    Channels,
    DeliveredCase,
    HubHome,
    Seed,
    SeededCase,
    Users,
    add_account,
    deliver_outside_case,
    prepare_home,
    refer_outside_case,
    seed_cases,
    the_people,
)
from tests.fhir_server_peer import FhirPeer, FhirPeerError, running_fhir_peer

START_SECONDS = 60
IMAGED_SEED = 12
STOP_SECONDS = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Package scope, not session: Playwright's sync API keeps an event loop running in this
# thread while it is open, and later tests call asyncio.run(); all of it ends with tests/e2e.
@pytest.fixture(scope="package")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> HubHome:
    return prepare_home(tmp_path_factory.mktemp("browser-hub"))


@pytest.fixture(scope="package")
def _hub_port() -> int:
    return _free_port()


@pytest.fixture(scope="package")
def mllp_port() -> int:
    """The port of the hub's MLLP listener `larkfield` (HL7 v2 from the referring hospital)."""
    return _free_port()


@pytest.fixture(scope="package")
def scp_port() -> int:
    """The port of the hub's Storage SCP (AE title seed.HUB_AE): the referring PACS's pushes."""
    return _free_port()


@pytest.fixture(scope="package")
def referrer_fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirPeer]:
    """The referring EHR's FHIR server: a peer of its own (not the integration tests'
    session-wide `fhir_peer`, which their tests reset), empty until a test loads a record."""
    try:
        with running_fhir_peer(tmp_path_factory.mktemp("referrer-fhir")) as peer:
            yield peer
    except FhirPeerError as exc:
        pytest.fail(str(exc), pytrace=False)


def _connectors(peer: FhirPeer, mllp_port: int, scp_port: int) -> dict[str, str]:
    """The environment naming the hub's connectors (hub.settings reads lists as JSON)."""
    source = {
        "name": REFERRER,
        "base_url": peer.base_url,
        "retry": {"max_attempts": 2, "backoff_seconds": 0.05},
        "write_back": {"referrers": [REFERRER]},
    }
    listener = {"name": "larkfield", "host": "127.0.0.1", "port": mllp_port}
    scp = {"ae_title": HUB_AE, "host": "127.0.0.1", "port": scp_port}
    return {
        "HUB_FHIR_SOURCES": json.dumps([source]),
        "HUB_MLLP_LISTENERS": json.dumps([listener]),
        "HUB_DICOM_SCP": json.dumps(scp),
    }


@pytest.fixture(scope="package")
def hub_server(
    hub_home: HubHome, _hub_port: int, mllp_port: int, scp_port: int, referrer_fhir: FhirPeer
) -> Iterator[str]:
    """`hub serve` in its own process on 127.0.0.1; its base URL once /healthz answers. Its
    log is hub.log in the hub_home folder (printed if it does not start)."""
    base_url = f"http://127.0.0.1:{_hub_port}"
    log_file = hub_home.folder / "hub.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [str(HUB), "serve", "--log-level", "info"],
            env=hub_home.env(
                HUB_HOST="127.0.0.1",
                HUB_PORT=str(_hub_port),
                **_connectors(referrer_fhir, mllp_port, scp_port),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_until_healthy(process, base_url, log_file)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_SECONDS)
            _end_the_rest_of(process)


def _end_the_rest_of(process: subprocess.Popen[bytes]) -> None:
    """End what `hub serve` left running in its process group: its record validation's
    forkserver and pool worker (hub.records.validation) outlive it after a SIGTERM."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)


def _wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1).is_success:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`hub serve` did not start on {base_url}:\n{log.read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="package")
def hub_settings(hub_home: HubHome, _hub_port: int, hub_server: str) -> Settings:
    return hub_home.settings(_hub_port)


@pytest.fixture(scope="package")
def seeded(hub_home: HubHome, hub_settings: Settings) -> Seed:
    """The demo child (Ada's, with its whole record), relapsed B-ALL (Ada's, urgent) and
    medulloblastoma (Ben's), referred through the hub's FHIR API."""
    return seed_cases(hub_home, hub_settings)


@pytest.fixture(scope="package")
def refer_case(hub_settings: Settings) -> Callable[..., SeededCase]:
    """Refers one more case, for a walk that uses a case up (an opinion sent, a case
    reassigned): ``refer_case("neuroblastoma", seed=11)`` (seed.refer_outside_case)."""
    return lambda cancer, seed=DEFAULT_SEED: refer_outside_case(hub_settings, cancer, seed)


@pytest.fixture(scope="package")
def deliver_case(
    hub_settings: Settings,
    referrer_fhir: FhirPeer,
    mllp_port: int,
    scp_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str, int], DeliveredCase]:
    """Sends one more child over every channel of the referring hospital (its record on
    its FHIR server, the referral, HL7 v2, DICOM) and waits until the hub took it in:
    ``deliver_case("neuroblastoma", 11)`` (seed.deliver_outside_case)."""
    channels = Channels(referrer_fhir, mllp_port, scp_port, tmp_path_factory.mktemp("sent"))
    return lambda cancer, seed: deliver_outside_case(hub_settings, channels, cancer, seed)


@pytest.fixture(scope="package")
def imaged_case(deliver_case: Callable[[str, int], DeliveredCase]) -> DeliveredCase:
    """Ada's osteosarcoma child with its whole record: labs (plotted), studies (thumbnails),
    HL7 v2 messages in the log. The pages only read it (the walk uses a case of its own)."""
    return deliver_case("osteosarcoma", IMAGED_SEED)


@pytest.fixture(scope="package")
def add_user(hub_home: HubHome) -> Callable[[Account], Account]:
    """Adds a person with `hub users add ... --password-stdin` on the hub's database."""
    return lambda account: add_account(hub_home, account)


@pytest.fixture(scope="package")
def users(hub_home: HubHome, add_user: Callable[[Account], Account]) -> Users:
    """The four people of the walks, added once (see tests.e2e.seed.the_people)."""
    people = the_people(hub_home)
    for account in vars(people).values():
        add_user(account)
    return people


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless (Playwright starts it without its sandbox by default,
    which running as root needs)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/ensure_browser.sh")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Browser, hub_server: str) -> Iterator[Callable[..., Page]]:
    """Makes a page in a new context (cookies of its own) at a viewport of VIEWPORTS, with
    the hub as base URL (`page.goto("/ui/login")`); closed after the test."""
    contexts: list[BrowserContext] = []

    def make(viewport: str = "laptop", **options: object) -> Page:
        context = browser.new_context(
            viewport=VIEWPORTS[viewport],  # type: ignore[arg-type]
            base_url=hub_server,
            locale="en-US",
            **options,  # type: ignore[arg-type]
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return watch(context.new_page())

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="package")
def page_of(browser: Browser, hub_server: str) -> Iterator[Callable[..., Page]]:
    """``page_of(account, viewport="laptop")``: a page signed in as `account` (None: a
    signed-out one), kept for the whole session, its console record cleared each time it is
    handed out: for tests that only read pages. Each person signs in once (the session
    lasts an hour); their page at the other width is a context with the same cookies. A
    browser context costs about a second of CPU: one per test would cost more than the
    pages."""
    pages: dict[tuple[str | None, str], Page] = {}
    contexts: list[BrowserContext] = []

    def get(account: Account | None, viewport: str = "laptop") -> Page:
        who = account.username if account else None
        if (who, viewport) not in pages:
            same = next((page for (name, _), page in pages.items() if name == who), None)
            context = browser.new_context(
                viewport=VIEWPORTS[viewport],  # type: ignore[arg-type]
                base_url=hub_server,
                locale="en-US",
                storage_state=same.context.storage_state() if same else None,
            )
            context.set_default_timeout(10_000)
            contexts.append(context)
            page = watch(context.new_page())
            if account and not same:
                sign_in(page, hub_server, account.username, account.password)
            pages[(who, viewport)] = page
        page = pages[(who, viewport)]
        forget_console(page)
        return page

    yield get
    for context in contexts:
        context.close()


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def page(new_page: Callable[..., Page], viewport: str) -> Page:
    """A page at each viewport in turn (the test runs once per viewport)."""
    return new_page(viewport)
