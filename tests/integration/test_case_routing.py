"""A new case is routed (config/routing.yaml, here with a specialist pool): program from the
referral's diagnosis, urgent with a short due date for relapsed leukaemia, the least loaded
specialist as owner, who alone of the pool sees it; a case manager can reassign it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from hub.app import create_app
from hub.settings import Settings
from hub.workflow.routing import DEFAULT_TABLE, ICD10CM, use_routing_file
from tests.fhir_client import bearer, patient, post, referral


@pytest.fixture
def routed(settings: Settings, tmp_path: Path) -> Any:
    """The API with a pool of two specialists for transplant and cellular therapy."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        admin = bearer(settings, roles=("admin",), scope="system/*.cruds")
        pool = [
            post(client, {"resourceType": "Practitioner", "name": [{"family": name}]}, **admin)[
                "id"
            ]
            for name in ("Ada", "Ben")
        ]
        table = yaml.safe_load(DEFAULT_TABLE.read_text())
        table["routing"]["pools"] = {"bmt-cellular-therapy": pool}
        routing_file = tmp_path / "routing.yaml"
        routing_file.write_text(yaml.safe_dump(table))
        use_routing_file(routing_file)
        try:
            yield client, settings, pool
        finally:
            use_routing_file(DEFAULT_TABLE)


def refer(client: TestClient, settings: Settings, code: str) -> dict[str, Any]:
    headers = bearer(settings, subject="ehr-1", roles=("referrer",), scope="system/*.cruds")
    child = post(client, patient(), **headers)
    reason = {"reasonCode": [{"coding": [{"system": ICD10CM, "code": code}]}]}
    post(client, referral(f"Patient/{child['id']}", **reason), **headers)
    tasks = client.get("/fhir/Task", params={"patient": child["id"]}, headers=headers).json()
    task: dict[str, Any] = tasks["entry"][0]["resource"]
    return task


def test_relapsed_leukaemia_goes_fast_to_the_least_loaded_specialist(routed: Any) -> None:
    client, settings, (ada, ben) = routed
    first = refer(client, settings, "C91.02")
    assert first["performerType"][0]["coding"][0]["code"] == "bmt-cellular-therapy"
    assert first["priority"] == "urgent"
    due = datetime.fromisoformat(first["restriction"]["period"]["end"])
    opened = datetime.fromisoformat(first["authoredOn"])
    assert timedelta(days=2, hours=23) < due - opened < timedelta(days=3, hours=1)
    assert first["owner"] == {"reference": f"Practitioner/{ada}"}
    assert "C91.02" in first["note"][-1]["text"]
    second = refer(client, settings, "C92.02")
    assert second["owner"] == {"reference": f"Practitioner/{ben}"}  # Ada has one open
    seen = client.get("/fhir/Task", headers=specialist(settings, ben)).json()
    assert [entry["resource"]["id"] for entry in seen.get("entry", [])] == [second["id"]]


def test_a_routine_case_of_a_program_without_pool_waits_for_its_managers(routed: Any) -> None:
    client, settings, _ = routed
    task = refer(client, settings, "C71.6")
    assert task["performerType"][0]["coding"][0]["code"] == "neuro-oncology"
    assert task["priority"] == "routine" and "owner" not in task
    due = datetime.fromisoformat(task["restriction"]["period"]["end"])
    assert due - datetime.fromisoformat(task["authoredOn"]) > timedelta(days=13)


def test_a_case_manager_reassigns_a_case(routed: Any) -> None:
    client, settings, (ada, ben) = routed
    task = refer(client, settings, "C91.02")
    assert task["owner"] == {"reference": f"Practitioner/{ada}"}
    manager = bearer(
        settings,
        subject="cm-1",
        roles=("case-manager",),
        scope="user/*.cruds",
        programs=("bmt-cellular-therapy",),
    )
    moved = {**task, "owner": {"reference": f"Practitioner/{ben}"}}
    response = client.put(f"/fhir/Task/{task['id']}", json=moved, headers=manager)
    assert response.status_code == 200, response.text
    task_url = f"/fhir/Task/{task['id']}"
    assert client.get(task_url, headers=specialist(settings, ben)).status_code == 200
    assert client.get(task_url, headers=specialist(settings, ada)).status_code == 404


def specialist(settings: Settings, practitioner: str) -> dict[str, str]:
    return bearer(
        settings,
        subject=f"user-{practitioner}",
        roles=("specialist",),
        scope="user/*.rs",
        fhir_user=f"Practitioner/{practitioner}",
    )
