"""HL7 v2 intake on both backends: persisted before the ACK, duplicates re-ACKed, AR and AE
with an ERR segment, enhanced acknowledgement modes."""

from __future__ import annotations

import asyncio
import sqlite3

import psycopg
import pytest
from sqlalchemy import func, select, text

from connectors.base import Envelope
from hub.messages.intake import INLINE_DECIDE_BYTES, MAP_JOB, Hl7Intake
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import JobRow, MessageRow
from mappings.hl7v2.tokenizer import parse_message

ORU = (
    "MSH|^~\\&|LAB|GENH|HUB|SOH|20261101120000||ORU^R01^ORU_R01|{control}|P|{version}"
    "|||{accept}|{application}\r"
    "PID|1||12345^^^GENH^MR||Testchild^Sam||20170302|F\r"
    "OBR|1|PL1|FI1|58410-2^CBC^LN|||20261101080000\r"
    "OBX|1|NM|718-7^Hemoglobin^LN||9.1|g/dL|11.5-15.5|L|||F\r"
)


def oru(
    control: str = "MSG0001", version: str = "2.5.1", accept: str = "", application: str = ""
) -> bytes:
    return ORU.format(
        control=control, version=version, accept=accept, application=application
    ).encode()


@pytest.fixture
def intake(database_url):
    engine = make_engine(database_url)
    intake = Hl7Intake(make_session_factory(engine))
    yield intake
    intake.close()
    engine.dispose()


def envelope(payload: bytes, peer: str = "127.0.0.1:5000") -> Envelope:
    return Envelope(payload, transport="mllp", channel="lab-feed", peer=peer)


def receive(intake: Hl7Intake, payload: bytes):
    return intake.receive(envelope(payload))


async def deliver_together(intake: Hl7Intake, payloads: list[bytes]) -> list[bytes]:
    """Hand the messages over as listeners do, all at once, as from as many connections."""
    return await asyncio.gather(
        *(intake(envelope(p, peer=f"127.0.0.1:{6000 + n}")) for n, p in enumerate(payloads))
    )


def ack_fields(ack: bytes) -> dict[str, list[str]]:
    message = parse_message(ack)
    return {segment.name: [segment.field(n) for n in range(1, 10)] for segment in message.segments}


def counts(intake: Hl7Intake) -> tuple[int, int]:
    with intake.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(MessageRow)) or 0,
            session.scalar(select(func.count()).select_from(JobRow)) or 0,
        )


def test_an_accepted_message_is_in_the_log_with_its_job_before_the_aa(intake):
    result = receive(intake, oru())
    fields = ack_fields(result.ack)
    assert fields["MSA"][:2] == ["AA", "MSG0001"]
    assert fields["MSH"][8] == "ACK^R01^ACK"
    assert fields["MSH"][2:6] == ["HUB", "SOH", "LAB", "GENH"]
    with intake.sessions() as session:
        row = session.get(MessageRow, result.message_id)
        job = session.scalar(select(JobRow))
        assert (row.status, row.message_type, row.control_id, row.raw, row.ack) == (
            "accepted",
            "ORU^R01",
            "MSG0001",
            oru(),
            result.ack,
        )
        assert (job.kind, job.subject, job.status) == (MAP_JOB, str(row.message_id), "pending")


def test_a_duplicate_is_re_acked_and_not_processed_twice(intake):
    first = receive(intake, oru())
    second = receive(intake, oru())
    assert second.duplicate and second.ack == first.ack
    assert counts(intake) == (1, 1)
    with intake.sessions() as session:
        assert session.get(MessageRow, first.message_id).duplicates == 1
    other_sender = oru().replace(b"|LAB|GENH|", b"|RAD|GENH|")
    assert not receive(intake, other_sender).duplicate
    assert counts(intake) == (2, 2)


def test_unparseable_bytes_get_an_ar_and_are_kept(intake):
    result = receive(intake, b"this is not HL7 at all")
    assert ack_fields(result.ack)["MSA"][0] == "AR"
    assert counts(intake) == (1, 0)
    with intake.sessions() as session:
        row = session.get(MessageRow, result.message_id)
        assert row.status == "rejected" and "MSH" in row.error


@pytest.mark.parametrize(
    ("payload", "code", "location", "error_code"),
    [
        (oru().replace(b"ORU^R01^ORU_R01", b"SIU^S12^SIU_S12"), "AR", "MSH^1^9", "200"),
        (oru(version="2.9"), "AR", "MSH^1^12", "203"),
        (oru().replace(b"12345^^^GENH^MR", b""), "AE", "PID^1^3", "101"),
        (
            oru().replace(b"OBR|1|PL1|FI1|58410-2^CBC^LN|||20261101080000\r", b""),
            "AE",
            "OBR^1",
            "100",
        ),
    ],
    ids=["unsupported-type", "unsupported-version", "missing-PID-3", "missing-OBR"],
)
def test_a_message_that_cannot_be_processed_is_answered_with_err(
    intake, payload, code, location, error_code
):
    result = receive(intake, payload)
    fields = ack_fields(result.ack)
    assert fields["MSA"][0] == code
    assert fields["ERR"][1] == location
    assert fields["ERR"][2].startswith(error_code)
    assert counts(intake) == (1, 0)


def test_v23_errors_use_err_1(intake):
    result = receive(intake, oru(version="2.3").replace(b"12345^^^GENH^MR", b""))
    err = ack_fields(result.ack)["ERR"]
    assert err[0].startswith("PID^1^3^101")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [("AL", "CA"), ("SU", "CA"), ("ER", None), ("NE", None)],
)
def test_enhanced_mode_sends_a_commit_ack_as_msh15_asks(intake, accept, expected):
    result = receive(intake, oru(accept=accept, application="AL"))
    if expected is None:
        assert result.ack == b""
    else:
        assert ack_fields(result.ack)["MSA"][0] == expected
    assert counts(intake) == (1, 1)


def test_latin1_and_utf8_messages_are_read_by_msh18(intake):
    text = oru(control="L1").decode().replace("Testchild", "Müller")
    msh, rest = text.split("\r", 1)
    for charset, codec in (("8859/1", "iso-8859-1"), ("UNICODE UTF-8", "utf-8")):
        declared = f"{msh}||{charset}\r{rest}".replace("|L1|", f"|L1-{codec}|")
        message = parse_message(declared.encode(codec))
        assert message.msh.value(18) == charset and message.charset == codec
        assert message.first("PID").value(5) == "Müller"
        result = receive(intake, declared.encode(codec))
        assert ack_fields(result.ack)["MSA"][0] == "AA"
        assert ack_fields(result.ack)["MSH"][8] == "ACK^R01^ACK"
    unknown = f"{msh}||KLINGON\r{rest}".encode()
    assert ack_fields(receive(intake, unknown).ack)["MSA"][0] == "AR"


def duplicates_of(intake: Hl7Intake, message_id: int) -> int:
    with intake.sessions() as session:
        return session.get(MessageRow, message_id).duplicates


def test_one_group_stores_the_new_and_answers_the_repeated_in_order(intake):
    earlier = receive(intake, oru("OLD"))
    results = intake.receive_many(
        [
            envelope(oru("NEW-1")),
            envelope(oru("OLD")),  # stored before
            envelope(b"not HL7"),
            envelope(oru("NEW-1")),  # repeated within the group
            envelope(oru("NEW-2", version="2.9")),
        ]
    )
    assert [ack_fields(r.ack)["MSA"][:2] for r in results] == [
        ["AA", "NEW-1"],
        ["AA", "OLD"],
        ["AR", ""],
        ["AA", "NEW-1"],
        ["AR", "NEW-2"],
    ]
    assert [r.duplicate for r in results] == [False, True, False, True, False]
    assert (results[1].message_id, results[1].ack) == (earlier.message_id, earlier.ack)
    assert (results[3].message_id, results[3].ack) == (results[0].message_id, results[0].ack)
    assert counts(intake) == (4, 2)  # OLD, NEW-1, the AR'd two; jobs for OLD and NEW-1
    assert duplicates_of(intake, earlier.message_id) == 1
    assert duplicates_of(intake, results[0].message_id) == 1


def test_messages_handed_over_together_each_get_their_own_ack(intake):
    payloads = [oru(f"C-{n}") for n in range(40)] + [oru("C-3"), b"garbage"]
    acks = asyncio.run(deliver_together(intake, payloads))
    answered = [ack_fields(ack)["MSA"][:2] for ack in acks]
    assert answered == [["AA", f"C-{n}"] for n in range(40)] + [["AA", "C-3"], ["AR", ""]]
    assert acks[40] == acks[3]  # the duplicate gets the first ACK again
    assert counts(intake) == (41, 40)
    with intake.sessions() as session:
        stored = dict(session.execute(select(MessageRow.control_id, MessageRow.raw)).all())
    assert all(stored[f"C-{n}"] == payloads[n] for n in range(40))


def test_a_message_with_a_large_document_is_stored_whole(intake):
    document = "A" * (INLINE_DECIDE_BYTES + 1000)
    payload = oru("BIG") + f"OBX|2|ED|11502-2^Report^LN||^AP^PDF^Base64^{document}|||||F\r".encode()
    [ack] = asyncio.run(deliver_together(intake, [payload]))
    assert ack_fields(ack)["MSA"][:2] == ["AA", "BIG"]
    with intake.sessions() as session:
        assert session.scalar(select(MessageRow.raw)) == payload


def test_no_ack_while_the_log_cannot_take_messages_and_acks_again_after(intake, database_url):
    engine = make_engine(database_url)
    try:
        asyncio.run(deliver_together(intake, [oru("BEFORE")]))  # the writer is connected
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE message_log RENAME TO message_log_away"))
        try:
            with pytest.raises((sqlite3.Error, psycopg.Error)):
                asyncio.run(deliver_together(intake, [oru("DURING")]))
        finally:
            with engine.begin() as connection:
                connection.execute(text("ALTER TABLE message_log_away RENAME TO message_log"))
        [ack] = asyncio.run(deliver_together(intake, [oru("AFTER")]))
    finally:
        engine.dispose()
    assert ack_fields(ack)["MSA"][:2] == ["AA", "AFTER"]
    with intake.sessions() as session:
        assert set(session.scalars(select(MessageRow.control_id))) == {"BEFORE", "AFTER"}
