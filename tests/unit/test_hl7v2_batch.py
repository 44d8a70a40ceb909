"""HL7 v2 batch files: FHS/BHS ... BTS/FTS, bare batches, bare messages, any line ending."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.hl7v2.batch import (
    BatchError,
    ProblemCode,
    build_batch,
    split_batch,
)


def message(control_id: str, *segments: str, kind: str = "ORU^R01^ORU_R01") -> bytes:
    msh = f"MSH|^~\\&|LAB|NORTH|HUB|SOH|20261101101500||{kind}|{control_id}|P|2.5.1"
    return ("\r".join([msh, *segments]) + "\r").encode("utf-8")


M1 = message("CTL-1", "PID|1||4821937^^^NORTH^MR||Lumen^Ivy", "OBR|1||F-1|718-7^Hb^LN")
M2 = message("CTL-2", "PID|1||4821938^^^NORTH^MR||Quill^Theo", "OBX|1|NM|718-7^Hb^LN||11.2")
M3 = message("CTL-3", "PID|1||4821939^^^NORTH^MR||Marr^Zoë", kind="ADT^A08^ADT_A01")
FHS = "FHS|^~\\&|LAB|NORTH|HUB|SOH|20261101110000||night.hl7|nightly run|FILE-77"
BHS = "BHS|^~\\&|LAB|NORTH|HUB|SOH|20261101110001||||BATCH-9"


def body(*messages: bytes) -> list[str]:
    return [line for m in messages for line in m.decode("utf-8").split("\r") if line]


def file_of(lines: list[str], separator: str = "\r") -> bytes:
    return (separator.join(lines) + separator).encode("utf-8")


def full_file(separator: str = "\r", bts: str = "BTS|3", fts: str = "FTS|1") -> bytes:
    return file_of([FHS, BHS, *body(M1, M2, M3), bts, fts], separator)


def codes(batch) -> list[ProblemCode]:
    return [p.code for p in batch.problems]


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"], ids=["CR", "LF", "CRLF"])
def test_a_file_with_three_messages(separator):
    batch = split_batch(full_file(separator))
    assert batch.problems == ()
    assert batch.raw_messages == [M1, M2, M3]  # CR-separated whatever the file used
    assert [m.control_id for m in batch.messages] == ["CTL-1", "CTL-2", "CTL-3"]
    assert [m.message_type for m in batch.messages] == ["ORU^R01", "ORU^R01", "ADT^A08"]
    assert [m.index for m in batch.messages] == [0, 1, 2]
    assert [m.line for m in batch.messages] == [3, 6, 9]
    header = batch.file_header
    assert header is not None and header.segment == "FHS"
    assert (header.sending_application, header.sending_facility) == ("LAB", "NORTH")
    assert (header.receiving_application, header.receiving_facility) == ("HUB", "SOH")
    assert header.created == "20261101110000"
    assert (header.name, header.comment, header.control_id) == (
        "night.hl7",
        "nightly run",
        "FILE-77",
    )
    assert batch.header is header
    (section,) = batch.sections
    assert section.header is not None and section.header.control_id == "BATCH-9"
    assert section.declared_count == 3 and section.message_indexes == (0, 1, 2)
    assert batch.declared_batch_count == 1
    assert all(m.section == 0 for m in batch.messages)


def test_a_bare_batch_without_file_envelope():
    batch = split_batch(file_of([BHS, *body(M1, M2), "BTS|2"], "\n"))
    assert batch.problems == ()
    assert batch.file_header is None and batch.file_trailer is None
    assert batch.header is not None and batch.header.control_id == "BATCH-9"
    assert batch.raw_messages == [M1, M2]
    assert batch.sections[0].declared_count == 2
    assert batch.declared_batch_count is None


def test_a_file_of_bare_messages():
    batch = split_batch(file_of(body(M1, M2, M3), "\r\n"))
    assert batch.problems == ()
    assert batch.header is None
    assert batch.raw_messages == [M1, M2, M3]
    (section,) = batch.sections
    assert section.header is None and section.trailer is None
    assert section.message_indexes == (0, 1, 2)


def test_a_single_message_is_a_batch_of_one():
    batch = split_batch(M1)
    assert batch.raw_messages == [M1] and batch.problems == ()


def test_an_empty_batch():
    batch = split_batch(file_of([FHS, BHS, "BTS|0", "FTS|1"]))
    assert batch.problems == ()
    assert batch.messages == ()
    assert len(batch.sections) == 1 and batch.sections[0].declared_count == 0


def test_count_mismatches_are_reported_with_both_numbers():
    batch = split_batch(full_file(bts="BTS|5", fts="FTS|2"))
    assert batch.raw_messages == [M1, M2, M3]
    assert codes(batch) == [ProblemCode.MESSAGE_COUNT_MISMATCH, ProblemCode.BATCH_COUNT_MISMATCH]
    messages, batches = batch.problems
    assert messages.line == 11 and "(BTS-1 5, messages 3)" in messages.detail
    assert batches.line == 12 and "(FTS-1 2, batches 1)" in batches.detail


def test_a_count_that_is_no_number():
    batch = split_batch(full_file(bts="BTS|three"))
    assert codes(batch) == [ProblemCode.INVALID_COUNT]
    assert batch.sections[0].declared_count is None


def test_garbage_between_messages_is_reported_and_left_out():
    lines = [FHS, BHS, *body(M1), "*** printer jam ***", *body(M2), "", *body(M3), "BTS|3", "FTS|1"]
    batch = split_batch(file_of(lines, "\n"))
    assert batch.raw_messages == [M1, M2, M3]
    (problem,) = batch.problems
    assert problem.code is ProblemCode.TEXT_INSIDE_MESSAGE
    assert problem.line == 6 and problem.message_index == 0


def test_text_and_segments_outside_any_message():
    lines = [FHS, "hello", BHS, "PID|1||X", *body(M1), "BTS|1", "FTS|1", "trailing words"]
    batch = split_batch(file_of(lines))
    assert batch.raw_messages == [M1]
    assert [(p.code, p.line) for p in batch.problems] == [
        (ProblemCode.TEXT_OUTSIDE_MESSAGE, 2),
        (ProblemCode.SEGMENT_OUTSIDE_MESSAGE, 4),
        (ProblemCode.TEXT_OUTSIDE_MESSAGE, 10),
    ]


def test_missing_trailers():
    batch = split_batch(file_of([FHS, BHS, *body(M1, M2)]))
    assert batch.raw_messages == [M1, M2]
    assert codes(batch) == [ProblemCode.MISSING_BATCH_TRAILER, ProblemCode.MISSING_FILE_TRAILER]
    assert [p.line for p in batch.problems] == [2, 1]


def test_missing_headers():
    batch = split_batch(file_of([*body(M1, M2), "BTS|2", "FTS|1"]))
    assert batch.raw_messages == [M1, M2]
    assert codes(batch) == [ProblemCode.MISSING_BATCH_HEADER, ProblemCode.MISSING_FILE_HEADER]
    assert batch.sections[0].declared_count == 2


def test_messages_outside_the_batches_of_a_file_that_has_some():
    batch = split_batch(file_of([BHS, *body(M1), "BTS|1", *body(M2)]))
    assert batch.raw_messages == [M1, M2]
    (problem,) = batch.problems
    assert problem.code is ProblemCode.MESSAGE_OUTSIDE_BATCH and problem.message_index == 1
    assert [m.section for m in batch.messages] == [0, 1]


def test_two_batches_in_one_file():
    lines = [FHS, BHS, *body(M1), "BTS|1", BHS, *body(M2, M3), "BTS|2", "FTS|2"]
    batch = split_batch(file_of(lines))
    assert batch.problems == ()
    assert [s.message_indexes for s in batch.sections] == [(0,), (1, 2)]
    assert [m.section for m in batch.messages] == [0, 1, 1]


def test_content_after_the_file_trailer_and_a_second_file_header():
    batch = split_batch(file_of([FHS, *body(M1), "FTS|1", FHS, *body(M2)]))
    assert batch.raw_messages == [M1, M2]
    assert ProblemCode.CONTENT_AFTER_FILE_TRAILER in codes(batch)
    assert ProblemCode.UNEXPECTED_FILE_HEADER in codes(batch)


def test_an_unreadable_message_is_kept_and_reported():
    batch = split_batch(file_of([BHS, "MSH|^~", *body(M1), "BTS|2"]))
    assert len(batch.messages) == 2
    assert batch.messages[0].control_id == ""
    assert batch.messages[1].raw == M1
    (problem,) = batch.problems
    assert problem.code is ProblemCode.UNREADABLE_MESSAGE and problem.message_index == 0


def test_bom_and_mllp_framing_characters_are_tolerated():
    raw = b"\xef\xbb\xbf\x0b" + full_file().rstrip(b"\r") + b"\x1c\r"
    batch = split_batch(raw)
    assert batch.problems == () and batch.raw_messages == [M1, M2, M3]


def test_latin1_header_values_are_read():
    header = "BHS|^~\\&|LAB|CLÍNICA NORTE|HUB|SOH|20261101||||B-1".encode("iso-8859-1")
    batch = split_batch(header + b"\r" + M1 + b"BTS|1\r")
    assert batch.header is not None and batch.header.sending_facility == "CLÍNICA NORTE"


def test_escaped_header_values_are_unescaped():
    batch = split_batch(file_of(["BHS|^~\\&|LAB|NORTH \\T\\ SOUTH|HUB|SOH|||||B\\F\\1", "BTS|0"]))
    assert batch.header is not None
    assert (batch.header.sending_facility, batch.header.control_id) == ("NORTH & SOUTH", "B|1")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"hello world\n",
        b"%PDF-1.4\n%%EOF\n",
        b'{"resourceType": "Bundle"}',
        b"PID|1||X\r",
    ],
)
def test_input_that_is_not_hl7_raises(raw):
    with pytest.raises(BatchError):
        split_batch(raw)


def test_report_entries_wait_for_their_outcomes():
    report = split_batch(full_file()).report()
    assert report.control_id == "FILE-77"
    assert [(e.index, e.control_id, e.message_type) for e in report.entries] == [
        (0, "CTL-1", "ORU^R01"),
        (1, "CTL-2", "ORU^R01"),
        (2, "CTL-3", "ADT^A08"),
    ]
    assert not report.complete
    for entry in report.entries:
        entry.outcome = "AA"
    assert report.complete and report.problems == []


def test_build_batch_writes_headers_and_counts():
    now = datetime(2026, 11, 1, 11, 0, tzinfo=UTC)
    raw = build_batch(
        [M1, M2], sending=("HUB", "SOH"), receiving=("LAB", "NORTH"), control_id="B-1", now=now
    )
    lines = raw.split(b"\r")
    assert lines[0].startswith(b"FHS|^~\\&|HUB|SOH|LAB|NORTH|20261101110000+0000|")
    assert lines[1].startswith(b"BHS|") and lines[-3:] == [b"BTS|2", b"FTS|1", b""]
    batch = split_batch(raw)
    assert batch.problems == () and batch.raw_messages == [M1, M2]
    assert batch.header is not None and batch.header.control_id == "B-1"


# -- property: whatever messages go in a batch come back out -----------------------------------

_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
_SEGMENT = st.builds(
    lambda name, fields: "|".join([name, *fields]),
    st.sampled_from(["PID", "PV1", "ORC", "OBR", "OBX", "NTE", "ZXT"]),
    st.lists(_TEXT, max_size=6),
)
_MESSAGE = st.builds(
    lambda control, segments: message(control, *segments),
    st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789-", min_size=1, max_size=20),
    st.lists(_SEGMENT, max_size=6),
)


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(_MESSAGE, max_size=8),
    envelope=st.sampled_from(["file", "batch", "none"]),
    separator=st.sampled_from([b"\r", b"\n", b"\r\n"]),
)
def test_any_messages_wrapped_in_a_batch_split_back_to_the_same_messages(
    messages, envelope, separator
):
    if envelope == "none":
        if not messages:
            return  # an empty file of bare messages is not HL7 at all
        raw = b"".join(messages)
    else:
        raw = build_batch(
            messages,
            sending=("HUB", "SOH"),
            receiving=("EHR", "X"),
            control_id="B-1",
            now=datetime(2026, 11, 1, tzinfo=UTC),
            file_envelope=envelope == "file",
        )
    batch = split_batch(raw.replace(b"\r", separator))
    assert batch.problems == ()
    assert batch.raw_messages == messages
    assert [m.control_id for m in batch.messages] == [m.split(b"|")[9].decode() for m in messages]
    if envelope != "none":
        assert batch.sections[0].declared_count == len(messages)
