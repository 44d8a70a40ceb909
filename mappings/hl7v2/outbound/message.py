"""Building a message with hl7apy and proving it re-parses.

Fields are assigned as ER7 text made by `datatypes` (already escaped), so hl7apy parses each
one against the v2.5.1 data type of its position at STRICT level (a bad DTM, an over-long value
or an extra component fails at once). `finish` validates the whole message against its
structure (or the given profile, for structures hl7apy lacks), serializes it and re-parses the
bytes with hl7apy (STRICT, forced validation) and with the hub's tokenizer.

One exception: hl7apy types every component of OBX-5 (type "varies") as ST, at most 199
characters at STRICT level, so an ED carrying a PDF cannot pass. Such long values are held
out (`hold`): the message is built and re-parsed at STRICT with a short placeholder in their
place, then the values are put in and the final bytes re-parsed at QUIET level with forced
validation (structure, cardinalities and data types still checked; lengths and tables warn).

hl7apy's exception texts quote the offending values, so they are not passed on (no PHI in
exception messages): errors name the field and the exception type only.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message as Hl7apyMessage
from hl7apy.exceptions import HL7apyException, ValidationError
from hl7apy.parser import parse_message as hl7apy_parse

from mappings.hl7v2.outbound.datatypes import COMPONENT, FIELD, REPETITION, dtm, escape
from mappings.hl7v2.outbound.errors import OutboundMappingError, OutboundValidationError
from mappings.hl7v2.tokenizer import Hl7ParseError
from mappings.hl7v2.tokenizer import parse_message as tokenize

VERSION = "2.5.1"
CHARSET = "UNICODE UTF-8"  # MSH-18, HL7 table 0211
ACCEPT_ACK = "AL"  # MSH-15, table 0155: always a commit ACK (the sender matches it on MSH-10)
APPLICATION_ACK = "NE"  # MSH-16: no application ACK
STRICT = VALIDATION_LEVEL.STRICT
QUIET = VALIDATION_LEVEL.QUIET

# hl7apy exceptions, and what its date parsing raises for a bad DTM.
_HL7APY_ERRORS = (HL7apyException, ValueError, TypeError, AttributeError, KeyError)


@dataclass(frozen=True)
class Header:
    """What MSH says besides the message type: who sends to whom, when, under which id."""

    sending: tuple[str, str]
    receiving: tuple[str, str]
    control_id: str
    now: datetime
    processing_id: str = "P"

    def __post_init__(self) -> None:
        bad = set(FIELD + COMPONENT + REPETITION + "\\&\r\n")
        if not self.control_id or any(c in bad or not c.isprintable() for c in self.control_id):
            raise OutboundMappingError(
                "MSH-10 control id must be non-empty printable text without HL7 delimiters."
            )


def set_field(segment: Any, name: str, value: str | Sequence[str]) -> None:
    """Assign ER7 text to field `name` (e.g. 'PID_3'); a sequence becomes repetitions.

    Raises OutboundMappingError when hl7apy refuses the value for that field's data type
    (e.g. a date that is no date, a value longer than the type allows).
    """
    values = [value] if isinstance(value, str) else list(value)
    first = True
    for text in values:
        if not text:
            continue
        try:
            if first:
                setattr(segment, name.lower(), text)
            else:
                segment.add_field(name.lower()).value = text
        except _HL7APY_ERRORS as exc:
            raise OutboundMappingError(
                f"{name} does not take the value given ({type(exc).__name__})."
            ) from None  # the cause quotes the value
        first = False


@dataclass
class MessageBuilder:
    """An hl7apy message of one structure at STRICT validation, filled field by field."""

    structure: str
    message_type: str
    header: Header
    profile: Mapping[str, Any] | None = None
    message: Any = field(init=False)
    _held: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.message = Hl7apyMessage(
            self.structure, reference=self.profile, version=VERSION, validation_level=STRICT
        )
        msh, header = self.message.msh, self.header
        set_field(msh, "MSH_3", escape(header.sending[0]))
        set_field(msh, "MSH_4", escape(header.sending[1]))
        set_field(msh, "MSH_5", escape(header.receiving[0]))
        set_field(msh, "MSH_6", escape(header.receiving[1]))
        set_field(msh, "MSH_7", dtm(header.now))
        set_field(msh, "MSH_9", f"{self.message_type}{COMPONENT}{self.structure}")
        set_field(msh, "MSH_10", header.control_id)
        set_field(msh, "MSH_11", header.processing_id)
        set_field(msh, "MSH_12", VERSION)
        set_field(msh, "MSH_15", ACCEPT_ACK)
        set_field(msh, "MSH_16", APPLICATION_ACK)
        set_field(msh, "MSH_18", CHARSET)

    def hold(self, value: str) -> str:
        """A placeholder for a long ER7 value (e.g. base64), put back in by `finish`."""
        token = f"HELD{secrets.token_hex(16).upper()}"
        self._held[token] = value
        return token

    def finish(self) -> bytes:
        """Validate, serialize (CR after every segment, UTF-8), re-parse; the message bytes."""
        try:
            self.message.validate()
            text = str(self.message.to_er7()) + "\r"
        except ValidationError as exc:  # names elements, never values
            raise OutboundValidationError(f"{self.structure} does not validate: {exc}") from exc
        except _HL7APY_ERRORS as exc:
            raise OutboundValidationError(
                f"{self.structure} does not serialize ({type(exc).__name__})."
            ) from None  # the cause quotes the value
        reparse(text.encode("utf-8"), self.profile)
        for token, value in self._held.items():
            if text.count(token) != 1:
                raise OutboundValidationError("A held value's placeholder is not in the message.")
            text = text.replace(token, value)
        raw = text.encode("utf-8")
        if self._held:
            reparse(raw, self.profile, QUIET)
        tokenized = tokenize(raw)
        if tokenized.control_id != self.header.control_id:
            raise OutboundValidationError("MSH-10 does not read back as the control id given.")
        if tokenized.type_name != self.message_type:
            raise OutboundValidationError("MSH-9 does not read back as the message type built.")
        return raw


def reparse(raw: bytes, profile: Mapping[str, Any] | None = None, level: int = STRICT) -> Any:
    """Re-parse `raw` with the tokenizer and with hl7apy, forcing validation; hl7apy's Message.

    `profile` maps a structure name to an hl7apy reference, for structures hl7apy's v2.5.1
    library lacks (see `osu.osu_o51_profile`). `level`: STRICT, or QUIET for messages with
    values longer than hl7apy allows at STRICT (see the module docstring).
    Raises OutboundValidationError.
    """
    try:
        tokenize(raw)
    except Hl7ParseError as exc:
        raise OutboundValidationError(f"The tokenizer cannot read the message: {exc}") from exc
    try:
        return hl7apy_parse(
            raw.decode("utf-8").rstrip("\r"),
            validation_level=level,
            message_profile=dict(profile) if profile else None,
            force_validation=True,
        )
    except ValidationError as exc:
        raise OutboundValidationError(f"hl7apy finds the message invalid: {exc}") from exc
    except _HL7APY_ERRORS as exc:
        raise OutboundValidationError(
            f"hl7apy does not re-parse the message ({type(exc).__name__})."
        ) from None  # the cause quotes the value
