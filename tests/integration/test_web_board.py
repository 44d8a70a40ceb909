"""The case managers' board (/ui/board), signed in with a session cookie: their program's
cases by state with the clock and the missing records, the filters, reassigning a case and
writing to the referrer (both audited), and what is refused (another program's case,
another role, no session, a form without its token)."""

from __future__ import annotations

import hashlib
import hmac
import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml
from fastapi.testclient import TestClient

import hub.web.board as board_module
from hub import codes
from hub.fhir.dates import utc_now
from hub.jobs.worker import JobWorker
from hub.runtime import job_handlers
from hub.settings import Settings
from hub.workflow.checklist import CHECK_RECORDS_JOB
from hub.workflow.routing import DEFAULT_TABLE, ICD10CM, use_routing_file
from tests.backends import sqlite_only
from tests.fhir_client import bearer, patient, post, referral, token

FHIR = {"Content-Type": "application/fhir+json"}
FORM = "application/x-www-form-urlencoded"


@dataclass
class Cases:
    client: TestClient
    settings: Settings
    manager: str
    """The session token of an oncology case manager."""
    ada: str
    ben: str
    doctor: str
    on_clock: str
    """An oncology case whose records are complete (Ada's)."""
    awaiting: str
    """An oncology case still awaiting records (Ben's)."""
    other: str
    """A hematology case."""


def practitioner(client: TestClient, given: str, family: str) -> str:
    resource = {"resourceType": "Practitioner", "name": [{"given": [given], "family": family}]}
    return post(client, resource, **FHIR)["id"]


def refer(client: TestClient, family: str, code: str, doctor: str) -> str:
    child = post(client, patient(family), **FHIR)["id"]
    sent = referral(
        f"Patient/{child}",
        requester={"reference": f"Practitioner/{doctor}"},
        reasonCode=[{"coding": [{"system": ICD10CM, "code": code}]}],
    )
    request = post(client, sent, **FHIR)
    tasks = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"})
    return str(tasks.json()["entry"][0]["resource"]["id"])


@pytest.fixture
def cases(client: TestClient, settings: Settings, tmp_path: Path) -> Iterator[Cases]:
    """Two oncology cases (one on the clock, one awaiting records, both asked of the
    referrer by the completeness job) and a hematology case; oncology's pool: Ada, Ben."""
    ada, ben = practitioner(client, "Ada", "Lovelace"), practitioner(client, "Ben", "Okafor")
    doctor = practitioner(client, "Adaeze", "Whitlock")
    table = yaml.safe_load(DEFAULT_TABLE.read_text())
    table["routing"]["pools"] = {"oncology": [ada, ben]}
    routing_file = tmp_path / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(table))
    use_routing_file(routing_file)
    try:
        on_clock = refer(client, "Alpha", "C40.0", doctor)
        awaiting = refer(client, "Bravo", "C40.2", doctor)
        other = refer(client, "Hidden", "D61.9", doctor)
        sessions = client.app.state.hub.sessions  # type: ignore[attr-defined]
        check = {CHECK_RECORDS_JOB: job_handlers(settings)[CHECK_RECORDS_JOB]}
        JobWorker(sessions, check).run_until_idle()
        manager = token(
            settings,
            subject="cm-1",
            roles=("case-manager",),
            scope="user/*.cruds",
            programs=("oncology",),
        )
        moved = client.post(
            f"/fhir/Task/{on_clock}/$transition",
            json={
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "status", "valueCode": "received"},
                    {"name": "businessStatus", "valueCode": "records-complete"},
                ],
            },
            headers={**FHIR, "Authorization": f"Bearer {manager}"},
        )
        assert moved.status_code == 200, moved.text
        yield Cases(client, settings, manager, ada, ben, doctor, on_clock, awaiting, other)
    finally:
        use_routing_file(DEFAULT_TABLE)


def page(client: TestClient, path: str, session: str | None, **params: Any) -> Any:
    cookie = {"Cookie": f"hub_session={session}"} if session else {}
    query = f"?{urlencode(params)}" if params else ""  # params={} would drop path's query
    return client.get(path + query, headers=cookie, follow_redirects=False)


def submit(client: TestClient, path: str, session: str, fields: dict[str, str]) -> Any:
    headers = {"Content-Type": FORM, "Cookie": f"hub_session={session}"}
    return client.post(path, content=urlencode(fields), headers=headers, follow_redirects=False)


def text(markup: str) -> str:
    """What a reader sees: tags dropped, entities decoded, white space collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def group(markup: str, key: str) -> str:
    """The text of one state group of the board ('' when the board has no such group)."""
    found = re.search(rf'<section aria-labelledby="group-{key}">(.*?)</section>', markup, re.S)
    return text(found.group(1)) if found else ""


def csrf_of(markup: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', markup)
    assert found, "the page has no form token"
    return found.group(1)


def form_token(session: str) -> str:
    """The form token of a session, as its pages carry it (hub.web.session.csrf_token)."""
    return hmac.new(session.encode(), b"hub-web-form", hashlib.sha256).hexdigest()[:40]


def case_row(markup: str, task_id: str) -> str:
    found = re.search(rf'<tr id="case-{task_id}">(.*?)</tr>', markup, re.S)
    assert found, f"case {task_id} is not on the board"
    return text(found.group(1))


def test_the_board_groups_the_programs_cases_by_state(
    cases: Cases, monkeypatch: pytest.MonkeyPatch
) -> None:
    response = page(cases.client, "/ui/board", cases.manager)
    assert response.status_code == 200, response.text
    board = response.text
    assert board.count("<h1>") == 1
    complete = group(board, "records-complete")
    assert f"Case {cases.on_clock[:8]}" in complete and f"Case {cases.awaiting[:8]}" not in complete
    row = case_row(board, cases.on_clock)
    assert "Sam Alpha" in row and "Ada Lovelace" in row and codes.PROGRAMS["oncology"] in row
    assert "7.0 business days left" in row and "On time" in row and "Routine" in row
    assert "Not checked at this stage" in row  # records complete: no checklist to show

    awaiting = group(board, "awaiting-records")
    assert f"Case {cases.awaiting[:8]}" in awaiting
    row = case_row(board, cases.awaiting)
    assert "Sam Bravo" in row and "Ben Okafor" in row and "Clock not started" in row
    assert "Missing Legal consent for the review (required)" in row
    assert "Records request from the hub to Adaeze Whitlock" in row
    assert "target set at routing" in row

    # Another program's case is not on the board, nor its patient.
    assert cases.other not in board and "Sam Hidden" not in board

    only_late = page(cases.client, "/ui/board", cases.manager, attention="true").text
    assert "No case matches this choice." in text(only_late)

    # A month later the case on the clock is overdue; the filter keeps only it.
    later = utc_now() + timedelta(days=30)
    monkeypatch.setattr(board_module, "utc_now", lambda: later)
    late = page(cases.client, "/ui/board", cases.manager, attention="true").text
    row = case_row(late, cases.on_clock)
    assert "Overdue" in row and "business days past due" in row
    assert cases.awaiting not in late
    complete_only = page(cases.client, "/ui/board", cases.manager, state="awaiting-records").text
    assert cases.awaiting in complete_only and cases.on_clock not in complete_only


def test_reassigning_a_case_moves_it_and_is_audited(cases: Cases) -> None:
    client, manager = cases.client, cases.manager
    board = page(client, "/ui/board", manager).text
    task_url = f"/fhir/Task/{cases.on_clock}"
    as_manager = {"Authorization": f"Bearer {manager}"}
    version = client.get(task_url, headers=as_manager).json()["meta"]["versionId"]
    form = {
        "csrf": csrf_of(board),
        "version": version,
        "specialist": cases.ben,
        "reason": "Ada is on leave this week",
        "back": "board",
    }
    moved = submit(client, f"/ui/board/cases/{cases.on_clock}/reassign", manager, form)
    assert moved.status_code == 303, moved.text
    assert moved.headers["location"].startswith("/ui/board?notice=reassigned")
    after = page(client, "/ui/board", manager, notice="reassigned").text
    assert "The case was reassigned" in text(after)
    assert "Ben Okafor" in case_row(after, cases.on_clock)

    task = client.get(task_url, headers=as_manager).json()
    assert task["owner"] == {"reference": f"Practitioner/{cases.ben}"}
    assert "Ada is on leave this week" in task["note"][-1]["text"]
    admin = bearer(cases.settings, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs")
    events = client.get(
        "/fhir/AuditEvent",
        params={"entity": f"Task/{cases.on_clock}", "subtype": "update"},
        headers=admin,
    ).json()
    writers = [
        event["resource"]["agent"][0]["who"]["identifier"]["value"]
        for event in events.get("entry", [])
    ]
    assert "cm-1" in writers

    # The form of a version since changed is refused, not applied over the change.
    stale = submit(client, f"/ui/board/cases/{cases.on_clock}/reassign", manager, form)
    assert stale.status_code == 412 and "reload the page and choose again" in text(stale.text)
    # Only a specialist of the program's pool can be chosen.
    outsider = {**form, "version": str(task["meta"]["versionId"]), "specialist": cases.doctor}
    refused = submit(client, f"/ui/board/cases/{cases.on_clock}/reassign", manager, outsider)
    assert refused.status_code == 400 and "is not a specialist" in text(refused.text)


def test_accepting_a_case_lets_its_specialist_work_it(cases: Cases) -> None:
    client, manager = cases.client, cases.manager
    as_manager = {"Authorization": f"Bearer {manager}"}
    task_url = f"/fhir/Task/{cases.on_clock}"
    version = client.get(task_url, headers=as_manager).json()["meta"]["versionId"]
    case_page = page(client, f"/ui/board/cases/{cases.on_clock}", manager).text
    assert "for review</button>" in case_page
    form = {"csrf": csrf_of(case_page), "version": version, "back": "case"}

    accepted = submit(client, f"/ui/board/cases/{cases.on_clock}/accept", manager, form)

    assert accepted.status_code == 303, accepted.text
    assert accepted.headers["location"] == f"/ui/board/cases/{cases.on_clock}?notice=accepted"
    task = client.get(task_url, headers=as_manager).json()
    assert task["status"] == "accepted"
    assert task["businessStatus"]["coding"][0]["code"] == "assigned"
    after = page(client, f"/ui/board/cases/{cases.on_clock}", manager, notice="accepted").text
    assert "The case is accepted" in text(after) and "for review</button>" not in after
    again = submit(client, f"/ui/board/cases/{cases.on_clock}/accept", manager, form)
    assert again.status_code == 412  # the page's version is gone: nothing is done twice


def test_a_message_to_the_referrer_is_a_communication_and_is_audited(cases: Cases) -> None:
    client, manager = cases.client, cases.manager
    case_page = page(client, f"/ui/board/cases/{cases.awaiting}", manager)
    assert case_page.status_code == 200
    assert "Sam Bravo" in text(case_page.text) and case_page.text.count("<h1>") == 1
    form = {
        "csrf": csrf_of(case_page.text),
        "message": "Please send the MRI of May.",
        "back": "case",
    }
    sent = submit(client, f"/ui/board/cases/{cases.awaiting}/message", manager, form)
    assert sent.status_code == 303, sent.text
    assert sent.headers["location"] == f"/ui/board/cases/{cases.awaiting}?notice=messaged"

    as_manager = {"Authorization": f"Bearer {manager}"}
    bundle = client.get(
        "/fhir/Communication", params={"based-on": f"Task/{cases.awaiting}"}, headers=as_manager
    ).json()
    messages = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["payload"][0]["contentString"] == "Please send the MRI of May."
    ]
    assert len(messages) == 1
    assert messages[0]["recipient"] == [{"reference": f"Practitioner/{cases.doctor}"}]
    admin = bearer(cases.settings, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs")
    events = client.get(
        "/fhir/AuditEvent",
        params={"entity": f"Communication/{messages[0]['id']}", "subtype": "create"},
        headers=admin,
    ).json()
    assert events["total"] == 1
    shown = text(page(client, f"/ui/board/cases/{cases.awaiting}", manager).text)
    assert "Message to Adaeze Whitlock" in shown and "Please send the MRI of May." in shown

    # A case of another program has no page for this case manager.
    assert page(client, f"/ui/board/cases/{cases.other}", manager).status_code == 404


@sqlite_only
def test_a_form_without_its_token_is_refused_and_changes_nothing(cases: Cases) -> None:
    client, manager = cases.client, cases.manager
    form = {"specialist": cases.ben, "reason": "no token", "back": "board"}
    refused = submit(client, f"/ui/board/cases/{cases.on_clock}/reassign", manager, form)
    assert refused.status_code == 400
    assert refused.headers["content-type"].startswith("text/html")
    assert "did not come from the hub's own page" in text(refused.text)
    task = client.get(
        f"/fhir/Task/{cases.on_clock}", headers={"Authorization": f"Bearer {manager}"}
    )
    assert task.json()["owner"] == {"reference": f"Practitioner/{cases.ada}"}


@sqlite_only
def test_only_case_managers_see_the_board(cases: Cases) -> None:
    client, settings = cases.client, cases.settings
    specialist = token(
        settings,
        subject="dr-ada",
        roles=("specialist",),
        scope="user/*.rs",
        fhir_user=f"Practitioner/{cases.ada}",
    )
    referrer = token(settings, subject="ehr-2", roles=("referrer",))
    for session in (specialist, referrer):
        refused = page(client, "/ui/board", session)
        assert refused.status_code == 403
        assert "This page is for the case-manager role." in text(refused.text)
        form = {"csrf": form_token(session), "specialist": cases.ben, "reason": "x"}
        posted = submit(client, f"/ui/board/cases/{cases.on_clock}/reassign", session, form)
        assert posted.status_code == 403
    anonymous = page(client, "/ui/board", None, state="open")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/ui/login?next=/ui/board%3Fstate%3Dopen"
    unknown = page(client, "/ui/board", cases.manager, state="nonsense")
    assert unknown.status_code == 400 and "not a state of the board" in text(unknown.text)
