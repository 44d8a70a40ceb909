"""What each person can and cannot see on the pages: a specialist sees only the cases
assigned to them (another's case and its images are "not found", saying nothing of the
child), a case manager and IT are refused the other roles' pages, a signed-out browser is
sent to sign in and then back to the page it asked for, and signing out ends the session
(the case URL, and the Back button, no longer show the case). Every refusal is a page with
a heading and a message."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.pages import USERNAME_LABEL, console_errors
from tests.e2e.seed import DeliveredCase, Seed, SeededCase, Users

pytestmark = pytest.mark.integration

SIGN_IN_FORM = re.compile(r"/auth/authorize\?")


def expect_error_page(page: Page, heading: str) -> str:
    """The page is the hub's error page: a heading and a message under it (the issue: "a
    clear message on every error"); the message."""
    alert = page.get_by_role("alert")
    expect(alert.get_by_role("heading", level=1)).to_have_text(heading)
    message = alert.locator("h1 + p").inner_text().strip()
    assert len(message) > 10, f"no message under {heading!r}: {message!r}"
    expect(page.get_by_role("link", name="Back to your start page")).to_be_visible()
    assert console_errors(page, error_pages=True) == []
    return message


def expect_nothing_of(page: Page, case: SeededCase, *more: str) -> None:
    """The page names neither the child nor anything else of `more` (identifiers, UIDs)."""
    text = page.content()
    for secret in (case.patient_name, case.patient_id, *more):
        assert secret not in text, f"{secret!r} is on {page.url}"


def test_a_specialist_sees_only_the_cases_assigned_to_them(
    page_of: Callable[..., Page], users: Users, seeded: Seed, imaged_case: DeliveredCase
) -> None:
    page = page_of(users.other_specialist)
    page.goto("/ui/worklist")
    worklist = page.get_by_role("table", name=re.compile("^Cases assigned to you"))
    expect(
        worklist.get_by_role("link", name=seeded.cases["medulloblastoma"].patient_name)
    ).to_be_visible()
    for case in (*seeded.owned_by("ada"), imaged_case.case):
        expect(page.get_by_text(case.patient_name)).to_have_count(0)
    assert console_errors(page) == []


def test_another_specialist_gets_not_found_for_a_case_and_its_images(
    page_of: Callable[..., Page], users: Users, imaged_case: DeliveredCase
) -> None:
    case = imaged_case.case
    study, datasets = next(iter(imaged_case.outside.dicom.items()))
    thumbnail = f"/ui/imaging/studies/{study}/series/{datasets[0].SeriesInstanceUID}/thumbnail.png"
    ada = page_of(users.specialist)
    assert ada.request.get(thumbnail).headers["content-type"] == "image/png"  # hers to see

    ben = page_of(users.other_specialist)
    for url in (f"/ui/cases/{case.task_id}", thumbnail, f"/ui/cases/{case.task_id}/opinion.pdf"):
        response = ben.goto(url)
        assert response is not None and response.status == 404, url
        assert response.headers["content-type"].startswith("text/html")
        expect_error_page(ben, "Not found")
        expect_nothing_of(ben, case, imaged_case.outside.mrn, *imaged_case.studies)


REFUSED = {
    "case_manager": (
        "/ui/worklist",
        "/ui/cases/{task}",
        "/ui/it/connectors",
        "/ui/it/messages",
        "/ui/it/dead-letters",
        "/ui/it/config",
    ),
    "admin": ("/ui/board", "/ui/board/cases/{task}", "/ui/worklist", "/ui/cases/{task}"),
    "other_specialist": ("/ui/board", "/ui/it/connectors"),
}
"""Person → the pages of other roles they are refused (403), {task}: one of Ada's cases."""


@pytest.mark.parametrize("person", list(REFUSED))
def test_the_pages_of_other_roles_are_refused_with_a_reason(
    page_of: Callable[..., Page], users: Users, seeded: Seed, person: str
) -> None:
    case = seeded.cases["demo-child"]
    page = page_of(getattr(users, person))
    for path in REFUSED[person]:
        response = page.goto(path.format(task=case.task_id))
        assert response is not None and response.status == 403, path
        message = expect_error_page(page, "Not allowed")
        assert "role" in message, message
        expect_nothing_of(page, case)


def test_signing_in_leads_to_the_page_asked_for_and_signing_out_hides_it_again(
    new_page: Callable[..., Page], hub_server: str, users: Users, seeded: Seed
) -> None:
    """A signed-out browser asking for a case is sent to sign in, then to the case (the
    `next` of /ui/login); after signing out, neither Back nor the case URL shows it."""
    ada, case = users.specialist, seeded.cases["b-all-relapsed"]
    page = new_page("laptop")
    page.goto(f"/ui/cases/{case.task_id}")
    expect(page).to_have_url(SIGN_IN_FORM)
    expect_nothing_of(page, case)
    page.get_by_label(USERNAME_LABEL).fill(ada.username)
    page.get_by_label("Password").fill(ada.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{hub_server}/ui/cases/{case.task_id}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(case.patient_name)

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{hub_server}/ui/signed-out")
    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    page.go_back()  # the case page is not kept (Cache-Control: no-store): asked again
    expect(page).to_have_url(SIGN_IN_FORM)
    expect_nothing_of(page, case)
    page.goto(f"/ui/cases/{case.task_id}")
    expect(page).to_have_url(SIGN_IN_FORM)
    expect_nothing_of(page, case)
    assert console_errors(page) == []
