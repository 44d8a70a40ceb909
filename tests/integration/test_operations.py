"""Operations on both backends: the Prometheus metrics of the message log, the outbox and the
connectors; JSON logs whose correlation id follows a message from MLLP receipt to the
resources it made; the message log's retention, which deletes, audits and frees space."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from connectors.base import Envelope
from hub.app import create_app
from hub.cli import app as cli
from hub.fhir.dates import utc_now
from hub.jobs.outbox import enqueue
from hub.jobs.worker import JobWorker
from hub.logs import configure_logging
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.messages.mapping_job import map_hl7_message
from hub.messages.outbound import DELIVER_JOB, MllpDestination, queue_outbound
from hub.messages.retention import PruneResult, database_bytes, prune_messages, vacuum
from hub.records.fhir_pull import PULL_RECORDS_JOB
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import JobRow, MessageRow, ResourceRow
from tests.fhir_client import bearer

PATIENT_NAME = ("Quenneville", "Ottoline")
ORU = (
    "MSH|^~\\&|LAB|GENH|HUB|SOH|20261101120000||ORU^R01^ORU_R01|{control}|P|{version}\r"
    "PID|1||12345^^^GENH^MR||{family}^{given}||20170302|F\r"
    "OBR|1|PL1|FI1|58410-2^CBC^LN|||20261101080000\r"
    "OBX|1|NM|718-7^Hemoglobin^LN||9.1|g/dL|11.5-15.5|L|||F\r"
    "OBX|2|NM|6690-2^WBC^LN||7.2|10*3/uL|4.5-13.5|N|||F\r"
)
RIS = MllpDestination(name="ris", host="127.0.0.1", port=9)


def oru(control: str, version: str = "2.5.1") -> bytes:
    family, given = PATIENT_NAME
    return ORU.format(control=control, version=version, family=family, given=given).encode()


def envelope(payload: bytes) -> Envelope:
    return Envelope(payload, transport="mllp", channel="lab-feed", peer="127.0.0.1:5000")


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def map_all(sessions: sessionmaker[Session]) -> int:
    worker = JobWorker(sessions, {MAP_JOB: map_hl7_message}, batch_sizes={MAP_JOB: 25})
    return worker.run_until_idle()


def admin(settings: Settings) -> dict[str, str]:
    return bearer(settings, subject="ops", roles=("admin",), scope="system/Task.s")


def scrape(client: TestClient, settings: Settings) -> dict[tuple[str, tuple[Any, ...]], float]:
    response = client.get("/metrics", headers=admin(settings))
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


# --- metrics --------------------------------------------------------------------------------


def test_metrics_count_messages_jobs_and_connector_errors(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    intake = Hl7Intake(sessions)
    try:
        assert b"MSA|AA|OPS-1" in intake.receive(envelope(oru("OPS-1"))).ack
        assert b"MSA|AR|OPS-2" in intake.receive(envelope(oru("OPS-2", version="2.1"))).ack
    finally:
        intake.close()
    assert map_all(sessions) == 1
    with sessions.begin() as session:
        delivery = queue_outbound(session, RIS, oru("OUT-1"))
        enqueue(session, PULL_RECORDS_JOB, "case-1|source")
    with sessions.begin() as session:  # the delivery gave up: a dead letter, the peer failing
        session.execute(
            update(JobRow)
            .where(JobRow.kind == DELIVER_JOB)
            .values(status="dead", last_error="connection refused", updated_at=utc_now())
        )
        session.get_one(MessageRow, delivery).status = "dead"

    hub_settings = settings.model_copy(update={"mllp_destinations": [RIS]})
    with TestClient(create_app(hub_settings)) as client:
        samples = scrape(client, hub_settings)
        assert client.get("/metrics").status_code == 401
        referrer = bearer(hub_settings)  # a referring EHR, not an admin
        assert client.get("/metrics", headers=referrer).status_code == 403

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("hub_messages_total", direction="in", type="ORU^R01", result="AA") == 1
    assert value("hub_messages_total", direction="in", type="ORU^R01", result="AR") == 1
    assert value("hub_messages_total", direction="out", type="ORU^R01", result="dead") == 1
    assert value("hub_messages_in_status", type="ORU^R01", status="mapped") == 1
    assert value("hub_messages_in_status", type="ORU^R01", status="rejected") == 1
    assert value("hub_jobs_queue_depth", kind=PULL_RECORDS_JOB, status="pending") == 1
    assert value("hub_jobs_queue_depth", kind=MAP_JOB, status="pending") == 0
    assert value("hub_jobs_dead_letters", kind=DELIVER_JOB) == 1
    assert value("hub_jobs_dead_letters", kind=MAP_JOB) == 0
    # The mapping job finished within the hour, in well under a minute.
    assert value("hub_job_latency_seconds_bucket", kind=MAP_JOB, le="+Inf") == 1
    assert value("hub_job_latency_seconds_bucket", kind=MAP_JOB, le="60.0") == 1
    assert value("hub_job_latency_seconds_gcount", kind=MAP_JOB) == 1
    assert 0 <= value("hub_job_latency_seconds_gsum", kind=MAP_JOB) < 60
    ris = {"connector": "ris", "kind": "MLLP destination (HL7 v2 out)"}
    assert value("hub_connector_errors", **ris) == 1
    assert value("hub_connector_last_failure_timestamp_seconds", **ris) > 0
    assert ("hub_connector_last_success_timestamp_seconds", tuple(sorted(ris.items()))) not in (
        samples
    )
    assert value("hub_cases_open", program="oncology") == 0  # turnaround, as before
    labels = {v for (_, pairs) in samples for _, v in pairs}
    assert not any(part in label for label in labels for part in PATIENT_NAME)


# --- JSON logs and the correlation id ---------------------------------------------------------


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The hub's logging as `log_format: json` sets it up, into a buffer; restored after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    yield buffer
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_one_correlation_id_follows_a_message_from_mllp_to_its_resources(
    sessions: sessionmaker[Session], json_log: io.StringIO
) -> None:
    intake = Hl7Intake(sessions)
    try:
        ack = asyncio.run(intake(envelope(oru("CORR-1"))))  # as an MLLP listener calls it
    finally:
        intake.close()
    assert b"MSA|AA|CORR-1" in ack
    assert map_all(sessions) == 1
    with sessions() as session:
        row = session.scalars(select(MessageRow).where(MessageRow.control_id == "CORR-1")).one()
    assert row.correlation_id

    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert all(
        {"timestamp", "level", "logger", "message", "correlation_id"} <= set(line) for line in lines
    )
    ours = [line for line in lines if line["correlation_id"] == row.correlation_id]
    said = " | ".join(line["message"] for line in ours)
    assert any("received on lab-feed" in line["message"] for line in ours), said
    assert any(
        "mapping message" in line["message"] and "started" in line["message"] for line in ours
    ), said
    assert any("bundle assembled" in line["message"] for line in ours), said
    done = [line for line in ours if "resources stored" in line["message"]]
    assert done and done[0]["resources"] >= 3 and "Patient 1" in done[0]["message"], said
    assert all(line.get("message_id") == row.message_id for line in ours if "message_id" in line)
    text = json_log.getvalue()
    assert not any(part in text for part in PATIENT_NAME)


def test_an_http_request_gets_a_correlation_id_echoed_in_the_response(
    anonymous: TestClient, json_log: io.StringIO
) -> None:
    answered = anonymous.get("/healthz", headers={"X-Request-ID": "probe-42"})
    assert answered.headers["X-Request-ID"] == "probe-42"
    forged = anonymous.get("/healthz", headers={"X-Correlation-ID": "Ottoline Quenneville"})
    assert forged.headers["X-Request-ID"] != "Ottoline Quenneville"
    assert len(forged.headers["X-Request-ID"]) == 32
    access = [
        json.loads(line)
        for line in json_log.getvalue().splitlines()
        if json.loads(line)["logger"] == "hub.access"
    ]
    assert [line["correlation_id"] for line in access] == [
        "probe-42",
        forged.headers["X-Request-ID"],
    ]


# --- retention --------------------------------------------------------------------------------


def old_message(session: Session, age: timedelta, direction: str, status: str, n: int) -> int:
    """A logged message received `age` ago, with a raw payload big enough to weigh."""
    row = MessageRow(
        direction=direction,
        channel="lab-feed" if direction == "in" else "ris",
        peer="127.0.0.1:5000",
        received_at=utc_now() - age,
        status=status,
        raw=oru(f"OLD-{direction}-{n}") + b"NTE|1||" + os.urandom(64_000),
        ack=b"MSH|^~\\&|HUB|SOH\rMSA|AA|x\r",
        ack_code="AA" if direction == "in" else None,
        report="{}",
        produced=json.dumps(["Patient/p-old", "Observation/o-1"]),
        duplicates=0,
        sending_application="LAB",
        sending_facility="GENH",
        control_id=f"OLD-{direction}-{status}-{n}",
        message_type="ORU^R01",
        version="2.5.1",
    )
    session.add(row)
    session.flush()
    return row.message_id


def freed_eventually(sessions: sessionmaker[Session], result: PruneResult) -> int:
    """The bytes the prune freed. PostgreSQL keeps deleted rows that an open snapshot may
    still see (autovacuum's ANALYZE of the tables just written, say) until it ends: then a
    later VACUUM FULL frees them, as the next prune would."""
    engine = sessions.kw["bind"]
    for _ in range(40):
        freed = result.bytes_before - database_bytes(engine)
        if freed > 2_000_000 or engine.dialect.name == "sqlite":
            return freed
        time.sleep(0.25)
        vacuum(engine, full=True)
    return freed


def test_pruning_deletes_old_finished_messages_audits_and_frees_space(
    settings: Settings, sessions: sessionmaker[Session]
) -> None:
    old, recent = timedelta(days=40), timedelta(days=2)
    with sessions.begin() as session:
        pruned = [old_message(session, old, "in", "mapped", n) for n in range(40)]
        pruned += [old_message(session, old, "out", "delivered", n) for n in range(10)]
        for message_id in pruned:
            job = enqueue(session, MAP_JOB, str(message_id))
            job.status, job.updated_at = "done", utc_now() - old
        kept = [
            old_message(session, old, "in", "accepted", 101),  # not mapped yet
            old_message(session, old, "out", "queued", 102),  # not delivered
            old_message(session, old, "out", "dead", 103),  # a dead letter, to replay
            old_message(session, recent, "in", "mapped", 104),  # within the policy
        ]
        mapped_again = old_message(session, old, "in", "mapped", 105)
        enqueue(session, MAP_JOB, str(mapped_again))  # replayed: its job is pending
        kept.append(mapped_again)

    result = prune_messages(sessions, 30, full=True)

    assert (result.messages, result.jobs) == (len(pruned), len(pruned))
    with sessions() as session:
        left = set(session.scalars(select(MessageRow.message_id)))
        assert left == set(kept)
        assert session.scalar(select(func.count()).select_from(JobRow)) == 1
        audits = [
            json.loads(content)
            for content in session.scalars(
                select(ResourceRow.content).where(ResourceRow.res_type == "AuditEvent")
            )
        ]
    assert len(audits) == 1
    assert audits[0]["action"] == "D"
    assert f"{len(pruned)} messages" in audits[0]["outcomeDesc"]
    assert {"reference": "Patient/p-old"} in [e.get("what") for e in audits[0]["entity"]]
    # 50 messages of ~64 kB each: the database gives back most of their 3 MB.
    assert freed_eventually(sessions, result) > 2_000_000, result

    runner = CliRunner().invoke(
        cli,
        ["messages", "prune", "--older-than-days", "30"],
        env={
            "HUB_DATABASE_URL": settings.database_url,
            "HUB_SIGNING_KEY_FILE": str(settings.signing_key_file),
        },
    )
    assert runner.exit_code == 0, runner.output
    assert "0 messages and 0 jobs older than 30 days deleted" in runner.output
