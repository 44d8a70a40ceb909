"""Errors of the HL7 v2 → FHIR mapping, each located in the message for an ERR segment.

    MappingError                  the message cannot be turned into a transaction Bundle
     ├── MalformedMessage          the bytes are not an HL7 v2 message (tokenizer refused them)
     ├── UnsupportedMessageType    no table maps this MSH-9 message type / trigger event
     ├── MissingRequiredSegment    a segment the mapping needs is absent (e.g. PID)
     ├── MissingRequiredField      a field the mapping needs is empty (e.g. PID-3)
     └── MappingTableError         the YAML tables themselves are wrong (a bug, not the sender's)

Every error carries a `location` (segment, sequence, field, component: HL7 ERR-2, an ERL)
and a `reason`. Neither ever holds a field's value: reasons name positions, not patient data.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Location",
    "MalformedMessage",
    "MappingError",
    "MappingTableError",
    "MissingRequiredField",
    "MissingRequiredSegment",
    "UnsupportedMessageType",
]


@dataclass(frozen=True, slots=True)
class Location:
    """A position in a message: an HL7 ERL (ERR-2) without the value.

    `sequence` is the occurrence of that segment id in the message (1 = first OBX).
    `str()` gives `PID-3`, `OBX[2]-5`, `PID-5.1`, `MSH`.
    """

    segment: str
    sequence: int = 1
    field: int | None = None
    component: int | None = None
    subcomponent: int | None = None
    repetition: int | None = None

    def __str__(self) -> str:
        text = self.segment if self.sequence == 1 else f"{self.segment}[{self.sequence}]"
        if self.field is None:
            return text
        text = f"{text}-{self.field}"
        if self.repetition is not None and self.repetition > 1:
            text = f"{text}({self.repetition})"
        if self.component is not None:
            text = f"{text}.{self.component}"
            if self.subcomponent is not None:
                text = f"{text}.{self.subcomponent}"
        return text

    def erl(self) -> tuple[str, ...]:
        """ERR-2 components: segment id, sequence, field, repetition, component, subcomponent."""
        parts = [self.segment, str(self.sequence)]
        for value in (
            self.field,
            self.repetition or (1 if self.field else None),
            self.component,
            self.subcomponent,
        ):
            if value is None:
                break
            parts.append(str(value))
        return tuple(parts)


class MappingError(Exception):
    """The message cannot be mapped; `location` says where, `reason` why (no PHI)."""

    def __init__(self, reason: str, location: Location | None = None) -> None:
        super().__init__(f"{location}: {reason}" if location else reason)
        self.reason = reason
        self.location = location


class MalformedMessage(MappingError):
    """The bytes are not an HL7 v2 message (no MSH, bad delimiters, unknown charset)."""


class UnsupportedMessageType(MappingError):
    """No mapping table exists for the message type and trigger event in MSH-9."""


class MissingRequiredSegment(MappingError):
    """A segment the mapping needs is absent (the location names the segment)."""


class MissingRequiredField(MappingError):
    """A field the mapping needs is empty (the location names the field)."""


class MappingTableError(MappingError):
    """A YAML table or ConceptMap is invalid; raised when the tables are loaded."""
