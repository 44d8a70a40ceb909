"""The opinion back to the referrer's own FHIR server (Medplum's FHIR router, tests/fhir_peer),
on both backends: what the referrer holds afterwards, that a replay makes nothing twice, and
that a refusal lands in the dead letters and is delivered once replayed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.fhir_rest.config import FhirSource, FhirWriteBack
from connectors.http import HttpRetry
from hub.app import create_app
from hub.demo.outside_record import build_outside_record, patient_id
from hub.fhir.interactions import FhirInteractions
from hub.jobs.worker import JobWorker
from hub.records.write_back import OPINION_SYSTEM, WRITE_BACK_JOB
from hub.runtime import job_handlers
from hub.settings import Settings
from hub.storage.tables import JobRow, ResourceRow
from tests.fhir_client import bearer, post, referral
from tests.fhir_server_peer import FhirPeer

SOURCE = "referrer-ehr"
ORDERS = "https://ehr.outside-childrens.example/orders"
PDF = b"%PDF-1.4\n% a synthetic opinion\n%%EOF\n"


@dataclass
class WriteBack:
    client: TestClient
    settings: Settings
    peer: FhirPeer
    task_id: str
    report_id: str
    their_patient: str
    their_task: str

    def send(self) -> Any:
        manager = bearer(
            self.settings, subject="cm-1", roles=("case-manager",), scope="user/*.cruds"
        )
        return self.client.post(
            f"/records/cases/{self.task_id}/$send-opinion",
            json={"source": SOURCE, "report": f"DiagnosticReport/{self.report_id}"},
            headers=manager,
        )

    def run_jobs(self) -> None:
        sessions = self.client.app.state.hub.sessions  # type: ignore[attr-defined]
        JobWorker(sessions, job_handlers(self.settings)).run_until_idle()

    def job(self) -> JobRow:
        with self.client.app.state.hub.sessions() as session:  # type: ignore[attr-defined]
            job = session.scalars(select(JobRow).where(JobRow.kind == WRITE_BACK_JOB)).all()[-1]
            session.expunge(job)
            return job

    def case_events(self) -> list[str]:
        with self.client.app.state.hub.sessions() as session:  # type: ignore[attr-defined]
            rows = session.scalars(
                select(ResourceRow.content).where(ResourceRow.res_type == "Communication")
            )
            return [json.loads(r)["payload"][0]["contentString"] for r in rows]

    def theirs(self, resource_type: str) -> list[dict[str, Any]]:
        return self.peer.resources(resource_type, identifier=f"{OPINION_SYSTEM}|{self.report_id}")


@pytest.fixture
def write_back(settings: Settings, fhir_peer: FhirPeer) -> Iterator[WriteBack]:
    """The referrer's server holds the child, its order for a second opinion and a Task for
    it; the hub holds the case and its finished opinion (a DiagnosticReport with a PDF)."""
    fhir_peer.reset()
    record = build_outside_record(resources=100, cancer="b-all-relapsed", seed=21)
    fhir_peer.load(record)
    their_patient = patient_id(record)
    order = {"system": ORDERS, "value": "SO-2026-0042"}
    fhir_peer.load(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": {
                        "resourceType": "ServiceRequest",
                        "id": "so-order",
                        "identifier": [order],
                        "status": "active",
                        "intent": "order",
                        "subject": {"reference": f"Patient/{their_patient}"},
                    },
                    "request": {"method": "PUT", "url": "ServiceRequest/so-order"},
                },
                {
                    "resource": {
                        "resourceType": "Task",
                        "id": "so-task",
                        "status": "requested",
                        "intent": "order",
                        "focus": {"reference": "ServiceRequest/so-order"},
                        "for": {"reference": f"Patient/{their_patient}"},
                    },
                    "request": {"method": "PUT", "url": "Task/so-task"},
                },
            ],
        }
    )
    source = FhirSource(
        name=SOURCE,
        base_url=fhir_peer.base_url,
        retry=HttpRetry(max_attempts=2, backoff_seconds=0.01),
        write_back=FhirWriteBack(),
    )
    configured = settings.model_copy(update={"fhir_sources": [source]})
    outside = next(
        e["resource"] for e in record["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        headers = {
            **bearer(configured, subject="ehr-1", roles=("referrer",), scope="system/*.cruds"),
            "Content-Type": "application/fhir+json",
        }
        child = {
            "resourceType": "Patient",
            "name": outside["name"],
            "birthDate": outside["birthDate"],
            "identifier": [
                {k: v for k, v in i.items() if k != "assigner"} for i in outside["identifier"]
            ],
        }
        patient = post(client, child, **headers)
        request = post(client, referral(f"Patient/{patient['id']}", identifier=[order]), **headers)
        tasks = client.get("/fhir/Task", params={"patient": patient["id"]}, headers=headers)
        task_id = tasks.json()["entry"][0]["resource"]["id"]
        with client.app.state.hub.sessions() as session:  # type: ignore[attr-defined]
            interactions = FhirInteractions(session)
            opinion, _ = interactions.create(
                "DiagnosticReport", _opinion(patient["id"], request["id"])
            )
            interactions.finish()
            session.commit()
        yield WriteBack(
            client, configured, fhir_peer, task_id, opinion.resource_id, their_patient, "so-task"
        )


def _opinion(patient: str, request: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "11488-4"}],
            "text": "Second opinion",
        },
        "subject": {"reference": f"Patient/{patient}"},
        "basedOn": [{"reference": f"ServiceRequest/{request}"}],
        "performer": [{"reference": f"Patient/{patient}", "display": "Synthetic Specialist, MD"}],
        "conclusion": "Agree with the relapse diagnosis; consider CAR-T after reinduction.",
        "presentedForm": [
            {"contentType": "application/pdf", "data": base64.b64encode(PDF).decode()}
        ],
    }


def test_the_referrer_receives_the_opinion_its_task_completes_and_it_is_told(
    write_back: WriteBack,
) -> None:
    assert write_back.send().status_code == 202
    write_back.run_jobs()
    assert write_back.job().status == "done"
    [report] = write_back.theirs("DiagnosticReport")
    assert report["subject"] == {"reference": f"Patient/{write_back.their_patient}"}
    assert report["basedOn"] == [{"reference": "ServiceRequest/so-order"}]
    assert base64.b64decode(report["presentedForm"][0]["data"]) == PDF
    assert report["performer"] == [{"display": "Synthetic Specialist, MD"}]  # our refs, as names
    [document] = write_back.theirs("DocumentReference")
    assert base64.b64decode(document["content"][0]["attachment"]["data"]) == PDF
    assert document["context"]["related"] == [{"reference": "ServiceRequest/so-order"}]
    [task] = write_back.peer.resources("Task", _id="so-task")
    assert task["status"] == "completed"
    assert task["output"][0]["valueReference"] == {"reference": f"DiagnosticReport/{report['id']}"}
    [note] = write_back.theirs("Communication")
    assert {"reference": "Task/so-task"} in note["about"]
    assert any(
        f"Opinion delivered to {SOURCE}" in t and "Task/so-task completed" in t
        for t in write_back.case_events()
    )


def test_sending_again_makes_nothing_twice(write_back: WriteBack) -> None:
    for _ in range(2):
        assert write_back.send().status_code == 202
        write_back.run_jobs()
    for kind in ("DiagnosticReport", "DocumentReference", "Communication"):
        assert len(write_back.theirs(kind)) == 1, kind
    [task] = write_back.peer.resources("Task", _id="so-task")
    assert len(task["output"]) == 1


def test_a_refusal_goes_to_the_dead_letters_and_a_replay_delivers(write_back: WriteBack) -> None:
    write_back.peer.set_faults(
        [
            {
                "method": "POST",
                "path_regex": "^/fhir/R4/DiagnosticReport",
                "count": 1,
                "kind": "status",
                "status": 422,
            }
        ]
    )
    write_back.send()
    write_back.run_jobs()
    job = write_back.job()
    assert job.status == "dead" and "HTTP 422" in (job.last_error or "")
    assert any("could not be delivered" in t for t in write_back.case_events())
    assert write_back.theirs("DiagnosticReport") == []
    admin = bearer(write_back.settings, subject="it-1", roles=("admin",), scope="system/*.rs")
    dead = write_back.client.get("/admin/dead-letters", headers=admin).json()["jobs"]
    assert [j["id"] for j in dead] == [job.job_id]
    replayed = write_back.client.post(f"/admin/dead-letters/{job.job_id}/replay", headers=admin)
    assert replayed.status_code == 202
    write_back.run_jobs()
    assert write_back.job().status == "done"
    assert len(write_back.theirs("DiagnosticReport")) == 1
    assert len(write_back.theirs("DocumentReference")) == 1  # made by the first attempt, once


def test_only_a_cases_own_opinion_can_be_sent(write_back: WriteBack) -> None:
    manager = bearer(
        write_back.settings, subject="cm-1", roles=("case-manager",), scope="user/*.cruds"
    )
    refused = write_back.client.post(
        f"/records/cases/{write_back.task_id}/$send-opinion",
        json={"source": SOURCE, "report": "DiagnosticReport/not-there"},
        headers=manager,
    )
    assert refused.status_code == 400
    assert refused.json()["issue"][0]["expression"] == ["report"]
