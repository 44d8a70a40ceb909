"""A case's records against config/checklist.yaml: what is present and missing shows on the
case ($completeness); what no connector can fetch is asked of the referrer, once; what a
connector can fetch is pulled; when every required item is there the case moves to
records-complete by itself."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.fhir_rest.config import FhirSource
from hub.app import create_app
from hub.jobs.worker import JobWorker
from hub.runtime import job_handlers
from hub.settings import Settings
from hub.storage.tables import JobRow, RecordPullRow
from hub.workflow.checklist import load_checklist
from tests.fhir_client import patient, post, referral, token

THO = "http://terminology.hl7.org/CodeSystem"
REFERRED = datetime(2026, 11, 2, 9, 0)


def recent(days: int = 10) -> str:
    return (REFERRED - timedelta(days=days)).isoformat() + "Z"


def report(category: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "category": [{"coding": [{"system": f"{THO}/v2-0074", "code": category}]}],
        "code": {"text": text},
        "effectiveDateTime": recent(40),
    }


# One record per checklist item that a referrer or connector would send.
RECORDS: dict[str, dict[str, Any]] = {
    "patient-summary": {
        "resourceType": "Condition",
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C71.6"}]},
    },
    "recent-labs": {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": f"{THO}/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "effectiveDateTime": recent(),
        "valueQuantity": {"value": 11.2, "unit": "g/dL"},
    },
    "radiology-reports": report("RAD", "MRI brain and spine"),
    "operative-notes": {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11504-8"}]},
        "content": [{"attachment": {"contentType": "text/plain", "data": "T3BlcmF0aXZlIG5vdGU="}}],
    },
    "pathology-reports": report("SP", "Surgical pathology"),
    "molecular-testing": report("GE", "Tumour molecular profile"),
    "chemotherapy": {
        "resourceType": "MedicationAdministration",
        "status": "completed",
        "medicationCodeableConcept": {"text": "vincristine"},
        "effectiveDateTime": recent(60),
    },
    "radiation-summary": {
        "resourceType": "Procedure",
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "1217123003"}]},
    },
    "cross-sectional-imaging": {
        "resourceType": "ImagingStudy",
        "status": "available",
        "series": [
            {
                "uid": "2.25.1",
                "modality": {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "MR",
                },
            }
        ],
    },
    "treatment-plan": {"resourceType": "CarePlan", "status": "active", "intent": "plan"},
    "guardian-contact": {
        "resourceType": "RelatedPerson",
        "relationship": [{"coding": [{"system": f"{THO}/v3-RoleCode", "code": "MTH"}]}],
        "telecom": [{"system": "phone", "value": "555-0100"}],
    },
    "legal-consent": {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": f"{THO}/consentscope", "code": "treatment"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
    },
}
PATIENT_ELEMENT = {"RelatedPerson": "patient", "Consent": "patient"}


def about(child: str, item: str) -> dict[str, Any]:
    record = dict(RECORDS[item])
    record[PATIENT_ELEMENT.get(record["resourceType"], "subject")] = {
        "reference": f"Patient/{child}"
    }
    return record


class Hub:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.doctor = post(client, {"resourceType": "Practitioner", "name": [{"family": "Ref"}]})

    def refer(self, records: list[str]) -> tuple[str, str]:
        child = post(self.client, patient())["id"]
        for item in records:
            post(self.client, about(child, item))
        sent = referral(
            f"Patient/{child}",
            requester={"reference": f"Practitioner/{self.doctor['id']}"},
            reasonCode=[
                {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C71.6"}]}
            ],
            authoredOn=REFERRED.isoformat() + "Z",
        )
        request = post(self.client, sent)
        tasks = self.client.get("/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"})
        return child, tasks.json()["entry"][0]["resource"]["id"]

    def run_jobs(self) -> None:
        app = self.client.app
        JobWorker(app.state.hub.sessions, job_handlers(self.settings)).run_until_idle()  # type: ignore[attr-defined]

    def completeness(self, task: str) -> dict[str, dict[str, Any]]:
        response = self.client.get(f"/fhir/Task/{task}/$completeness")
        assert response.status_code == 200, response.text
        items = {}
        for parameter in response.json()["parameter"]:
            if parameter["name"] == "item":
                parts: dict[str, Any] = {}
                for part in parameter["part"]:
                    value = next(v for k, v in part.items() if k.startswith("value"))
                    parts.setdefault(part["name"], []).append(value)
                items[parts["id"][0]] = parts
        return items

    def business_status(self, task: str) -> str:
        body = self.client.get(f"/fhir/Task/{task}").json()
        return str(body["businessStatus"]["coding"][0]["code"])

    def requests_for_records(self, task: str) -> list[dict[str, Any]]:
        bundle = self.client.get("/fhir/Communication", params={"based-on": f"Task/{task}"})
        return [
            entry["resource"]
            for entry in bundle.json().get("entry", [])
            if entry["resource"].get("recipient")
        ]


@pytest.fixture
def hub(client: TestClient, settings: Settings) -> Hub:
    return Hub(client, settings)


def test_a_case_with_every_required_record_becomes_records_complete_by_itself(hub: Hub) -> None:
    child, task = hub.refer(list(RECORDS))
    assert hub.business_status(task) == "awaiting-records"
    hub.run_jobs()
    assert hub.business_status(task) == "records-complete"
    items = hub.completeness(task)
    assert set(items) == {item.id for item in load_checklist(hub.settings.checklist_file)}
    for item_id in RECORDS:
        assert items[item_id]["present"] == [True], item_id
        evidence = items[item_id]["evidence"][0]["reference"]
        assert hub.client.get(f"/fhir/{evidence}").status_code == 200
    # No pulls are configured and nothing is missing: nobody was asked for anything.
    assert hub.requests_for_records(task) == []


def test_missing_records_are_asked_of_the_referrer_once_then_arrive(hub: Hub) -> None:
    missing = ["molecular-testing", "legal-consent", "operative-notes"]
    child, task = hub.refer([item for item in RECORDS if item not in missing])
    hub.run_jobs()
    assert hub.business_status(task) == "awaiting-records"
    items = hub.completeness(task)
    assert sorted(i for i, parts in items.items() if parts["present"] == [False]) == sorted(
        [*missing, "biopsy-slides", "insurance"]
    )
    assert items["biopsy-slides"]["required"] == [False]
    (asked,) = hub.requests_for_records(task)
    titles = [item.title for item in load_checklist(hub.settings.checklist_file)]
    listed = [p["contentString"] for p in asked["payload"][1:]]
    assert sorted(listed) == sorted(
        t for t in titles if any(t == items[m]["title"][0] for m in missing)
    )
    assert asked["recipient"] == [{"reference": f"Practitioner/{hub.doctor['id']}"}]

    post(hub.client, about(child, "molecular-testing"))  # a record arriving re-checks
    hub.run_jobs()
    assert len(hub.requests_for_records(task)) == 2  # the shorter list is asked anew
    post(hub.client, about(child, "operative-notes"))
    post(hub.client, about(child, "legal-consent"))
    hub.run_jobs()
    assert hub.business_status(task) == "records-complete"
    assert len(hub.requests_for_records(task)) == 2


def test_a_configured_fhir_source_is_asked_first_and_only_once(
    settings: Settings,
) -> None:
    source = FhirSource(name="outside-ehr", base_url="http://127.0.0.1:9/fhir")
    configured = settings.model_copy(update={"fhir_sources": [source]})
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        client.headers["Authorization"] = f"Bearer {token(configured)}"
        hub = Hub(client, configured)
        child, task = hub.refer(["patient-summary"])
        sessions = client.app.state.hub.sessions  # type: ignore[attr-defined]
        handlers = job_handlers(configured)
        check = JobWorker(sessions, {"check-records": handlers["check-records"]})
        check.run_until_idle()
        with sessions() as session:
            pulls = session.scalars(select(RecordPullRow)).all()
            assert [(p.case_task_id, p.source, p.status) for p in pulls] == [
                (task, "outside-ehr", "queued")
            ]
        # While the pull may still bring them, the referrer is not asked for what it can
        # fetch; consent and a physician no connector fetches are asked at once.
        (asked,) = hub.requests_for_records(task)
        assert [p["contentString"] for p in asked["payload"][1:]] == [
            "Legal consent for the review"
        ]
        post(client, about(child, "recent-labs"))
        check.run_until_idle()
        with sessions() as session:
            jobs = session.scalars(select(JobRow).where(JobRow.kind == "pull-fhir-records")).all()
            assert len(jobs) == 1
