"""Outbound HL7 v2: queued in the log, delivered by the job worker to a peer we did not write
(python-hl7's MLLP server), retried with backoff, dead-lettered, replayed — on both backends."""

from __future__ import annotations

import socket
from typing import Any

import hl7  # type: ignore[import-untyped]
import pytest
from sqlalchemy import update

from hub.jobs.worker import JobWorker
from hub.messages.outbound import (
    DELIVER_JOB,
    MllpDeliveries,
    MllpDestination,
    deliver_hl7_job,
    queue_outbound,
)
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import JobRow, MessageRow
from tests.fhir_client import bearer
from tests.mllp_peer import acknowledge_all, hl7_peer

OPINION = (
    "MSH|^~\\&|HUB|SOH|EHR|ST-MARY|20261101120000||MDM^T02^MDM_T02|{control}|P|2.5.1\r"
    "PID|1||P-1^^^ST-MARY^MR||Testchild^Mia||20150101|F\r"
    "TXA|1|CN|TX|20261101120000||||||||DOC-1||||||AU\r"
    "OBX|1|TX|11488-4^Consult note^LN||We agree with the current plan.||||||F\r"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def outbox(database_url):
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    yield sessions
    engine.dispose()


def run(sessions, destination: MllpDestination) -> tuple[JobWorker, MllpDeliveries]:
    deliveries = MllpDeliveries([destination])
    return JobWorker(sessions, {DELIVER_JOB: deliver_hl7_job(deliveries)}), deliveries


def queue(sessions, destination: MllpDestination, control: str) -> int:
    with sessions.begin() as session:
        return queue_outbound(session, destination, OPINION.format(control=control).encode())


def state(sessions, message_id: int) -> tuple[str, str | None, JobRow]:
    with sessions() as session:
        row = session.get(MessageRow, message_id)
        job = session.query(JobRow).filter(JobRow.subject == str(message_id)).one()
        session.expunge(job)
        return row.status, row.ack_code, job


def due_now(sessions) -> None:
    """Skip the backoff wait: what the clock would do, without sleeping in a test."""
    with sessions.begin() as session:
        session.execute(update(JobRow).values(run_after=JobRow.created_at))


def test_a_message_is_delivered_when_the_peer_acks_its_control_id(outbox):
    with hl7_peer(acknowledge_all) as peer:
        destination = MllpDestination(name="st-mary", host="127.0.0.1", port=peer.port)
        worker, deliveries = run(outbox, destination)
        message_id = queue(outbox, destination, "OUT-1")
        assert worker.run_once()
        deliveries.close()
    status, code, job = state(outbox, message_id)
    assert (status, code, job.status, job.attempts) == ("delivered", "AA", "done", 1)
    assert peer.received == ["OUT-1"]


def test_an_unreachable_peer_is_retried_with_backoff_then_dead_lettered(outbox):
    destination = MllpDestination(
        name="down", host="127.0.0.1", port=free_port(), max_attempts=3, connect_timeout_seconds=2
    )
    worker, deliveries = run(outbox, destination)
    message_id = queue(outbox, destination, "OUT-2")
    delays = []
    for attempt in range(1, 4):
        assert worker.run_once()
        status, _, job = state(outbox, message_id)
        assert job.attempts == attempt
        delays.append((job.run_after - job.updated_at).total_seconds())
        due_now(outbox)
    deliveries.close()
    assert (status, job.status) == ("dead", "dead")
    assert "connection" in job.last_error
    assert delays[1] > delays[0] > 0  # exponential backoff (with jitter inside each step)
    assert not worker.run_once()  # nothing left to do: it waits for a person


def test_a_dead_letter_is_replayed_by_an_admin_and_then_delivered(outbox, anonymous, settings):
    port = free_port()
    destination = MllpDestination(
        name="later", host="127.0.0.1", port=port, max_attempts=1, connect_timeout_seconds=2
    )
    worker, deliveries = run(outbox, destination)
    message_id = queue(outbox, destination, "OUT-3")
    assert worker.run_once()
    assert state(outbox, message_id)[2].status == "dead"
    admin = bearer(settings, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs")
    letters = anonymous.get("/admin/dead-letters", headers=admin).json()["jobs"]
    assert [(j["kind"], j["subject"]) for j in letters] == [(DELIVER_JOB, str(message_id))]
    clinician = bearer(settings)
    assert anonymous.get("/admin/dead-letters", headers=clinician).status_code == 403
    replayed = anonymous.post(f"/admin/dead-letters/{letters[0]['id']}/replay", headers=admin)
    assert replayed.status_code == 202

    deliveries.close()
    with hl7_peer(acknowledge_all) as peer:
        moved = MllpDestination(name="later", host="127.0.0.1", port=peer.port)
        worker, deliveries = run(outbox, moved)
        assert worker.run_once()
        deliveries.close()
    assert state(outbox, message_id)[0] == "delivered"


def test_a_content_rejection_goes_straight_to_the_dead_letters(outbox):
    async def reject(peer: Any, reader: Any, writer: Any, number: int) -> None:
        while True:
            message = await peer.read(reader)
            refusal = str(message.create_ack(ack_code="AR"))
            writer.writemessage(hl7.parse(f"{refusal}\rERR|||200^Unsupported^HL70357|E"))
            await writer.drain()

    with hl7_peer(reject) as peer:
        destination = MllpDestination(name="strict", host="127.0.0.1", port=peer.port)
        worker, deliveries = run(outbox, destination)
        message_id = queue(outbox, destination, "OUT-4")
        assert worker.run_once()
        deliveries.close()
    status, code, job = state(outbox, message_id)
    assert (status, code, job.status, job.attempts) == ("dead", "AR", "dead", 1)
