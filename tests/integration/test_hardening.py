"""Hardening: no PHI in the logs of a real server, security headers, rate limits."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from hub.app import create_app
from hub.demo.run import refer_synthetic_patient
from hub.demo.synthetic import build_patient_records
from hub.settings import Settings
from tests.backends import sqlite_only
from tests.fhir_client import bearer

HUB = Path(sys.executable).with_name("hub")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def synthetic_phi() -> list[str]:
    """The identifying values of the demo's synthetic child and guardian."""
    bundle = build_patient_records()
    values = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] in ("Patient", "RelatedPerson"):
            for name in resource.get("name", []):
                values += [name["family"], *name.get("given", [])]
            values += [i["value"] for i in resource.get("identifier", [])]
            values += [t["value"] for t in resource.get("telecom", [])]
            if "birthDate" in resource:
                values.append(resource["birthDate"])
    return [v for v in values if len(v) >= 4]


@pytest.fixture
def served(tmp_path, signing_key_file):
    """`hub serve` in its own process, logging at INFO to a file."""
    port = free_port()
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    log_file = tmp_path / "hub.log"
    env = {
        **os.environ,
        "HUB_DATABASE_URL": database,
        "HUB_PORT": str(port),
        "HUB_SIGNING_KEY_FILE": str(signing_key_file),
    }
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [str(HUB), "serve", "--log-level", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        settings = Settings(database_url=database, port=port, signing_key_file=signing_key_file)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None and time.monotonic() < deadline, log_file.read_text()
                time.sleep(0.2)
            yield settings, log_file
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_the_log_of_a_real_server_holds_no_patient_data(served):
    settings, log_file = served
    case = refer_synthetic_patient(settings)
    family = build_patient_records()["entry"]
    child = next(e["resource"] for e in family if e["resource"]["resourceType"] == "Patient")
    manager = bearer(settings, subject="cm-1", roles=("case-manager",), scope="user/*.cruds")
    base = settings.audience
    searches = [
        ("Patient", {"family": child["name"][0]["family"]}),
        ("Patient", {"birthdate": child["birthDate"]}),
        ("Patient", {"identifier": child["identifier"][0]["value"]}),
    ]
    for resource_type, params in searches:
        found = httpx.get(f"{base}/{resource_type}", params=params, headers=manager, timeout=30)
        assert found.status_code == 200 and found.json()["total"] >= 1, found.text
    bad = {**child, "birthDate": "not a date"}
    refused = httpx.post(
        f"{base}/Patient",
        json=bad,
        timeout=30,
        headers={**manager, "Content-Type": "application/fhir+json"},
    )
    assert refused.status_code == 422
    assert httpx.get(case.record_bundle_url, headers=manager, timeout=30).status_code == 200

    log = log_file.read_text()
    assert "GET /fhir/{resource_type} 200" in log  # the access log was on
    assert "POST /fhir/{resource_type} 422" in log
    phi = synthetic_phi()
    assert len(phi) >= 6
    leaked = [value for value in phi if value in log]
    assert leaked == []


@sqlite_only  # middleware: the answers never depend on the database
def test_responses_carry_security_headers(anonymous):
    response = anonymous.get("/fhir/metadata")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert anonymous.get("/fhir/Patient").headers["strict-transport-security"]


@sqlite_only  # the limiter counts in memory, before any query
def test_a_client_over_its_rate_is_told_to_wait(settings: Settings):
    limited = settings.model_copy(update={"rate_limit_per_minute": 3})
    with TestClient(create_app(limited), raise_server_exceptions=False) as client:
        headers = bearer(limited)
        statuses = [client.get("/fhir/Patient", headers=headers).status_code for _ in range(4)]
        other = client.get("/fhir/Patient", headers=bearer(limited, subject="other-ehr"))
    assert statuses == [200, 200, 200, 429]
    assert other.status_code == 200
