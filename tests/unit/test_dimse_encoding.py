"""connectors.dimse.encoding writes the same bytes as pydicom's writer, quicker: the File
Meta Information ahead of each received dataset, and DIMSE command sets."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import pynetdicom.dimse_messages as dimse_messages
import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    VLWholeSlideMicroscopyImageStorage,
)
from pynetdicom import dimse_primitives as primitives
from pynetdicom.dsutils import create_file_meta
from pynetdicom.dsutils import encode as pynetdicom_encode

from connectors.dimse import encoding
from connectors.dimse.received import configure_pynetdicom

INSTANCE_UIDS = ["1.2.3.4", "1.2.3.45", "2.25.329800735698586629295641978511506172918"]


@pytest.mark.parametrize("instance_uid", INSTANCE_UIDS)
@pytest.mark.parametrize(
    ("sop_class", "syntax"),
    [
        (CTImageStorage, ExplicitVRLittleEndian),
        (CTImageStorage, ImplicitVRLittleEndian),
        (VLWholeSlideMicroscopyImageStorage, JPEG2000Lossless),
    ],
)
def test_the_file_meta_is_what_pydicom_writes(
    instance_uid: str, sop_class: UID, syntax: UID
) -> None:
    expected = io.BytesIO()
    write_file_meta_info(
        expected,  # type: ignore[arg-type]
        create_file_meta(
            sop_class_uid=sop_class, sop_instance_uid=UID(instance_uid), transfer_syntax=syntax
        ),
    )
    written = io.BytesIO()
    encoding.write_file_meta(
        written,
        encoding.encode_file_meta(
            sop_class_uid=sop_class, sop_instance_uid=instance_uid, transfer_syntax=syntax
        ),
    )
    assert written.getvalue() == expected.getvalue()


def _store(p: primitives.C_STORE) -> None:
    p.MessageID = 11
    p.AffectedSOPClassUID = CTImageStorage
    p.AffectedSOPInstanceUID = INSTANCE_UIDS[1]
    p.Priority = 2
    p.MoveOriginatorApplicationEntityTitle = "ORTHANC"
    p.MoveOriginatorMessageID = 3
    p.DataSet = io.BytesIO(b"\x08\x00\x16\x00")


def _store_answer(status: int, comment: str | None = None) -> Callable[[primitives.C_STORE], None]:
    def fill(p: primitives.C_STORE) -> None:
        p.MessageIDBeingRespondedTo = 11
        p.AffectedSOPClassUID = CTImageStorage
        p.AffectedSOPInstanceUID = INSTANCE_UIDS[0]
        p.Status = status
        if comment is not None:
            p.ErrorComment = comment

    return fill


def _echo(p: primitives.C_ECHO) -> None:
    p.MessageID = 1
    p.AffectedSOPClassUID = "1.2.840.10008.1.1"


def _echo_answer(p: primitives.C_ECHO) -> None:
    p.MessageIDBeingRespondedTo = 1
    p.AffectedSOPClassUID = "1.2.840.10008.1.1"
    p.Status = 0


def _move_answer(p: primitives.C_MOVE, remaining: int = 7_000) -> None:
    p.MessageIDBeingRespondedTo = 5
    p.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    p.Status = 0xFF00
    p.NumberOfRemainingSuboperations = remaining
    p.NumberOfCompletedSuboperations = 12
    p.NumberOfFailedSuboperations = 0
    p.NumberOfWarningSuboperations = 1


def _find(p: primitives.C_FIND) -> None:
    p.MessageID = 9
    p.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    p.Priority = 0
    p.Identifier = io.BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")


def _failed_with_offending_element(p: primitives.C_STORE) -> None:
    _store_answer(0xA900)(p)
    p.OffendingElement = [0x00100020]  # an AT: the path that falls back to pynetdicom's


MESSAGES = {
    "C-STORE-RQ": (dimse_messages.C_STORE_RQ, primitives.C_STORE, _store),
    "C-STORE-RSP": (dimse_messages.C_STORE_RSP, primitives.C_STORE, _store_answer(0)),
    "C-STORE-RSP refused": (
        dimse_messages.C_STORE_RSP,
        primitives.C_STORE,
        _store_answer(0xC000, "not understood: odd"),
    ),
    "C-STORE-RSP, a comment not in ASCII": (
        dimse_messages.C_STORE_RSP,
        primitives.C_STORE,
        _store_answer(0xC000, "refusé"),
    ),
    "C-STORE-RSP with an AT": (
        dimse_messages.C_STORE_RSP,
        primitives.C_STORE,
        _failed_with_offending_element,
    ),
    "C-ECHO-RQ": (dimse_messages.C_ECHO_RQ, primitives.C_ECHO, _echo),
    "C-ECHO-RSP": (dimse_messages.C_ECHO_RSP, primitives.C_ECHO, _echo_answer),
    "C-MOVE-RSP": (dimse_messages.C_MOVE_RSP, primitives.C_MOVE, _move_answer),
    "C-FIND-RQ": (dimse_messages.C_FIND_RQ, primitives.C_FIND, _find),
}


@pytest.mark.parametrize("name", list(MESSAGES))
def test_a_command_set_is_what_pydicom_writes(name: str) -> None:
    message_class, primitive_class, fill = MESSAGES[name]
    primitive = primitive_class()
    fill(primitive)  # type: ignore[operator]
    message = message_class()
    message.primitive_to_message(primitive)  # sets the group length: one encoding already
    expected = pynetdicom_encode(message.command_set, True, True)
    assert expected
    assert encoding.encode_command_set(message.command_set, True, True) == expected


def test_a_value_out_of_its_range_fails_as_with_pynetdicom() -> None:
    primitive = primitives.C_MOVE()
    _move_answer(primitive)
    message = dimse_messages.C_MOVE_RSP()
    message.primitive_to_message(primitive)
    with warnings.catch_warnings():  # pydicom's about the value, per its validation mode
        warnings.simplefilter("ignore")
        message.command_set.NumberOfRemainingSuboperations = 70_000  # more than a US holds
    assert pynetdicom_encode(message.command_set, True, True) is None
    assert encoding.encode_command_set(message.command_set, True, True) is None


def test_pynetdicom_encodes_with_them_once_configured() -> None:
    configure_pynetdicom()
    assert dimse_messages.encode is encoding.encode_command_set  # type: ignore[attr-defined]
    assert dimse_messages.create_file_meta is encoding.encode_file_meta  # type: ignore[attr-defined]
    assert dimse_messages.write_file_meta_info is encoding.write_file_meta  # type: ignore[attr-defined]
