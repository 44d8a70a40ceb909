"""Batch and transaction Bundles (FHIR R4 §3.1.0.11) against the API, on both backends."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi.testclient import TestClient

from tests.fhir_client import patient, post, referral, row_counts

BASE = "http://testserver/fhir"
PATIENT_URN = "urn:uuid:9a4f0c1e-2b3d-4e5f-8a6b-7c8d9e0f1a2b"
OBSERVATION_URN = "urn:uuid:1b2c3d4e-5f60-4718-9a0b-c1d2e3f4a5b6"
REPORT_URN = "urn:uuid:c0ffee00-1234-4567-89ab-cdef01234567"
MRN_SYSTEM = "https://hospital.example/sid/mrn"


# -- builders --------------------------------------------------------------------------------


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def entry(
    method: str,
    url: str,
    resource: dict[str, Any] | None = None,
    full_url: str | None = None,
    **request: str,
) -> dict[str, Any]:
    result: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        result["resource"] = resource
    if full_url:
        result["fullUrl"] = full_url
    return result


def observation(subject: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {"value": 11.2, "unit": "g/dL"},
        **extra,
    }


def report(subject: str, result: str) -> dict[str, Any]:
    return {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
        "subject": {"reference": subject},
        "result": [{"reference": result}],
    }


def submit(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post("/fhir", content=json.dumps(body))


def created_reference(response_entry: dict[str, Any], resource_type: str) -> str:
    """`Type/id` from a 201 entry's location `{base}/Type/id/_history/1`."""
    response = response_entry["response"]
    assert response["status"] == "201 Created", response
    match = re.fullmatch(rf"{BASE}/({resource_type}/[^/]+)/_history/1", response["location"])
    assert match, response["location"]
    assert response["etag"] == 'W/"1"'
    return match.group(1)


def read(client: TestClient, reference: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{reference}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def search(client: TestClient, query: str) -> dict[str, Any]:
    response = client.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- transactions ----------------------------------------------------------------------------


def test_urn_uuid_references_are_rewritten_to_the_created_resources(client):
    response = submit(
        client,
        bundle(
            entry("POST", "Patient", patient("Urnchild"), PATIENT_URN),
            entry("POST", "Observation", observation(PATIENT_URN), OBSERVATION_URN),
            entry("POST", "DiagnosticReport", report(PATIENT_URN, OBSERVATION_URN), REPORT_URN),
        ),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "transaction-response"
    entries = body["entry"]
    assert len(entries) == 3
    # In request order, each with its status, location and etag.
    patient_ref = created_reference(entries[0], "Patient")
    observation_ref = created_reference(entries[1], "Observation")
    report_ref = created_reference(entries[2], "DiagnosticReport")

    stored_report = read(client, report_ref)
    assert stored_report["subject"]["reference"] == patient_ref
    assert stored_report["result"] == [{"reference": observation_ref}]
    assert read(client, observation_ref)["subject"]["reference"] == patient_ref
    assert read(client, patient_ref)["name"][0]["family"] == "Urnchild"
    assert "urn:uuid" not in json.dumps(stored_report)
    # The rewritten references are indexed, so searches by them find the new resources.
    by_subject = search(client, f"DiagnosticReport?subject={patient_ref}")
    assert [e["resource"]["id"] for e in by_subject["entry"]] == [report_ref.split("/")[1]]


def test_entries_may_reference_entries_that_come_later(client):
    response = submit(
        client,
        bundle(
            entry("POST", "DiagnosticReport", report(PATIENT_URN, OBSERVATION_URN), REPORT_URN),
            entry("POST", "Observation", observation(PATIENT_URN), OBSERVATION_URN),
            entry("POST", "Patient", patient("Latecomer"), PATIENT_URN),
        ),
    )

    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    report_ref = created_reference(entries[0], "DiagnosticReport")
    observation_ref = created_reference(entries[1], "Observation")
    patient_ref = created_reference(entries[2], "Patient")
    stored_report = read(client, report_ref)
    assert stored_report["subject"]["reference"] == patient_ref
    assert stored_report["result"] == [{"reference": observation_ref}]
    assert read(client, observation_ref)["subject"]["reference"] == patient_ref


def test_conditional_create_in_a_transaction_reuses_the_existing_resource(client):
    def run(value: float) -> list[dict[str, Any]]:
        mrn = patient("Conditional", identifier=[{"system": MRN_SYSTEM, "value": "MRN-77"}])
        response = submit(
            client,
            bundle(
                entry(
                    "POST",
                    "Patient",
                    mrn,
                    PATIENT_URN,
                    ifNoneExist=f"identifier={MRN_SYSTEM}|MRN-77",
                ),
                entry(
                    "POST",
                    "Observation",
                    observation(PATIENT_URN, valueQuantity={"value": value, "unit": "g/dL"}),
                ),
            ),
        )
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entry"]
        return entries

    first = run(11.2)
    patient_ref = created_reference(first[0], "Patient")

    second = run(12.5)
    assert second[0]["response"]["status"] == "200 OK"
    assert second[0]["response"]["location"] == f"{BASE}/{patient_ref}/_history/1"
    second_observation = read(client, created_reference(second[1], "Observation"))
    assert second_observation["subject"]["reference"] == patient_ref
    assert second_observation["valueQuantity"]["value"] == 12.5

    # Once the child has a case, what the caller may see is a subquery on the index: the
    # conditional match must still find the patient (and only once).
    post(client, referral(patient_ref))
    third = run(13.1)
    assert third[0]["response"]["location"] == f"{BASE}/{patient_ref}/_history/1"

    matches = search(client, f"Patient?identifier={MRN_SYSTEM}|MRN-77")
    assert matches["total"] == 1
    observations = search(client, f"Observation?subject={patient_ref}")
    assert observations["total"] == 3


def test_a_transaction_whose_last_entry_fails_stores_nothing(client, database_url):
    post(client, patient())
    before = row_counts(database_url)

    response = submit(
        client,
        bundle(
            entry("POST", "Patient", patient("Doomed"), PATIENT_URN),
            entry("POST", "Observation", observation(PATIENT_URN), OBSERVATION_URN),
            entry("POST", "DiagnosticReport", report(PATIENT_URN, OBSERVATION_URN)),
            entry("POST", "Observation", observation(PATIENT_URN, status="not-a-status")),
        ),
    )

    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[3].resource.status"]
    assert row_counts(database_url) == before
    assert search(client, "Patient?family=Doomed")["total"] == 0


def test_delete_post_put_get_run_in_that_order_and_answer_in_request_order(client):
    leaving = post(client, patient("Leaving"))
    staying = post(client, patient("Staying"))
    renamed = {**patient("Renamed"), "id": staying["id"]}

    response = submit(
        client,
        bundle(
            entry("GET", f"Patient/{staying['id']}"),
            entry("GET", "Patient?family=Arriving"),
            entry("GET", f"Patient?_id={leaving['id']}"),
            entry("PUT", f"Patient/{staying['id']}", renamed),
            entry("POST", "Patient", patient("Arriving")),
            entry("DELETE", f"Patient/{leaving['id']}"),
        ),
    )

    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert len(entries) == 6
    # GETs run last: the read sees the PUT, the searches see the POST and the DELETE.
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["resource"]["name"][0]["family"] == "Renamed"
    assert entries[0]["resource"]["meta"]["versionId"] == "2"
    arriving = entries[1]["resource"]
    assert arriving["type"] == "searchset" and arriving["total"] == 1
    assert arriving["entry"][0]["resource"]["name"][0]["family"] == "Arriving"
    assert entries[2]["resource"]["total"] == 0
    assert entries[3]["response"]["status"] == "200 OK"
    assert entries[3]["response"]["etag"] == 'W/"2"'
    arriving_ref = created_reference(entries[4], "Patient")
    assert arriving_ref == f"Patient/{arriving['entry'][0]['resource']['id']}"
    assert entries[5]["response"]["status"] == "204 No Content"
    assert client.get(f"/fhir/Patient/{leaving['id']}").status_code == 410


# -- batches ---------------------------------------------------------------------------------


def test_batch_runs_get_searches_and_reads(client):
    stored = post(client, patient("Searched"))
    post(client, patient("Other"))

    response = submit(
        client,
        bundle(
            entry("GET", "Patient?family=Searched"),
            entry("GET", f"Patient/{stored['id']}"),
            kind="batch",
        ),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "batch-response"
    searchset, read_entry = body["entry"]
    assert searchset["response"]["status"] == "200 OK"
    assert searchset["resource"]["type"] == "searchset"
    assert searchset["resource"]["total"] == 1
    assert searchset["resource"]["entry"][0]["resource"]["id"] == stored["id"]
    assert read_entry["response"]["status"] == "200 OK"
    assert read_entry["response"]["etag"] == 'W/"1"'
    assert read_entry["resource"]["name"][0]["family"] == "Searched"


def test_batch_stores_the_good_entries_and_reports_the_failing_one(client, database_url):
    subject = post(client, patient())
    before = row_counts(database_url)

    response = submit(
        client,
        bundle(
            entry("POST", "Patient", patient("BatchFirst")),
            entry("POST", "Observation", observation(f"Patient/{subject['id']}", status="bogus")),
            entry("POST", "Observation", observation(f"Patient/{subject['id']}")),
            kind="batch",
        ),
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "batch-response"
    first, failed, last = body["entry"]
    first_ref = created_reference(first, "Patient")
    last_ref = created_reference(last, "Observation")
    assert failed["response"]["status"].split()[0] == "422"
    outcome = failed["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"] and all(issue.get("diagnostics") for issue in outcome["issue"])
    assert [e for issue in outcome["issue"] for e in issue.get("expression", [])] == [
        "Bundle.entry[1].resource.status"
    ]
    assert "location" not in failed["response"]

    assert read(client, first_ref)["name"][0]["family"] == "BatchFirst"
    assert read(client, last_ref)["subject"]["reference"] == f"Patient/{subject['id']}"
    assert search(client, f"Observation?subject=Patient/{subject['id']}")["total"] == 1
    resources, versions, _ = row_counts(database_url)
    assert (resources, versions) == (before[0] + 2, before[1] + 2)
