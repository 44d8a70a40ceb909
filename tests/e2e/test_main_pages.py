"""The main pages at a laptop's and a tablet's width: no serious or critical accessibility
violation (axe-core), no console error (a script, style or image the page could not load,
or the Content-Security-Policy refused), no horizontal scrolling of the page (a wide table
scrolls in its own box), every image drawn; a full-page screenshot of each in
test-artifacts/screenshots/. The pages show the seeded cases and the osteosarcoma child
delivered over every channel (its labs plotted, its studies' thumbnails, its HL7 messages
in the log)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Page, expect

from hub.settings import Settings
from tests.e2e.pages import (
    axe_violations,
    console_errors,
    fits_width,
    screenshot,
)
from tests.e2e.seed import DeliveredCase, Users
from tests.fhir_client import bearer

pytestmark = pytest.mark.integration

IMAGE_MILLISECONDS = 10_000
"""How long one image may take to load: a guard against a hang, not an expectation."""
LOAD_EVERY_IMAGE = """async milliseconds => {
  for (const image of Array.from(document.images)) {
    if (image.complete) continue;
    image.scrollIntoView();
    await new Promise(done => {
      image.addEventListener("load", done, {once: true});
      image.addEventListener("error", done, {once: true});
      setTimeout(done, milliseconds);
    });
  }
  window.scrollTo(0, 0);
  return Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.getAttribute("src"));
}"""


@dataclass(frozen=True)
class MainPage:
    name: str
    """The screenshot's name."""
    person: str | None
    """Who looks at it (an attribute of Users); None: a signed-out browser."""
    path: str
    """{task}: the osteosarcoma child's case; {message}: its ORU^R01 in the message log."""
    heading: str
    """What its h1 says ({patient}: the osteosarcoma child's name)."""
    status: int = 200
    full_page: bool = True
    """False: the screenshot is of the first screen (the case page is tens of thousands of
    pixels long, with every record and result, and takes seconds in full)."""


MAIN_PAGES = [
    MainPage("sign-in", None, "/ui/login?next=/ui/worklist", "Sign in"),
    MainPage("specialist-worklist", "specialist", "/ui/worklist", "My worklist"),
    MainPage("specialist-case", "specialist", "/ui/cases/{task}", "{patient}", full_page=False),
    MainPage("case-board", "case_manager", "/ui/board", "Case board"),
    MainPage("case-board-case", "case_manager", "/ui/board/cases/{task}", "{patient}"),
    MainPage("it-connectors", "admin", "/ui/it/connectors", "Connectors"),
    MainPage("it-message-log", "admin", "/ui/it/messages", "Message log"),
    MainPage("it-message", "admin", "/ui/it/messages/{message}", "ORU^R01"),
    MainPage("it-dead-letters", "admin", "/ui/it/dead-letters", "Dead letters"),
    MainPage("it-configuration", "admin", "/ui/it/config", "Configuration check"),
    MainPage("error-not-found", "other_specialist", "/ui/cases/{task}", "Not found", 404),
]


@pytest.fixture(scope="module")
def oru_message(hub_settings: Settings, imaged_case: DeliveredCase) -> int:
    """The message log's id of the osteosarcoma child's ORU^R01 (IT's API)."""
    control = imaged_case.outside.hl7["ORU^R01"].split(b"|")[9].decode()
    admin = bearer(hub_settings, subject="browser-pages-it", roles=("admin",))
    found = httpx.get(
        f"{hub_settings.origin}/admin/messages",
        params={"control_id": control},
        headers=admin,
        timeout=30,
    )
    found.raise_for_status()
    return int(found.json()["messages"][0]["id"])


@pytest.mark.parametrize("main", MAIN_PAGES, ids=[main.name for main in MAIN_PAGES])
def test_a_main_page_is_accessible_at_this_width(
    page_of: Callable[..., Page],
    users: Users,
    imaged_case: DeliveredCase,
    oru_message: int,
    viewport: str,
    main: MainPage,
) -> None:
    page = page_of(getattr(users, main.person) if main.person else None, viewport)
    response = page.goto(main.path.format(task=imaged_case.case.task_id, message=oru_message))
    assert response is not None and response.status == main.status, page.url
    heading = main.heading.format(patient=imaged_case.case.patient_name)
    expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
    _load_every_image(page)

    screenshot(page, main.name, full_page=main.full_page)
    assert axe_violations(page) == []
    assert console_errors(page, error_pages=main.status >= 400) == []
    assert fits_width(page), _wider_than_the_window(page)


def _load_every_image(page: Page) -> None:
    """Bring each image into view (the thumbnails load lazily), wait until it loaded or
    failed, and fail on one the browser could not draw."""
    broken = page.evaluate(LOAD_EVERY_IMAGE, IMAGE_MILLISECONDS)
    assert broken == [], f"images not drawn on {page.url}: {broken}"


def _wider_than_the_window(page: Page) -> str:
    """Which elements outside a .table-scroll box reach past the window's right edge."""
    wide: list[str] = page.evaluate(
        """() => Array.from(document.querySelectorAll('body *'))
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
            .filter(e => !e.parentElement.closest('.table-scroll'))
            .slice(0, 10)
            .map(e => `${e.tagName.toLowerCase()}.${e.className}: ${e.textContent.slice(0, 60)}`)"""
    )
    return f"{page.url} scrolls sideways at this width: {wide}"
