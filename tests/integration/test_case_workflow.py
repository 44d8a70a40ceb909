"""A second-opinion referral opens a case that walks its states, on both backends."""

from __future__ import annotations

import json

from fhir.resources.R4B.bundle import Bundle

from hub import codes
from tests.fhir_client import assert_outcome, patient, post, referral

CASE_CODE = f"{codes.CASE_TASK_SYSTEM}|{codes.CASE_TASK_CODE}"


def open_case(client):
    child = post(client, patient())
    request = post(client, referral(f"Patient/{child['id']}", priority="urgent"))
    tasks = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"}).json()
    assert tasks["total"] == 1
    return child, request, tasks["entry"][0]["resource"]


def move(client, task_id, status, business=None, reason=None):
    parameters = [{"name": "status", "valueCode": status}]
    if business:
        parameters.append({"name": "businessStatus", "valueCode": business})
    if reason:
        parameters.append({"name": "reason", "valueString": reason})
    return client.post(
        f"/fhir/Task/{task_id}/$transition",
        content=json.dumps({"resourceType": "Parameters", "parameter": parameters}),
    )


def business(task):
    return task["businessStatus"]["coding"][0]["code"]


def test_a_referral_opens_a_received_case(client):
    child, request, task = open_case(client)
    assert task["status"] == "received"
    assert business(task) == "awaiting-records"
    assert task["code"]["coding"][0]["code"] == codes.CASE_TASK_CODE
    assert task["focus"]["reference"] == f"ServiceRequest/{request['id']}"
    assert task["for"]["reference"] == f"Patient/{child['id']}"
    assert task["priority"] == "urgent"
    history = client.get(f"/fhir/Task/{task['id']}/_history").json()
    assert [e["resource"]["status"] for e in history["entry"]] == ["received", "requested"]


def test_each_move_is_recorded_with_a_provenance(client):
    child, _, task = open_case(client)
    provenances = client.get("/fhir/Provenance", params={"target": f"Task/{task['id']}"}).json()
    activities = sorted(e["resource"]["activity"]["text"] for e in provenances["entry"])
    assert activities == ["(new) -> requested", "requested -> received/awaiting-records"]
    by_patient = client.get("/fhir/Provenance", params={"patient": child["id"]}).json()
    assert by_patient["total"] == 2


def test_a_plain_service_request_opens_no_case(client):
    child = post(client, patient())
    plain = referral(f"Patient/{child['id']}")
    plain["category"] = [{"text": "Consult"}]
    post(client, plain)
    assert client.get("/fhir/Task").json()["total"] == 0


def test_a_case_walks_to_completed(client):
    _, _, task = open_case(client)
    steps = [
        ("received", "records-complete"),
        ("accepted", "assigned"),
        ("in-progress", "assigned"),
        ("in-progress", "opinion-drafted"),
        ("in-progress", "opinion-delivered"),
        ("completed", "opinion-delivered"),
    ]
    for status, sub_state in steps:
        response = move(client, task["id"], status, sub_state)
        assert response.status_code == 200, response.text
        assert (response.json()["status"], business(response.json())) == (status, sub_state)
    history = client.get(f"/fhir/Task/{task['id']}/_history").json()
    assert history["total"] == 2 + len(steps)
    provenances = client.get("/fhir/Provenance", params={"target": f"Task/{task['id']}"})
    assert provenances.json()["total"] == 2 + len(steps)


def test_an_illegal_move_is_refused_and_changes_nothing(client):
    _, _, task = open_case(client)
    assert_outcome(
        move(client, task["id"], "completed", "opinion-delivered"), 409, expression="Task.status"
    )
    assert_outcome(move(client, task["id"], "on-hold"), 409, expression="Task.status")
    current = client.get(f"/fhir/Task/{task['id']}").json()
    assert current["meta"]["versionId"] == task["meta"]["versionId"]


def test_hold_needs_a_reason_and_records_it(client):
    _, _, task = open_case(client)
    response = move(client, task["id"], "on-hold", "awaiting-records", "No consent on file")
    assert response.status_code == 200
    assert response.json()["statusReason"]["text"] == "No consent on file"
    provenances = client.get("/fhir/Provenance", params={"target": f"Task/{task['id']}"}).json()
    reasons = [e["resource"].get("reason", [{}])[0].get("text") for e in provenances["entry"]]
    assert "No consent on file" in reasons


def test_a_put_of_the_case_task_goes_through_the_same_rules(client):
    _, _, task = open_case(client)
    task["status"] = "completed"
    task["businessStatus"]["coding"][0]["code"] = "opinion-delivered"
    assert_outcome(client.put(f"/fhir/Task/{task['id']}", content=json.dumps(task)), 409)
    task["status"] = "accepted"
    task["businessStatus"]["coding"][0]["code"] = "records-complete"
    response = client.put(f"/fhir/Task/{task['id']}", content=json.dumps(task))
    assert response.status_code == 200, response.text
    provenances = client.get("/fhir/Provenance", params={"target": f"Task/{task['id']}"}).json()
    assert provenances["total"] == 3


def test_a_referrer_task_in_the_same_transaction_becomes_the_case(client):
    child = post(client, patient())
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f1d1c0e-51f4-4c1a-9f0e-2f1a8f7c0a01",
                "resource": referral(f"Patient/{child['id']}"),
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
            {
                "fullUrl": "urn:uuid:6f1d1c0e-51f4-4c1a-9f0e-2f1a8f7c0a02",
                "resource": {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "order",
                    "identifier": [{"system": "https://outside-ehr.example/task", "value": "T-1"}],
                    "focus": {"reference": "urn:uuid:6f1d1c0e-51f4-4c1a-9f0e-2f1a8f7c0a01"},
                },
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }
    response = client.post("/fhir", content=json.dumps(bundle))
    assert response.status_code == 200, response.text
    tasks = client.get("/fhir/Task").json()
    assert tasks["total"] == 1
    case = tasks["entry"][0]["resource"]
    assert case["identifier"][0]["value"] == "T-1"
    assert case["status"] == "received"
    assert client.get("/fhir/Task", params={"code": CASE_CODE}).json()["total"] == 1


def test_a_referrer_task_for_an_earlier_referral_without_a_case_opens_one(client):
    child = post(client, patient())
    plain = referral(f"Patient/{child['id']}")
    plain_category = plain.pop("category")
    request = post(client, plain)
    request["category"] = plain_category  # now a second-opinion referral, still no case
    assert (
        client.put(f"/fhir/ServiceRequest/{request['id']}", content=json.dumps(request)).status_code
        == 200
    )
    post(
        client,
        {
            "resourceType": "Task",
            "status": "requested",
            "intent": "order",
            "focus": {"reference": f"ServiceRequest/{request['id']}"},
        },
    )
    cases = client.get("/fhir/Task", params={"code": CASE_CODE}).json()
    assert cases["total"] == 1
    assert cases["entry"][0]["resource"]["status"] == "received"


def test_the_record_bundle_holds_the_case_and_the_patients_records(client):
    referrer = post(client, {"resourceType": "Practitioner", "name": [{"family": "Referrer"}]})
    child = post(client, patient())
    request = post(
        client,
        referral(
            f"Patient/{child['id']}", requester={"reference": f"Practitioner/{referrer['id']}"}
        ),
    )
    tasks = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"})
    task = tasks.json()["entry"][0]["resource"]
    other = post(client, patient(family="Otherchild"))
    doctor = post(client, {"resourceType": "Practitioner", "name": [{"family": "Oncologist"}]})
    observation = post(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": f"Patient/{child['id']}"},
            "performer": [{"reference": f"Practitioner/{doctor['id']}"}],
            "valueQuantity": {
                "value": 9.1,
                "unit": "g/dL",
                "system": "http://unitsofmeasure.org",
                "code": "g/dL",
            },
        },
    )
    post(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": f"Patient/{other['id']}"},
        },
    )
    response = client.get(f"/fhir/ServiceRequest/{request['id']}/$record-bundle")
    assert response.status_code == 200
    bundle = response.json()
    Bundle.model_validate(bundle)
    assert bundle["type"] == "document"
    assert bundle["entry"][0]["resource"]["resourceType"] == "Composition"
    members = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"][1:]}
    assert {
        ("ServiceRequest", request["id"]),
        ("Task", task["id"]),
        ("Patient", child["id"]),
        ("Observation", observation["id"]),
        ("Practitioner", doctor["id"]),
        ("Practitioner", referrer["id"]),  # named by the referral only
    } <= members
    assert ("Patient", other["id"]) not in members
    # The Provenance of the case Task's current version (the earlier one's is history).
    assert sum(1 for t, _ in members if t == "Provenance") == 1
    assert len(bundle["entry"]) == len(members) + 1
    again = client.get(f"/fhir/ServiceRequest/{request['id']}/$record-bundle").json()
    assert again == bundle


def test_record_bundle_of_an_unknown_referral_is_404(client):
    assert_outcome(client.get("/fhir/ServiceRequest/nope/$record-bundle"), 404)
