"""The pages open in Chromium at a laptop's and a tablet's size, under their
Content-Security-Policy, with no serious or critical accessibility violation (axe-core)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.pages import (
    USERNAME_LABEL,
    axe_violations,
    console_errors,
    screenshot,
    sign_in,
)
from tests.e2e.seed import Users

pytestmark = pytest.mark.integration


def test_the_signed_out_page_renders_accessibly(page: Page) -> None:
    response = page.goto("/ui/signed-out")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    expect(page.get_by_role("link", name="Sign in again")).to_have_attribute("href", "/ui/login")
    screenshot(page, "signed-out")
    assert axe_violations(page) == []
    assert console_errors(page) == []


def test_the_sign_in_form_renders_accessibly(page: Page) -> None:
    page.goto("/ui/login?next=/ui/worklist")
    expect(page).to_have_url(re.compile(r"/auth/authorize\?"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_label(USERNAME_LABEL)).to_be_editable()
    expect(page.get_by_label("Password")).to_have_attribute("type", "password")
    screenshot(page, "sign-in")
    assert axe_violations(page) == []
    assert console_errors(page) == []


START_PAGES = {
    "specialist": "/ui/worklist",
    "other_specialist": "/ui/worklist",
    "case_manager": "/ui/board",
    "admin": "/ui/it/connectors",
}


@pytest.mark.parametrize("person", list(START_PAGES))
def test_each_person_signs_in_to_their_start_page(
    new_page: Callable[..., Page], hub_server: str, users: Users, person: str
) -> None:
    account = getattr(users, person)
    page = new_page("laptop")
    sign_in(page, hub_server, account.username, account.password)
    assert page.url == hub_server + START_PAGES[person]
    screenshot(page, f"start-{person}")
    assert console_errors(page) == []
