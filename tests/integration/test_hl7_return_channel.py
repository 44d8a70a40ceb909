"""What the hub sends back to a referring hospital's interface engine, on both backends, to a
peer we did not write (python-hl7's MLLP server): the application ACK a message asked for in
MSH-16 once it is mapped or has failed, and OSU^O51 when a case opened by an HL7 v2 referral
moves. Fields are read with python-hl7, the peer's own parser."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import hl7  # type: ignore[import-untyped]
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from connectors.base import Envelope
from connectors.hl7v2_mllp import MllpListenerConfig
from hub import codes
from hub.app import create_app
from hub.fhir.interactions import FhirInteractions
from hub.jobs.worker import JobWorker
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.messages.log import detail
from hub.messages.mapping_job import map_hl7_message
from hub.messages.outbound import DELIVER_JOB, MllpDeliveries, MllpDestination, deliver_hl7_job
from hub.messages.return_channel import ReturnChannel
from hub.runtime import job_handlers
from hub.storage.db import make_engine, make_session_factory
from hub.storage.search import Criterion, SearchQuery, SearchRunner
from hub.storage.tables import MessageRow
from tests.fhir_client import bearer, patient, post, referral
from tests.integration.test_hl7_end_to_end import mllp_send
from tests.mllp_peer import Hl7Peer, hl7_peer

MRN = "MRN-77"
HEADER = (
    "MSH|^~\\&|{app}|ST-MARY|HUB|SOH|20261101140000||{type}|{control}|P|{version}"
    "|||{accept}|{application}\r"
)
ADT = f"EVN|A01|20261101090000\rPID|1||{MRN}^^^ST-MARY^MR||Testchild^Robin^J||20170302|F\rPV1|1|O\r"
RF1 = "RF1|A|R|SO^Second opinion|||REF-900|20261101\r"
# RF1-6 without an assigning authority: the referral number system of the sending facility.
ST_MARY_REFERRALS = f"{codes.CANONICAL_BASE}/sid/hl7v2-authority/st-mary"
REF = (
    "{rf1}"
    "PRD|RP|Oncologist^Casey^^^Dr|||||1234567893^^^NPI\r"
    f"PID|1||{MRN}^^^ST-MARY^MR||Testchild^Robin||20170302|F\r"
    "DG1|1||C71.6^Malignant neoplasm of cerebellum^I10\r"
    "NTE|1||Is proton therapy an option?\r"
)


def adt(control: str, accept: str = "", application: str = "", version: str = "2.5.1") -> str:
    return (
        HEADER.format(
            app="EHR",
            type="ADT^A01^ADT_A01",
            control=control,
            version=version,
            accept=accept,
            application=application,
        )
        + ADT
    )


def ref(
    control: str,
    accept: str = "",
    application: str = "",
    *,
    sender: str = "EHR",
    with_rf1: bool = True,
    version: str = "2.5.1",
) -> str:
    head = HEADER.format(
        app=sender,
        type="REF^I12^REF_I12",
        control=control,
        version=version,
        accept=accept,
        application=application,
    )
    return head + REF.format(rf1=RF1 if with_rf1 else "")


# -- a peer that keeps what it receives --------------------------------------------------
@contextmanager
def interface_engine() -> Iterator[tuple[Hl7Peer, list[Any]]]:
    """python-hl7's MLLP server, commit-acknowledging and keeping every message it reads."""
    inbox: list[Any] = []

    async def keep_and_acknowledge(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
        while True:
            message = await peer.read(reader)
            inbox.append(message)
            writer.writemessage(message.create_ack(ack_code="CA"))
            await writer.drain()

    with hl7_peer(keep_and_acknowledge) as peer:
        yield peer, inbox


def field(message: Any, segment: str, number: int) -> str:
    return str(message.segment(segment)(number))


def has(message: Any, segment: str) -> bool:
    return any(str(s[0]) == segment for s in message)


def return_route(port: int, **flags: Any) -> MllpDestination:
    return MllpDestination(
        name="st-mary-return",
        host="127.0.0.1",
        port=port,
        answers_for=["EHR/ST-MARY"],
        connect_timeout_seconds=5,
        ack_timeout_seconds=5,
        max_attempts=1,
        **flags,
    )


@dataclass
class Hub:
    """The hub's message path without the HTTP API: intake, mapping, return channel, delivery."""

    sessions: sessionmaker[Session]
    worker: JobWorker
    deliveries: MllpDeliveries
    channel: ReturnChannel

    def receive(self, text: str, batch_id: str | None = None) -> bytes:
        envelope = Envelope(text.encode(), transport="mllp", channel="st-mary", peer="127.0.0.1")
        return Hl7Intake(self.sessions).receive(envelope, batch_id=batch_id).ack

    def run(self) -> int:
        return self.worker.run_until_idle()

    def row(self, control_id: str) -> MessageRow:
        with self.sessions() as session:
            row = session.scalars(
                select(MessageRow).where(
                    MessageRow.direction == "in", MessageRow.control_id == control_id
                )
            ).one()
            session.expunge(row)
            return row

    def outbound(self) -> list[MessageRow]:
        with self.sessions() as session:
            rows = list(
                session.scalars(
                    select(MessageRow)
                    .where(MessageRow.direction == "out")
                    .order_by(MessageRow.message_id)
                )
            )
            session.expunge_all()
            return rows

    def case_task(self) -> str:
        with self.sessions() as session:
            code = Criterion("code", None, (f"{codes.CASE_TASK_SYSTEM}|{codes.CASE_TASK_CODE}",))
            (task,) = SearchRunner(session).search(SearchQuery("Task", criteria=[code])).matches
            return task.resource_id

    def case_number(self, task_id: str) -> str:
        """The hub's number for a case (its Task's identifier; the referral's id)."""
        with self.sessions() as session:
            task = FhirInteractions(session).read("Task", task_id)
            (identifier,) = task.content["identifier"]
            return str(identifier["value"])

    def move(self, task_id: str, status: str, business: str | None, reason: str | None = None):
        with self.sessions.begin() as session:
            FhirInteractions(session).transition(task_id, status, business, reason)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


@contextmanager
def hub_with(
    sessions: sessionmaker[Session], destinations: list[MllpDestination], mapping_batch: int = 1
):
    """The handlers `hub.runtime` wires, on sessions bound to the return channel as the
    runtime binds the API's; `mapping_batch` map-hl7 jobs to a transaction."""
    deliveries = MllpDeliveries(destinations)
    channel = ReturnChannel(destinations)
    channel.bind_sessions(sessions)
    handlers = {
        MAP_JOB: channel.mapping_handler(map_hl7_message),
        DELIVER_JOB: deliver_hl7_job(deliveries),
    }
    try:
        worker = JobWorker(sessions, handlers, batch_sizes={MAP_JOB: mapping_batch})
        yield Hub(sessions, worker, deliveries, channel)
    finally:
        deliveries.close()


# -- application acknowledgements --------------------------------------------------------
def test_a_mapped_message_that_asks_always_gets_an_application_aa(sessions):
    with interface_engine() as (peer, inbox), hub_with(sessions, [return_route(peer.port)]) as hub:
        commit = hl7.parse(hub.receive(adt("ADT-1", "AL", "AL")).decode())
        assert field(commit, "MSA", 1) == "CA"  # the accept ACK, on receipt
        hub.run()
    (ack,) = inbox
    assert field(ack, "MSH", 9) == "ACK^A01^ACK"
    assert [field(ack, "MSH", n) for n in (3, 4, 5, 6)] == ["HUB", "SOH", "EHR", "ST-MARY"]
    assert [field(ack, "MSA", n) for n in (1, 2)] == ["AA", "ADT-1"]
    assert field(ack, "MSH", 10) not in ("ADT-1", field(commit, "MSH", 10))
    assert (field(ack, "MSH", 12), field(ack, "MSH", 15), field(ack, "MSH", 16)) == (
        "2.5.1",
        "AL",  # the application ACK is commit-acknowledged by the sender...
        "NE",  # ...and never acknowledged at application level: no ACK loop
    )
    assert not has(ack, "ERR")
    (sent,) = hub.outbound()
    assert (sent.status, sent.ack_code, sent.control_id) == (
        "delivered",
        "CA",
        field(ack, "MSH", 10),
    )
    assert hub.row("ADT-1").status == "mapped" and hub.row("ADT-1").error is None


@pytest.mark.parametrize("version", ["2.5.1", "2.3"])
def test_a_failed_mapping_that_asks_on_error_gets_ae_with_the_reason(sessions, version):
    with interface_engine() as (peer, inbox), hub_with(sessions, [return_route(peer.port)]) as hub:
        hub.receive(ref("REF-BAD", "AL", "ER", with_rf1=False, version=version))
        hub.run()
    row = hub.row("REF-BAD")
    assert row.status == "failed" and "RF1" in row.error
    (ack,) = inbox
    assert field(ack, "MSH", 9) == "ACK^I12^ACK"
    assert field(ack, "MSH", 12) == version  # answered in the version it was sent in
    assert [field(ack, "MSA", n) for n in (1, 2)] == ["AE", "REF-BAD"]
    assert "RF1" in field(ack, "MSA", 3)
    err = ack.segment("ERR")
    if version == "2.5.1":  # ERR-3 code (HL7 table 0357), ERR-4 severity, ERR-8 the reason
        assert str(err(3)) == "207^Application internal error^HL70357"
        assert str(err(4)) == "E"
        assert "RF1 is required" in str(err(8))
    else:  # v2.3: ERR-1 (ELD) segment^sequence^field^code&text&table
        assert str(err(1)(1)(4)(1)) == "207"
        assert "RF1 is required" in str(err(1)(1)(4)(2))


@pytest.mark.parametrize(
    ("accept", "application", "mapped", "expected"),
    [
        ("AL", "SU", True, "AA"),
        ("AL", "SU", False, None),
        ("AL", "ER", True, None),
        ("NE", "NE", True, None),
        ("AL", "NE", False, None),
        ("AL", "", True, "AA"),  # enhanced mode, MSH-16 empty: always
        ("", "", True, None),  # original mode: the ACK on receipt was the answer
        ("", "", False, None),
    ],
)
def test_msh_16_decides_whether_an_application_ack_goes_back(
    sessions, accept, application, mapped, expected
):
    with interface_engine() as (peer, inbox), hub_with(sessions, [return_route(peer.port)]) as hub:
        hub.receive(ref("REF-1", accept, application, with_rf1=mapped))
        hub.run()
    assert hub.row("REF-1").status == ("mapped" if mapped else "failed")
    assert [(field(m, "MSA", 1), field(m, "MSA", 2)) for m in inbox] == (
        [(expected, "REF-1")] if expected else []
    )
    assert len(hub.outbound()) == len(inbox)


def test_without_a_return_route_the_message_log_says_so(sessions):
    elsewhere = MllpDestination(
        name="lab-return", host="127.0.0.1", port=9, answers_for=["LAB/*"], max_attempts=1
    )
    with hub_with(sessions, [elsewhere]) as hub:
        hub.receive(adt("ADT-2", "AL", "AL"))
        hub.run()
    row = hub.row("ADT-2")
    assert row.status == "mapped"  # the mapping itself succeeded
    assert row.error == (
        "No application ACK sent (MSH-16 asked for one): no mllp_destinations entry answers "
        "for EHR/ST-MARY (answers_for)."
    )
    assert detail(row)["error"] == row.error  # what GET /admin/messages/{id} shows
    assert hub.outbound() == []


def test_a_return_route_with_application_acks_off_is_named_in_the_note(sessions):
    with hub_with(sessions, [return_route(9, application_acks=False)]) as hub:
        hub.receive(ref("REF-BAD", "AL", "AL", with_rf1=False))
        hub.run()
    error = hub.row("REF-BAD").error
    reason, note = error.splitlines()
    assert "RF1 is required" in reason  # the mapping's own error comes first
    assert note == (
        "No application ACK sent (MSH-16 asked for one): mllp_destinations 'st-mary-return' "
        "answer for EHR/ST-MARY with application_acks off."
    )
    assert hub.outbound() == []


def test_messages_of_a_batch_file_get_no_application_ack(sessions):
    with hub_with(sessions, [return_route(9)]) as hub:
        hub.receive(adt("ADT-3", "AL", "AL"), batch_id="backload-1")
        hub.run()
    row = hub.row("ADT-3")
    assert (row.status, row.error) == ("mapped", None)  # the batch report answers a batch
    assert hub.outbound() == []


# -- order status updates ----------------------------------------------------------------
def test_each_move_of_an_hl7_case_sends_an_osu_to_a_referrer_that_asked(sessions):
    with (
        interface_engine() as (peer, inbox),
        hub_with(sessions, [return_route(peer.port, order_status_updates=True)]) as hub,
    ):
        hub.receive(ref("REF-1"))  # original mode: no application ACK
        hub.run()
        task_id = hub.case_task()
        hub.move(task_id, "accepted", "records-complete")
        hub.run()
        hub.move(task_id, "on-hold", "records-complete", "Waiting for the MRI images")
        hub.run()
    assert [field(m, "MSH", 9) for m in inbox] == ["OSU^O51^OSU_O51"] * 3
    opened, accepted, held = inbox
    case = hub.case_number(task_id)
    for osu in inbox:
        assert [field(osu, "MSH", n) for n in (3, 4, 5, 6)] == ["HUB", "SOH", "EHR", "ST-MARY"]
        assert field(osu, "PID", 3).startswith(f"{MRN}^")
        assert field(osu, "ORC", 1) == "SC"  # status changed
        assert field(osu, "ORC", 2).startswith("REF-900^")  # the referrer's number (RF1-6)
        assert field(osu, "ORC", 3).startswith(f"{case}^SOH^")  # the hub's case number
    assert [field(m, "ORC", 5) for m in inbox] == ["IP", "IP", "HD"]  # HL7 table 0038
    assert field(opened, "ORC", 16) == "^Awaiting records"
    assert field(accepted, "ORC", 16) == "^Records complete"
    assert field(held, "ORC", 16) == "^Waiting for the MRI images"
    assert len({field(m, "MSH", 10) for m in inbox}) == 3
    assert [row.status for row in hub.outbound()] == ["delivered"] * 3


def test_referrals_mapped_in_one_transaction_each_get_their_answers(sessions):
    with (
        interface_engine() as (peer, inbox),
        hub_with(
            sessions, [return_route(peer.port, order_status_updates=True)], mapping_batch=25
        ) as hub,
    ):
        second = ref("REF-2", "AL", "AL").replace("REF-900", "REF-901")
        hub.receive(ref("REF-1", "AL", "AL"))
        hub.receive(second)
        assert hub.worker.run_once() == 2  # both mapped in one transaction
        hub.run()
    kinds = [
        (field(m, "MSH", 9), field(m, "MSA", 2) if has(m, "MSA") else field(m, "ORC", 2))
        for m in inbox
    ]
    assert sorted(kinds) == [
        ("ACK^I12^ACK", "REF-1"),
        ("ACK^I12^ACK", "REF-2"),
        ("OSU^O51^OSU_O51", f"REF-900^^{ST_MARY_REFERRALS}^URI"),
        ("OSU^O51^OSU_O51", f"REF-901^^{ST_MARY_REFERRALS}^URI"),
    ]


def test_a_move_that_is_rolled_back_queues_nothing(sessions):
    with hub_with(sessions, [return_route(9, order_status_updates=True)]) as hub:
        hub.receive(ref("REF-1"))
        hub.worker.run_once()  # the mapping only: the OSU of the opening stays queued
        before = len(hub.outbound())
        task_id = hub.case_task()
        with hub.sessions() as session:
            FhirInteractions(session).transition(task_id, "accepted", "records-complete", None)
            queued = session.scalar(
                select(func.count()).select_from(MessageRow).where(MessageRow.direction == "out")
            )
            assert queued == before + 1  # queued in the transaction of the move...
            session.rollback()
    assert len(hub.outbound()) == before  # ...and gone with it


def test_a_referrer_that_did_not_ask_gets_no_osu(sessions):
    others = MllpDestination(
        name="others",
        host="127.0.0.1",
        port=9,
        answers_for=["OTHER-EHR"],
        order_status_updates=True,
    )
    with hub_with(sessions, [others, return_route(9)]) as hub:  # st-mary: acks only
        hub.receive(ref("REF-1"))
        hub.worker.run_once()
        hub.move(hub.case_task(), "accepted", "records-complete")
    assert hub.outbound() == []


# -- the whole hub: listener, worker, FHIR API -------------------------------------------
@contextmanager
def whole_hub(settings: Any, destination: MllpDestination) -> Iterator[tuple[TestClient, Any, int]]:
    """The app as `hub serve` runs it (lifespan, MLLP listener, the runtime's job handlers),
    with a referrer's and case manager's token; (client, worker, listener port)."""
    hub_settings = settings.model_copy(
        update={
            "mllp_listeners": [MllpListenerConfig(name="st-mary", port=0)],
            "mllp_destinations": [destination],
        }
    )
    app = create_app(hub_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        client.headers.update(bearer(hub_settings))
        worker = JobWorker(app.state.hub.sessions, job_handlers(hub_settings))
        yield client, worker, app.state.listeners[0].bound_port


def transition(client: TestClient, task_id: str, status: str, business: str) -> None:
    parameters = [
        {"name": "status", "valueCode": status},
        {"name": "businessStatus", "valueCode": business},
    ]
    moved = client.post(
        f"/fhir/Task/{task_id}/$transition",
        content=json.dumps({"resourceType": "Parameters", "parameter": parameters}),
    )
    assert moved.status_code == 200, moved.text


def test_over_the_api_only_the_hl7_case_is_reported(settings, tmp_path):
    with (
        interface_engine() as (peer, inbox),
        whole_hub(settings, return_route(peer.port, order_status_updates=True)) as hub,
    ):
        client, worker, port = hub
        acks = mllp_send(port, [ref("REF-1", "AL", "AL")], tmp_path)
        assert [a.split("|")[1:3] for a in acks] == [["CA", "REF-1"]]
        worker.run_until_idle()
        mrn = {"system": "https://outside-ehr.example/mrn", "value": "OUT-1"}  # PID-3 could say
        child = post(client, patient(identifier=[mrn]))
        post(client, referral(f"Patient/{child['id']}"))
        tasks = client.get("/fhir/Task", params={"status": "received"}).json()["entry"]
        assert len(tasks) == 2
        for task in tasks:
            transition(client, task["resource"]["id"], "accepted", "records-complete")
        worker.run_until_idle()
    ack, opened, accepted = inbox
    assert [field(ack, "MSA", n) for n in (1, 2)] == ["AA", "REF-1"]
    assert [field(m, "MSH", 9) for m in (opened, accepted)] == ["OSU^O51^OSU_O51"] * 2
    assert [field(m, "ORC", 16) for m in (opened, accepted)] == [
        "^Awaiting records",
        "^Records complete",
    ]
    assert field(opened, "ORC", 3) == field(accepted, "ORC", 3)  # the HL7 case, twice


def test_a_fhir_referral_named_again_over_hl7_stays_a_fhir_case(settings, tmp_path):
    with (
        interface_engine() as (peer, inbox),
        whole_hub(settings, return_route(peer.port, order_status_updates=True)) as hub,
    ):
        client, worker, port = hub
        mrn = {"system": "https://outside-ehr.example/mrn", "value": "OUT-1"}  # PID-3 could say
        child = post(client, patient(identifier=[mrn]))
        number = {"system": ST_MARY_REFERRALS, "value": "REF-900"}  # as RF1-6 maps
        request = post(client, referral(f"Patient/{child['id']}", identifier=[number]))
        mllp_send(port, [ref("REF-1", "AL", "AL")], tmp_path)
        worker.run_until_idle()
        tasks = client.get("/fhir/Task").json()["entry"]
        assert [t["resource"]["focus"]["reference"] for t in tasks] == [
            f"ServiceRequest/{request['id']}"
        ]  # the message named the FHIR referral (conditional create): no second case
        transition(client, tasks[0]["resource"]["id"], "accepted", "records-complete")
        worker.run_until_idle()
    (ack,) = inbox  # the application ACK, and no OSU^O51 for the FHIR case
    assert [field(ack, "MSA", n) for n in (1, 2)] == ["AA", "REF-1"]
