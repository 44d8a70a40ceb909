"""Browser tests of the hub's pages: a real `hub serve` process on loopback, synthetic cases
referred through its FHIR API, the people who sign in, and Debian's Chromium driven by
Playwright (scripts/ensure_browser.sh installs it and axe-core).

Session fixtures (started once, on first use):

* ``hub_home``: the hub's files (database, key, routing table with two specialists' pools);
* ``hub_server``: the base URL of the running hub (``http://127.0.0.1:PORT``);
* ``hub_settings``: its Settings as the test process needs them (tokens, FHIR base);
* ``seeded``: the three referred cases (tests.e2e.seed.Seed);
* ``refer_case``: refers one more, ``refer_case("neuroblastoma", seed=11)``;
* ``users``: Ada and Ben (specialists), Carla (case manager), Ivan (admin);
* ``add_user``: adds another person, ``add_user(Account(...))``;
* ``browser``: Chromium.

Per test: ``new_page(viewport="laptop", **context_options)`` makes a page in a context of
its own (its own cookies: one per person when a test needs two), and ``page`` is one made
at each viewport in turn (laptop 1366x768, tablet 768x1024). The helpers a walk calls are
in tests.e2e.pages.
"""

from __future__ import annotations

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
from tests.e2e.pages import CHROMIUM, VIEWPORTS, watch
from tests.e2e.seed import (
    HUB,
    Account,
    HubHome,
    Seed,
    SeededCase,
    Users,
    add_account,
    prepare_home,
    refer_outside_case,
    seed_cases,
    the_people,
)

START_SECONDS = 60
STOP_SECONDS = 10


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def hub_home(tmp_path_factory: pytest.TempPathFactory) -> HubHome:
    return prepare_home(tmp_path_factory.mktemp("browser-hub"))


@pytest.fixture(scope="session")
def _hub_port() -> int:
    return _free_port()


@pytest.fixture(scope="session")
def hub_server(hub_home: HubHome, _hub_port: int) -> Iterator[str]:
    """`hub serve` in its own process on 127.0.0.1; its base URL once /healthz answers. Its
    log is hub.log in the hub_home folder (printed if it does not start)."""
    base_url = f"http://127.0.0.1:{_hub_port}"
    log_file = hub_home.folder / "hub.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [str(HUB), "serve", "--log-level", "info"],
            env=hub_home.env(HUB_HOST="127.0.0.1", HUB_PORT=str(_hub_port)),
            stdout=log,
            stderr=subprocess.STDOUT,
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


@pytest.fixture(scope="session")
def hub_settings(hub_home: HubHome, _hub_port: int, hub_server: str) -> Settings:
    return hub_home.settings(_hub_port)


@pytest.fixture(scope="session")
def seeded(hub_home: HubHome, hub_settings: Settings) -> Seed:
    """The demo child (Ada's, with its whole record), relapsed B-ALL (Ada's, urgent) and
    medulloblastoma (Ben's), referred through the hub's FHIR API."""
    return seed_cases(hub_home, hub_settings)


@pytest.fixture(scope="session")
def refer_case(hub_settings: Settings) -> Callable[..., SeededCase]:
    """Refers one more case, for a walk that uses a case up (an opinion sent, a case
    reassigned): ``refer_case("neuroblastoma", seed=11)`` (seed.refer_outside_case)."""
    return lambda cancer, seed=DEFAULT_SEED: refer_outside_case(hub_settings, cancer, seed)


@pytest.fixture(scope="session")
def add_user(hub_home: HubHome) -> Callable[[Account], Account]:
    """Adds a person with `hub users add ... --password-stdin` on the hub's database."""
    return lambda account: add_account(hub_home, account)


@pytest.fixture(scope="session")
def users(hub_home: HubHome, add_user: Callable[[Account], Account]) -> Users:
    """The four people of the walks, added once (see tests.e2e.seed.the_people)."""
    people = the_people(hub_home)
    for account in vars(people).values():
        add_user(account)
    return people


@pytest.fixture(scope="session")
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


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def page(new_page: Callable[..., Page], viewport: str) -> Page:
    """A page at each viewport in turn (the test runs once per viewport)."""
    return new_page(viewport)
