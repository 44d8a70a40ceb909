"""The outside FHIR server is real and behaves as the connector's tests assume: Medplum's
router keeps loaded ids, searches by the parameters a patient pull uses and pages with
absolute links; the wrapper's $everything, $match, $export, raw Binary, faults and auth
modes answer as the FHIR, Bulk Data and SMART specifications say; and a token from the
hub's own authorization server opens it in jwt mode while a missing or foreign one does not.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from connectors.fhir_rest.smart_auth import SmartBackendServices, fetch_backend_token
from tests.fhir_server_peer import FhirPeer, FhirPeerError, TokenServer

pytestmark = pytest.mark.integration

FHIR_JSON = "application/fhir+json"
COMPARTMENT = (
    "Condition",
    "Observation",
    "DiagnosticReport",
    "DocumentReference",
    "ImagingStudy",
    "Procedure",
    "MedicationRequest",
    "MedicationAdministration",
    "AllergyIntolerance",
    "CarePlan",
    "Encounter",
)
MRN = "urn:oid:1.2.36.146.595.217.0.1"
LAB = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


@pytest.fixture
def peer(fhir_peer: FhirPeer) -> Iterator[FhirPeer]:
    """The session's peer, emptied and back to its defaults."""
    fhir_peer.reset()
    yield fhir_peer


@pytest.fixture
def fhir(peer: FhirPeer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=peer.base_url, timeout=30.0) as client:
        yield client


# --- test data ----------------------------------------------------------------------------


def put(resource: dict[str, Any]) -> dict[str, Any]:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": url}}


def bundle(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def patient(pid: str, family: str, birth: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": MRN, "value": f"MRN-{pid}"}],
        "name": [{"family": family, "given": ["Mia"]}],
        "birthDate": birth,
        "gender": "female",
        **extra,
    }


def clinical(resource_type: str, rid: str, pid: str) -> dict[str, Any]:
    """A minimal resource of a Patient-compartment type that points at Patient/pid."""
    ref = {"reference": f"Patient/{pid}"}
    code = {"text": "synthetic"}
    shapes: dict[str, dict[str, Any]] = {
        "Condition": {"subject": ref, "code": code},
        "Observation": {
            "status": "final",
            "subject": ref,
            "code": code,
            "category": [{"coding": [{"system": LAB.split("|")[0], "code": "laboratory"}]}],
            "performer": [{"reference": "Practitioner/onc-1"}],
        },
        "DiagnosticReport": {"status": "final", "subject": ref, "code": code},
        "DocumentReference": {"status": "current", "subject": ref, "content": []},
        "ImagingStudy": {"status": "available", "subject": ref},
        "Procedure": {"status": "completed", "subject": ref},
        "MedicationRequest": {"status": "active", "intent": "order", "subject": ref},
        "MedicationAdministration": {"status": "completed", "subject": ref},
        "AllergyIntolerance": {"patient": ref},
        "CarePlan": {"status": "active", "intent": "plan", "subject": ref},
        "Encounter": {"status": "finished", "subject": ref, "class": {"code": "AMB"}},
    }
    return {"resourceType": resource_type, "id": rid, **shapes[resource_type]}


def two_patients() -> dict[str, Any]:
    """Patient pat-1 (with a record in every compartment type, a practitioner and an
    organization it references) and pat-2 (one Observation)."""
    entries = [
        put(
            patient(
                "pat-1",
                "Lindqvist",
                "2016-05-07",
                generalPractitioner=[{"reference": "Practitioner/onc-1"}],
                managingOrganization={"reference": "Organization/hosp-1"},
                meta={"lastUpdated": "2021-01-01T00:00:00Z"},
            )
        ),
        put(patient("pat-2", "Okafor", "2014-11-30")),
        put({"resourceType": "Practitioner", "id": "onc-1", "name": [{"family": "Ng"}]}),
        put({"resourceType": "Organization", "id": "hosp-1", "name": "Referring hospital"}),
        put({"resourceType": "Organization", "id": "unrelated", "name": "Elsewhere"}),
    ]
    entries += [put(clinical(t, f"{t.lower()}-1", "pat-1")) for t in COMPARTMENT]
    entries.append(put(clinical("Observation", "obs-pat-2", "pat-2")))
    return bundle(*entries)


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [entry["resource"]["id"] for entry in response.json().get("entry", [])]


def assert_outcome(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    outcome: dict[str, Any] = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"]
    return outcome


# --- Medplum's router: ids, search, paging, writes ---------------------------------------


def test_loaded_resources_keep_their_ids_and_answer_the_pull_searches(
    peer: FhirPeer, fhir: httpx.Client
) -> None:
    loaded = peer.load(two_patients())
    assert loaded["entry"][0]["response"]["location"] == "Patient/pat-1"
    assert all(entry["response"]["status"] == "200" for entry in loaded["entry"])

    read = fhir.get("/Patient/pat-1")
    assert read.status_code == 200
    assert read.headers["content-type"].startswith(FHIR_JSON)
    assert read.headers["etag"].startswith('W/"')
    assert read.json()["meta"]["lastUpdated"] == "2021-01-01T00:00:00Z"  # kept as loaded

    for resource_type in COMPARTMENT:
        rid = f"{resource_type.lower()}-1"
        assert ids(fhir.get(f"/{resource_type}", params={"patient": "Patient/pat-1"})) == [rid]
        assert ids(fhir.get(f"/{resource_type}", params={"patient": "pat-1"})) == [rid]
        assert ids(fhir.get(f"/{resource_type}", params={"_id": rid})) == [rid]
    assert ids(fhir.get("/Observation", params={"subject": "Patient/pat-2"})) == ["obs-pat-2"]
    assert len(ids(fhir.get("/Observation", params={"category": LAB}))) == 2
    assert ids(fhir.get("/Observation", params={"category": "laboratory", "patient": "pat-2"}))
    assert ids(fhir.get("/Patient", params={"identifier": f"{MRN}|MRN-pat-2"})) == ["pat-2"]
    assert ids(fhir.get("/Patient", params={"family": "Lindqvist"})) == ["pat-1"]
    assert ids(fhir.get("/Patient", params={"birthdate": "2014-11-30"})) == ["pat-2"]
    assert ids(fhir.get("/Patient", params={"_lastUpdated": "gt2022-01-01"})) == ["pat-2"]
    assert ids(fhir.get("/Patient", params={"_lastUpdated": "lt2022-01-01"})) == ["pat-1"]
    assert ids(fhir.get("/Practitioner", params={"_id": "onc-1"})) == ["onc-1"]
    assert ids(fhir.get("/Organization", params={"_id": "hosp-1,unrelated"})) == [
        "hosp-1",
        "unrelated",
    ]
    assert peer.resources("Observation", patient="Patient/pat-1")[0]["id"] == "observation-1"


def test_next_links_are_absolute_and_yield_every_match_once(
    peer: FhirPeer, fhir: httpx.Client
) -> None:
    observations = [clinical("Observation", f"obs-{n:04d}", "pat-1") for n in range(5000)]
    peer.load(bundle(put(patient("pat-1", "Lindqvist", "2016-05-07")), *map(put, observations)))

    default = fhir.get("/Observation", params={"patient": "pat-1"}).json()
    assert default["total"] == 5000 and len(default["entry"]) == 20  # Medplum's default page
    assert default["entry"][0]["fullUrl"] == f"{peer.base_url}/Observation/obs-0000"

    seen: list[str] = []
    url: str | None = f"{peer.base_url}/Observation?patient=Patient/pat-1&_count=700"
    pages = 0
    while url:
        page = fhir.get(url)
        assert page.status_code == 200
        links = {link["relation"]: link["url"] for link in page.json()["link"]}
        assert all(link.startswith(f"{peer.base_url}/Observation?") for link in links.values())
        seen += ids(page)
        url = links.get("next")
        pages += 1
    assert pages == 8
    assert len(seen) == 5000 and set(seen) == {o["id"] for o in observations}
    assert "previous" in links


def test_writes_the_hub_makes_work_through_the_router(peer: FhirPeer, fhir: httpx.Client) -> None:
    peer.load(bundle(put(patient("pat-1", "Lindqvist", "2016-05-07"))))
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "Second opinion"},
        "subject": {"reference": "Patient/pat-1"},
        "identifier": [{"system": "urn:hub:opinion", "value": "case-1"}],
    }
    created = fhir.post("/DiagnosticReport", json=report)
    assert created.status_code == 201
    stored = created.json()
    assert created.headers["location"].startswith(f"{peer.base_url}/DiagnosticReport/")

    again = fhir.put(
        "/DiagnosticReport",
        params={"identifier": "urn:hub:opinion|case-1"},
        json={**report, "status": "amended"},
    )
    assert again.status_code == 200 and again.json()["id"] == stored["id"]
    assert again.json()["meta"]["versionId"] != stored["meta"]["versionId"]
    assert [r["status"] for r in peer.resources("DiagnosticReport")] == ["amended"]

    updated = fhir.put(f"/DiagnosticReport/{stored['id']}", json={**stored, "status": "final"})
    assert updated.status_code == 200 and updated.json()["status"] == "final"

    task = {"resourceType": "Task", "status": "completed", "intent": "order"}
    assert fhir.post("/Task", json=task).status_code == 201
    message = {
        "resourceType": "Communication",
        "status": "completed",
        "identifier": [{"system": "urn:hub:message", "value": "m-1"}],
    }
    first = fhir.post("/Communication", json=message, headers={"If-None-Exist": "identifier=m-1"})
    second = fhir.post("/Communication", json=message, headers={"If-None-Exist": "identifier=m-1"})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]

    pdf = b"%PDF-1.4 second opinion"
    binary = fhir.post("/Binary", content=pdf, headers={"Content-Type": "application/pdf"})
    assert binary.status_code == 201
    raw = fhir.get(f"/Binary/{binary.json()['id']}")
    assert raw.headers["content-type"] == "application/pdf" and raw.content == pdf
    resource = fhir.get(f"/Binary/{binary.json()['id']}", headers={"Accept": FHIR_JSON})
    assert resource.headers["content-type"].startswith(FHIR_JSON)
    assert resource.json()["resourceType"] == "Binary"

    document = {
        "resourceType": "DocumentReference",
        "id": "opinion-doc",
        "status": "current",
        "subject": {"reference": "Patient/pat-1"},
        "content": [{"attachment": {"contentType": "application/pdf", "url": "Binary/b-1"}}],
    }
    transaction = bundle(
        put(document),
        put({"resourceType": "Binary", "id": "b-1", "contentType": "text/plain", "data": "aGk="}),
    )
    response = fhir.post("", json=transaction)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "transaction-response"
    assert fhir.get("/Binary/b-1").content == b"hi"


def test_a_failing_transaction_leaves_nothing_behind(peer: FhirPeer, fhir: httpx.Client) -> None:
    failing = bundle(
        {
            "resource": {"resourceType": "Task", "status": "ready"},
            "request": {"method": "POST", "url": "Task"},
        },
        {"request": {"method": "DELETE", "url": "Patient/missing"}},
    )
    assert_outcome(fhir.post("", json=failing), 404)
    assert peer.resources("Task") == []


# --- the wrapper's operations --------------------------------------------------------------


def test_everything_pages_the_compartment_and_the_directory(
    peer: FhirPeer, fhir: httpx.Client
) -> None:
    peer.load(two_patients())
    first = fhir.get("/Patient/pat-1/$everything", params={"_count": 5})
    assert first.status_code == 200
    page = first.json()
    assert page["total"] == 1 + len(COMPARTMENT) + 2
    found = ids(first)
    while next_url := next((x["url"] for x in page["link"] if x["relation"] == "next"), None):
        assert next_url.startswith(f"{peer.base_url}/Patient/pat-1/$everything?")
        response = fhir.get(next_url)
        page = response.json()
        found += ids(response)
    assert sorted(found) == sorted(
        ["pat-1", "onc-1", "hosp-1", *(f"{t.lower()}-1" for t in COMPARTMENT)]
    )

    conditions = fhir.get("/Patient/pat-1/$everything", params={"_type": "Condition,Patient"})
    assert sorted(ids(conditions)) == ["condition-1", "pat-1"]
    since = fhir.get("/Patient/pat-1/$everything", params={"_since": "2022-01-01T00:00:00Z"})
    assert "pat-1" in ids(since)  # the patient anchors the bundle, whatever its age
    assert_outcome(fhir.get("/Patient/nobody/$everything"), 404)

    peer.set_capabilities(everything=False)
    assert_outcome(fhir.get("/Patient/pat-1/$everything"), 404)
    metadata = fhir.get("/metadata").json()
    operations = [op["name"] for op in metadata["rest"][0]["resource"][0]["operation"]]
    assert "everything" not in operations and "match" in operations


def _match(fhir: httpx.Client, candidate: dict[str, Any], **options: Any) -> httpx.Response:
    parameters = [{"name": "resource", "resource": candidate}]
    if "only_certain" in options:
        parameters.append({"name": "onlyCertainMatches", "valueBoolean": options["only_certain"]})
    if "count" in options:
        parameters.append({"name": "count", "valueInteger": options["count"]})
    return fhir.post(
        "/Patient/$match", json={"resourceType": "Parameters", "parameter": parameters}
    )


def test_match_grades_candidates(peer: FhirPeer, fhir: httpx.Client) -> None:
    twin = patient(
        "pat-3", "Lindqvist", "2016-05-07", name=[{"family": "Lindqvist", "given": ["Ida"]}]
    )
    peer.load(bundle(put(patient("pat-1", "Lindqvist", "2016-05-07")), put(twin)))
    query = patient("x", "LINDQVIST", "2016-05-07")
    response = _match(fhir, {**query, "identifier": [{"system": MRN, "value": "MRN-pat-1"}]})
    assert response.status_code == 200
    entries = response.json()["entry"]
    grades = {e["resource"]["id"]: e["search"]["extension"][0] for e in entries}
    assert grades["pat-1"] == {"url": MATCH_GRADE, "valueCode": "certain"}
    assert grades["pat-3"]["valueCode"] == "possible"
    assert entries[0]["search"]["score"] > entries[1]["search"]["score"]

    unsure = _match(fhir, {k: v for k, v in query.items() if k != "identifier"})
    assert {e["search"]["extension"][0]["valueCode"] for e in unsure.json()["entry"]} == {
        "probable",
        "possible",
    }
    assert ids(_match(fhir, query, only_certain=True)) == []
    assert len(ids(_match(fhir, query, count=1))) == 1
    assert_outcome(_match(fhir, {"resourceType": "Patient", "gender": "female"}), 400)

    peer.set_capabilities(match=False)
    assert_outcome(_match(fhir, query), 404)


def test_bulk_export_kick_off_poll_manifest_files_and_cancel(
    peer: FhirPeer, fhir: httpx.Client
) -> None:
    peer.load(two_patients())
    peer.set_capabilities(export_polls=2)
    async_only = {"Prefer": "respond-async", "Accept": FHIR_JSON}
    assert_outcome(fhir.get("/Patient/$export"), 400)  # no Prefer: respond-async

    kick_off = fhir.get(
        "/Patient/$export", headers=async_only, params={"_type": "Patient,Encounter"}
    )
    assert kick_off.status_code == 202
    status_url = kick_off.headers["content-location"]
    assert status_url.startswith(peer.base_url)
    for _ in range(2):
        waiting = fhir.get(status_url)
        assert waiting.status_code == 202
        assert waiting.headers["retry-after"] == "1" and waiting.headers["x-progress"]
    manifest = fhir.get(status_url)
    assert manifest.status_code == 200
    body = manifest.json()
    assert body["requiresAccessToken"] is True and body["error"] == []
    request = httpx.URL(body["request"])
    assert request.path == "/fhir/R4/Patient/$export"
    assert request.params["_type"] == "Patient,Encounter"
    counts = {item["type"]: item["count"] for item in body["output"]}
    assert counts == {"Patient": 2, "Encounter": 1}
    patients = fhir.get(next(o["url"] for o in body["output"] if o["type"] == "Patient"))
    assert patients.headers["content-type"] == "application/fhir+ndjson"
    lines = [json.loads(line) for line in patients.text.splitlines()]
    assert sorted(line["id"] for line in lines) == ["pat-1", "pat-2"]

    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "patient", "valueReference": {"reference": "Patient/pat-2"}},
            {"name": "_type", "valueString": "Patient,Observation"},
        ],
    }
    posted = fhir.post("/Patient/$export", json=parameters, headers=async_only)
    assert posted.status_code == 202
    cancelled = fhir.delete(posted.headers["content-location"])
    assert cancelled.status_code == 202
    assert_outcome(fhir.get(posted.headers["content-location"]), 404)

    peer.set_capabilities(export=False)
    assert_outcome(fhir.get("/Patient/$export", headers=async_only), 404)


def test_metadata_and_smart_configuration(peer: FhirPeer, fhir: httpx.Client) -> None:
    metadata = fhir.get("/metadata")
    assert metadata.status_code == 200
    assert metadata.headers["content-type"].startswith(FHIR_JSON)
    rest = metadata.json()["rest"][0]
    coding = rest["security"]["service"][0]["coding"][0]
    assert coding["code"] == "SMART-on-FHIR"
    by_type = {r["type"]: r for r in rest["resource"]}
    assert set(COMPARTMENT) | {"Patient", "Practitioner", "Organization"} <= set(by_type)
    assert {"patient", "subject", "_lastUpdated", "category"} <= {
        p["name"] for p in by_type["Observation"]["searchParam"]
    }
    assert {"search-type", "read", "create", "update"} <= {
        i["code"] for i in by_type["DiagnosticReport"]["interaction"]
    }
    assert [op["name"] for op in rest["operation"]] == ["export"]

    discovery = fhir.get("/.well-known/smart-configuration").json()
    assert "token_endpoint" not in discovery  # none until the control API names one
    assert discovery["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert discovery["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert discovery["grant_types_supported"] == ["client_credentials"]
    assert discovery["capabilities"] == ["client-confidential-asymmetric"]
    peer.set_auth("bearer", token="s3cret", token_endpoint="https://idp.example/token")
    assert fhir.get("/.well-known/smart-configuration").json()["token_endpoint"] == (
        "https://idp.example/token"
    )
    assert fhir.get("/metadata").status_code == 200  # public in every auth mode


# --- faults and the request log ----------------------------------------------------------


def test_fault_rules_and_the_request_log(peer: FhirPeer, fhir: httpx.Client) -> None:
    peer.load(two_patients())
    peer.set_faults(
        [
            {
                "method": "GET",
                "path_regex": r"/Patient/pat-1$",
                "count": 2,
                "kind": "status",
                "status": 503,
                "retry_after": 2,
            },
            {"path_regex": r"/Observation\?", "count": 1, "kind": "invalid-json"},
            {"path_regex": r"/Condition\?", "count": 1, "kind": "truncate"},
            {"path_regex": r"/Encounter\?", "count": 1, "kind": "delay", "delay_ms": 300},
            {
                "path_regex": r"/Procedure",
                "count": 1,
                "kind": "status",
                "status": 429,
                "body": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "throttled"}],
                },
            },
        ]
    )
    for _ in range(2):
        unavailable = fhir.get("/Patient/pat-1")
        assert_outcome(unavailable, 503)
        assert unavailable.headers["retry-after"] == "2"
    assert fhir.get("/Patient/pat-1").status_code == 200  # the rule is used up

    garbage = fhir.get("/Observation", params={"patient": "pat-1"})
    assert garbage.status_code == 200
    assert garbage.text.startswith('{"resourceType": "Bundle", ')
    with pytest.raises(json.JSONDecodeError):
        garbage.json()
    with pytest.raises(httpx.RemoteProtocolError):
        fhir.get("/Condition", params={"patient": "pat-1"})
    assert ids(fhir.get("/Encounter", params={"patient": "pat-1"})) == ["encounter-1"]
    throttled = fhir.get("/Procedure/procedure-1")
    assert throttled.status_code == 429
    assert throttled.json()["issue"][0]["code"] == "throttled"
    assert fhir.get("/Condition", params={"patient": "pat-1"}).status_code == 200

    log = peer.requests()
    assert [(r["method"], r["status"], r["fault"]) for r in log[:3]] == [
        ("GET", 503, "status"),
        ("GET", 503, "status"),
        ("GET", 200, None),
    ]
    assert log[0]["path"] == "/fhir/R4/Patient/pat-1" and log[0]["auth"] is None
    assert log[3]["path"] == "/fhir/R4/Observation?patient=pat-1"
    delayed = next(r for r in log if r["fault"] == "delay")
    assert delayed["status"] == 200 and delayed["duration_ms"] >= 300
    assert all(isinstance(r["time_ms"], int) for r in log)
    peer.reset()
    assert peer.requests() == []


def test_control_api_refuses_what_it_cannot_do(peer: FhirPeer) -> None:
    failing = bundle({"request": {"method": "GET", "url": "Patient/missing"}}, kind="batch")
    with pytest.raises(FhirPeerError, match="400"):
        peer.load(failing)
    with pytest.raises(FhirPeerError, match="jwks_url"):
        peer.set_auth("jwt", issuer="https://idp.example")


# --- auth modes ------------------------------------------------------------------------------


def test_static_bearer_and_basic_modes(peer: FhirPeer, fhir: httpx.Client) -> None:
    peer.load(two_patients())
    peer.set_auth("bearer", token="s3cret")
    missing = fhir.get("/Patient/pat-1")
    assert_outcome(missing, 401)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_outcome(fhir.get("/Patient/pat-1", headers={"Authorization": "Bearer nope"}), 401)
    good = fhir.get("/Patient/pat-1", headers={"Authorization": "Bearer s3cret"})
    assert good.status_code == 200

    peer.set_auth("basic", username="hub", password="pw")
    assert fhir.get("/Patient/pat-1", auth=("hub", "pw")).status_code == 200
    wrong = fhir.get("/Patient/pat-1", auth=("hub", "other"))
    assert_outcome(wrong, 401)
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert [r["auth"] for r in peer.requests()] == [None, "Bearer", "Bearer", "Basic", "Basic"]


def _jwt_mode(peer: FhirPeer, token_server: TokenServer) -> None:
    peer.set_auth(
        "jwt",
        jwks_url=token_server.jwks_url,
        issuer=token_server.issuer,
        token_endpoint=token_server.token_url,
    )


def test_a_token_from_the_hubs_authorization_server_opens_the_peer(
    peer: FhirPeer, fhir: httpx.Client, smart_token_server: TokenServer
) -> None:
    peer.load(two_patients())
    _jwt_mode(peer, smart_token_server)
    token = fetch_backend_token(
        smart_token_server.token_url,
        smart_token_server.client_id,
        smart_token_server.private_jwk,
        "system/*.rs",
    )
    assert token["scope"] == "system/*.rs"
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    assert fhir.get("/Patient/pat-1", headers=bearer).json()["id"] == "pat-1"
    assert ids(fhir.get("/Observation", params={"patient": "pat-1"}, headers=bearer)) == [
        "observation-1"
    ]
    assert fhir.get("/Patient/pat-1/$everything", headers=bearer).status_code == 200
    write = fhir.post("/Task", json={"resourceType": "Task"}, headers=bearer)
    assert_outcome(write, 403)  # rs: no create

    narrow = fetch_backend_token(
        smart_token_server.token_url,
        smart_token_server.client_id,
        smart_token_server.private_jwk,
        "system/Patient.read",
    )
    narrow_bearer = {"Authorization": f"Bearer {narrow['access_token']}"}
    assert fhir.get("/Patient/pat-1", headers=narrow_bearer).status_code == 200
    assert_outcome(fhir.get("/Observation/observation-1", headers=narrow_bearer), 403)


def test_the_connectors_smart_client_discovers_the_token_endpoint(
    peer: FhirPeer, smart_token_server: TokenServer
) -> None:
    peer.load(two_patients())
    _jwt_mode(peer, smart_token_server)
    auth = SmartBackendServices(
        client_id=smart_token_server.client_id,
        private_key=json.loads(smart_token_server.private_key_file.read_text()),
        scope="system/*.rs",
        fhir_base=peer.base_url,
    )

    async def read() -> list[int]:
        async with httpx.AsyncClient(base_url=peer.base_url, auth=auth) as client:
            first = await client.get("/Patient/pat-1")
            second = await client.get("/Patient/pat-2")
        return [first.status_code, second.status_code]

    assert asyncio.run(read()) == [200, 200]
    assert auth.tokens_fetched == 1


def test_missing_and_foreign_tokens_are_refused(
    peer: FhirPeer, fhir: httpx.Client, smart_token_server: TokenServer
) -> None:
    peer.load(two_patients())
    _jwt_mode(peer, smart_token_server)
    missing = fhir.get("/Patient/pat-1")
    outcome = assert_outcome(missing, 401)
    assert outcome["issue"][0]["code"] == "login"
    assert missing.headers["www-authenticate"].startswith("Bearer")

    foreign_key = RSAKey.generate_key(2048, auto_kid=True)
    now = int(time.time())
    claims = {
        "iss": smart_token_server.issuer,
        "sub": smart_token_server.client_id,
        "scope": "system/*.rs",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    forged = jwt.encode({"alg": "RS256", "kid": foreign_key.kid}, claims, foreign_key)
    refused = fhir.get("/Patient/pat-1", headers={"Authorization": f"Bearer {forged}"})
    assert_outcome(refused, 401)
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert fhir.get("/metadata").status_code == 200
    assert [r["status"] for r in peer.requests()] == [401, 401, 200]
