"""The FHIR REST API end to end: every test runs on SQLite and on PostgreSQL (`client`, or
`searched` for the searches that only read the same records)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from hub.app import create_app
from hub.fhir.dates import date_range
from hub.fhir.search_parameters import search_parameters
from hub.settings import Settings
from tests.backends import BACKENDS
from tests.fhir_client import assert_outcome, patient, post, token

BASE = "http://testserver/fhir"
MRN = "urn:oid:1.2.276.0.76.4.17"
OTHER_IDS = "https://other.example/ids"
LAB = "https://lab.example/observations"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
LOCAL_CODES = "https://hospital.example/codes"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


# -- helpers -----------------------------------------------------------------------------


def put(client: TestClient, resource: dict[str, Any], **headers: str) -> Any:
    url = f"/fhir/{resource['resourceType']}/{resource['id']}"
    return client.put(url, content=json.dumps(resource), headers=headers)


def renamed(resource: dict[str, Any], family: str) -> dict[str, Any]:
    """A copy of a stored Patient with another family name, ready to PUT."""
    return {**resource, "name": [{"family": family}]}


def search(client: TestClient, resource_type: str, params: Any = None) -> dict[str, Any]:
    """GET a search; the answer must be a valid searchset Bundle."""
    response = client.get(f"/fhir/{resource_type}", params=params)
    assert response.status_code == 200, response.text
    return valid_bundle(response.json(), "searchset")


def history(client: TestClient, path: str, params: Any = None) -> dict[str, Any]:
    """GET the history of `path` (`Type/id`, `Type` or "" for the system)."""
    url = "/".join(part for part in ("/fhir", path, "_history") if part)
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    return valid_bundle(response.json(), "history")


def valid_bundle(bundle: dict[str, Any], kind: str) -> dict[str, Any]:
    Bundle.model_validate(bundle)
    assert bundle["type"] == kind
    return bundle


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((li["url"] for li in bundle["link"] if li["relation"] == relation), None)


def history_versions(bundle: dict[str, Any]) -> list[tuple[str, str]]:
    """(request method, version) of each history entry, in the Bundle's order."""
    return [
        (e["request"]["method"], e["response"]["location"].rsplit("/", 1)[1])
        for e in bundle["entry"]
    ]


def observation(subject: str, **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Heart rate"},
        "subject": {"reference": subject},
        **elements,
    }


def codes(*codings: tuple[str, str]) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code} for system, code in codings]}


# -- create, read, update, delete, history --------------------------------------------------


def test_create_assigns_the_id_and_answers_with_location_etag_and_last_modified(client):
    response = client.post("/fhir/Patient", content=json.dumps(patient(id="chosen-by-client")))

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["id"] != "chosen-by-client"
    assert response.headers["location"] == f"{BASE}/Patient/{created['id']}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert created["meta"]["versionId"] == "1"
    last_updated = date_range(created["meta"]["lastUpdated"])[0]
    last_modified = parsedate_to_datetime(response.headers["last-modified"])
    assert last_modified == last_updated.replace(microsecond=0, tzinfo=UTC)
    assert client.get("/fhir/Patient/chosen-by-client").status_code == 404


def test_read_vread_and_update(client):
    created = post(client, patient(family="Before"))
    url = f"/fhir/Patient/{created['id']}"

    updated = put(client, renamed(created, "After"))

    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == 'W/"2"'
    assert updated.headers["location"] == f"{BASE}/Patient/{created['id']}/_history/2"
    assert updated.json()["meta"]["versionId"] == "2"
    read = client.get(url)
    assert read.status_code == 200
    assert read.headers["etag"] == 'W/"2"'
    assert read.json()["name"][0]["family"] == "After"
    assert client.get(f"{url}/_history/1").json()["name"][0]["family"] == "Before"
    assert client.get(f"{url}/_history/2").json()["name"][0]["family"] == "After"
    assert client.get(f"{url}/_history/3").status_code == 404


def test_update_of_a_new_id_does_not_create_it(client):
    # No update-as-create: it would tell an unknown id from one the caller may not see.
    response = put(client, patient(id="chosen-id"))

    assert response.status_code == 404, response.text
    assert client.get("/fhir/Patient/chosen-id").status_code == 404


def test_if_match_accepts_the_current_version_and_refuses_a_stale_one(client):
    created = post(client, patient())

    current = put(client, renamed(created, "Second"), **{"If-Match": 'W/"1"'})
    stale = put(client, renamed(created, "Lost"), **{"If-Match": 'W/"1"'})

    assert current.status_code == 200, current.text
    assert_outcome(stale, 412)
    read = client.get(f"/fhir/Patient/{created['id']}").json()
    assert (read["meta"]["versionId"], read["name"][0]["family"]) == ("2", "Second")


def test_delete_keeps_history_and_hides_the_resource(client):
    created = post(client, patient(family="Gone"))
    put(client, renamed(created, "Gone"))
    url = f"/fhir/Patient/{created['id']}"

    deleted = client.delete(url)

    assert deleted.status_code == 200, deleted.text
    assert deleted.headers["etag"] == 'W/"3"'
    assert_outcome(client.get(url), 410)
    assert client.get(f"{url}/_history/1").status_code == 200
    assert client.get(f"{url}/_history/2").status_code == 200
    assert_outcome(client.get(f"{url}/_history/3"), 410)
    assert ids(search(client, "Patient", {"_id": created["id"]})) == []
    assert ids(search(client, "Patient", {"family": "gone"})) == []
    assert history_versions(history(client, url.removeprefix("/fhir/")))[0] == ("DELETE", "3")

    again = client.delete(url)

    assert again.status_code == 200, again.text
    assert_outcome(client.get(url), 410)
    assert len(history(client, url.removeprefix("/fhir/"))["entry"]) == 3


def test_instance_history_is_newest_first_with_methods(client):
    created = post(client, patient())
    put(client, renamed(created, "Second"))
    client.delete(f"/fhir/Patient/{created['id']}")

    bundle = history(client, f"Patient/{created['id']}")

    assert bundle["total"] == 3
    assert history_versions(bundle) == [("DELETE", "3"), ("PUT", "2"), ("POST", "1")]
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][1]["resource"]["name"][0]["family"] == "Second"
    assert bundle["entry"][2]["resource"]["name"][0]["family"] == "Testchild"


def test_type_and_system_history(client):
    child = post(client, patient())
    put(client, renamed(child, "Second"))
    heart_rate = post(client, observation(f"Patient/{child['id']}"))

    of_patients = history(client, "Patient")
    of_everything = history(client, "")

    assert [e["fullUrl"] for e in of_patients["entry"]] == [f"{BASE}/Patient/{child['id']}"] * 2
    assert history_versions(of_patients) == [("PUT", "2"), ("POST", "1")]
    assert [e["fullUrl"] for e in of_everything["entry"]] == [
        f"{BASE}/Observation/{heart_rate['id']}",
        f"{BASE}/Patient/{child['id']}",
        f"{BASE}/Patient/{child['id']}",
    ]
    assert of_everything["total"] == 3


def test_history_since_keeps_the_versions_written_from_then_on(client):
    created = post(client, patient())
    second = put(client, renamed(created, "Second")).json()
    put(client, renamed(created, "Third"))
    path = f"Patient/{created['id']}"

    since_second = history(client, path, {"_since": second["meta"]["lastUpdated"]})
    since_first = history(client, path, {"_since": created["meta"]["lastUpdated"]})

    assert history_versions(since_second) == [("PUT", "3"), ("PUT", "2")]
    assert len(since_first["entry"]) == 3


def test_prefer_return_minimal_gives_an_empty_body(client):
    minimal = {"Prefer": "return=minimal"}
    created = client.post("/fhir/Patient", content=json.dumps(patient()), headers=minimal)

    assert created.status_code == 201
    assert created.content == b""
    location = created.headers["location"]
    resource_id = location.removeprefix(f"{BASE}/Patient/").removesuffix("/_history/1")
    updated = put(client, patient(id=resource_id, family="Second"), **minimal)
    assert updated.status_code == 200
    assert updated.content == b""
    assert updated.headers["etag"] == 'W/"2"'


def test_conditional_create_returns_the_existing_match(client):
    body = json.dumps(patient(identifier=[{"system": MRN, "value": "K-1"}]))
    condition = {"If-None-Exist": f"identifier={MRN}|K-1"}

    first = client.post("/fhir/Patient", content=body, headers=condition)
    second = client.post("/fhir/Patient", content=body, headers=condition)

    assert first.status_code == 201, first.text
    assert second.status_code == 200, second.text
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "1"
    assert len(history(client, f"Patient/{first.json()['id']}")["entry"]) == 1
    assert search(client, "Patient", {"identifier": f"{MRN}|K-1"})["total"] == 1


# -- every resource type and the CapabilityStatement ---------------------------------------


CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"


def minimal_resources(subject: str) -> dict[str, dict[str, Any]]:
    """A minimal valid instance of each type the API serves; `subject` is a Patient reference."""
    ref = {"reference": subject}
    text = {"text": "something"}
    when = "2024-03-05T10:30:00Z"
    table: dict[str, dict[str, Any]] = {
        "Patient": {"name": [{"family": "Minimal"}]},
        "RelatedPerson": {"patient": ref},
        "Coverage": {"status": "active", "beneficiary": ref, "payor": [{"display": "Insurer"}]},
        "Practitioner": {"name": [{"family": "Doctor"}]},
        "Organization": {"name": "Children's Hospital"},
        "Endpoint": {
            "status": "active",
            "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "dicom-wado-rs",
            },
            "payloadType": [text],
            "address": "https://hub.example/dicomweb",
        },
        "ServiceRequest": {"status": "active", "intent": "order", "subject": ref},
        "Task": {"status": "requested", "intent": "order"},
        "Condition": {"subject": ref},
        "Observation": {"status": "final", "code": text},
        "DiagnosticReport": {"status": "final", "code": text},
        "ImagingStudy": {"status": "available", "subject": ref},
        "DocumentReference": {
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain"}}],
        },
        "Binary": {"contentType": "text/plain", "data": "aGVsbG8="},
        "Procedure": {"status": "completed", "subject": ref},
        "MedicationRequest": {
            "status": "active",
            "intent": "order",
            "subject": ref,
            "medicationCodeableConcept": text,
        },
        "MedicationAdministration": {
            "status": "completed",
            "subject": ref,
            "medicationCodeableConcept": text,
            "effectiveDateTime": when,
        },
        "Communication": {"status": "completed"},
        "Encounter": {
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": ref,
        },
        "AllergyIntolerance": {"patient": ref, "code": text},
        "CarePlan": {"status": "active", "intent": "plan", "subject": ref},
        "Specimen": {"subject": ref, "type": text},
        "Medication": {"code": text},
        "Location": {"name": "Oncology clinic"},
        "Consent": {
            "status": "active",
            "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "treatment"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": ref,
        },
        "Provenance": {"target": [ref], "recorded": when, "agent": [{"who": {"display": "Hub"}}]},
        "AuditEvent": {
            "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
            "recorded": when,
            "agent": [{"requestor": True}],
            "source": {"observer": {"display": "Hub"}},
        },
    }
    return {name: {"resourceType": name, **body} for name, body in table.items()}


def test_the_minimal_table_covers_every_served_type():
    assert set(minimal_resources("Patient/x")) == set(search_parameters())


@pytest.mark.parametrize("resource_type", sorted(set(search_parameters()) - {"AuditEvent"}))
def test_every_type_can_be_created_read_back_and_found(client, resource_type):
    subject = post(client, patient())
    resource = minimal_resources(f"Patient/{subject['id']}")[resource_type]

    created = post(client, resource)

    read = client.get(f"/fhir/{resource_type}/{created['id']}")
    assert read.status_code == 200, read.text
    stored = {k: v for k, v in read.json().items() if k not in ("id", "meta")}
    assert stored == resource
    assert ids(search(client, resource_type, {"_id": created["id"]})) == [created["id"]]


def test_the_audit_trail_cannot_be_written_through_the_api(client):
    subject = post(client, patient())
    event = minimal_resources(f"Patient/{subject['id']}")["AuditEvent"]
    response = client.post("/fhir/AuditEvent", content=json.dumps(event))
    assert response.status_code == 405, response.text


def test_capability_statement_lists_every_type_and_its_search_parameters(client):
    response = client.get("/fhir/metadata")

    assert response.status_code == 200
    statement = response.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    served = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(served) == set(search_parameters())
    for resource_type, params in search_parameters().items():
        listed = {p["name"] for p in served[resource_type]["searchParam"]}
        assert listed == {"_id", "_lastUpdated", *params}, resource_type


# -- search --------------------------------------------------------------------------------


@pytest.fixture
def records(client) -> dict[str, str]:
    """The searchable records (`store_records`) in the test's own emptied database."""
    return store_records(client)


@dataclass(frozen=True)
class Searched:
    """The API on a database holding `store_records`' records only, and their ids."""

    client: TestClient
    records: dict[str, str]


@pytest.fixture(scope="module", params=BACKENDS)
def searched(
    request: pytest.FixtureRequest,
    new_database: Callable[[str], str],
    signing_key_file: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Searched]:
    """`store_records` once per backend for the searches that only read them (a database
    of their own, which the other tests' emptying does not touch), rather than once per
    query: the same API, settings and caller as `client`."""
    settings = Settings(
        database_url=new_database(request.param),
        dicom_store_dir=tmp_path_factory.mktemp("dicom"),
        max_request_bytes=256 * 1024,
        signing_key_file=signing_key_file,
        public_url="http://testserver",
        embedded_worker=False,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        api.headers["Content-Type"] = "application/fhir+json"
        api.headers["Authorization"] = f"Bearer {token(settings)}"
        yield Searched(api, store_records(api))


def store_records(client: TestClient) -> dict[str, str]:
    """Three Patients and five Observations to search; key → server id.

    Observation dates as [low, high) in UTC: day = 2024-03-05T09:30:00 (one second),
    period = 2024-02-20 .. 2024-03-11, month = April 2024, year2023 = the last second of
    2023, undated has none.
    """
    keys: dict[str, str] = {}
    for key, family, identifiers in [
        ("alice", "Ashford", [(MRN, "A-1")]),
        ("bob", "Bashford", [(MRN, "B-2"), (OTHER_IDS, "A-1")]),
        ("carol", "Carver", []),
    ]:
        person = {
            "resourceType": "Patient",
            "name": [{"family": family, "given": [key.capitalize()]}],
        }
        if identifiers:
            person["identifier"] = [{"system": s, "value": v} for s, v in identifiers]
        keys[key] = post(client, person)["id"]
    vital_signs = [codes((CATEGORY, "vital-signs"))]
    laboratory = [codes((CATEGORY, "laboratory"))]
    observations = {
        "day": observation(
            f"Patient/{keys['alice']}",
            code=codes((LOINC, "8867-4"), (SNOMED, "364075005")),
            category=vital_signs,
            effectiveDateTime="2024-03-05T10:30:00+01:00",
            identifier=[{"system": LAB, "value": "obs-1"}],
        ),
        "period": observation(
            f"Patient/{keys['alice']}",
            status="preliminary",
            code=codes((LOINC, "8310-5")),
            category=vital_signs,
            effectivePeriod={"start": "2024-02-20", "end": "2024-03-10"},
        ),
        "month": observation(
            f"Patient/{keys['bob']}",
            code=codes((LOINC, "8867-4")),
            category=laboratory,
            effectiveDateTime="2024-04",
        ),
        "year2023": observation(
            f"Patient/{keys['bob']}",
            status="amended",
            code=codes((LOCAL_CODES, "8867-4")),
            category=laboratory,
            effectiveDateTime="2023-12-31T23:59:59Z",
        ),
        "undated": observation(f"Patient/{keys['carol']}"),
    }
    for key, resource in observations.items():
        keys[key] = post(client, resource)["id"]
    return keys


def found(client: TestClient, records: dict[str, str], resource_type: str, query: str) -> set[str]:
    """The keys of `records` that `query` matches: `a=1&b=2`, `{key}` names a record's id."""
    params = [tuple(part.split("=", 1)) for part in query.format(**records).split("&")]
    bundle = search(client, resource_type, params)
    assert bundle["total"] == len(bundle["entry"])
    by_id = {resource_id: key for key, resource_id in records.items()}
    return {by_id.get(resource_id, resource_id) for resource_id in ids(bundle)}


ALL_OBSERVATIONS = {"day", "period", "month", "year2023", "undated"}
DATED = ALL_OBSERVATIONS - {"undated"}

TOKEN_SEARCHES = [
    ("_id={period}", {"period"}),
    ("_id={day},{month}", {"day", "month"}),
    ("_id:missing=false", ALL_OBSERVATIONS),
    ("_id:missing=true", set()),
    ("_lastUpdated:missing=false", ALL_OBSERVATIONS),
    ("_lastUpdated:missing=true", set()),
    ("status=final", {"day", "month", "undated"}),
    ("status=final,amended", {"day", "month", "year2023", "undated"}),
    ("status=cancelled", set()),
    (f"code={LOINC}|8867-4", {"day", "month"}),
    ("code=8867-4", {"day", "month", "year2023"}),
    (f"code={SNOMED}|364075005", {"day"}),
    (f"code={LOINC}|", {"day", "period", "month"}),
    ("code:missing=true", {"undated"}),
    ("code:missing=false", DATED),
    (f"category={CATEGORY}|vital-signs", {"day", "period"}),
    ("category=laboratory", {"month", "year2023"}),
    (f"identifier={LAB}|obs-1", {"day"}),
    ("identifier=obs-1", {"day"}),
    ("status=final&code=8867-4", {"day", "month"}),
    (f"code=8867-4&code={LOINC}|", {"day", "month"}),
]

REFERENCE_SEARCHES = [
    ("patient=Patient/{alice}", {"day", "period"}),
    ("patient={alice}", {"day", "period"}),
    ("subject=Patient/{bob}", {"month", "year2023"}),
    ("subject:Patient={bob}", {"month", "year2023"}),
    ("subject=" + BASE + "/Patient/{carol}", {"undated"}),
    ("patient=Patient/{alice},Patient/{carol}", {"day", "period", "undated"}),
    ("patient=Patient/{alice}&status=preliminary", {"period"}),
    ("patient=Patient/unknown", set()),
    ("subject:missing=false", ALL_OBSERVATIONS),
]

DATE_SEARCHES = [
    ("date=2024-03-05", {"day"}),
    ("date=eq2024-03-05", {"day"}),
    ("date=2024-03", {"day"}),
    ("date=2024", {"day", "period", "month"}),
    ("date=2023", {"year2023"}),
    ("date=2024-02-25", set()),  # inside the period, which the day does not contain
    ("date=2024-04-15", set()),  # inside the stored month, which is less precise
    ("date=ne2024", {"year2023"}),
    ("date=ne2024-03-05", {"period", "month", "year2023"}),
    ("date=lt2024-03-05", {"period", "year2023"}),
    ("date=le2024-03-05", {"day", "period", "year2023"}),
    ("date=gt2024-03-05", {"period", "month"}),
    ("date=ge2024-03-05", {"day", "period", "month"}),
    ("date=sa2024-03-05", {"month"}),
    ("date=eb2024-03-05", {"year2023"}),
    ("date=2024-03-05T09:30:00Z", {"day"}),
    ("date=2024-03-05T10:30:00+01:00", {"day"}),
    ("date=ge2024-03-05T09:30:00Z", {"day", "period", "month"}),
    ("date=gt2024-03-05T09:30:00Z", {"period", "month"}),
    ("date=lt2024-03-05T09:30:00Z", {"period", "year2023"}),
    ("date=le2024-03-05T09:30:00Z", {"day", "period", "year2023"}),
    ("date=ge2024-01-01", {"day", "period", "month"}),
    ("date=lt2024-01-01", {"year2023"}),
    ("date=eb2024", {"year2023"}),
    ("date=sa2024-03", {"month"}),
    ("date=ge2024-04-15", {"month"}),
    ("date=gt2024-03-10", {"month"}),
    ("date=le2024-02-20", {"period", "year2023"}),
    ("date:missing=true", {"undated"}),
    ("date:missing=false", DATED),
    ("date=2023,2024-03", {"year2023", "day"}),
    ("date=ge2024-03-01&date=lt2024-04", {"day", "period"}),
]

PATIENT_SEARCHES = [
    ("name=ash", {"alice"}),
    ("name=ASH", {"alice"}),
    ("name=alice", {"alice"}),
    ("name=shford", set()),
    ("name=a_h", set()),  # _ and % are not wildcards
    ("name:contains=%", set()),
    ("name:contains=SHFORD", {"alice", "bob"}),
    ("family=ashford", {"alice"}),
    ("family=alice", set()),
    ("family:contains=arv", {"carol"}),
    ("given=bo", {"bob"}),
    ("name=ash,car", {"alice", "carol"}),
    ("family:contains=shford&family=b", {"bob"}),
    (f"identifier={MRN}|A-1", {"alice"}),
    ("identifier=A-1", {"alice", "bob"}),
    (f"identifier={MRN}|", {"alice", "bob"}),
    (f"identifier={OTHER_IDS}|", {"bob"}),
    ("identifier:missing=true", {"carol"}),
    ("identifier:missing=false", {"alice", "bob"}),
]


@pytest.mark.parametrize(("query", "expected"), TOKEN_SEARCHES + REFERENCE_SEARCHES)
def test_observation_token_and_reference_search(searched, query, expected):
    assert found(searched.client, searched.records, "Observation", query) == expected


@pytest.mark.parametrize(("query", "expected"), DATE_SEARCHES)
def test_observation_date_search(searched, query, expected):
    assert found(searched.client, searched.records, "Observation", query) == expected


@pytest.mark.parametrize(("query", "expected"), PATIENT_SEARCHES)
def test_patient_string_and_identifier_search(searched, query, expected):
    assert found(searched.client, searched.records, "Patient", query) == expected


def test_last_updated_compares_with_the_times_of_the_writes(client):
    before = post(client, patient())
    subject = f"Patient/{before['id']}"
    first = post(client, observation(subject))
    second = post(client, observation(subject))

    def last_updated(prefix: str, resource: dict[str, Any]) -> list[str]:
        value = prefix + resource["meta"]["lastUpdated"]
        return ids(search(client, "Observation", {"_lastUpdated": value}))

    assert set(last_updated("ge", before)) == {first["id"], second["id"]}
    assert last_updated("lt", before) == []
    assert last_updated("gt", first) == [second["id"]]
    assert last_updated("le", first) == [first["id"]]
    assert last_updated("eq", second) == [second["id"]]


def test_count_and_next_links_page_through_every_match_once(client):
    subject = f"Patient/{post(client, patient())['id']}"
    created = {post(client, observation(subject))["id"] for _ in range(7)}

    collected: list[str] = []
    bundle = search(client, "Observation", {"_count": "3"})
    pages = 1
    while True:
        assert bundle["total"] == 7
        collected += ids(bundle)
        next_url = link(bundle, "next")
        if next_url is None:
            break
        assert next_url.startswith(f"{BASE}/Observation?")
        response = client.get(next_url)
        assert response.status_code == 200, response.text
        bundle = valid_bundle(response.json(), "searchset")
        pages += 1
        assert link(bundle, "previous") is not None

    assert pages == 3
    assert sorted(collected) == sorted(created)


def test_offset_skips_matches_and_links_back(client):
    subject = f"Patient/{post(client, patient())['id']}"
    for _ in range(7):
        post(client, observation(subject))
    everything = ids(search(client, "Observation"))

    tail = search(client, "Observation", {"_count": "3", "_offset": "5"})
    beyond = search(client, "Observation", {"_count": "3", "_offset": "7"})

    assert ids(tail) == everything[5:]
    assert tail["total"] == 7
    assert link(tail, "next") is None
    assert ids(client.get(link(tail, "previous")).json()) == everything[2:5]
    assert (ids(beyond), beyond["total"]) == ([], 7)


def test_sort_by_last_updated_and_id(client):
    subject = f"Patient/{post(client, patient())['id']}"
    created = [post(client, observation(subject))["id"] for _ in range(3)]

    assert ids(search(client, "Observation", {"_sort": "-_lastUpdated"})) == created[::-1]
    assert ids(search(client, "Observation", {"_sort": "_lastUpdated"})) == created
    assert ids(search(client, "Observation", {"_sort": "_id"})) == sorted(created)
    assert ids(search(client, "Observation", {"_sort": "-_id"})) == sorted(created)[::-1]


def test_include_adds_each_referenced_patient_once(searched):
    client, records = searched.client, searched.records
    include = {"_include": "Observation:patient"}

    of_alice = search(client, "Observation", {"patient": records["alice"], **include})
    of_all = search(client, "Observation", include)
    typed = search(
        client,
        "Observation",
        {"patient": records["bob"], "_include": "Observation:subject:Patient"},
    )

    assert sorted(ids(of_alice)) == sorted([records["day"], records["period"]])
    assert ids(of_alice, "include") == [records["alice"]]
    assert of_alice["total"] == 2
    included = ids(of_all, "include")
    assert sorted(included) == sorted(records[k] for k in ("alice", "bob", "carol"))
    assert ids(typed, "include") == [records["bob"]]


def test_search_by_post_gives_the_same_result_as_get(searched):
    client = searched.client
    params = {"code": "8867-4", "status": "final,amended", "_count": "2"}

    by_get = search(client, "Observation", params)
    response = client.post(
        "/fhir/Observation/_search",
        data=params,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 200, response.text
    by_post = valid_bundle(response.json(), "searchset")
    assert by_post["total"] == by_get["total"] == 3
    assert ids(by_post) == ids(by_get)
    assert link(by_post, "next") == link(by_get, "next")


def test_search_finds_current_values_only(client, records):
    day = client.get(f"/fhir/Observation/{records['day']}").json()
    assert put(client, {**day, "status": "amended"}).status_code == 200
    assert client.delete(f"/fhir/Observation/{records['month']}").status_code == 200

    assert found(client, records, "Observation", "status=final") == {"undated"}
    assert found(client, records, "Observation", "status=amended") == {"day", "year2023"}
    assert found(client, records, "Observation", "code=8867-4") == {"day", "year2023"}
    assert found(client, records, "Observation", "_id={month}") == set()
    assert found(client, records, "Observation", "patient={bob}") == {"year2023"}
