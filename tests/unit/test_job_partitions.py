"""Partitioned jobs (hub.jobs.outbox), on both backends: a partition's jobs are claimed one
at a time and oldest first, other partitions meanwhile; an expired lease frees its
partition; jobs without a key are claimed as before; concurrent claimers on PostgreSQL
never hold two running jobs of one partition. And the intake's key for mapping jobs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Envelope
from hub.fhir.dates import utc_now
from hub.jobs.outbox import Job, claim_due, claim_job, enqueue, mark_done
from hub.jobs.worker import JobFailed, JobWorker
from hub.messages.intake import Hl7Intake, patient_partition
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import JobRow
from mappings.hl7v2.tokenizer import parse_message

KIND = "map-demo"


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def add(sessions: sessionmaker[Session], *keys: str | None, kind: str = KIND) -> list[int]:
    """One job per key, in this order (so in job id order)."""
    with sessions() as session:
        rows = [enqueue(session, kind, f"s{n}", partition_key=key) for n, key in enumerate(keys)]
        session.commit()
        return [row.job_id for row in rows]


def claim(sessions: sessionmaker[Session], size: int = 1) -> list[int]:
    with sessions() as session:
        return [job.job_id for job in claim_due(session, {KIND}, 60, {KIND: size})]


def finish(sessions: sessionmaker[Session], *job_ids: int) -> None:
    with sessions() as session:
        session.execute(
            update(JobRow).where(JobRow.job_id.in_(job_ids)).values(status="done", lease_until=None)
        )
        session.commit()


def test_one_job_of_a_partition_at_a_time_oldest_first(
    sessions: sessionmaker[Session],
) -> None:
    a1, b1, a2, a3, b2 = add(sessions, "a", "b", "a", "a", "b")
    assert claim(sessions) == [a1]
    assert claim(sessions) == [b1]  # another partition, while a1 runs
    assert claim(sessions) == []  # a2 waits for a1, b2 for b1
    finish(sessions, a1)
    assert claim(sessions) == [a2]
    finish(sessions, b1, a2)
    assert claim(sessions) == [a3]
    assert claim(sessions) == [b2]


def test_a_batch_takes_each_partition_in_order(sessions: sessionmaker[Session]) -> None:
    a1, b1, a2, a3, b2, c1 = add(sessions, "a", "b", "a", "a", "b", "c")
    batch = claim(sessions, size=25)
    assert sorted(batch) == [a1, b1, a2, a3, b2, c1]
    assert batch.index(a1) < batch.index(a2) < batch.index(a3)
    assert batch.index(b1) < batch.index(b2)
    assert claim(sessions, size=25) == []


def test_a_batch_never_overtakes_a_running_job(sessions: sessionmaker[Session]) -> None:
    a1, a2, b1 = add(sessions, "a", "a", "b")
    assert claim(sessions) == [a1]
    assert claim(sessions, size=25) == [b1]
    finish(sessions, a1)
    assert claim(sessions, size=25) == [a2]


def test_an_expired_lease_frees_its_partition_for_the_same_job_first(
    sessions: sessionmaker[Session],
) -> None:
    a1, a2 = add(sessions, "a", "a")
    assert claim(sessions) == [a1]
    with sessions() as session:  # the worker holding a1 was killed; its lease ran out
        session.execute(
            update(JobRow)
            .where(JobRow.job_id == a1)
            .values(lease_until=utc_now() - timedelta(seconds=1))
        )
        session.commit()
    assert claim(sessions) == [a1]
    assert claim(sessions) == []
    finish(sessions, a1)
    assert claim(sessions) == [a2]


def test_a_retry_in_backoff_holds_its_partition_back_a_dead_job_does_not(
    sessions: sessionmaker[Session],
) -> None:
    a1, a2, a3 = add(sessions, "a", "a", "a")
    assert claim(sessions) == [a1]
    with sessions() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.job_id == a1)
            .values(status="pending", lease_until=None, run_after=utc_now() + timedelta(hours=1))
        )
        session.commit()
    assert claim(sessions) == []  # a2 would overtake a1
    with sessions() as session:
        session.execute(update(JobRow).where(JobRow.job_id == a1).values(status="dead"))
        session.commit()
    assert claim(sessions, size=25) == [a2, a3]


def test_after_a_failure_the_batch_gives_its_partitions_later_jobs_back(
    sessions: sessionmaker[Session],
) -> None:
    a1, a2, b1 = add(sessions, "a", "a", "b")
    ran: list[str] = []

    def handler(session: Session, job: Job) -> None:
        if job.subject == "s0":
            raise JobFailed("the peer is away")
        ran.append(job.subject)
        mark_done(session, job)

    worker = JobWorker(sessions, {KIND: handler}, batch_sizes={KIND: 25})
    assert worker.run_once() == 2  # a1 failed, b1 done, a2 given back unrun
    assert ran == ["s2"]
    with sessions() as session:
        rows = {row.job_id: row for row in session.scalars(select(JobRow))}
    assert (rows[a1].status, rows[a1].attempts) == ("pending", 1)  # waits out its backoff
    assert (rows[a2].status, rows[a2].attempts, rows[a2].lease_until) == ("pending", 0, None)
    assert rows[b1].status == "done"
    assert claim(sessions) == []  # a2 does not overtake a1


def test_jobs_without_a_key_are_claimed_as_before(sessions: sessionmaker[Session]) -> None:
    n1, a1, n2, a2 = add(sessions, None, "a", None, "a")
    assert claim(sessions) == [n1]
    assert claim(sessions) == [a1]
    assert claim(sessions) == [n2]  # runs beside n1 and a1
    assert claim(sessions) == []
    finish(sessions, a1)
    assert claim(sessions) == [a2]


def test_a_job_claimed_by_id_waits_for_its_partition(sessions: sessionmaker[Session]) -> None:
    a1, a2, b1 = add(sessions, "a", "a", "b")
    with sessions() as session:
        (first,) = claim_job(session, a1, {KIND}, 60)
        assert first.job_id == a1
    with sessions() as session:  # a2's message: a2 must wait, b1 moves the queue on
        assert [job.job_id for job in claim_job(session, a2, {KIND}, 60)] == [b1]
    with sessions() as session:
        mark_done(session, first)
        session.commit()
    with sessions() as session:
        assert [job.job_id for job in claim_job(session, a2, {KIND}, 60)] == [a2]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_claimers_never_run_two_jobs_of_a_partition(
    sessions: sessionmaker[Session],
) -> None:
    """Two threads, each its own session, claim and finish batches as fast as they can; each
    checks, before finishing its batch, that nobody else runs a job of its partitions."""
    keys = [f"p{n % 7}" for n in range(280)]
    job_ids = add(sessions, *keys)
    key_of = dict(zip(job_ids, keys, strict=True))
    order: dict[str, list[int]] = {}
    violations: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        while True:
            with sessions() as session:
                jobs = claim_due(session, {KIND}, 60, {KIND: 3})
                if not jobs:
                    if session.scalar(
                        select(func.count()).where(JobRow.status.in_(("pending", "running")))
                    ):
                        continue
                    return
                mine = {job.job_id for job in jobs}
                partitions = {key_of[job_id] for job_id in mine}
                running = session.execute(
                    select(JobRow.job_id, JobRow.partition_key).where(
                        JobRow.status == "running", JobRow.partition_key.in_(partitions)
                    )
                ).all()
                with lock:
                    violations.extend(
                        f"{key} ran {job_id} beside ours"
                        for job_id, key in running
                        if job_id not in mine
                    )
                    for job in jobs:
                        order.setdefault(key_of[job.job_id], []).append(job.job_id)
                for job in jobs:
                    mark_done(session, job)
                session.commit()

    threads = [threading.Thread(target=claimer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert violations == []
    assert sum(len(ids) for ids in order.values()) == len(job_ids)  # each claimed once
    assert all(ids == sorted(ids) for ids in order.values())  # in job id order


def oru(control_id: str, pid3: str | None, sender: str = "LAB|ST-MARY") -> Envelope:
    pid = f"PID|1||{pid3}||Doe^Jo||20100101|F\r" if pid3 is not None else ""
    return Envelope(
        (
            f"MSH|^~\\&|{sender}|HUB|SOH|20261101120000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r"
            f"{pid}OBR|1|PL-{control_id}||58410-2^CBC panel^LN\r"
        ).encode(),
        transport="mllp",
        channel="st-mary",
        peer="127.0.0.1",
    )


def test_the_intake_keys_mapping_jobs_by_patient(sessions: sessionmaker[Session]) -> None:
    envelopes = [
        oru("M1", "MRN-1^^^ST-MARY^MR"),
        oru("M2", "MRN-1^^^ST-MARY^MR~SSN-9^^^SSA^SS"),
        oru("M3", "MRN-2^^^ST-MARY^MR"),
        oru("M4", "MRN-1^^^OTHER^MR"),
    ]
    intake = Hl7Intake(sessions)
    results = intake.receive_many(envelopes)
    # A batch file goes through receive_many too: the same key for the same patient.
    results += intake.receive_many([oru("M5", "MRN-1^^^ST-MARY^MR")])
    with sessions() as session:
        keys = dict(session.execute(select(JobRow.subject, JobRow.partition_key)).all())
    k1, k2, k3, k4, k5 = (keys[str(result.message_id)] for result in results)
    assert k1 == k2 == k5 and len(k1 or "") == 16  # same patient
    assert len({k1, k3, k4}) == 3  # another patient, another assigning authority


def test_a_message_without_a_patient_identifier_takes_its_senders_key() -> None:
    def key(control_id: str, pid3: str | None, sender: str = "LAB|ST-MARY") -> str:
        return patient_partition(parse_message(oru(control_id, pid3, sender).payload))

    unidentified = key("M1", None)
    assert unidentified == key("M2", "") == key("M3", "^^^ST-MARY^MR")  # no PID, no CX.1
    assert unidentified != key("M4", None, sender="RAD|ST-MARY")
    assert unidentified != key("M5", "MRN-1^^^ST-MARY^MR")
