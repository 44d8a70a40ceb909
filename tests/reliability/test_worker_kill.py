"""kill -9 a `hub worker` in the middle of a mapping batch, of an MLLP delivery and of a
record pull, on PostgreSQL; a second worker takes the jobs over when their lease (3 s)
runs out. After recovery every message and resource is there exactly once, no job is
lost, left running or dead-lettered, and the case is where it would be without the kill.

"In the middle" is read from the world, not guessed by sleeping: map-hl7 jobs claimed
(running) and not committed; the peer holding the message it has not acknowledged; the
pull job running while the FHIR peer holds one of its requests.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub import codes
from hub.app import create_app
from hub.demo.outside_record import build_outside_record, counts
from hub.jobs.worker import JobWorker
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.messages.mapping_job import MESSAGE_ID_SYSTEM
from hub.messages.outbound import DELIVER_JOB, queue_outbound
from hub.records.fhir_pull import PULL_RECORDS_JOB
from hub.runtime import BATCH_SIZES, job_handlers
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import (
    JobRow,
    MessageRow,
    OpinionDeliveryRow,
    RecordPullRow,
    ResourceRow,
)
from hub.workflow.cases import business_status_of
from hub.workflow.checklist import CHECK_RECORDS_JOB
from tests.fhir_client import bearer, post, referral
from tests.fhir_server_peer import FhirPeer
from tests.integration.test_fhir_pull import _as_referred
from tests.integration.test_hl7_delivery import OPINION
from tests.integration.test_hl7_return_channel import ref, return_route, whole_hub
from tests.integration.test_opinions import _signed_opinion
from tests.mllp_peer import Hl7Peer, hl7_peer
from tests.reliability.conftest import HubProcess, dead_jobs, envelope, job_counts, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

LEASE = "3"
ORUS = 40  # a first batch of 25 (with the referral) committed, the kill in the second
SOURCE = "outside-ehr"


def oru(number: int) -> bytes:
    """A CBC result (two OBX) for a child other than the referral's."""
    return (
        f"MSH|^~\\&|LAB|ST-MARY|HUB|SOH|20261101120000||ORU^R01^ORU_R01|WK-{number}|P|2.5.1\r"
        "PID|1||MRN-WK^^^ST-MARY^MR||Workerkill^Sam||20160101|M\r"
        f"OBR|1|PL-{number}|FI-{number}|58410-2^CBC panel^LN|||20261101080000\r"
        "OBX|1|NM|718-7^Hemoglobin^LN||9.1|g/dL^^UCUM|11.5-15.5|L|||F\r"
        "OBX|2|NM|6690-2^WBC^LN||1.2|10*3/uL^^UCUM|4.5-13.5|L|||F\r"
    ).encode()


def worker(url: str, tmp_path: Path, name: str, **env: str) -> HubProcess:
    return HubProcess(
        "worker",
        {
            "HUB_DATABASE_URL": url,
            "HUB_JOB_LEASE_SECONDS": LEASE,
            "HUB_DICOM_STORE_DIR": str(tmp_path / "dicom"),
            **env,
        },
        tmp_path / f"{name}.log",
    )


def case_tasks(engine: Engine) -> list[dict[str, Any]]:
    """Every second-opinion case Task's content."""
    with Session(engine) as session:
        contents = session.scalars(
            select(ResourceRow.content).where(
                ResourceRow.res_type == "Task",
                ResourceRow.content.contains(codes.CASE_TASK_CODE),
            )
        )
        return [json.loads(content) for content in contents]


def state_of(task: dict[str, Any]) -> tuple[str, str | None]:
    return str(task["status"]), business_status_of(task)


def no_job_left(engine: Engine) -> bool:
    """Every job is done: none pending, running or dead."""
    return all(status == "done" for _, status in job_counts(engine))


def kill_while(first: HubProcess, in_the_middle: Callable[[], Any], what: str) -> Any:
    """Start `first`, wait until `in_the_middle()` sees the fault window (it returns what
    it saw there), kill -9 the worker, and return that."""
    first.start()
    seen = wait_for(lambda: in_the_middle() or (not first.alive and "died"), what, every=0.005)
    assert seen != "died", f"the worker died by itself:\n{first.log_tail()}"
    first.kill()
    return seen


# -- (a) mapping ---------------------------------------------------------------------------
def baseline_case_state(new_database: Callable[[str], str]) -> tuple[str, str | None]:
    """The referral's case state with no fault: mapped in-process on a database of its own."""
    url = new_database("sqlite")
    settings = Settings(database_url=url)
    engine = make_engine(url)
    try:
        sessions = make_session_factory(engine)
        Hl7Intake(sessions).receive(envelope(ref("REF-WK").encode()))
        JobWorker(sessions, job_handlers(settings), batch_sizes=BATCH_SIZES).run_until_idle()
        (task,) = case_tasks(engine)
        return state_of(task)
    finally:
        engine.dispose()


def test_kill_9_in_a_mapping_batch_maps_every_message_once(
    new_database, engine_for, hub_processes, tmp_path
):
    """Proves: a batch of map-hl7 jobs whose worker died after claiming them (running,
    effect not committed) is claimed again when the lease runs out and mapped once; the
    batches committed before the kill are not mapped again; the referral opens one case."""
    url = new_database("postgresql")
    engine = engine_for(url)
    sessions = make_session_factory(engine)
    messages = [envelope(ref("REF-WK").encode())] + [envelope(oru(n)) for n in range(ORUS)]
    Hl7Intake(sessions).receive_many(messages)

    def mid_batch() -> dict[tuple[str, str], int] | None:
        jobs = job_counts(engine)
        running, done = jobs.get((MAP_JOB, "running"), 0), jobs.get((MAP_JOB, "done"), 0)
        return jobs if running and done else None  # a batch claimed, earlier ones committed

    first, second = worker(url, tmp_path, "w1"), worker(url, tmp_path, "w2")
    hub_processes += [first, second]
    at_kill = kill_while(first, mid_batch, "a mapping batch running after one committed")
    assert at_kill[(MAP_JOB, "done")] < ORUS + 1  # there was work left to take over
    second.start()
    wait_for(lambda: no_job_left(engine), "every job done", every=0.2)

    with Session(engine) as session:
        rows = session.execute(select(MessageRow.control_id, MessageRow.status)).all()
        observations = session.scalar(
            select(func.count()).where(ResourceRow.res_type == "Observation")
        )
        provenance = [
            json.loads(c)
            for c in session.scalars(
                select(ResourceRow.content).where(ResourceRow.res_type == "Provenance")
            )
        ]
        retried = session.scalar(
            select(func.count()).where(JobRow.kind == MAP_JOB, JobRow.attempts > 1)
        )
    controls = Counter(control for control, _ in rows)
    assert controls == Counter(["REF-WK"] + [f"WK-{n}" for n in range(ORUS)])  # each once
    assert {status for _, status in rows} == {"mapped"}
    assert observations == 2 * ORUS  # two OBX per result, none twice (the REF has none)
    mapped_from = [
        p["entity"][0]["what"]["identifier"]["value"]
        for p in provenance
        if p.get("entity", [{}])[0].get("what", {}).get("identifier", {}).get("system")
        == MESSAGE_ID_SYSTEM
    ]
    assert len(mapped_from) == ORUS + 1 == len(set(mapped_from))  # each mapped exactly once
    assert retried and retried >= at_kill[(MAP_JOB, "running")]  # the killed batch, retaken
    assert dead_jobs(engine) == []
    (task,) = case_tasks(engine)  # one case, not two
    assert state_of(task) == baseline_case_state(new_database)


# -- (b) delivery --------------------------------------------------------------------------
async def silent_then_acknowledging(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
    """The first connection reads messages and never answers (a receiver slow to commit);
    every later one acknowledges (AA) each message."""
    while True:
        message = await peer.read(reader)
        if number == 1:
            continue  # no ACK: the sender waits until it dies
        writer.writemessage(message.create_ack())
        await writer.drain()


def test_kill_9_during_an_mllp_delivery_delivers_each_message_and_records_it_once(
    new_database, engine_for, hub_processes, tmp_path, signing_key_file
):
    """Proves: an opinion's MDM^T02 whose worker died after the referrer's engine got it but
    before its ACK is sent again by the next worker, recorded delivered once, and completes
    the case as an undisturbed delivery does; the messages queued behind it are delivered
    once each. The peer holds the interrupted message twice: MLLP delivery is at least
    once (a sender cannot know that an unacknowledged message arrived), and the receiver
    tells the copy by its unchanged MSH-10 control id (HL7 v2 §2.10.1)."""
    url = new_database("postgresql")
    engine = engine_for(url)
    settings = Settings(
        database_url=url,
        signing_key_file=signing_key_file,
        public_url="http://testserver",
        embedded_worker=False,
        dicom_store_dir=tmp_path / "dicom",
    )
    with hl7_peer(silent_then_acknowledging) as peer:
        destination = return_route(peer.port).model_copy(
            update={"ack_timeout_seconds": 120.0, "max_attempts": 8}  # only the kill ends it
        )
        with whole_hub(settings, destination) as (client, in_process, _):
            sessions = client.app.state.hub.sessions
            Hl7Intake(sessions).receive(envelope(ref("REF-DK", "AL", "NE").encode()))
            in_process.run_until_idle()  # the referral mapped: the case is open
            task_id, report_id, _ = _signed_opinion(client, settings)  # its MDM^T02 queued
            with sessions.begin() as session:  # and two more messages behind it
                for control in ("OUT-K-1", "OUT-K-2"):
                    payload = OPINION.format(control=control).encode()
                    queue_outbound(session, destination, payload)
        with Session(engine) as session:
            opinion_control = session.scalar(
                select(MessageRow.control_id).where(MessageRow.message_type.like("MDM%"))
            )
        env = {"HUB_MLLP_DESTINATIONS": json.dumps([destination.model_dump(mode="json")])}
        first, second = worker(url, tmp_path, "w1", **env), worker(url, tmp_path, "w2", **env)
        hub_processes += [first, second]

        def mid_delivery() -> bool:
            running = job_counts(engine).get((DELIVER_JOB, "running"), 0)
            return bool(running and opinion_control in peer.received)

        kill_while(first, mid_delivery, "the peer holding the opinion, unacknowledged")
        second.start()
        wait_for(lambda: no_job_left(engine), "every delivery done", every=0.2)
        received = Counter(peer.received)

    with Session(engine) as session:
        rows = session.execute(
            select(MessageRow.control_id, MessageRow.status, MessageRow.ack_code).where(
                MessageRow.direction == "out"
            )
        ).all()
        attempts = session.scalars(
            select(JobRow.attempts).where(JobRow.kind == DELIVER_JOB).order_by(JobRow.job_id)
        ).all()
        deliveries = session.execute(
            select(OpinionDeliveryRow.report_id, OpinionDeliveryRow.status)
        ).all()
    controls = [opinion_control, "OUT-K-1", "OUT-K-2"]
    assert sorted(rows) == sorted((control, "delivered", "AA") for control in controls)
    assert received == Counter({opinion_control: 2, "OUT-K-1": 1, "OUT-K-2": 1})
    assert attempts == [2, 1, 1]  # the interrupted one retaken once, the others once each
    assert deliveries == [(report_id, "delivered")]
    assert dead_jobs(engine) == []
    (task,) = [t for t in case_tasks(engine) if t["id"] == task_id]
    assert task["status"] == "completed"  # as after an undisturbed delivery


# -- (c) pull ------------------------------------------------------------------------------
def open_case(settings: Settings, outside: dict[str, Any]) -> str:
    """The child referred through the FHIR API (no worker in this process): the case's Task."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        headers = {
            **bearer(settings, subject="ehr-1", roles=("referrer",), scope="system/*.cruds"),
            "Content-Type": "application/fhir+json",
        }
        stored = post(client, _as_referred(outside, with_identifiers=True), **headers)
        post(client, referral(f"Patient/{stored['id']}"), **headers)
        tasks = client.get("/fhir/Task", params={"patient": stored["id"]}, headers=headers)
        return str(tasks.json()["entry"][0]["resource"]["id"])


def test_kill_9_during_a_record_pull_stores_each_resource_once(
    new_database, engine_for, hub_processes, tmp_path, fhir_peer: FhirPeer, signing_key_file
):
    """Proves: a case's records check asks the FHIR source for the records; a pull whose
    worker died while the source was still answering is run again after the lease and
    stores each resource once (one Provenance), and the case's check runs to its end."""
    url = new_database("postgresql")
    engine = engine_for(url)
    fhir_peer.reset()
    record = build_outside_record(resources=80, cancer="neuroblastoma", seed=23)
    fhir_peer.load(record)
    outside = next(
        e["resource"] for e in record["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    source = {"name": SOURCE, "base_url": fhir_peer.base_url, "strategy": "queries"}
    settings = Settings(
        database_url=url,
        signing_key_file=signing_key_file,
        public_url="http://testserver",
        embedded_worker=False,
        fhir_sources=[source],
        dicom_store_dir=tmp_path / "dicom",
    )
    task_id = open_case(settings, outside)
    # One query of the pull is held by the source far longer than the test would wait.
    fhir_peer.set_faults(
        [{"method": "GET", "path_regex": "/Observation\\?", "kind": "delay", "delay_ms": 120_000}]
    )
    env = {"HUB_FHIR_SOURCES": json.dumps([source])}
    first, second = worker(url, tmp_path, "w1", **env), worker(url, tmp_path, "w2", **env)
    hub_processes += [first, second]

    def mid_pull() -> bool:
        running = job_counts(engine).get((PULL_RECORDS_JOB, "running"), 0)
        return bool(running and any(r["fault"] == "delay" for r in fhir_peer.requests()))

    kill_while(first, mid_pull, "the pull running while the source holds a query")
    second.start()
    wait_for(lambda: no_job_left(engine), "the pull and the checks done", every=0.2)

    wanted = Counter(counts(record))
    del wanted["Patient"]  # the child is the hub's own patient
    with Session(engine) as session:
        held = Counter(
            dict(
                session.execute(
                    select(ResourceRow.res_type, func.count())
                    .where(ResourceRow.content.contains(fhir_peer.base_url))
                    .where(ResourceRow.res_type != "Provenance")
                    .group_by(ResourceRow.res_type)
                ).all()
            )
        )
        provenance = session.scalar(
            select(func.count()).where(
                ResourceRow.res_type == "Provenance", ResourceRow.content.contains(SOURCE)
            )
        )
        pull = session.scalar(select(RecordPullRow).where(RecordPullRow.source == SOURCE))
        pull_jobs = session.execute(
            select(JobRow.status, JobRow.attempts).where(JobRow.kind == PULL_RECORDS_JOB)
        ).all()
    assert held == wanted  # every resource of the record, none twice (ids are the source's)
    assert provenance == 1  # stored once: one Provenance for the pull's targets
    assert pull is not None and pull.status == "complete", pull and pull.report
    assert pull_jobs == [("done", 2)]  # one pull, retaken once after the kill
    assert dead_jobs(engine) == []
    # Not stuck: the records check ran again on what the pull stored, after it was stored,
    # and left the case where the checklist puts this record (items still missing).
    with Session(engine) as session:
        last_check = session.scalar(
            select(func.max(JobRow.updated_at)).where(
                JobRow.kind == CHECK_RECORDS_JOB, JobRow.subject == task_id
            )
        )
    assert last_check is not None and last_check >= pull.updated_at
    (task,) = [t for t in case_tasks(engine) if t["id"] == task_id]
    assert state_of(task) == ("received", "awaiting-records")
    # The killed worker's validation process (and its forkserver) did not outlive it.
    assert first.orphans, "the killed worker had no validation worker"
    wait_for(first.orphans_gone, "the killed worker's processes to end")
