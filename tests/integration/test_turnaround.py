"""Turnaround from the stored history of case Tasks, on both backends: the per-program figures,
the worklist of overdue and at-risk cases, who sees what, and the Prometheus metrics.

The histories are written the way the workflow writes them (ResourceRepository.update, one
version per move), with the repository's clock set to chosen moments; `now` is chosen too.
The calendar is New York's, with Memorial Day (Mon 25 May 2026) and Juneteenth (Fri 19 June
2026) as holidays. One case walks through the API at real time."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

import hub.api.turnaround as turnaround_api
import hub.storage.repository as repository_module
import hub.workflow.turnaround as turnaround_module
from hub import codes
from hub.app import create_app
from hub.settings import Settings
from hub.storage.repository import ResourceRepository
from hub.storage.tables import ResourceRow
from hub.workflow.cases import business_status
from hub.workflow.turnaround_config import TurnaroundSettings
from tests.fhir_client import bearer, patient, post, referral

NEW_YORK = ZoneInfo("America/New_York")


def et(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A New York wall-clock moment of 2026 as the naive UTC the database holds."""
    local = datetime(2026, month, day, hour, minute, tzinfo=NEW_YORK)
    return local.astimezone(UTC).replace(tzinfo=None)


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


NOW = et(6, 18, 12)  # Thursday
AWAITING = ("received", "awaiting-records")
COMPLETE = ("received", "records-complete")
ASSIGNED = ("accepted", "assigned")
DELIVERED = ("in-progress", "opinion-delivered")
DONE = ("completed", "opinion-delivered")
CANCELLED = ("cancelled", None)

# id → (program, priority, owner, [(moment, (status, businessStatus)), ...])
CASES: dict[str, tuple[str, str, str | None, list[tuple[datetime, tuple[str, str | None]]]]] = {
    # Fri noon → Wed noon over Memorial Day: ½ + Tue + ½ = 2 business days.
    "onc-a": (
        "oncology",
        "routine",
        None,
        [
            (et(5, 20, 9), AWAITING),
            (et(5, 22, 12), COMPLETE),
            (et(5, 26, 9), ASSIGNED),
            (et(5, 27, 12), DELIVERED),
            (et(5, 27, 12, 5), DONE),
        ],
    ),
    # Mon 1 → Fri 12 June: 9 business days, past the 7 promised.
    "onc-b": (
        "oncology",
        "routine",
        None,
        [(et(6, 1, 12), COMPLETE), (et(6, 2, 9), ASSIGNED), (et(6, 12, 12), DELIVERED)],
    ),
    # Urgent (3 days) since Mon 09:00: due Thu 09:00, now Thu noon.
    "onc-c": (
        "oncology",
        "urgent",
        "Practitioner/p-1",
        [(et(6, 12, 9), AWAITING), (et(6, 15, 9), COMPLETE), (et(6, 15, 10), ASSIGNED)],
    ),
    # Routine since Wed 10 June noon: 6 of 7 days gone (at risk from 5.6), due after Juneteenth.
    "onc-d": (
        "oncology",
        "routine",
        "Practitioner/p-2",
        [(et(6, 10, 12), COMPLETE), (et(6, 11, 9), ASSIGNED)],
    ),
    "onc-e": ("oncology", "routine", None, [(et(6, 17, 9), AWAITING)]),
    # Complete, sent back for records, complete again: the clock restarts (Tue 16 June).
    "onc-f": (
        "oncology",
        "routine",
        None,
        [(et(6, 8, 12), COMPLETE), (et(6, 9, 12), AWAITING), (et(6, 16, 12), COMPLETE)],
    ),
    # Delivered in January: outside the 90-day window of the figures.
    "onc-g": (
        "oncology",
        "routine",
        None,
        [(et(1, 5, 12), COMPLETE), (et(1, 7, 12), DELIVERED)],
    ),
    "onc-h": ("oncology", "routine", None, [(et(6, 1, 12), COMPLETE), (et(6, 2, 12), CANCELLED)]),
    # Hematology promises 5 days: Mon → Fri is 4; Mon 8 June → now is 8.
    "hem-a": (
        "hematology",
        "routine",
        None,
        [(et(6, 1, 12), COMPLETE), (et(6, 5, 12), DELIVERED)],
    ),
    "hem-b": ("hematology", "routine", None, [(et(6, 8, 12), COMPLETE)]),
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def hub(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, Settings]]:
    """The API with a New York calendar and the CASES stored, its clock at NOW."""
    config = TurnaroundSettings(
        time_zone="America/New_York", holidays=[date(2026, 5, 25), date(2026, 6, 19)]
    )
    configured = settings.model_copy(update={"turnaround": config})
    clock = Clock(NOW)
    for module in (repository_module, turnaround_module, turnaround_api):
        monkeypatch.setattr(module, "utc_now", clock)
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        with client.app.state.hub.sessions.begin() as session:  # type: ignore[attr-defined]
            store = ResourceRepository(session, author="test-history")
            for task_id, (program, priority, owner, moves) in CASES.items():
                for number, (moment, (status, business)) in enumerate(moves):
                    clock.now = moment
                    task = case_task(program, priority, owner, status, business)
                    if number == 0:
                        store.create("Task", task, resource_id=task_id)
                        session.flush()
                    else:
                        store.update("Task", task_id, task)
        clock.now = NOW
        yield client, configured


def case_task(
    program: str, priority: str, owner: str | None, status: str, business: str | None
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": status,
        "intent": "order",
        "priority": priority,
        "code": {"coding": [{"system": codes.CASE_TASK_SYSTEM, "code": codes.CASE_TASK_CODE}]},
        "performerType": [{"coding": [{"system": codes.PROGRAM_SYSTEM, "code": program}]}],
    }
    if business:
        task["businessStatus"] = business_status(business)
    if status == "cancelled":
        task["statusReason"] = {"text": "withdrawn by the family"}
    if owner:
        task["owner"] = {"reference": owner}
    return task


def admin(settings: Settings, scope: str = "system/Task.s") -> dict[str, str]:
    return bearer(settings, subject="ops", roles=("admin",), scope=scope)


def manager(settings: Settings, *programs: str, scope: str = "system/Task.rs") -> dict[str, str]:
    return bearer(settings, subject="cm", roles=("case-manager",), scope=scope, programs=programs)


ONCOLOGY = {
    "program": "oncology",
    "display": codes.PROGRAMS["oncology"],
    "promiseBusinessDays": {"routine": 7.0, "urgent": 3.0},
    "open": 4,
    "awaitingRecords": 1,
    "onTime": 1,
    "atRisk": 1,
    "overdue": 1,
    "delivered": 2,
    "deliveredLate": 1,
    "medianBusinessDays": 5.5,
    "p90BusinessDays": 8.3,
}
HEMATOLOGY = {
    "program": "hematology",
    "display": codes.PROGRAMS["hematology"],
    "promiseBusinessDays": {"routine": 5.0, "urgent": 2.0},
    "open": 1,
    "awaitingRecords": 0,
    "onTime": 0,
    "atRisk": 0,
    "overdue": 1,
    "delivered": 1,
    "deliveredLate": 0,
    "medianBusinessDays": 4.0,
    "p90BusinessDays": 4.0,
}


def empty(program: str) -> dict[str, Any]:
    promise = TurnaroundSettings().promises[program]
    return {
        "program": program,
        "display": codes.PROGRAMS[program],
        "promiseBusinessDays": {"routine": promise.routine, "urgent": promise.urgent},
        **dict.fromkeys(("open", "awaitingRecords", "onTime", "atRisk", "overdue", "delivered"), 0),
        "deliveredLate": 0,
        "medianBusinessDays": None,
        "p90BusinessDays": None,
    }


def entry(
    task_id: str,
    state: str,
    complete: datetime,
    due: datetime,
    days: float,
    *,
    program: str = "oncology",
    priority: str = "routine",
    owner: str | None = None,
    status: str = "accepted",
    business: str = "assigned",
    promise: float = 7.0,
) -> dict[str, Any]:
    return {
        "task": f"Task/{task_id}",
        "program": program,
        "priority": priority,
        "owner": owner,
        "status": status,
        "businessStatus": business,
        "state": state,
        "recordsCompleteAt": z(complete),
        "due": z(due),
        "deliveredAt": None,
        "businessDays": days,
        "promiseBusinessDays": promise,
    }


ONC_C = entry(
    "onc-c",
    "overdue",
    et(6, 15, 9),
    et(6, 18, 9),
    3.12,  # 3 + 3/24
    priority="urgent",
    owner="Practitioner/p-1",
    promise=3.0,
)
ONC_D = entry("onc-d", "at-risk", et(6, 10, 12), et(6, 22, 12), 6.0, owner="Practitioner/p-2")
HEM_B = entry(
    "hem-b",
    "overdue",
    et(6, 8, 12),
    et(6, 15, 12),
    8.0,
    program="hematology",
    status="received",
    business="records-complete",
    promise=5.0,
)


def test_figures_per_program(hub: tuple[TestClient, Settings]) -> None:
    client, settings = hub
    response = client.get("/cases/turnaround", headers=admin(settings))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["generated"] == z(NOW)
    assert (body["timeZone"], body["windowDays"], body["atRiskFraction"]) == (
        "America/New_York",
        90,
        0.8,
    )
    assert body["programs"] == sorted(
        [
            ONCOLOGY,
            HEMATOLOGY,
            empty("bmt-cellular-therapy"),
            empty("neuro-oncology"),
            empty("hemophilia-thrombosis"),
        ],
        key=lambda figures: str(figures["program"]),
    )
    one = client.get("/cases/turnaround", params={"program": "hematology"}, headers=admin(settings))
    assert one.json()["programs"] == [HEMATOLOGY]


def test_the_worklist_lists_overdue_and_at_risk_cases_due_first_first(
    hub: tuple[TestClient, Settings],
) -> None:
    client, settings = hub
    everyone = client.get("/cases/worklist", headers=admin(settings)).json()
    assert everyone["states"] == ["overdue", "at-risk"]
    assert everyone["cases"] == [HEM_B, ONC_C, ONC_D]
    assert everyone["total"] == 3
    overdue = client.get(
        "/cases/worklist",
        params={"state": "overdue", "program": "oncology"},
        headers=admin(settings),
    ).json()
    assert overdue["cases"] == [ONC_C]
    on_time = client.get(
        "/cases/worklist", params={"state": "on-time"}, headers=manager(settings, "oncology")
    ).json()
    # The clock restarted when the records were complete again.
    assert on_time["cases"] == [
        entry(
            "onc-f",
            "on-time",
            et(6, 16, 12),
            et(6, 26, 12),
            2.0,
            status="received",
            business="records-complete",
        )
    ]
    waiting = client.get(
        "/cases/worklist",
        params={"state": "awaiting-records"},
        headers=manager(settings, "oncology"),
    ).json()
    assert [case["task"] for case in waiting["cases"]] == ["Task/onc-e"]
    assert waiting["cases"][0]["due"] is None and waiting["cases"][0]["businessDays"] is None


def test_case_managers_see_their_programs_only(hub: tuple[TestClient, Settings]) -> None:
    client, settings = hub
    oncology = manager(settings, "oncology")
    assert client.get("/cases/worklist", headers=oncology).json()["cases"] == [ONC_C, ONC_D]
    assert client.get("/cases/turnaround", headers=oncology).json()["programs"] == [ONCOLOGY]
    hematology = manager(settings, "hematology")
    assert client.get("/cases/worklist", headers=hematology).json()["cases"] == [HEM_B]
    neuro = manager(settings, "neuro-oncology")
    assert client.get("/cases/worklist", headers=neuro).json()["cases"] == []
    assert client.get("/cases/turnaround", headers=neuro).json()["programs"] == [
        empty("neuro-oncology")
    ]
    # Naming another program shows nothing of it.
    other = client.get("/cases/worklist", params={"program": "oncology"}, headers=neuro).json()
    assert other["cases"] == []
    figures = client.get("/cases/turnaround", params={"program": "oncology"}, headers=neuro)
    assert figures.json()["programs"] == []


def test_who_may_not_look(hub: tuple[TestClient, Settings]) -> None:
    client, settings = hub
    audited_before = audit_events(client)
    referrer = bearer(settings, subject="ehr", roles=("referrer",), scope="system/*.cruds")
    specialist = bearer(settings, subject="dr", roles=("specialist",), fhir_user="Practitioner/p-1")
    no_task_scope = manager(settings, "oncology", scope="system/Patient.rs")
    for path in ("/cases/turnaround", "/cases/worklist"):
        assert client.get(path).status_code == 401
        for headers in (referrer, specialist, no_task_scope):
            refused = client.get(path, headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["resourceType"] == "OperationOutcome"
    assert audit_events(client) == audited_before + 6  # each refusal is audited
    unknown = client.get(
        "/cases/worklist", params={"program": "dermatology"}, headers=admin(settings)
    )
    assert unknown.status_code == 400
    bad_state = client.get("/cases/worklist", params={"state": "late"}, headers=admin(settings))
    assert bad_state.status_code == 400
    # Answered views are not audited: they hold no patient data.
    client.get("/cases/worklist", headers=admin(settings))
    assert audit_events(client) == audited_before + 6


def test_prometheus_metrics(hub: tuple[TestClient, Settings]) -> None:
    client, settings = hub
    response = client.get("/metrics", headers=admin(settings))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    expected: dict[str, dict[str, Any]] = {"oncology": ONCOLOGY, "hematology": HEMATOLOGY}
    for program in codes.PROGRAMS:
        figures = expected.get(program) or empty(program)
        for metric, key in (
            ("hub_cases_open", "open"),
            ("hub_cases_awaiting_records", "awaitingRecords"),
            ("hub_cases_on_time", "onTime"),
            ("hub_cases_at_risk", "atRisk"),
            ("hub_cases_overdue", "overdue"),
            ("hub_cases_delivered", "delivered"),
            ("hub_cases_delivered_late", "deliveredLate"),
        ):
            assert value(metric, program=program) == figures[key], (metric, program)
        for quantile, key in (("0.5", "medianBusinessDays"), ("0.9", "p90BusinessDays")):
            got = value("hub_case_turnaround_business_days", program=program, quantile=quantile)
            if figures[key] is None:
                assert math.isnan(got)
            else:
                assert got == pytest.approx(figures[key])
        promise = figures["promiseBusinessDays"]
        for priority in ("routine", "urgent"):
            assert (
                value(
                    "hub_case_turnaround_promise_business_days", program=program, priority=priority
                )
                == promise[priority]
            )
    openmetrics = client.get(
        "/metrics", headers={**admin(settings), "Accept": "application/openmetrics-text"}
    )
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=manager(settings, "oncology")).status_code == 403
    assert (
        client.get("/metrics", headers=admin(settings, "system/AuditEvent.rs")).status_code == 403
    )


def test_a_case_moved_through_the_api_is_on_the_clock(
    client: TestClient, settings: Settings
) -> None:
    """At real time, on the default calendar (UTC, no holidays)."""
    child = post(client, patient())
    request = post(client, referral(f"Patient/{child['id']}"))
    found = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"}).json()
    task_id = found["entry"][0]["resource"]["id"]
    waiting = client.get("/cases/worklist", params={"state": "awaiting-records"}).json()
    assert [case["task"] for case in waiting["cases"]] == [f"Task/{task_id}"]
    parameters = [
        {"name": "status", "valueCode": "accepted"},
        {"name": "businessStatus", "valueCode": "records-complete"},
    ]
    moved = client.post(
        f"/fhir/Task/{task_id}/$transition",
        content=json.dumps({"resourceType": "Parameters", "parameter": parameters}),
    )
    assert moved.status_code == 200, moved.text
    completed_at = moved.json()["meta"]["lastUpdated"]
    on_time = client.get("/cases/worklist", params={"state": "on-time"}).json()
    assert [(c["task"], c["recordsCompleteAt"]) for c in on_time["cases"]] == [
        (f"Task/{task_id}", completed_at)
    ]
    assert 0 <= on_time["cases"][0]["businessDays"] < 0.01
    figures = client.get("/cases/turnaround", params={"program": "oncology"}).json()
    assert figures["programs"][0]["open"] == figures["programs"][0]["onTime"] == 1


def audit_events(client: TestClient) -> int:
    with client.app.state.hub.sessions() as session:  # type: ignore[attr-defined]
        count = session.scalar(
            select(func.count())
            .select_from(ResourceRow)
            .where(ResourceRow.res_type == "AuditEvent")
        )
    return int(count or 0)
