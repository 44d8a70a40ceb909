"""The opinion, end to end: the assigned specialist drafts it, signs it ($finalize: PDF,
signed Provenance, DocumentReference), and it goes back by the referral's channel — written
back to the referrer's own FHIR server (Medplum's, tests/fhir_peer) or sent as MDM^T02 to
the referrer's interface engine (python-hl7's MLLP server) —; on confirmation the case is
completed, and the referrer holds exactly one report however often the jobs run."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from connectors.fhir_rest.config import FhirSource, FhirWriteBack
from connectors.http import HttpRetry
from hub.app import create_app
from hub.jobs.worker import JobWorker
from hub.messages.outbound import MllpDestination
from hub.opinions import (
    ANSWER_QUESTION,
    ANSWER_TEXT,
    ANSWER_URL,
    CLINICAL_TRIAL_URL,
    PLAN_ASSESSMENT_URL,
    RECOMMENDATION_URL,
)
from hub.profiles import validate_content
from hub.profiles.canonical import REPORT_TYPE_SYSTEM, SECOND_OPINION_REPORT_CODE
from hub.records.write_back import OPINION_SYSTEM
from hub.runtime import job_handlers
from hub.security.keys import signing_key
from hub.settings import Settings
from hub.storage.repository import ResourceRepository
from hub.storage.tables import JobRow, MessageRow, OpinionDeliveryRow
from hub.workflow.opinions import verify
from tests.fhir_client import bearer, patient, post, referral
from tests.fhir_server_peer import FhirPeer
from tests.integration.test_hl7_end_to_end import mllp_send
from tests.integration.test_hl7_return_channel import (
    ref,
    return_route,
    whole_hub,
)
from tests.mllp_peer import hl7_peer, mllp_peer_process, received

QUESTIONS = ("Is proton therapy an option?",)  # the REF^I12 NTE of test_hl7_return_channel
SOURCE = "referrer-ehr"
REFERRER = "ehr-1"
MRN = {"system": "https://ehr.outside-childrens.example/mrn", "value": "MRN-4417"}


def opinion(patient_id: str, referral_id: str, **extra: Any) -> dict[str, Any]:
    """A complete draft: conclusion, verdict on the plan, recommendations, a trial, and an
    answer to the question the test referrals ask (if any)."""
    return {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "code": {
            "coding": [{"system": REPORT_TYPE_SYSTEM, "code": SECOND_OPINION_REPORT_CODE}],
            "text": "Second opinion",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "basedOn": [{"reference": f"ServiceRequest/{referral_id}"}],
        "conclusion": "Agree with the diagnosis; proton craniospinal irradiation is preferable.",
        "extension": [
            {"url": PLAN_ASSESSMENT_URL, "valueCode": "modify"},
            {"url": RECOMMENDATION_URL, "valueString": "Proton craniospinal irradiation."},
            {"url": CLINICAL_TRIAL_URL, "valueString": "NCT00000000 (synthetic trial)"},
            *(
                {
                    "url": ANSWER_URL,
                    "extension": [
                        {"url": ANSWER_QUESTION, "valueString": question},
                        {"url": ANSWER_TEXT, "valueString": "Yes: see the recommendations."},
                    ],
                }
                for question in QUESTIONS
            ),
        ],
        **extra,
    }


def specialist_of(settings: Settings, practitioner_id: str) -> dict[str, str]:
    """The headers of the specialist who is Practitioner/`practitioner_id`."""
    return bearer(
        settings,
        subject="dr-expert",
        roles=("specialist",),
        scope="user/*.cruds",
        fhir_user=f"Practitioner/{practitioner_id}",
    )


@dataclass
class Case:
    client: TestClient
    settings: Settings
    patient: str
    referral: str
    task: str
    specialist: dict[str, str]
    manager: dict[str, str]

    def run_jobs(self) -> None:
        sessions = self.client.app.state.hub.sessions  # type: ignore[attr-defined]
        JobWorker(sessions, job_handlers(self.settings)).run_until_idle()

    def task_state(self) -> tuple[str, str]:
        task = self.client.get(f"/fhir/Task/{self.task}", headers=self.manager).json()
        return task["status"], task["businessStatus"]["coding"][0]["code"]

    def draft(self, **extra: Any) -> dict[str, Any]:
        return post(self.client, opinion(self.patient, self.referral, **extra), **self.specialist)

    def finalize(self, report_id: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(
            f"/fhir/DiagnosticReport/{report_id}/$finalize", headers=headers or self.specialist
        )


def open_case(client: TestClient, settings: Settings, **referral_extra: Any) -> Case:
    """A referral by REFERRER, accepted and assigned to a specialist by a case manager."""
    manager = bearer(settings, subject="cm-1", roles=("case-manager",), scope="user/*.cruds")
    doctor = post(
        client,
        {"resourceType": "Practitioner", "name": [{"family": "Expert", "given": ["Ana"]}]},
        **manager,
    )
    specialist = specialist_of(settings, doctor["id"])
    referrer = bearer(settings, subject=REFERRER, roles=("referrer",), scope="system/*.cruds")
    child = post(client, patient(identifier=[MRN]), **referrer)
    request = post(client, referral(f"Patient/{child['id']}", **referral_extra), **referrer)
    task = client.get(
        "/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"}, headers=manager
    )
    content = task.json()["entry"][0]["resource"]
    content["owner"] = {"reference": f"Practitioner/{doctor['id']}"}
    content["status"] = "accepted"
    content["businessStatus"]["coding"][0]["code"] = "assigned"
    moved = client.put(f"/fhir/Task/{content['id']}", content=json.dumps(content), headers=manager)
    assert moved.status_code == 200, moved.text
    return Case(client, settings, child["id"], request["id"], content["id"], specialist, manager)


@pytest.fixture
def fhir_case(settings: Settings, fhir_peer: FhirPeer) -> Iterator[tuple[Case, FhirPeer]]:
    fhir_peer.reset()
    their_child = {"resourceType": "Patient", "id": "their-child", "identifier": [MRN]}
    fhir_peer.load(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": their_child,
                    "request": {"method": "PUT", "url": "Patient/their-child"},
                }
            ],
        }
    )
    source = FhirSource(
        name=SOURCE,
        base_url=fhir_peer.base_url,
        retry=HttpRetry(max_attempts=2, backoff_seconds=0.01),
        write_back=FhirWriteBack(referrers=(REFERRER,)),
    )
    configured = settings.model_copy(
        update={"fhir_sources": [source], "pull_missing_records": False}
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        yield open_case(client, configured), fhir_peer


def test_only_the_assigned_specialist_drafts_and_a_draft_moves_the_case(fhir_case) -> None:
    case, _ = fhir_case
    other = bearer(
        case.settings,
        subject="dr-other",
        roles=("specialist",),
        scope="user/*.cruds",
        fhir_user="Practitioner/someone-else",
    )
    refused = case.client.post(
        "/fhir/DiagnosticReport",
        content=json.dumps(opinion(case.patient, case.referral)),
        headers=other,
    )
    assert refused.status_code in (403, 404), refused.text
    final_at_once = case.client.post(
        "/fhir/DiagnosticReport",
        content=json.dumps(opinion(case.patient, case.referral, status="final")),
        headers=case.specialist,
    )
    assert final_at_once.status_code == 409
    assert "$finalize" in final_at_once.json()["issue"][0]["diagnostics"]
    draft = case.draft()
    assert case.task_state() == ("in-progress", "opinion-drafted")
    draft["conclusion"] = "Revised: agree with the diagnosis."
    changed = case.client.put(
        f"/fhir/DiagnosticReport/{draft['id']}", content=json.dumps(draft), headers=case.specialist
    )
    assert changed.status_code == 200, changed.text


def test_a_signed_opinion_goes_back_once_and_the_case_completes(fhir_case) -> None:
    case, peer = fhir_case
    draft = case.draft()
    assert case.finalize(draft["id"], headers=case.manager).status_code == 403
    signed = case.finalize(draft["id"])
    assert signed.status_code == 200, signed.text
    report = signed.json()
    assert report["status"] == "final"
    pdf = base64.b64decode(report["presentedForm"][0]["data"])
    assert pdf.startswith(b"%PDF")
    assert not [i for i in validate_content(report, base="models") if i.severity == "error"]
    with case.client.app.state.hub.sessions() as session:  # type: ignore[attr-defined]
        stored = ResourceRepository(session).read("DiagnosticReport", draft["id"])
    provenances = case.client.get(
        "/fhir/Provenance",
        params={"target": f"DiagnosticReport/{draft['id']}"},
        headers=case.manager,
    ).json()["entry"]
    key = signing_key(case.settings.signing_key_file)
    assert any(verify(stored, p["resource"], key) for p in provenances)
    tampered = replace(stored, content={**stored.content, "conclusion": "changed"})
    assert not any(verify(tampered, p["resource"], key) for p in provenances)
    documents = case.client.get(
        "/fhir/DocumentReference",
        params={"related": f"DiagnosticReport/{draft['id']}"},
        headers=case.manager,
    ).json()["entry"]
    assert [d["resource"]["status"] for d in documents] == ["current"]
    # A final opinion changes only by $amend.
    report["conclusion"] = "Silently changed"
    put = case.client.put(
        f"/fhir/DiagnosticReport/{draft['id']}", content=json.dumps(report), headers=case.specialist
    )
    assert put.status_code == 409 and "$amend" in put.text
    deleted = case.client.delete(f"/fhir/DiagnosticReport/{draft['id']}", headers=case.manager)
    assert deleted.status_code == 409 and "$amend" in deleted.text
    assert case.task_state() == ("in-progress", "opinion-drafted")  # not before confirmation
    case.run_jobs()
    case.run_jobs()
    assert case.task_state() == ("completed", "opinion-delivered")
    theirs = peer.resources("DiagnosticReport", identifier=f"{OPINION_SYSTEM}|{draft['id']}")
    assert len(theirs) == 1
    assert theirs[0]["subject"] == {"reference": "Patient/their-child"}
    with case.client.app.state.hub.sessions() as session:  # type: ignore[attr-defined]
        rows = session.scalars(select(OpinionDeliveryRow)).all()
        assert [(r.channel, r.target, r.status) for r in rows] == [("fhir", SOURCE, "delivered")]


def test_an_amendment_is_signed_with_its_reason_and_supersedes_the_document(fhir_case) -> None:
    case, peer = fhir_case
    draft = case.draft()
    final = case.finalize(draft["id"]).json()
    case.run_jobs()
    amended_content = {**final, "conclusion": "Amended: add a hearing test before cycle 4."}
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": amended_content},
            {"name": "reason", "valueString": "Audiology result arrived after signing"},
        ],
    }
    amended = case.client.post(
        f"/fhir/DiagnosticReport/{draft['id']}/$amend",
        content=json.dumps(parameters),
        headers=case.specialist,
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["status"] == "amended"
    assert amended.json()["meta"]["versionId"] != final["meta"]["versionId"]
    provenances = case.client.get(
        "/fhir/Provenance",
        params={"target": f"DiagnosticReport/{draft['id']}"},
        headers=case.manager,
    ).json()["entry"]
    reasons = [p["resource"].get("reason", [{}])[0].get("text") for p in provenances]
    assert "Audiology result arrived after signing" in reasons
    documents = case.client.get(
        "/fhir/DocumentReference",
        params={"related": f"DiagnosticReport/{draft['id']}"},
        headers=case.manager,
    ).json()["entry"]
    assert sorted(d["resource"]["status"] for d in documents) == ["current", "superseded"]
    case.run_jobs()
    case.run_jobs()
    # The referrer holds one report, now the amended one.
    [theirs] = peer.resources("DiagnosticReport", identifier=f"{OPINION_SYSTEM}|{draft['id']}")
    assert theirs["status"] == "amended"
    assert theirs["conclusion"].startswith("Amended:")
    [their_document] = peer.resources(
        "DocumentReference", identifier=f"{OPINION_SYSTEM}|{draft['id']}"
    )
    assert (
        their_document["content"][0]["attachment"]["data"]
        == amended.json()["presentedForm"][0]["data"]
    )
    no_reason = {**parameters, "parameter": parameters["parameter"][:1]}
    refused = case.client.post(
        f"/fhir/DiagnosticReport/{draft['id']}/$amend",
        content=json.dumps(no_reason),
        headers=case.specialist,
    )
    assert refused.status_code == 400


def test_an_hl7_referral_gets_its_opinion_as_mdm_over_mllp(settings, tmp_path) -> None:
    """The referral from an HL7 v2 peer; the opinion to the referrer's interface engine, a
    listener in another process."""
    inbox = tmp_path / "inbox.jsonl"
    with (
        mllp_peer_process(inbox) as peer_port,
        whole_hub(settings, return_route(peer_port)) as hub,
    ):
        client, worker, port = hub
        acks = mllp_send(port, [ref("REF-7", "AL", "NE")], tmp_path)
        assert [a.split("|")[1:3] for a in acks] == [["CA", "REF-7"]]
        worker.run_until_idle()
        task_id, _, manager = _signed_opinion(client, settings)
        worker.run_until_idle()
        worker.run_until_idle()
        state = client.get(f"/fhir/Task/{task_id}", headers=manager).json()
        events = client.get(
            "/fhir/Communication", params={"based-on": state["focus"]["reference"]}, headers=manager
        ).json()["entry"]
        kept = received(inbox)
    documents = [m for m in kept if "|MDM^T02" in m.split("\r", 1)[0]]
    assert len(documents) == 1
    assert "proton" in documents[0].lower()
    assert state["status"] == "completed"
    texts = [e["resource"]["payload"][0]["contentString"] for e in events]
    assert any("Opinion signed: delivery to MDM^T02 to st-mary-return" in t for t in texts)
    assert any(t.startswith("Opinion delivered: MDM^T02") and "(CA)" in t for t in texts)


def test_over_a_faulty_link_the_opinion_arrives_once_under_one_control_id(
    settings, tmp_path
) -> None:
    """The referrer's engine drops the first three connections, answers AE once, then ACKs
    too late once: the hub resends the same message (one MSH-10, which the receiver
    de-duplicates on) until an AA matches it, and only that completes the case."""

    async def flaky(peer: Any, reader: Any, writer: Any, number: int) -> None:
        if number <= 3:
            return  # down: the connection closes before anything is read
        while True:
            message = await peer.read(reader)
            if len(peer.received) == 1:
                writer.writemessage(message.create_ack(ack_code="AE"))
            elif len(peer.received) == 2:
                await asyncio.sleep(LATE_ACK_SECONDS)
                writer.writemessage(message.create_ack(ack_code="AA"))
            else:
                writer.writemessage(message.create_ack(ack_code="AA"))
            await writer.drain()

    with hl7_peer(flaky) as peer:
        destination = MllpDestination(
            name="st-mary-return",
            host="127.0.0.1",
            port=peer.port,
            answers_for=["EHR/ST-MARY"],
            connect_timeout_seconds=5,
            ack_timeout_seconds=LATE_ACK_SECONDS / 4,
            max_attempts=8,
        )
        with whole_hub(settings, destination) as hub:
            client, worker, port = hub
            mllp_send(port, [ref("REF-8", "AL", "NE")], tmp_path)
            worker.run_until_idle()
            task_id, draft_id, manager = _signed_opinion(client, settings)
            sessions = client.app.state.hub.sessions  # type: ignore[attr-defined]
            for _ in range(8):  # a guard, not a timing expectation
                with sessions.begin() as session:  # the backoff's wait, skipped
                    session.execute(update(JobRow).values(run_after=JobRow.created_at))
                worker.run_until_idle()
                state = client.get(f"/fhir/Task/{task_id}", headers=manager).json()
                if state["status"] == "completed":
                    break
            with sessions() as session:
                [message] = session.scalars(
                    select(MessageRow).where(MessageRow.message_type.like("MDM%"))
                ).all()
                [delivery] = session.scalars(select(OpinionDeliveryRow)).all()
                status, ack_code, control = message.status, message.ack_code, message.control_id
    assert state["status"] == "completed"
    assert peer.connections >= 5
    assert peer.received == [control] * 3  # AE, the late ACK, AA: one message, resent
    assert (status, ack_code) == ("delivered", "AA")
    assert (delivery.report_id, delivery.status) == (draft_id, "delivered")


LATE_ACK_SECONDS = 1.2


def _signed_opinion(client: TestClient, settings: Settings) -> tuple[str, str, dict[str, str]]:
    """The HL7 case accepted, assigned, drafted and signed; (task id, report id, manager)."""
    manager = bearer(settings, subject="cm-1", roles=("case-manager",), scope="user/*.cruds")
    [entry] = client.get("/fhir/Task", headers=manager).json()["entry"]
    task = entry["resource"]
    doctor = post(client, {"resourceType": "Practitioner", "name": [{"family": "Expert"}]})
    specialist = specialist_of(settings, doctor["id"])
    task.update(owner={"reference": f"Practitioner/{doctor['id']}"}, status="accepted")
    task["businessStatus"]["coding"][0]["code"] = "assigned"
    moved = client.put(f"/fhir/Task/{task['id']}", content=json.dumps(task), headers=manager)
    assert moved.status_code == 200, moved.text
    referral_id = task["focus"]["reference"].split("/")[1]
    patient_id = task["for"]["reference"].split("/")[1]
    draft = post(client, opinion(patient_id, referral_id), **specialist)
    signed = client.post(f"/fhir/DiagnosticReport/{draft['id']}/$finalize", headers=specialist)
    assert signed.status_code == 200, signed.text
    return task["id"], draft["id"], manager


def test_an_opinion_is_signed_only_when_it_answers_every_question(fhir_case) -> None:
    case, _ = fhir_case
    question = {"text": "Would a second resection change the plan?"}
    with case.client.app.state.hub.sessions.begin() as session:  # type: ignore[attr-defined]
        referral = ResourceRepository(session).read("ServiceRequest", case.referral)
        ResourceRepository(session).update(
            "ServiceRequest", case.referral, {**referral.content, "note": [question]}
        )
    bare = opinion(case.patient, case.referral)
    bare["extension"] = [e for e in bare["extension"] if e["url"] == RECOMMENDATION_URL]
    draft = post(case.client, bare, **case.specialist)
    refused = case.finalize(draft["id"])
    assert refused.status_code == 422
    problems = [i["diagnostics"] for i in refused.json()["issue"]]
    assert any("agrees with, modifies or disagrees" in p for p in problems)
    assert any("question 1 has no answer" in p for p in problems)
    draft["extension"] = opinion(case.patient, case.referral)["extension"] + [
        {
            "url": ANSWER_URL,
            "extension": [
                {"url": ANSWER_QUESTION, "valueString": question["text"]},
                {"url": ANSWER_TEXT, "valueString": "No."},
            ],
        }
    ]
    updated = case.client.put(
        f"/fhir/DiagnosticReport/{draft['id']}", content=json.dumps(draft), headers=case.specialist
    )
    assert updated.status_code == 200, updated.text
    assert case.finalize(draft["id"]).status_code == 200


def test_after_the_opinion_the_family_moves_care(fhir_case) -> None:
    case, _ = fhir_case
    draft = case.draft()
    too_early = case.client.post(
        f"/fhir/Task/{case.task}/$transfer-care",
        content=json.dumps(_reason("Closer to home")),
        headers=case.manager,
    )
    assert too_early.status_code == 409
    case.finalize(draft["id"])
    case.run_jobs()
    assert case.task_state() == ("completed", "opinion-delivered")
    not_a_manager = case.client.post(
        f"/fhir/Task/{case.task}/$transfer-care",
        content=json.dumps(_reason("Closer to home")),
        headers=case.specialist,
    )
    assert not_a_manager.status_code == 403
    moved = case.client.post(
        f"/fhir/Task/{case.task}/$transfer-care",
        content=json.dumps(_reason("The family moves closer to the reviewing center")),
        headers=case.manager,
    )
    assert moved.status_code == 201, moved.text
    request = moved.json()
    assert request["category"][0]["coding"][0]["code"] == "transfer-of-care"
    assert request["basedOn"] == [{"reference": f"ServiceRequest/{case.referral}"}]
    assert request["supportingInfo"] == [{"reference": f"DiagnosticReport/{draft['id']}"}]
    referrer = bearer(case.settings, subject=REFERRER, roles=("referrer",), scope="system/*.cruds")
    seen = case.client.get(f"/fhir/ServiceRequest/{request['id']}", headers=referrer)
    assert seen.status_code == 200  # the referrer reads the request about its referral


def _reason(text: str) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": text}]}
