"""Hospital IT's pages (/ui/it), signed in with a session cookie: the message log (search,
paging, one message with its conversion report, replay), the connectors' state, the dead
letters (replay), the configuration check with line numbers, and who may see them."""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import hub.web.it_messages as it_messages
from connectors.base import Envelope
from connectors.hl7v2_mllp import MllpListenerConfig
from hub.app import create_app
from hub.fhir.dates import utc_now
from hub.jobs.worker import JobWorker
from hub.messages.intake import MAP_JOB
from hub.messages.outbound import DELIVER_JOB, MllpDestination, queue_outbound
from hub.settings import REPO_ROOT, Settings
from hub.storage.tables import JobRow, MessageRow
from mappings.hl7v2.tokenizer import parse_message
from tests.backends import sqlite_only
from tests.fhir_client import bearer, path_jobs, token
from tests.hl7_samples import CASES

FORM = "application/x-www-form-urlencoded"
OPINION = (
    "MSH|^~\\&|HUB|SOH|EHR|ST-MARY|20261101120000||MDM^T02^MDM_T02|OUT-1|P|2.5.1\r"
    "PID|1||P-1^^^ST-MARY^MR||Testchild^Mia||20150101|F\r"
    "TXA|1|CN|TX|20261101120000||||||||DOC-1||||||AU\r"
    "OBX|1|TX|11488-4^Consult note^LN||We agree with the current plan.||||||F\r"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Site:
    client: TestClient
    settings: Settings
    admin: str
    """The session token of a hospital IT admin."""
    oru: int
    adt: int
    out: int
    """The message log ids: a radiology result with a Z-segment, an admission, and an
    opinion to a destination that never answers (dead after its one attempt)."""
    port: int

    def sessions(self) -> Any:
        return self.client.app.state.hub.sessions  # type: ignore[attr-defined]


@pytest.fixture
def site(settings: Settings, tmp_path: Path) -> Iterator[Site]:
    port = free_port()
    checklist = tmp_path / "checklist.yaml"
    checklist.write_text((REPO_ROOT / "config" / "checklist.yaml").read_text())
    destination = MllpDestination(
        name="down-peer", host="127.0.0.1", port=port, max_attempts=1, connect_timeout_seconds=2
    )
    configured = settings.model_copy(
        update={
            "mllp_listeners": [MllpListenerConfig(name="st-mary", port=0)],
            "mllp_destinations": [destination],
            "checklist_file": checklist,
        }
    )
    app = create_app(configured)
    with TestClient(app, raise_server_exceptions=False) as client:
        intake = app.state.intake
        ids = [
            intake.receive(
                Envelope(CASES[case](), transport="mllp", channel="st-mary", peer="10.1.2.3:5000")
            ).message_id
            for case in ("oru_r01_radiology_v28", "adt_a01_v251")
        ]
        sessions = app.state.hub.sessions
        with sessions.begin() as session:
            out = queue_outbound(session, destination, OPINION.encode())
        JobWorker(sessions, path_jobs(configured)).run_until_idle()
        admin = token(configured, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs")
        yield Site(client, configured, admin, ids[0], ids[1], out, port)


def page(client: TestClient, path: str, session: str | None, **params: Any) -> Any:
    cookie = {"Cookie": f"hub_session={session}"} if session else {}
    query = f"?{urlencode(params)}" if params else ""  # params={} would drop path's query
    return client.get(path + query, headers=cookie, follow_redirects=False)


def submit(client: TestClient, path: str, session: str, fields: dict[str, str]) -> Any:
    headers = {"Content-Type": FORM, "Cookie": f"hub_session={session}"}
    return client.post(path, content=urlencode(fields), headers=headers, follow_redirects=False)


def form_token(session: str) -> str:
    """The form token of a session, as its pages carry it (hub.web.session.csrf_token)."""
    return hmac.new(session.encode(), b"hub-web-form", hashlib.sha256).hexdigest()[:40]


def text(markup: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", markup)).split())


def listed(markup: str) -> list[int]:
    """The message ids the log page lists, in order."""
    return [int(i) for i in re.findall(r'href="/ui/it/messages/(\d+)"', markup)]


def rows(markup: str) -> list[str]:
    return [text(row) for row in re.findall(r"<tr>(.*?)</tr>", markup, re.S)]


def test_the_message_log_is_searched_read_and_replayed(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, admin = site.client, site.admin
    everything = page(client, "/ui/it/messages", admin)
    assert everything.status_code == 200 and everything.text.count("<h1>") == 1
    assert listed(everything.text) == [site.out, site.adt, site.oru]
    assert listed(page(client, "/ui/it/messages", admin, type="ORU^R01").text) == [site.oru]
    adt_sender = "RBCH_EHR/RBCH"
    assert listed(page(client, "/ui/it/messages", admin, sender=adt_sender).text) == [site.adt]
    assert listed(page(client, "/ui/it/messages", admin, status="dead").text) == [site.out]
    control = parse_message(CASES["adt_a01_v251"]()).control_id
    by_control = page(client, "/ui/it/messages", admin, control_id=control, direction="in")
    assert listed(by_control.text) == [site.adt]
    tomorrow = (utc_now() + timedelta(days=1)).date().isoformat()
    later = page(client, "/ui/it/messages", admin, since=tomorrow, sender="", type="")
    assert listed(later.text) == [] and "No message matches." in text(later.text)
    today = utc_now().date().isoformat()
    assert len(listed(page(client, "/ui/it/messages", admin, since=today, until=today).text)) == 3
    bad = page(client, "/ui/it/messages", admin, since="last week")
    assert bad.status_code == 400 and "since=last week is not a date" in text(bad.text)

    monkeypatch.setattr(it_messages, "PAGE_SIZE", 2)
    first = page(client, "/ui/it/messages", admin, direction="").text
    assert listed(first) == [site.out, site.adt] and "Messages 1 to 2 of 3" in text(first)
    following = re.search(r'href="([^"]+)">Next page', first)
    assert following, "no link to the next page"
    second = page(client, html.unescape(following.group(1)), admin).text
    assert listed(second) == [site.oru] and "Messages 3 to 3 of 3" in text(second)
    assert "Previous page" in second and "Next page" not in second

    shown = page(client, f"/ui/it/messages/{site.oru}", admin)
    assert shown.status_code == 200, shown.text
    raw = re.search(r'<pre aria-labelledby="raw-heading"[^>]*>(.*?)</pre>', shown.text, re.S)
    assert raw is not None
    segments = html.unescape(raw.group(1)).splitlines()
    assert segments[0].startswith("MSH|") and any(s.startswith("ZPI|") for s in segments)
    assert "MSA|AA" in text(shown.text)
    not_mapped = shown.text.split('id="not-mapped-heading"')[1].split("</table>")[0]
    zpi = [row for row in rows(not_mapped) if row.startswith("ZPI-")]
    assert zpi and all(
        "not mapped" in row and len(row.split("not mapped", 1)[1]) > 3 for row in zpi
    )
    assert re.search(r"<li>Patient/[^<]+</li>", shown.text)
    audit = bearer(site.settings, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs")
    events = client.get("/fhir/AuditEvent", params={"subtype": "read"}, headers=audit).json()
    described = [e["resource"].get("outcomeDesc") for e in events.get("entry", [])]
    assert f"message log entry {site.oru}" in described

    no_token = submit(client, f"/ui/it/messages/{site.oru}/replay", admin, {})
    assert no_token.status_code == 400
    replayed = submit(
        client, f"/ui/it/messages/{site.oru}/replay", admin, {"csrf": form_token(admin)}
    )
    assert replayed.status_code == 303
    assert replayed.headers["location"] == f"/ui/it/messages/{site.oru}?notice=replayed"
    with site.sessions()() as session:
        jobs = session.scalars(
            select(JobRow.status).where(JobRow.kind == MAP_JOB, JobRow.subject == str(site.oru))
        ).all()
        assert sorted(jobs) == ["done", "pending"]
        assert session.get(MessageRow, site.oru).status == "accepted"  # type: ignore[union-attr]
    again = page(client, f"/ui/it/messages/{site.oru}", admin, notice="replayed")
    assert "queued to be mapped again" in text(again.text)


def test_connectors_and_dead_letters(site: Site) -> None:
    client, admin = site.client, site.admin
    connectors = page(client, "/ui/it/connectors", admin)
    assert connectors.status_code == 200, connectors.text
    table = {row.split()[0]: row for row in rows(connectors.text) if row}
    listener = table["st-mary"]
    assert "Working" in listener and "listening on port" in listener
    assert f"message {site.adt} ADT^A01" in listener  # the newest message it took
    peer = table["down-peer"]
    assert "Failing" in peer and f"127.0.0.1:{site.port}" in peer
    assert f"message {site.out} OUT-1: attempt 1" in peer and "None yet" in peer

    letters = page(client, "/ui/it/dead-letters", admin)
    assert letters.status_code == 200
    (letter,) = [row for row in rows(letters.text) if "Deliver an HL7 v2 message" in row]
    assert f"down-peer (127.0.0.1:{site.port})" in letter and "1 of 1" in letter
    assert f"message {site.out}" in letter
    with site.sessions()() as session:
        job = session.scalars(
            select(JobRow).where(JobRow.kind == DELIVER_JOB, JobRow.subject == str(site.out))
        ).one()
        job_id = job.job_id
        assert job.status == "dead"
    path = f"/ui/it/dead-letters/{job_id}/replay"
    assert submit(client, path, admin, {}).status_code == 400  # no form token: nothing moves
    replayed = submit(client, path, admin, {"csrf": form_token(admin)})
    assert replayed.status_code == 303
    assert replayed.headers["location"] == "/ui/it/dead-letters?notice=replayed"
    with site.sessions()() as session:
        job = session.get(JobRow, job_id)
        assert job is not None
        assert (job.status, job.attempts, job.last_error) == ("pending", 0, None)
    after = text(page(client, "/ui/it/dead-letters", admin, notice="replayed").text)
    assert "There are no dead letters." in after and "back in the queue" in after
    twice = submit(client, path, admin, {"csrf": form_token(admin)})
    assert twice.status_code == 404 and "is not a dead letter" in text(twice.text)


BROKEN_ROUTING = """routing:
  rules:
    - program: oncology
      icd10: [C]
    - program: oncolgy
      icd10: [D]
"""


@sqlite_only
def test_the_configuration_check_names_the_line_of_each_problem(site: Site) -> None:
    client, admin = site.client, site.admin
    checked = page(client, "/ui/it/config", admin)
    assert checked.status_code == 200 and checked.text.count("<h1>") == 1
    assert text(checked.text).count("No problems found") == 3

    lines = site.settings.checklist_file.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip() == "- id: recent-labs")
    lines.insert(at + 2, "    within_dayz: 90")  # a misspelt key, at 1-based line at + 3
    site.settings.checklist_file.write_text("\n".join(lines) + "\n")
    broken = text(page(client, "/ui/it/config", admin).text)
    assert f"Line {at + 3} checklist.1.within_dayz: Extra inputs are not permitted" in broken
    assert broken.count("No problems found") == 2

    form = {"csrf": form_token(admin), "kind": "routing", "content": BROKEN_ROUTING}
    pasted = submit(client, "/ui/it/config/check", admin, form)
    assert pasted.status_code == 200
    result = text(pasted.text.split("<h3>Result</h3>")[1])
    assert "1 problem in the pasted file" in result
    assert "Line 5 routing.rules.1.program: Value error, unknown program 'oncolgy'" in result
    assert "program: oncolgy" in html.unescape(pasted.text)  # the text stays in the form
    syntax = submit(client, "/ui/it/config/check", admin, {**form, "content": "routing: [a\n"})
    assert "not valid YAML" in text(syntax.text)
    fixed = {**form, "content": BROKEN_ROUTING.replace("oncolgy", "hematology")}
    good = text(submit(client, "/ui/it/config/check", admin, fixed).text)
    assert "No problems found : the hub would load this file." in good
    refused = submit(client, "/ui/it/config/check", admin, {"kind": "routing", "content": "x"})
    assert refused.status_code == 400 and "reload the page" in text(refused.text)


@sqlite_only
def test_only_admins_see_the_it_pages(site: Site) -> None:
    manager = token(site.settings, subject="cm-1", roles=("case-manager",), scope="user/*.cruds")
    for path in ("/ui/it/connectors", "/ui/it/messages", f"/ui/it/messages/{site.oru}",
                 "/ui/it/dead-letters", "/ui/it/config"):  # fmt: skip
        refused = page(site.client, path, manager)
        assert refused.status_code == 403, path
        assert "This page is for the admin role." in text(refused.text)
        signed_out = page(site.client, path, None)
        assert signed_out.status_code == 303 and signed_out.headers["location"].startswith(
            "/ui/login?next="
        )
    posted = submit(site.client, f"/ui/it/messages/{site.oru}/replay", manager, {})
    assert posted.status_code == 403
