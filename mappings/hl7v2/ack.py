"""HL7 v2 acknowledgements (ACK) for a received message, built by string assembly: the ACK
is on the hot path of every message, and its shape is fixed (HL7 v2.5.1 §2.9, §2.14)."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from mappings.hl7v2.tokenizer import Delimiters, Message

# HL7 table 0357, message error condition codes.
ERROR_CODES = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "205": "Duplicate key identifier",
    "207": "Application internal error",
}
_COUNTER = itertools.count(1)
_PREFIX = f"{os.getpid() % 1000:03d}"


@dataclass(frozen=True)
class ErrorLocation:
    """Where a problem is (ERR-2) and what it is (ERR-3, HL7 table 0357)."""

    code: str
    text: str
    segment: str = ""
    sequence: int = 1
    field: int = 0
    component: int = 0


def new_control_id(now: datetime | None = None) -> str:
    """A unique control id for a message the hub sends: time, process, counter, in the 20
    characters MSH-10 allows up to v2.6."""
    moment = now or datetime.now(UTC)
    return _control_id(f"{moment:%Y%m%d%H%M%S}")


def _control_id(timestamp: str) -> str:
    """new_control_id from the YYYYMMDDHHMMSS already written for MSH-7."""
    return f"{timestamp[2:]}{_PREFIX}{next(_COUNTER) % 100000:05d}"


def escape(text: str, delimiters: Delimiters) -> str:
    """Escape the delimiters in free text (HL7 v2 §2.7.1)."""
    d = delimiters
    out = text.replace(d.escape, f"{d.escape}E{d.escape}")
    for char, code in (
        (d.field, "F"),
        (d.component, "S"),
        (d.subcomponent, "T"),
        (d.repetition, "R"),
    ):
        out = out.replace(char, f"{d.escape}{code}{d.escape}")
    return out.replace("\r", f"{d.escape}.br{d.escape}").replace("\n", f"{d.escape}.br{d.escape}")


def build_ack(
    message: Message | None,
    code: str,
    *,
    text: str = "",
    errors: tuple[ErrorLocation, ...] = (),
    now: datetime | None = None,
) -> bytes:
    """The ACK for `message` (None when it could not be read at all: a bare AR).

    `code` is AA/AE/AR (original mode) or CA/CE/CR (enhanced mode, commit level).
    """
    moment = now or datetime.now(UTC)
    d = message.delimiters if message else Delimiters()
    charset = message.charset if message else "ascii"
    if message is not None:
        msh = message.msh
        receiver = (msh.field(3), msh.field(4))
        sender = (msh.field(5), msh.field(6))
        trigger = message.message_type[1]
        processing, version = msh.field(11) or "P", message.version or "2.5.1"
        control_id, charset_field = msh.field(10), msh.field(18)
    else:
        receiver, sender, trigger = ("", ""), ("", ""), ""
        processing, version, control_id, charset_field = "P", "2.5.1", "", ""
    f, c = d.field, d.component
    timestamp = f"{moment:%Y%m%d%H%M%S}"
    segments = [
        f.join(
            [
                "MSH",
                d.encoding_characters,
                sender[0],
                sender[1],
                receiver[0],
                receiver[1],
                timestamp,
                "",
                f"ACK{c}{trigger}{c}ACK" if trigger else "ACK",
                _control_id(timestamp),
                processing,
                version,
                "",
                "",
                "",
                "",
                "",
                charset_field,
            ]
        ).rstrip(f),
        f.join(["MSA", code, control_id, escape(text, d)[:80] if text else ""]),
    ]
    legacy = version.startswith(("2.1", "2.2", "2.3", "2.4"))
    for error in errors:
        meaning = f"{error.code}{c}{escape(ERROR_CODES.get(error.code, ''), d)}{c}HL70357"
        location = c.join(
            [
                error.segment,
                str(error.sequence) if error.segment else "",
                str(error.field or ""),
                str(error.component or ""),
            ]
        ).rstrip(c)
        if legacy:  # ERR-1, ELD: segment^sequence^field^code&text&table
            eld = c.join(
                [
                    error.segment,
                    str(error.sequence),
                    str(error.field or ""),
                    d.subcomponent.join([error.code, escape(error.text, d)[:80], "HL70357"]),
                ]
            )
            segments.append(f.join(["ERR", eld]))
        else:  # ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 user message
            segments.append(
                f.join(["ERR", "", location, meaning, "E", "", "", "", escape(error.text, d)])
            )
    codec = "utf-8" if charset in ("ascii", "utf-8") else charset
    return ("\r".join(segments) + "\r").encode(codec, errors="replace")
