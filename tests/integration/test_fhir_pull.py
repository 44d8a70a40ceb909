"""Pulling a case's records from an outside FHIR server: Medplum's FHIR router (a real
server we did not write, tests/fhir_peer) with SMART Backend Services tokens from the hub's
own authlib authorization server, on both backends. Faults are the peer's own: it answers
429, 503, cuts a page, serves an invalid resource, refuses a token."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from connectors.fhir_rest.config import FhirSource, SmartBackendAuth
from connectors.http import HttpRetry
from hub.app import create_app
from hub.demo.outside_record import (
    build_outside_record,
    counts,
    dangling_reference,
    patient_id,
)
from hub.jobs.worker import JobWorker
from hub.records.fhir_pull import PULL_RECORDS_JOB, queue_record_pull
from hub.records.normalize import hub_id
from hub.runtime import job_handlers
from hub.settings import Settings
from hub.storage.tables import JobRow, RecordPullRow, ResourceRow
from tests.fhir_client import bearer, post, referral
from tests.fhir_server_peer import FhirPeer, TokenServer

SOURCE = "outside-ehr"
FAST_RETRY = HttpRetry(max_attempts=4, backoff_seconds=0.05, retry_server_errors=True)


@dataclass
class PullSetup:
    client: TestClient
    settings: Settings
    peer: FhirPeer
    record: dict[str, Any]
    patient_id: str
    """The case's Patient at the hub."""
    task_id: str

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.client.app.state.hub.sessions  # type: ignore[attr-defined,no-any-return]

    def pull(self, patient: str | None = None) -> RecordPullRow:
        with self.sessions() as session:
            queue_record_pull(session, self.task_id, SOURCE, patient)
            session.commit()
        JobWorker(self.sessions, job_handlers(self.settings)).run_until_idle()
        return self.pull_row()

    def pull_row(self) -> RecordPullRow:
        with self.sessions() as session:
            row = session.scalar(select(RecordPullRow).where(RecordPullRow.source == SOURCE))
            assert row is not None
            session.expunge(row)
            return row

    def held(self) -> Counter[str]:
        """Resource types → how many the hub holds that came from the source."""
        with self.sessions() as session:
            rows = session.execute(
                select(ResourceRow.res_type, func.count())
                .where(ResourceRow.content.contains(self.peer.base_url))
                .group_by(ResourceRow.res_type)
            )
            return Counter({kind: n for kind, n in rows if kind != "Provenance"})

    def stored(self, resource_type: str, source_id: str) -> dict[str, Any]:
        with self.sessions() as session:
            row = session.get(
                ResourceRow, (resource_type, hub_id(SOURCE, resource_type, source_id))
            )
            assert row is not None, f"{resource_type}/{source_id} was not stored"
            return dict(json.loads(row.content), _version=row.version_id)

    def case_events(self) -> list[str]:
        with self.sessions() as session:
            rows = session.scalars(
                select(ResourceRow.content).where(ResourceRow.res_type == "Communication")
            )
            return [json.loads(r)["payload"][0]["contentString"] for r in rows]


def source(peer: FhirPeer, **options: Any) -> FhirSource:
    return FhirSource(name=SOURCE, base_url=peer.base_url, retry=FAST_RETRY, **options)


@pytest.fixture
def setup(
    settings: Settings, fhir_peer: FhirPeer, request: pytest.FixtureRequest
) -> Iterator[PullSetup]:
    """A peer holding a 300-resource record (2,000 with the `large` marker's size), and a
    case at the hub for the same child (her MRN at the source is among her identifiers)."""
    size = getattr(request, "param", 300)
    fhir_peer.reset()
    record = build_outside_record(resources=size, cancer="neuroblastoma", seed=11)
    fhir_peer.load(record)
    outside = next(
        e["resource"] for e in record["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    configured = settings.model_copy(
        update={"fhir_sources": [source(fhir_peer, strategy="queries")]}
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        headers = {
            **bearer(configured, subject="ehr-1", roles=("referrer",), scope="system/*.cruds"),
            "Content-Type": "application/fhir+json",
        }
        stored_patient = post(client, _as_referred(outside, with_identifiers=True), **headers)
        post(client, referral(f"Patient/{stored_patient['id']}"), **headers)
        tasks = client.get("/fhir/Task", params={"patient": stored_patient["id"]}, headers=headers)
        task_id = tasks.json()["entry"][0]["resource"]["id"]
        yield PullSetup(client, configured, fhir_peer, record, stored_patient["id"], task_id)


def use(setup: PullSetup, **options: Any) -> None:
    setup.settings = setup.settings.model_copy(
        update={"fhir_sources": [source(setup.peer, **options)]}
    )


def expected(record: dict[str, Any]) -> Counter[str]:
    """What the hub should hold from the record: all but the patient (who is the hub's)."""
    wanted = Counter(counts(record))
    del wanted["Patient"]
    return wanted


@pytest.mark.parametrize("setup", [2000], indirect=True)
def test_a_case_pulls_the_whole_record_with_smart_backend_services(
    setup: PullSetup, smart_token_server: TokenServer
) -> None:
    peer = setup.peer
    peer.set_auth(
        "jwt",
        jwks_url=smart_token_server.jwks_url,
        issuer=smart_token_server.issuer,
        token_endpoint=smart_token_server.token_url,
    )
    use(
        setup,
        strategy="queries",
        auth=SmartBackendAuth(
            client_id=smart_token_server.client_id,
            private_key_file=smart_token_server.private_key_file,
            scope="system/*.rs",
        ),
    )
    row = setup.pull()
    assert row.status == "complete", row.report
    assert row.source_patient_id == patient_id(setup.record)
    assert setup.held() == expected(setup.record)
    report = json.loads(row.report)
    assert report["problems"] == []
    assert sum(report["stored"].values()) == row.stored == sum(expected(setup.record).values())
    # Every request carried a token (discovered, fetched once, reused), none was refused.
    fhir_requests = [r for r in peer.requests() if "/.well-known/" not in r["path"]]
    assert {r["auth"] for r in fhir_requests if "metadata" not in r["path"]} == {"Bearer"}
    assert {r["status"] for r in fhir_requests} == {200}
    # References point into the hub: at the case's patient, at pulled resources.
    observation_id = next(
        e["resource"]["id"]
        for e in setup.record["entry"]
        if e["resource"]["resourceType"] == "Observation"
    )
    observation = setup.stored("Observation", observation_id)
    assert observation["subject"] == {"reference": f"Patient/{setup.patient_id}"}
    assert observation["meta"]["source"].startswith(f"{peer.base_url}/Observation/{observation_id}")
    document = next(
        e["resource"]
        for e in setup.record["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    )
    binary_id = document["content"][0]["attachment"]["url"].split("/")[1]
    stored_document = setup.stored("DocumentReference", document["id"])
    assert (
        stored_document["content"][0]["attachment"]["url"]
        == f"Binary/{hub_id(SOURCE, 'Binary', binary_id)}"
    )
    assert setup.stored("Binary", binary_id)["data"]
    # The patient's MRN at the source is known to the hub's patient; the case is told.
    assert any("complete" in text and SOURCE in text for text in setup.case_events())
    with setup.sessions() as session:
        provenance = session.scalar(
            select(func.count()).where(
                ResourceRow.res_type == "Provenance", ResourceRow.content.contains(SOURCE)
            )
        )
        assert provenance == 2  # 1,000 targets each


def test_a_re_pull_asks_only_for_what_changed_and_updates_in_place(setup: PullSetup) -> None:
    first = setup.pull()
    assert first.status == "complete", first.report
    before = setup.held()
    lab = next(
        e["resource"]
        for e in setup.record["entry"]
        if e["resource"]["resourceType"] == "Observation"
    )
    time.sleep(0.01)
    changed = {**lab, "status": "amended", "meta": {}}
    setup.peer.load(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": changed,
                    "request": {"method": "PUT", "url": f"Observation/{lab['id']}"},
                }
            ],
        }
    )
    second = setup.pull()
    assert second.status == "complete", second.report
    assert setup.held() == before
    searches = [
        r["path"] for r in setup.peer.requests() if r["path"].startswith("/fhir/R4/Observation?")
    ]
    assert any(
        f"_lastUpdated=gt{first.since}".replace(":", "%3A") in p
        or f"_lastUpdated=gt{first.since}" in p
        for p in searches
    )
    stored = setup.stored("Observation", lab["id"])
    assert (stored["status"], stored["_version"]) == ("amended", 2)
    assert json.loads(second.report)["stored"] == {"updated": 1}


def test_patient_everything_is_used_where_the_source_offers_it(setup: PullSetup) -> None:
    use(setup, strategy="auto", page_size=50)
    row = setup.pull()
    assert row.status == "complete", row.report
    assert json.loads(row.report)["strategy"] == "everything"
    assert setup.held() == expected(setup.record)
    paths = [r["path"] for r in setup.peer.requests()]
    assert sum("$everything" in p for p in paths) > 1  # followed its next links
    assert not any(p.startswith("/fhir/R4/Condition?") for p in paths)


def test_a_bulk_data_export_brings_the_same_record(setup: PullSetup) -> None:
    setup.peer.set_capabilities(export_polls=2)
    use(setup, strategy="bulk-export", export_poll_seconds=0.05)
    row = setup.pull()
    assert row.status == "complete", row.report
    assert setup.held() == expected(setup.record)
    paths = [r["path"] for r in setup.peer.requests()]
    assert sum("$export-status" in p for p in paths) >= 3  # two 202s, then the manifest
    assert any("$export-file" in p for p in paths)


def test_retry_after_503s_and_a_broken_page_are_weathered(setup: PullSetup) -> None:
    setup.peer.set_faults(
        [
            {
                "path_regex": "^/fhir/R4/Condition\\?",
                "count": 1,
                "kind": "status",
                "status": 429,
                "retry_after": 1,
            },
            {"path_regex": "^/fhir/R4/Procedure\\?", "count": 2, "kind": "status", "status": 503},
            {"path_regex": "^/fhir/R4/Observation\\?.*_offset", "count": 1, "kind": "invalid-json"},
        ]
    )
    use(setup, strategy="queries", page_size=40)
    row = setup.pull()
    assert row.status == "complete", row.report
    assert setup.held() == expected(setup.record)
    log = setup.peer.requests()
    conditions = [r for r in log if r["path"].startswith("/fhir/R4/Condition?")]
    assert [r["status"] for r in conditions] == [429, 200]
    assert conditions[1]["time_ms"] - conditions[0]["time_ms"] >= 950  # Retry-After: 1
    assert [r["status"] for r in log if r["path"].startswith("/fhir/R4/Procedure?")] == [
        503,
        503,
        200,
    ]
    assert sum(1 for r in log if r.get("fault") == "invalid-json") == 1


def test_what_the_source_cannot_give_is_reported_exactly(setup: PullSetup) -> None:
    invalid = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "resource": {
                    "resourceType": "AllergyIntolerance",
                    "id": "bad-1",
                    "patient": {"reference": f"Patient/{patient_id(setup.record)}"},
                    "clinicalStatus": "active",
                }
            }
        ],
    }
    setup.peer.set_faults(
        [
            {
                "path_regex": "^/fhir/R4/DiagnosticReport\\?",
                "count": 99,
                "kind": "status",
                "status": 500,
            },
            {
                "path_regex": "^/fhir/R4/AllergyIntolerance\\?",
                "count": 1,
                "kind": "status",
                "status": 200,
                "body": invalid,
            },
        ]
    )
    use(setup, strategy="queries")
    row = setup.pull()
    assert row.status == "incomplete"
    problems = json.loads(row.report)["problems"]
    missing = [p for p in problems if p["kind"] == "query"]
    assert [p["where"] for p in missing] == ["DiagnosticReport?patient={patient}"]
    assert "HTTP 500" in missing[0]["detail"]
    [bad] = [p for p in problems if p["kind"] == "invalid"]
    assert bad["where"] == "AllergyIntolerance/bad-1" and "clinicalStatus" in bad["detail"]
    held = setup.held()
    # Only the reports other resources name were read one by one; the search's are missing.
    assert held["DiagnosticReport"] < expected(setup.record)["DiagnosticReport"]
    assert held["AllergyIntolerance"] == 0
    assert held["Condition"] == expected(setup.record)["Condition"]
    assert any("incomplete" in t and "DiagnosticReport" in t for t in setup.case_events())


def test_an_unresolvable_reference_is_kept_as_its_source_url_and_reported(
    settings: Settings, fhir_peer: FhirPeer
) -> None:
    fhir_peer.reset()
    record = build_outside_record(
        resources=150, cancer="osteosarcoma", seed=5, dangling=3, with_contained=True
    )
    fhir_peer.load(record)
    departed = dangling_reference(cancer="osteosarcoma", seed=5)
    gone = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "deleted", "diagnostics": "retired from this directory"}
        ],
    }
    fhir_peer.set_faults(
        [
            {
                "path_regex": f"^/fhir/R4/{departed}$",
                "count": 9,
                "kind": "status",
                "status": 410,
                "body": gone,
            }
        ]
    )
    configured = settings.model_copy(
        update={"fhir_sources": [source(fhir_peer, strategy="queries")]}
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        setup = _case(client, configured, fhir_peer, record)
        row = setup.pull()
        observation = setup.stored("Observation", unresolved_holder(record, departed))
    assert row.status == "complete", row.report
    report = json.loads(row.report)
    unresolved = [p for p in report["problems"] if p["kind"] == "unresolved"]
    assert len(unresolved) == 3
    assert all("HTTP 410" in p["detail"] and "retired" in p["detail"] for p in unresolved)
    assert {"reference": f"{fhir_peer.base_url}/{departed}"} in observation["performer"]
    assert report["contained"] == {"Medication": 1}  # kept in its MedicationRequest


def test_an_ambiguous_patient_is_held_until_a_case_manager_chooses(
    settings: Settings, fhir_peer: FhirPeer
) -> None:
    fhir_peer.reset()
    fhir_peer.set_capabilities(match=False)
    record = build_outside_record(resources=120, cancer="hodgkin-lymphoma", seed=3)
    fhir_peer.load(record)
    outside = next(
        e["resource"] for e in record["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    twin = {**outside, "id": "twin-record", "identifier": [{"system": "urn:x", "value": "other"}]}
    fhir_peer.load(
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {"resource": twin, "request": {"method": "PUT", "url": "Patient/twin-record"}}
            ],
        }
    )
    configured = settings.model_copy(
        update={"fhir_sources": [source(fhir_peer, strategy="queries")]}
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        setup = _case(client, configured, fhir_peer, record, with_identifiers=False)
        row = setup.pull()
        assert row.status == "held"
        candidates = json.loads(row.report)["candidates"]
        assert sorted(c["id"] for c in candidates) == sorted([outside["id"], "twin-record"])
        assert any("a case manager must choose" in t for t in setup.case_events())
        manager = bearer(
            configured,
            subject="cm-1",
            roles=("case-manager",),
            scope="user/*.cruds",
            programs=("oncology",),
        )
        chosen = client.post(
            f"/records/cases/{setup.task_id}/$pull",
            json={"source": SOURCE, "patient": outside["id"]},
            headers=manager,
        )
        assert chosen.status_code == 202, chosen.text
        JobWorker(setup.sessions, job_handlers(configured)).run_until_idle()
        row = setup.pull_row()
        assert row.status == "complete" and row.source_patient_id == outside["id"]
        pulls = client.get(f"/records/cases/{setup.task_id}/pulls", headers=manager).json()
        assert pulls["pulls"][0]["status"] == "complete"


def test_an_es384_client_key_is_as_good_as_rs384(
    setup: PullSetup, smart_token_server: TokenServer, tmp_path: Path
) -> None:
    key = ECKey.generate_key("P-384", parameters={"alg": "ES384", "use": "sig"})
    private = key.as_dict(private=True) | {"kid": key.thumbprint()}
    public = {k: v for k, v in private.items() if k not in ("d",)}
    client_id = f"es384-connector-{setup.task_id[:8]}"
    smart_token_server.register(client_id, public)
    key_file = tmp_path / "es384.jwk.json"
    key_file.write_text(json.dumps(private))
    setup.peer.set_auth(
        "jwt",
        jwks_url=smart_token_server.jwks_url,
        issuer=smart_token_server.issuer,
        token_endpoint=smart_token_server.token_url,
    )
    use(setup, auth=SmartBackendAuth(client_id=client_id, private_key_file=key_file))
    row = setup.pull()
    assert row.status == "complete", row.report
    assert setup.held() == expected(setup.record)


def test_without_a_shared_identifier_the_patient_is_found_by_match(
    settings: Settings, fhir_peer: FhirPeer
) -> None:
    fhir_peer.reset()
    record = build_outside_record(resources=120, cancer="medulloblastoma", seed=4)
    fhir_peer.load(record)
    configured = settings.model_copy(
        update={"fhir_sources": [source(fhir_peer, strategy="queries")]}
    )
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        setup = _case(client, configured, fhir_peer, record, with_identifiers=False)
        row = setup.pull()
    assert row.status == "complete", row.report
    assert row.source_patient_id == patient_id(record)
    assert any(r["path"].endswith("Patient/$match") for r in fhir_peer.requests())
    assert setup.held() == expected(record)


def test_a_refused_token_fails_the_pull_clearly_and_shows_in_source_health(
    setup: PullSetup, smart_token_server: TokenServer
) -> None:
    setup.peer.set_auth("jwt", jwks_url=smart_token_server.jwks_url, issuer="https://someone-else")
    use(
        setup,
        auth=SmartBackendAuth(
            client_id=smart_token_server.client_id,
            private_key_file=smart_token_server.private_key_file,
            token_url=smart_token_server.token_url,
        ),
    )
    row = setup.pull()
    assert row.status == "failed"
    assert "HTTP 401" in (row.error or "")
    with setup.sessions() as session:
        job = session.scalar(select(JobRow).where(JobRow.kind == PULL_RECORDS_JOB))
        assert job is not None and job.status == "pending" and job.attempts == 1
    assert any("the pull failed" in t and "401" in t for t in setup.case_events())
    admin = bearer(setup.settings, subject="it-1", roles=("admin",), scope="system/*.rs")
    health = setup.client.get("/records/sources", headers=admin).json()["sources"][0]
    assert health["failed_pulls"] == 1 and "401" in health["last_error"]


def _case(
    client: TestClient,
    settings: Settings,
    peer: FhirPeer,
    record: dict[str, Any],
    *,
    with_identifiers: bool = True,
) -> PullSetup:
    outside = next(
        e["resource"] for e in record["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    headers = {
        **bearer(settings, subject="ehr-1", roles=("referrer",), scope="system/*.cruds"),
        "Content-Type": "application/fhir+json",
    }
    stored = post(client, _as_referred(outside, with_identifiers=with_identifiers), **headers)
    post(client, referral(f"Patient/{stored['id']}"), **headers)
    tasks = client.get("/fhir/Task", params={"patient": stored["id"]}, headers=headers).json()
    return PullSetup(
        client, settings, peer, record, stored["id"], tasks["entry"][0]["resource"]["id"]
    )


def unresolved_holder(record: dict[str, Any], reference: str) -> str:
    """The id of the first resource of `record` that names `reference`."""
    return next(
        e["resource"]["id"]
        for e in record["entry"]
        if f'"{reference}"' in json.dumps(e["resource"])
    )


def _as_referred(outside: dict[str, Any], *, with_identifiers: bool) -> dict[str, Any]:
    """The child as the referrer sent her to the hub: same name, birth date and sex, and
    (`with_identifiers`) her MRN at the outside EHR."""
    patient = {
        "resourceType": "Patient",
        **{k: outside[k] for k in ("name", "birthDate", "gender")},
    }
    if with_identifiers:
        patient["identifier"] = [
            {k: v for k, v in identifier.items() if k != "assigner"}
            for identifier in outside["identifier"]
        ]
    return patient
