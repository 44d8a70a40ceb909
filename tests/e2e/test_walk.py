"""A case from referral to delivered opinion, through the pages, as the people do it: the
referring hospital sends a child (its record on its own FHIR server, the referral, HL7 v2,
DICOM), Carla finds the case on her board and asks the referrer for what is missing, Ada
reads the case and writes, previews, signs and sends the opinion (the sign-in and the
form's buttons with the keyboard), and the hub's worker delivers it back to the referrer's
FHIR server (Medplum's, tests/fhir_server_peer.py), where the test reads it over HTTP."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from hub.records.write_back import OPINION_SYSTEM
from hub.settings import Settings
from tests.e2e.pages import (
    console_errors,
    screenshot,
    sign_in,
    sign_in_with_keyboard,
    tab_to,
)
from tests.e2e.seed import (
    FHIR_JSON,
    DeliveredCase,
    HubHome,
    SeededCase,
    Users,
    case_status,
    opinion_id,
    send_consent,
)
from tests.fhir_server_peer import FhirPeer

pytestmark = pytest.mark.integration

WALK = ("neuroblastoma", 11)
"""Solid tumors and oncology: routing gives it to Ada."""
DELIVERY_SECONDS = 60
"""A guard against a hang while the worker delivers, not a performance expectation."""
MESSAGE = "Please send the family's signed consent for the review."
CONCLUSION = "Intermediate-risk neuroblastoma with an ALK F1174L variant: add an ALK inhibitor."
RECOMMENDATIONS = ("Add lorlatinib to induction chemotherapy.", "Repeat MIBG after cycle 2.")
TRIAL = "NCT00000000 (synthetic trial)"
NOT_RECEIVED = "The hub has not received this study's images"


def test_a_case_goes_from_referral_to_a_delivered_opinion(
    new_page: Callable[..., Page],
    hub_server: str,
    hub_home: HubHome,
    hub_settings: Settings,
    users: Users,
    deliver_case: Callable[[str, int], DeliveredCase],
    referrer_fhir: FhirPeer,
) -> None:
    delivered = deliver_case(*WALK)
    case = delivered.case
    assert case.owner == f"Practitioner/{hub_home.practitioners['ada']}"

    board = new_page("laptop")
    _carla_asks_for_the_consent(board, hub_server, users, case)

    send_consent(hub_settings, case)  # the referring EHR answers
    _wait_until("the records are complete", DELIVERY_SECONDS, lambda: _complete(hub_settings, case))
    board.reload()  # Carla accepts the case for Ada's review on its board page
    board.get_by_role("button", name=f"Accept Case {case.task_id[:8]} for review").click()
    expect(board.get_by_role("status")).to_contain_text("The case is accepted")
    expect(_fact(board, "State")).to_have_text("Assigned to a specialist")

    desk = new_page("laptop")
    sign_in_with_keyboard(desk, hub_server, users.specialist.username, users.specialist.password)
    expect(desk).to_have_url(f"{hub_server}/ui/worklist")
    entry = desk.get_by_role("row").filter(has=desk.get_by_role("link", name=case.patient_name))
    expect(entry).to_contain_text("Solid tumors and oncology")
    expect(entry).to_contain_text("On time")  # the clock started with the consent
    screenshot(desk, "walk-specialist-worklist")
    entry.get_by_role("link", name=case.patient_name).click()
    expect(desk).to_have_url(f"{hub_server}/ui/cases/{case.task_id}")
    questions = _ada_reads_the_case(desk, case, delivered)
    _ada_writes_the_opinion(desk, questions)
    _ada_previews_and_signs(desk, hub_server, case)

    report_id = opinion_id(hub_settings, case)
    theirs = _wait_until(
        "the referrer's FHIR server holds the opinion",
        DELIVERY_SECONDS,
        lambda: _their_report(referrer_fhir, report_id),
    )
    _wait_until(
        "the case is completed",
        DELIVERY_SECONDS,
        lambda: case_status(hub_settings, case) == ("completed", "opinion-delivered"),
    )
    assert theirs["status"] == "final"
    assert theirs["conclusion"] == CONCLUSION
    assert theirs["subject"] == {"reference": f"Patient/{_their_patient(delivered)}"}
    assert theirs["presentedForm"][0]["contentType"] == "application/pdf"

    desk.reload()
    expect(desk.locator("#opinion")).to_contain_text("Status: final")
    expect(desk.locator("#opinion")).to_contain_text(CONCLUSION)
    expect(desk.get_by_role("button", name="Save draft")).to_have_count(0)
    screenshot(desk, "walk-specialist-case-delivered", full_page=False)
    desk.goto("/ui/worklist")
    expect(entry).to_contain_text("Opinion delivered")
    board.reload()
    expect(_fact(board, "State")).to_have_text("Opinion delivered")
    screenshot(board, "walk-board-case-delivered")
    assert console_errors(desk) == []
    assert console_errors(board) == []


def _carla_asks_for_the_consent(
    board: Page, hub_server: str, users: Users, case: SeededCase
) -> None:
    """Carla's board shows the new case awaiting records, the consent missing; she writes
    to the referrer from the case's page."""
    carla = users.case_manager
    sign_in(board, hub_server, carla.username, carla.password)
    row = board.locator(f"#case-{case.task_id}")
    expect(row).to_contain_text(case.patient_name)
    expect(
        board.locator("section").filter(has=row).get_by_role("heading", level=2)
    ).to_contain_text("Awaiting records")
    expect(row).to_contain_text("Clock not started")
    expect(row).to_contain_text("Legal consent for the review (required)")
    screenshot(board, "walk-board")
    row.get_by_role("link", name=f"Case {case.task_id[:8]}").click()
    expect(board).to_have_url(f"{hub_server}/ui/board/cases/{case.task_id}")
    expect(board.get_by_role("heading", level=1)).to_contain_text(case.patient_name)
    expect(_fact(board, "State")).to_have_text("Awaiting records")
    board.get_by_label(re.compile(r"^Message to the referrer")).fill(MESSAGE)
    board.get_by_role("button", name="Send the message to the referrer").click()
    expect(board.get_by_role("status")).to_have_text("Your message was sent to the referrer.")
    expect(board.get_by_role("region", name="Missing records")).to_contain_text(MESSAGE)
    screenshot(board, "walk-board-case-messaged")
    assert console_errors(board) == []


def _ada_reads_the_case(desk: Page, case: SeededCase, delivered: DeliveredCase) -> list[str]:
    """The case page: the questions on top, the patient, the checklist, the timeline, the
    labs plotted, the pushed studies' thumbnails; the questions asked."""
    expect(desk.get_by_role("heading", level=1)).to_contain_text(case.patient_name)
    expect(desk.locator("main h2").first).to_have_text("Questions for the specialist")
    questions = desk.locator("ol.questions li").all_inner_texts()
    assert len(questions) == 2, questions
    patient = desk.get_by_role("region", name="Patient")
    expect(patient).to_contain_text("Born")
    checklist = desk.get_by_role("region", name="Records checklist")
    consent = checklist.get_by_role("listitem").filter(has_text="Legal consent for the review")
    expect(consent).to_contain_text("Present")
    expect(checklist.locator(".badge.missing")).to_have_count(0)  # every required record
    timeline = desk.get_by_role("table", name=re.compile("^Every record of the case"))
    assert timeline.locator("tbody tr").count() > 10
    expect(desk.locator("figure.plot svg").first).to_be_visible()
    thumbnails = desk.locator(".thumbnails img")
    expect(thumbnails).to_have_count(_series_pushed(delivered))
    for number in range(thumbnails.count()):
        image = thumbnails.nth(number)
        image.scroll_into_view_if_needed()
        expect(image).to_have_js_property("complete", True)
        assert image.evaluate("image => image.naturalWidth") > 0, image.get_attribute("src")
    # The record names studies its PACS did not send: the page says so, with no thumbnail.
    expect(desk.get_by_text(NOT_RECEIVED)).to_have_count(len(_studies_only_named(delivered)))
    screenshot(desk, "walk-specialist-case", full_page=False)
    return questions


def _ada_writes_the_opinion(desk: Page, questions: list[str]) -> None:
    """The form, the plan assessment chosen with the arrow keys and the draft saved with
    Tab and Enter."""
    desk.get_by_label(re.compile(r"^Conclusion")).fill(CONCLUSION)
    desk.keyboard.press("Tab")
    agree = desk.get_by_role("radio", name="Agree with the current treatment plan", exact=True)
    expect(agree).to_be_focused()
    desk.keyboard.press("ArrowDown")
    expect(desk.get_by_role("radio", name="Modify the current treatment plan")).to_be_checked()
    for number, question in enumerate(questions):
        desk.get_by_label(f"Answer to: {question}").fill(f"Answer {number + 1}: yes, see below.")
    desk.get_by_label(re.compile(r"^Recommendations")).fill("\n".join(RECOMMENDATIONS))
    desk.get_by_label(re.compile(r"^Clinical trials")).fill(TRIAL)
    tab_to(desk, desk.get_by_role("button", name="Save draft"))
    desk.keyboard.press("Enter")
    expect(desk.get_by_role("status")).to_have_text("The draft opinion is saved.")
    expect(desk.locator("#opinion")).to_contain_text("Status: preliminary")
    expect(desk.get_by_label(re.compile(r"^Conclusion"))).to_have_value(CONCLUSION)
    expect(desk.get_by_role("radio", name="Modify the current treatment plan")).to_be_checked()
    expect(desk.get_by_label(f"Answer to: {questions[1]}")).to_have_value(
        "Answer 2: yes, see below."
    )


def _ada_previews_and_signs(desk: Page, hub_server: str, case: SeededCase) -> None:
    preview = desk.get_by_role("link", name="Preview the letter (PDF)")
    expect(preview).to_have_attribute("href", f"/ui/cases/{case.task_id}/opinion.pdf")
    letter = desk.request.get(f"{hub_server}/ui/cases/{case.task_id}/opinion.pdf")
    assert letter.status == 200
    assert letter.headers["content-type"] == "application/pdf"
    assert letter.body().startswith(b"%PDF")
    confirm = desk.get_by_label("I have reviewed the preview and the opinion is complete")
    confirm.focus()
    desk.keyboard.press("Space")
    expect(confirm).to_be_checked()
    desk.keyboard.press("Tab")
    expect(desk.get_by_role("button", name="Sign and send the opinion")).to_be_focused()
    desk.keyboard.press("Enter")
    expect(desk.get_by_role("status")).to_have_text(
        "The opinion is signed and on its way to the referrer."
    )
    expect(desk.locator("#opinion")).to_contain_text("Status: final")
    assert console_errors(desk) == []


def _fact(page: Page, term: str) -> Locator:
    """The <dd> after the <dt> `term` of the board's case page."""
    return page.locator(f"dt:text-is('{term}') + dd")


def _complete(settings: Settings, case: SeededCase) -> bool:
    return case_status(settings, case)[1] == "records-complete"


def _series_pushed(delivered: DeliveredCase) -> int:
    return sum(
        len({dataset.SeriesInstanceUID for dataset in datasets})
        for datasets in delivered.outside.dicom.values()
    )


def _studies_only_named(delivered: DeliveredCase) -> set[str]:
    """The StudyInstanceUIDs of the record's ImagingStudies that its PACS did not push."""
    named = {
        identifier["value"].removeprefix("urn:oid:")
        for entry in delivered.outside.record["entry"]
        if entry["resource"]["resourceType"] == "ImagingStudy"
        for identifier in entry["resource"].get("identifier", [])
        if identifier.get("system") == "urn:dicom:uid"
    }
    return named - set(delivered.studies)


def _their_patient(delivered: DeliveredCase) -> str:
    """The child's id on the referrer's FHIR server (the record the hub pulled)."""
    return next(
        str(entry["resource"]["id"])
        for entry in delivered.outside.record["entry"]
        if entry["resource"]["resourceType"] == "Patient"
    )


def _their_report(peer: FhirPeer, report_id: str) -> dict[str, Any] | None:
    """The opinion as the referrer's FHIR server holds it: a FHIR search over HTTP."""
    found = httpx.get(
        f"{peer.base_url}/DiagnosticReport",
        params={"identifier": f"{OPINION_SYSTEM}|{report_id}"},
        headers={"Accept": FHIR_JSON["Accept"]},
        timeout=30,
    )
    found.raise_for_status()
    entries = found.json().get("entry") or []
    return entries[0]["resource"] if entries else None


def _wait_until(what: str, seconds: float, check: Callable[[], Any]) -> Any:
    """Poll `check` until it returns something true; its value. Fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what}")
        time.sleep(0.2)
