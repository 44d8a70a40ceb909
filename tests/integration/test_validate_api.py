"""`$validate` over HTTP, on both backends: 200 with an OperationOutcome for valid and invalid
content alike, 4xx only for what is not FHIR JSON; nothing stored, nothing audited."""

from __future__ import annotations

import json

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.profiles import canonical
from hub.storage.db import make_engine
from hub.storage.tables import ResourceRow
from tests.fhir_client import assert_outcome
from tests.unit.test_profile_validation import entry_of, record_bundle, records


def post(client, path, body, **kwargs):
    return client.post(path, content=json.dumps(body), **kwargs)


def stored_rows(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return session.scalar(select(func.count()).select_from(ResourceRow)) or 0
    finally:
        engine.dispose()


def issues_of(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"]


def test_a_valid_record_bundle(client, database_url):
    before = stored_rows(database_url)
    issues = issues_of(post(client, "/fhir/Bundle/$validate", record_bundle()))
    assert [(i["severity"], i["code"]) for i in issues] == [("information", "informational")]
    assert stored_rows(database_url) == before  # nothing stored, no AuditEvent either


def test_an_invalid_bundle_answers_200_with_each_issue(client):
    bundle = record_bundle()
    referral_at, referral = entry_of(bundle, "ServiceRequest", "sr1")
    marker_at, marker = entry_of(bundle, "Observation", "afp1")
    del referral["requester"]
    marker["performer"] = [{"reference": "Practitioner/gone"}]
    issues = issues_of(post(client, "/fhir/Bundle/$validate", bundle))
    assert sorted((i["code"], i["expression"][0]) for i in issues) == [
        ("not-found", f"Bundle.entry[{marker_at}].resource.performer[0].reference"),
        ("required", f"Bundle.entry[{referral_at}].resource.requester"),
    ]
    assert all(i["severity"] == "error" and i["diagnostics"] for i in issues)


def test_a_bundle_that_is_not_valid_r4_is_still_an_outcome(client):
    bundle = record_bundle()
    bundle["entry"][1]["resource"]["birthDate"] = "yesterday"
    bundle["entry"][2]["resource"] = {"resourceType": "NoSuchType"}
    issues = issues_of(post(client, "/fhir/Bundle/$validate", bundle))
    expressions = {e for i in issues for e in i.get("expression", [])}
    assert "Bundle.entry[1].resource.birthDate" in expressions
    assert "Bundle.entry[2].resource.resourceType" in expressions


def test_a_single_resource_and_a_profile_asked_for(client):
    condition = records()[3]
    del condition["subject"]
    issues = issues_of(post(client, "/fhir/Condition/$validate", condition))
    assert {(i["code"], i["expression"][0]) for i in issues} >= {("required", "Condition.subject")}
    patient = records()[0]
    assert issues_of(post(client, "/fhir/Patient/$validate", patient))[0]["severity"] == (
        "information"
    )
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": records()[5]},
            {"name": "profile", "valueUri": canonical.CANCER_STAGE_GROUP},
        ],
    }
    issues = issues_of(post(client, "/fhir/Observation/$validate", parameters))
    assert any("cancer-stage-group" in i["diagnostics"] for i in issues)
    unknown = issues_of(
        post(
            client,
            "/fhir/Patient/$validate",
            patient,
            params={"profile": "http://example.org/StructureDefinition/x"},
        )
    )
    assert [(i["severity"], i["code"]) for i in unknown] == [("warning", "not-supported")]


def test_what_is_not_fhir_json_is_refused(client):
    assert_outcome(client.post("/fhir/Bundle/$validate", content=b"{oops"), 400)
    assert_outcome(client.post("/fhir/Bundle/$validate", content=b"[1, 2]"), 400)
    assert_outcome(post(client, "/fhir/Bundle/$validate", records()[0]), 400)
    assert_outcome(post(client, "/fhir/NoSuchType/$validate", records()[0]), 404)
    assert_outcome(
        client.post(
            "/fhir/Bundle/$validate",
            content=json.dumps(record_bundle()),
            headers={"Content-Type": "text/plain"},
        ),
        415,
    )


def test_validate_needs_a_token(anonymous):
    assert_outcome(post(anonymous, "/fhir/Bundle/$validate", record_bundle()), 401)
