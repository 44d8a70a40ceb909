"""The return channel's pure parts: which destination answers for a sender, which MSH-16
asks for an application ACK, what that ACK holds, and the case hook's wiring."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from hub.config_check import check_config_file
from hub.messages.order_status import state_changed
from hub.messages.outbound import MllpDestination
from hub.messages.return_channel import ReturnChannel, application_ack, wants_application_ack
from hub.settings import REPO_ROOT, Settings
from hub.storage.repository import StoredResource
from hub.workflow.case_events import LISTENERS
from mappings.hl7v2.tokenizer import parse_message

MESSAGE = (
    "MSH|^~\\&|EHR^1.2.3^ISO|ST-MARY|HUB|SOH|20261101140000||REF^I12^REF_I12|REF-1|T|2.5.1"
    "|||{accept}|{application}||{charset}\r"
    "PID|1||MRN-1^^^ST-MARY^MR\r"
)


def message(accept: str = "AL", application: str = "AL", charset: str = ""):
    return parse_message(
        MESSAGE.format(accept=accept, application=application, charset=charset).encode()
    )


def destination(name: str, *answers_for: str, **flags: bool) -> MllpDestination:
    return MllpDestination(
        name=name, host="127.0.0.1", port=2575, answers_for=list(answers_for), **flags
    )


# -- which destination answers for a sender ----------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "application", "facility", "answers"),
    [
        ("EHR/ST-MARY", "EHR", "ST-MARY", True),
        ("EHR/ST-MARY", "EHR", "ST-JUDE", False),
        ("EHR/ST-MARY", "ehr", "ST-MARY", False),  # namespace ids compare exactly
        ("EHR", "EHR", "ST-JUDE", True),  # a bare application: any facility
        ("EHR/*", "EHR", None, True),
        ("*/ST-MARY", "LAB", "ST-MARY", True),
        ("*/ST-MARY", "LAB", "ST-JUDE", False),
        ("*", "ANY", "WHERE", True),
        (" EHR / ST-MARY ", "EHR", "ST-MARY", True),  # spaces around the parts are dropped
    ],
)
def test_answers_for_names_senders_as_the_message_log_does(pattern, application, facility, answers):
    assert destination("back", pattern).answers(application, facility) is answers


@pytest.mark.parametrize("pattern", ["EHR/ST-MARY/X", "/ST-MARY", "EHR/", "", "  "])
def test_a_pattern_that_names_no_sender_is_refused(pattern):
    with pytest.raises(ValidationError, match="APPLICATION/FACILITY"):
        destination("back", pattern)


def test_a_destination_answers_for_nobody_and_sends_no_status_updates_by_default():
    plain = MllpDestination(name="opinions", host="127.0.0.1", port=2575)
    assert (plain.answers_for, plain.application_acks, plain.order_status_updates) == (
        [],
        True,
        False,
    )
    assert not plain.answers("EHR", "ST-MARY")


def test_the_route_is_the_first_destination_with_the_flag_on():
    channel = ReturnChannel(
        [
            destination("opinions"),  # answers for nobody
            destination("acks", "EHR/ST-MARY"),
            destination("status", "EHR", order_status_updates=True),
            destination("late", "*", order_status_updates=True),
        ]
    )
    assert channel.route("EHR", "ST-MARY", "application_acks").destination.name == "acks"
    assert channel.route("EHR", "ST-MARY", "order_status_updates").destination.name == "status"
    assert channel.route("LAB", "X", "order_status_updates").destination.name == "late"


def test_no_route_says_why():
    channel = ReturnChannel([destination("st-mary", "EHR/ST-MARY", application_acks=False)])
    off = channel.route("EHR", "ST-MARY", "application_acks")
    assert off.destination is None
    assert (
        off.problem
        == "mllp_destinations 'st-mary' answer for EHR/ST-MARY with application_acks off"
    )
    unknown = channel.route("LAB", "GENH", "application_acks")
    assert unknown.problem == "no mllp_destinations entry answers for LAB/GENH (answers_for)"


def test_destinations_load_from_settings_and_the_shipped_config_is_valid():
    settings = Settings(
        mllp_destinations=[
            {
                "name": "st-mary-return",
                "host": "engine.st-mary.example",
                "port": 2575,
                "answers_for": ["EHR/ST-MARY", "LAB/ST-MARY"],
                "order_status_updates": True,
            }
        ]
    )
    (loaded,) = settings.mllp_destinations
    assert loaded.answers("LAB", "ST-MARY") and loaded.order_status_updates
    assert check_config_file(REPO_ROOT / "config" / "hub.yaml") == []


def test_config_check_names_a_bad_sender_pattern(tmp_path: Path):
    bad = tmp_path / "hub.yaml"
    bad.write_text(
        "hub:\n"
        "  mllp_destinations:\n"
        "    - {name: back, host: 127.0.0.1, port: 2575, answers_for: [A/B/C]}\n",
        encoding="utf-8",
    )
    (problem,) = check_config_file(bad)
    assert "mllp_destinations.0.answers_for" in problem and "APPLICATION/FACILITY" in problem


# -- MSH-16 and the application ACK ------------------------------------------------------
@pytest.mark.parametrize(
    ("accept", "application", "on_success", "on_failure"),
    [
        ("AL", "AL", True, True),
        ("AL", "ER", False, True),
        ("AL", "SU", True, False),
        ("AL", "NE", False, False),
        ("NE", "AL", True, True),
        ("AL", "", True, True),  # enhanced mode, MSH-16 empty: always
        ("", "", False, False),  # original mode: the ACK on receipt was the only one
    ],
)
def test_msh_16_table_0155(accept, application, on_success, on_failure):
    received = message(accept, application)
    assert wants_application_ack(received, mapped=True) is on_success
    assert wants_application_ack(received, mapped=False) is on_failure


def test_an_application_aa_answers_the_message_as_a_message_of_its_own():
    ack = parse_message(application_ack(message(charset="UNICODE UTF-8")))
    msh = ack.msh
    assert [msh.field(n) for n in (3, 4, 5, 6)] == ["HUB", "SOH", "EHR^1.2.3^ISO", "ST-MARY"]
    assert (msh.field(9), msh.field(11), msh.field(12)) == ("ACK^I12^ACK", "T", "2.5.1")
    assert msh.field(10) and msh.field(10) != "REF-1"
    assert (msh.field(15), msh.field(16), msh.field(18)) == ("AL", "NE", "UNICODE UTF-8")
    assert [ack.first("MSA").field(n) for n in (1, 2)] == ["AA", "REF-1"]
    assert ack.first("ERR") is None
    datetime.strptime(msh.field(7), "%Y%m%d%H%M%S")


def test_an_application_ae_carries_the_first_line_of_the_reason_escaped():
    reason = "MissingRequiredSegment: RF1 | the referral^needs it\nsecond line"
    ack = parse_message(application_ack(message(), reason))
    msa, err = ack.first("MSA"), ack.first("ERR")
    assert (msa.value(1), msa.value(2)) == ("AE", "REF-1")
    assert err.field(3) == "207^Application internal error^HL70357"
    assert err.value(8) == "MissingRequiredSegment: RF1 | the referral^needs it"
    assert err.field(8) == "MissingRequiredSegment: RF1 \\F\\ the referral\\S\\needs it"


# -- the case hook ---------------------------------------------------------------------
def task(status: str, business: str | None = None, reason: str | None = None) -> StoredResource:
    content: dict[str, object] = {"resourceType": "Task", "status": status}
    if business:
        content["businessStatus"] = {"coding": [{"code": business}]}
    if reason:
        content["statusReason"] = {"text": reason}
    return StoredResource("Task", "t-1", 1, datetime(2026, 11, 1), False, content)


def test_what_an_osu_reports_is_what_counts_as_a_move():
    assert state_changed(task("accepted"), task("received"))
    assert state_changed(task("received", "records-complete"), task("received", "awaiting"))
    assert state_changed(task("on-hold", reason="MRI"), task("on-hold", reason="CT"))
    assert not state_changed(task("received", "awaiting"), task("received", "awaiting"))


def test_binding_a_session_leaves_the_sessionmaker_and_its_other_sessions_alone():
    sessions: sessionmaker[Session] = sessionmaker()
    api = ReturnChannel([])
    api.bind_sessions(sessions)
    first, second = sessions(), sessions()
    job = ReturnChannel([])
    job.bind(first.info)
    assert first.info[LISTENERS] == {"return-channel": job}
    assert second.info[LISTENERS] == {"return-channel": api}
    assert sessions.kw["info"][LISTENERS] == {"return-channel": api}
