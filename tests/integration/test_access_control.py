"""Closed by default: every route needs a token, scopes and roles limit what it may do,
and a case the caller may not see answers exactly like one that does not exist."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from hub import codes
from tests.backends import sqlite_only
from tests.fhir_client import bearer, patient, referral

PUBLIC = {
    ("GET", "/fhir/metadata"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/smart-configuration"),
    ("GET", "/fhir/.well-known/smart-configuration"),
    ("GET", "/auth/jwks"),
    ("POST", "/auth/token"),
}


@dataclass
class World:
    """Two cases in the oncology program, each from its own referrer, each assigned to its
    own specialist; and the headers of everyone who works on them."""

    headers: dict[str, dict[str, str]]
    ids: dict[str, str]


def _post(client, resource, headers) -> dict[str, Any]:
    response = client.post(
        f"/fhir/{resource['resourceType']}", content=json.dumps(resource), headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()


def _case_of(client, referral_id, headers) -> dict[str, Any]:
    found = client.get(
        "/fhir/Task", params={"focus": f"ServiceRequest/{referral_id}"}, headers=headers
    ).json()
    assert found["total"] == 1, found
    return found["entry"][0]["resource"]


@pytest.fixture
def world(anonymous, settings) -> World:
    headers = {
        "ehr-a": bearer(settings, subject="ehr-a", roles=("referrer",), scope="system/*.crus"),
        "ehr-b": bearer(settings, subject="ehr-b", roles=("referrer",), scope="system/*.crus"),
        "manager": bearer(
            settings,
            subject="cm-1",
            roles=("case-manager",),
            scope="user/*.cruds",
            programs=("oncology",),
        ),
        "admin": bearer(
            settings,
            subject="it-1",
            roles=("admin",),
            scope="system/AuditEvent.rs system/Practitioner.cruds",
        ),
    }
    ids: dict[str, str] = {}
    for name in ("a", "b"):
        ehr = headers[f"ehr-{name}"]
        child = _post(anonymous, patient(family=f"Child{name.upper()}"), ehr)
        lab = _post(
            anonymous,
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "Hb"},
                "subject": {"reference": f"Patient/{child['id']}"},
            },
            ehr,
        )
        request = _post(anonymous, referral(f"Patient/{child['id']}"), ehr)
        specialist = _post(
            anonymous,
            {"resourceType": "Practitioner", "name": [{"family": f"Specialist{name.upper()}"}]},
            headers["manager"],
        )
        task = _case_of(anonymous, request["id"], headers["manager"])
        task["owner"] = {"reference": f"Practitioner/{specialist['id']}"}
        assigned = anonymous.put(
            f"/fhir/Task/{task['id']}", content=json.dumps(task), headers=headers["manager"]
        )
        assert assigned.status_code == 200, assigned.text
        headers[f"specialist-{name}"] = bearer(
            settings,
            subject=f"dr-{name}",
            roles=("specialist",),
            scope="user/*.crus",
            fhir_user=f"Practitioner/{specialist['id']}",
        )
        ids.update(
            {
                f"patient-{name}": child["id"],
                f"lab-{name}": lab["id"],
                f"referral-{name}": request["id"],
                f"task-{name}": task["id"],
            }
        )
    return World(headers, ids)


# -- walking every route of the OpenAPI schema ----------------------------------------------


def protected_routes(app) -> list[tuple[str, str]]:
    routes = []
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if (method.upper(), path) not in PUBLIC:
                routes.append((method.upper(), path))
    return sorted(routes)


def fill(path: str, ids: dict[str, str], case: str = "a") -> str:
    """A concrete URL for a route template, pointing at case `case`."""
    values = {
        "resource_type": "Patient",
        "resource_id": ids[f"patient-{case}"],
        "version_id": "1",
        "referral_id": ids[f"referral-{case}"],
        "task_id": ids[f"task-{case}"],
        "report_id": "no-such-report",
        "message_id": "1",
        "job_id": "1",
        "study": "1.2.826.0.1.3680043.8.498.1",
        "series": "1.2.826.0.1.3680043.8.498.2",
        "instance": "1.2.826.0.1.3680043.8.498.3",
        "transfer_id": "1",
        "frames": "1",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def body_for(method: str, path: str, ids: dict[str, str], case: str = "a") -> bytes | None:
    if method == "POST" and path == "/fhir":
        return json.dumps(
            {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"resource": patient(), "request": {"method": "POST", "url": "Patient"}}],
            }
        ).encode()
    if path.endswith("$transition"):
        return json.dumps(
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "status", "valueCode": "accepted"},
                    {"name": "businessStatus", "valueCode": "records-complete"},
                ],
            }
        ).encode()
    if path.endswith("/_search"):
        return None
    if method == "POST":
        return json.dumps(patient()).encode()
    if method == "PUT":
        return json.dumps(patient(id=ids[f"patient-{case}"])).encode()
    return None


def call(client, method: str, path: str, world: World, headers: dict[str, str], case: str = "a"):
    extra = (
        {"Content-Type": "application/x-www-form-urlencoded"} if path.endswith("_search") else {}
    )
    return client.request(
        method,
        fill(path, world.ids, case),
        content=body_for(method, path, world.ids, case),
        headers={**headers, **extra},
    )


@sqlite_only  # reads the OpenAPI schema only
def test_the_walk_covers_the_api(anonymous):
    routes = protected_routes(anonymous.app)
    assert len(routes) >= 13
    assert ("GET", "/fhir/ServiceRequest/{referral_id}/$record-bundle") in routes


@sqlite_only  # refused at the token check: nothing here differs by backend
def test_every_route_needs_a_token(anonymous, world):
    for method, path in protected_routes(anonymous.app):
        for headers in (
            {},
            {"Authorization": "Bearer not-a-jwt"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
        ):
            response = call(anonymous, method, path, world, headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["resourceType"] == "OperationOutcome"


@sqlite_only  # refused at the scope check: nothing here differs by backend
def test_a_token_without_the_scope_is_forbidden(anonymous, world, settings):
    narrow = bearer(settings, subject="ehr-a", roles=("referrer",), scope="system/Practitioner.r")
    for method, path in protected_routes(anonymous.app):
        response = call(anonymous, method, path, world, narrow)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["issue"][0]["code"] == "forbidden"


@sqlite_only  # refused at the signature check: nothing here differs by backend
def test_a_token_of_another_issuer_or_audience_is_refused(anonymous, world, settings):
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    stranger = RSAKey.generate_key(2048)
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": "x",
        "client_id": "x",
        "iat": 1,
        "exp": 4_000_000_000,
        "jti": "j",
        "scope": "system/*.cruds",
        "roles": ["case-manager"],
        "programs": ["oncology"],
    }
    forged = jwt.encode({"alg": "RS256", "typ": "at+jwt"}, claims, stranger)
    response = anonymous.get(
        f"/fhir/Patient/{world.ids['patient-a']}", headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401


INSTANCE_ROUTES = [
    ("GET", "/fhir/{resource_type}/{resource_id}"),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history"),
    ("GET", "/fhir/{resource_type}/{resource_id}/_history/{version_id}"),
    ("PUT", "/fhir/{resource_type}/{resource_id}"),
    ("GET", "/fhir/ServiceRequest/{referral_id}/$record-bundle"),
    ("POST", "/fhir/Task/{task_id}/$transition"),
]


@pytest.mark.parametrize("outsider", ["specialist-b", "ehr-b"])
def test_another_callers_case_is_not_found(anonymous, world, outsider):
    for method, path in INSTANCE_ROUTES:
        if outsider.startswith("ehr") and path.endswith("$transition"):
            continue  # referrers may not move cases at all (403, tested by role below)
        response = call(anonymous, method, path, world, world.headers[outsider])
        assert response.status_code == 404, (method, path, response.text)
        missing = anonymous.request(
            method,
            fill(path, world.ids)
            .replace(world.ids["patient-a"], "no-such-id")
            .replace(world.ids["referral-a"], "no-such-id")
            .replace(world.ids["task-a"], "no-such-id"),
            content=body_for(method, path, {**world.ids, "patient-a": "no-such-id"}),
            headers=world.headers[outsider],
        )
        assert missing.json()["issue"][0]["code"] == response.json()["issue"][0]["code"]


@pytest.mark.parametrize("outsider", ["specialist-b", "ehr-b"])
def test_searches_never_show_another_callers_case(anonymous, world, outsider):
    headers = world.headers[outsider]
    for resource_type in ("Patient", "Observation", "ServiceRequest", "Task", "Provenance"):
        found = anonymous.get(f"/fhir/{resource_type}", headers=headers).json()
        ids = {e["resource"]["id"] for e in found["entry"]}
        assert not ids & {
            world.ids["patient-a"],
            world.ids["lab-a"],
            world.ids["referral-a"],
            world.ids["task-a"],
        }, resource_type
    history = anonymous.get("/fhir/_history", headers=headers).json()
    assert world.ids["patient-a"] not in {e["fullUrl"].split("/")[-1] for e in history["entry"]}


def test_the_assigned_specialist_sees_the_whole_case(anonymous, world):
    headers = world.headers["specialist-a"]
    for method, path in INSTANCE_ROUTES[:3] + INSTANCE_ROUTES[4:5]:
        response = call(anonymous, method, path, world, headers)
        assert response.status_code == 200, (method, path, response.text)
    bundle = anonymous.get(
        f"/fhir/ServiceRequest/{world.ids['referral-a']}/$record-bundle", headers=headers
    ).json()
    members = {e["resource"]["id"] for e in bundle["entry"]}
    assert {world.ids["patient-a"], world.ids["lab-a"], world.ids["task-a"]} <= members
    assert world.ids["patient-b"] not in members
    moved = call(anonymous, "POST", "/fhir/Task/{task_id}/$transition", world, headers)
    assert moved.status_code == 200, moved.text


def test_a_referrer_reads_its_own_case_but_not_records_others_added(anonymous, world, settings):
    manager = world.headers["manager"]
    added = _post(
        anonymous,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "ANC"},
            "subject": {"reference": f"Patient/{world.ids['patient-a']}"},
        },
        manager,
    )
    ehr = world.headers["ehr-a"]
    for resource_type, key in (
        ("ServiceRequest", "referral-a"),
        ("Task", "task-a"),
        ("Patient", "patient-a"),
        ("Observation", "lab-a"),
    ):
        assert (
            anonymous.get(f"/fhir/{resource_type}/{world.ids[key]}", headers=ehr).status_code == 200
        )
    assert anonymous.get(f"/fhir/Observation/{added['id']}", headers=ehr).status_code == 404
    refused = call(anonymous, "POST", "/fhir/Task/{task_id}/$transition", world, ehr)
    assert refused.status_code == 403


def test_a_case_manager_sees_the_cases_of_its_program_only(anonymous, world):
    manager = world.headers["manager"]
    task = anonymous.get(f"/fhir/Task/{world.ids['task-b']}", headers=manager).json()
    task["performerType"] = [{"coding": [{"system": codes.PROGRAM_SYSTEM, "code": "hematology"}]}]
    moved = anonymous.put(f"/fhir/Task/{task['id']}", content=json.dumps(task), headers=manager)
    assert moved.status_code == 200, moved.text
    assert anonymous.get(f"/fhir/Task/{world.ids['task-b']}", headers=manager).status_code == 404
    assert anonymous.get(f"/fhir/Task/{world.ids['task-a']}", headers=manager).status_code == 200


def test_admins_read_the_audit_trail_but_no_clinical_data(anonymous, world):
    admin = world.headers["admin"]
    assert (
        anonymous.get(f"/fhir/Patient/{world.ids['patient-a']}", headers=admin).status_code == 403
    )
    trail = anonymous.get(
        "/fhir/AuditEvent", params={"patient": world.ids["patient-a"]}, headers=admin
    )
    assert trail.status_code == 200 and trail.json()["total"] > 0
    for role in ("manager", "specialist-a", "ehr-a"):
        refused = anonymous.get("/fhir/AuditEvent", headers=world.headers[role])
        assert refused.status_code == 403, role
    event_id = trail.json()["entry"][0]["resource"]["id"]
    event = trail.json()["entry"][0]["resource"]
    for method, url in (
        ("POST", "/fhir/AuditEvent"),
        ("PUT", f"/fhir/AuditEvent/{event_id}"),
        ("DELETE", f"/fhir/AuditEvent/{event_id}"),
    ):
        changed = anonymous.request(method, url, content=json.dumps(event), headers=admin)
        assert changed.status_code == 405, (method, changed.text)


def audit_trail(client, world, patient_key: str) -> list[dict[str, Any]]:
    found = client.get(
        "/fhir/AuditEvent",
        params={"patient": world.ids[patient_key], "_count": "500"},
        headers=world.headers["admin"],
    ).json()
    return [e["resource"] for e in found["entry"]]


def test_every_read_of_case_data_leaves_an_audit_event(anonymous, world):
    headers = world.headers["specialist-a"]
    patient_id, lab_id = world.ids["patient-a"], world.ids["lab-a"]
    reads = [
        ("read", f"/fhir/Patient/{patient_id}", {}),
        ("read", f"/fhir/Observation/{lab_id}", {}),
        ("vread", f"/fhir/Observation/{lab_id}/_history/1", {}),
        ("history-instance", f"/fhir/Observation/{lab_id}/_history", {}),
        ("search-type", "/fhir/Observation", {"patient": patient_id}),
        ("operation", f"/fhir/ServiceRequest/{world.ids['referral-a']}/$record-bundle", {}),
    ]
    for interaction, url, params in reads:
        before = audit_trail(anonymous, world, "patient-a")
        response = anonymous.get(url, params=params, headers=headers)
        assert response.status_code == 200, (url, response.text)
        new = [e for e in audit_trail(anonymous, world, "patient-a") if e not in before]
        mine = [e for e in new if e["agent"][0]["who"]["identifier"]["value"] == "dr-a"]
        assert len(mine) == 1, (url, new)
        event = mine[0]
        assert event["subtype"][0]["code"] == interaction
        assert event["outcome"] == "0"
        assert f"Patient/{patient_id}" in {
            e.get("what", {}).get("reference") for e in event["entity"]
        }
        assert event["agent"][0]["network"]["address"]


def test_a_refused_read_is_audited_as_a_failure(anonymous, world):
    response = anonymous.get(
        f"/fhir/Patient/{world.ids['patient-a']}", headers=world.headers["specialist-b"]
    )
    assert response.status_code == 404
    events = anonymous.get(
        "/fhir/AuditEvent", params={"outcome": "4"}, headers=world.headers["admin"]
    ).json()
    failures = [
        e["resource"]
        for e in events["entry"]
        if e["resource"]["agent"][0]["who"]["identifier"]["value"] == "dr-b"
    ]
    assert failures and failures[-1]["outcomeDesc"].endswith(": 404")


# -- the consent gate ----------------------------------------------------------------------


def test_a_family_referral_without_consent_is_held(anonymous, settings):
    family = bearer(
        settings,
        subject="family-portal",
        roles=("referrer",),
        scope="system/*.crus",
        referrer_kind="family",
    )
    child = _post(anonymous, patient(), family)
    request = _post(anonymous, referral(f"Patient/{child['id']}"), family)
    task = _case_of(anonymous, request["id"], family)
    assert task["status"] == "on-hold"
    assert "consent" in task["statusReason"]["text"].lower()


def test_a_family_referral_with_a_guardians_consent_is_received(anonymous, settings):
    family = bearer(
        settings,
        subject="family-portal",
        roles=("referrer",),
        scope="system/*.crus",
        referrer_kind="family",
    )
    child = _post(anonymous, patient(), family)
    mother = _post(
        anonymous,
        {
            "resourceType": "RelatedPerson",
            "patient": {"reference": f"Patient/{child['id']}"},
            "relationship": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                            "code": "MTH",
                        }
                    ]
                }
            ],
            "name": [{"family": "Parent"}],
        },
        family,
    )
    _post(
        anonymous,
        {
            "resourceType": "Consent",
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "treatment",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{child['id']}"},
            "performer": [{"reference": f"RelatedPerson/{mother['id']}"}],
        },
        family,
    )
    request = _post(
        anonymous,
        referral(
            f"Patient/{child['id']}", requester={"reference": f"RelatedPerson/{mother['id']}"}
        ),
        family,
    )
    task = _case_of(anonymous, request["id"], family)
    assert task["status"] == "received", task.get("statusReason")
