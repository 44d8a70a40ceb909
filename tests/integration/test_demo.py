"""The README's main job, run as a person would: `hub demo` on a fresh SQLite file."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
from fhir.resources.R4B.bundle import Bundle

from hub.demo.run import BackgroundServer, refer_synthetic_patient
from hub.security.users import UserDirectory
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade
from hub.storage.tables import ResourceRow
from tests.fhir_client import bearer

HUB = Path(sys.executable).with_name("hub")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_demo(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(HUB), "demo", "--exit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_hub_demo_opens_a_received_case_on_fresh_sqlite(tmp_path):
    database = tmp_path / "fresh" / "hub.db"
    env = {**os.environ, "HUB_DATABASE_URL": f"sqlite:///{database}", "HUB_PORT": str(free_port())}
    first = run_demo(env).stdout
    assert "State: received (awaiting-records)" in first
    assert re.search(
        r"Record bundle: http://127\.0\.0\.1:\d+/fhir/ServiceRequest/[\w-]+/"
        r"\$record-bundle",
        first,
    )
    assert database.is_file()
    again = run_demo(env).stdout  # idempotent: the same case, not a second one
    first_case = re.search(r"Case opened: (Task/\S+)", first)
    second_case = re.search(r"Case opened: (Task/\S+)", again)
    assert first_case and second_case and first_case.group(1) == second_case.group(1)

    # The people who sign in to the pages: the case went to the demo's specialist, and each
    # run prints fresh passwords for the same people.
    signed_in = re.findall(r"^\s+(\S+)\s+(demo-\S+)\s+(\S{20,})\s+\(", first, re.MULTILINE)
    assert [(role, name) for role, name, _ in signed_in] == [
        ("specialist", "demo-specialist"),
        ("case-manager", "demo-case-manager"),
        ("admin", "demo-it"),
    ]
    again_signed = re.findall(r"^\s+\S+\s+demo-\S+\s+(\S{20,})\s+\(", again, re.MULTILINE)
    assert len(again_signed) == 3 and set(again_signed).isdisjoint(p for *_, p in signed_in)
    engine = make_engine(env["HUB_DATABASE_URL"])
    with make_session_factory(engine)() as session:
        specialist = UserDirectory(session).find("demo-specialist")
        task = session.get(ResourceRow, ("Task", first_case.group(1).removeprefix("Task/")))
        assert specialist is not None and task is not None
        assert json.loads(task.content)["owner"]["reference"] == specialist.fhir_user
    engine.dispose()


def test_demo_record_bundle_is_a_valid_r4_bundle(database_url, signing_key_file):
    settings = Settings(
        database_url=database_url, port=free_port(), signing_key_file=signing_key_file
    )
    upgrade(make_engine(database_url))
    server = BackgroundServer(settings)
    server.start()
    try:
        case = refer_synthetic_patient(settings)
        bundle = httpx.get(case.record_bundle_url, headers=bearer(settings), timeout=30).json()
    finally:
        server.stop()
    Bundle.model_validate(bundle)
    assert case.status == "received"
    assert case.record_bundle_counts["Patient"] == 1
    assert case.record_bundle_counts["Observation"] >= 16
    assert {
        "Condition",
        "DiagnosticReport",
        "MedicationAdministration",
        "Procedure",
        "RelatedPerson",
        "DocumentReference",
        "Task",
        "ServiceRequest",
    } <= set(case.record_bundle_counts)
