"""What a page walk does in Chromium: sign in (filling the form, or with the keyboard
alone), Tab to a control, take a screenshot, check accessibility and that the page
fits the window's width, read the browser's console. A walk, with the fixtures of
tests/e2e/conftest.py:

    def test_a_specialist_opens_her_case(page, hub_server, seeded, users):
        ada, case = users.specialist, seeded.cases["demo-child"]
        sign_in(page, hub_server, ada.username, ada.password)
        page.get_by_role("link", name=case.patient_name).click()
        expect(page).to_have_url(f"{hub_server}/ui/cases/{case.task_id}")
        screenshot(page, "specialist-case")
        assert axe_violations(page) == []
        assert console_errors(page) == []
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from playwright.sync_api import ConsoleMessage, Locator, Page, Response
from playwright.sync_api import TimeoutError as PlaywrightTimeout

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium (scripts/ensure_browser.sh); Playwright's own browsers are never used."""
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
AXE_SCRIPT = Path(__file__).resolve().parent / "axe" / "node_modules" / "axe-core" / "axe.min.js"

VIEWPORTS = {
    "laptop": {"width": 1366, "height": 768},
    "tablet": {"width": 768, "height": 1024},
}
START_PAGE = re.compile(r"/ui/(worklist|board|it/connectors|no-pages)/?(\?.*)?$")
"""Where signing in lands, by role (hub.web.routes.START_PAGES)."""
USERNAME_LABEL = re.compile(r"^\s*user ?name\s*$", re.IGNORECASE)
"""The sign-in form's label: "User name" (or "Username")."""

MAX_TABS = 40
"""A field a keyboard user must reach is at most this many Tab presses away."""

AXE_OPTIONS = {
    "runOnly": {
        "type": "tag",
        "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"],
    },
    "resultTypes": ["violations"],
}
BLOCKING_IMPACTS = ("serious", "critical")

_console: WeakKeyDictionary[Page, list[tuple[str, str]]] = WeakKeyDictionary()
_error_documents: WeakKeyDictionary[Page, set[str]] = WeakKeyDictionary()
FAILED_LOAD = "Failed to load resource"
"""How Chromium's console reports a response with an error status."""


def watch(page: Page) -> Page:
    """Record the page's console errors and uncaught exceptions (a script or style the
    Content-Security-Policy refused shows up here) for console_errors(); the 404 of the
    favicon Chromium asks for by itself is no error of a page. Also the pages navigated to
    that answered an error status (the hub's 403 and 404 pages)."""
    problems: list[tuple[str, str]] = []
    documents: set[str] = set()
    _console[page] = problems
    _error_documents[page] = documents

    def on_console(message: ConsoleMessage) -> None:
        where = message.location.get("url", "")
        if message.type == "error" and not where.endswith("/favicon.ico"):
            problems.append((message.text, where))

    def on_response(response: Response) -> None:
        request = response.request
        main_document = request.is_navigation_request() and request.frame == page.main_frame
        if main_document and response.status >= 400:
            documents.add(response.url)

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append((f"uncaught: {error}", "")))
    page.on("response", on_response)
    return page


def console_errors(page: Page, *, error_pages: bool = False) -> list[str]:
    """The console errors and uncaught exceptions of `page` so far (pages from the `page`
    and `new_page` fixtures are watched). `error_pages`: the test went to pages the hub
    answers with an error status (403, 404) on purpose, which Chromium reports as resources
    that failed to load: those lines, for those pages' own URLs, are not counted."""
    expected = _error_documents.get(page, set()) if error_pages else set()
    return [
        f"{text} ({where})" if where else text
        for text, where in _console.get(page, [])
        if not (text.startswith(FAILED_LOAD) and where in expected)
    ]


def forget_console(page: Page) -> None:
    """Start console_errors() afresh: for a page a test takes over from another."""
    _console.get(page, []).clear()
    _error_documents.get(page, set()).clear()


def fits_width(page: Page) -> bool:
    """Whether the page needs no horizontal scrolling (a wide table scrolls in its own
    .table-scroll box, which does not widen the page)."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def sign_in(page: Page, base_url: str, username: str, password: str) -> None:
    """Sign in as a person would: /ui/login, which leads to the hub's sign-in form
    (/auth/authorize), filled by its labels and submitted; returns on the role's start page
    (worklist, board, IT), else fails with what the page said."""
    page.goto(f"{base_url}/ui/login")
    page.get_by_label(USERNAME_LABEL).fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Password").press("Enter")
    try:
        page.wait_for_url(START_PAGE)
    except PlaywrightTimeout:
        text = page.locator("body").inner_text()[:500] if page.locator("body").count() else ""
        raise AssertionError(
            f"Signing in as {username} ended on {page.url}, not a start page: {text}"
        ) from None


def sign_in_with_keyboard(page: Page, base_url: str, username: str, password: str) -> None:
    """Sign in with the keyboard alone: from the top of the sign-in form, Tab to the user
    name (failing if it is not in the tab order), type it, Tab to the password, type it,
    Enter; returns on the role's start page."""
    page.goto(f"{base_url}/ui/login")
    username_field = page.get_by_label(USERNAME_LABEL)
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if _is_focused(username_field):
            break
    else:
        raise AssertionError(f"the user name field is not reached with {MAX_TABS} Tabs")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    if not _is_focused(page.get_by_label("Password")):
        raise AssertionError("Tab from the user name does not lead to the password")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.wait_for_url(START_PAGE)


def tab_to(page: Page, target: Locator) -> None:
    """Press Tab until `target` has the focus (at most MAX_TABS times, from where the focus
    is now); fails if it is not reached: it is then not in the page's tab order."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if _is_focused(target):
            return
    raise AssertionError(f"{target} is not reached with {MAX_TABS} Tabs")


def _is_focused(target: Locator) -> bool:
    return bool(target.evaluate("element => element === document.activeElement"))


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    """A full-page PNG in test-artifacts/screenshots/, named after `name` and the viewport
    (`specialist-worklist-1366x768.png`); returns its path. `full_page=False`: what the
    window shows (a page tens of thousands of pixels long takes seconds in full)."""
    size = page.viewport_size or {"width": 0, "height": 0}
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")
    path = SCREENSHOTS / f"{stem}-{size['width']}x{size['height']}.png"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path


def axe_violations(page: Page, impacts: tuple[str, ...] = BLOCKING_IMPACTS) -> list[str]:
    """The accessibility violations of the page as it is now (WCAG 2.1 A and AA and axe's
    best practices) whose impact is in `impacts` (serious, critical), one readable line
    each: `rule (impact): help [n×] first targets`.

    axe-core is evaluated in the page through the DevTools protocol, which the page's
    Content-Security-Policy (`script-src 'self'`) does not govern: so the walk's own
    context keeps the policy enforced, and what it checks is the page the walk is on. (A
    `<script>` tag, as page.add_script_tag makes, would need a context with bypass_csp.)
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(_axe_source())
    result: dict[str, Any] = page.evaluate(
        "options => window.axe.run(document, options)", AXE_OPTIONS
    )
    return [_describe(v) for v in result["violations"] if v.get("impact") in impacts]


@cache
def _axe_source() -> str:
    if not AXE_SCRIPT.is_file():
        raise AssertionError(f"{AXE_SCRIPT} is missing: run scripts/ensure_browser.sh")
    return AXE_SCRIPT.read_text(encoding="utf-8")


def _describe(violation: dict[str, Any]) -> str:
    nodes = violation.get("nodes") or []
    targets = ", ".join(" ".join(map(str, node.get("target", []))) for node in nodes[:3])
    return (
        f"{violation['id']} ({violation.get('impact')}): {violation.get('help')} "
        f"[{len(nodes)}×] {targets}"
    )
