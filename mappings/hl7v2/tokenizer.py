"""A fast HL7 v2 tokenizer: segments, fields, repetitions, components, escapes.

hl7apy's full parse costs tens of milliseconds a message; the hot path (ACK, mapping)
needs only the delimiters and positions. This reads a message once into lists of strings
and decodes values (escape sequences, HL7 v2.x §2.7) only where they are asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

# MSH-18 character sets (HL7 table 0211) → Python codecs. Absent MSH-18 means ASCII by the
# standard; senders often mean UTF-8, which is a superset, so that is tried first.
CHARSETS = {
    "ASCII": "ascii",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "8859/1": "iso-8859-1",
    "8859/15": "iso-8859-15",
}
SEGMENT_SEPARATORS = re.compile(r"\r\n|\r|\n")


class Hl7ParseError(ValueError):
    """The bytes are not an HL7 v2 message (no MSH, bad delimiters, unknown charset)."""


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return f"{self.component}{self.repetition}{self.escape}{self.subcomponent}"


class Segment:
    """One segment; `field(n)` is SEG-n, 1-based, raw (still escaped)."""

    __slots__ = ("name", "_fields", "delimiters")

    def __init__(self, name: str, fields: list[str], delimiters: Delimiters) -> None:
        self.name = name
        self._fields = fields
        self.delimiters = delimiters

    def field(self, number: int) -> str:
        if self.name == "MSH":
            if number == 1:
                return self.delimiters.field
            number -= 1
        return self._fields[number] if 0 < number < len(self._fields) else ""

    @property
    def raw_fields(self) -> list[str] | None:
        """The raw (escaped) fields, index n holding SEG-n (index 0 the segment name), for
        callers reading many fields in a row; None for MSH, whose numbering is shifted by
        MSH-1 (read it with `field`). Do not modify the list."""
        return None if self.name == "MSH" else self._fields

    @property
    def field_count(self) -> int:
        return len(self._fields) - 1 + (1 if self.name == "MSH" else 0)

    def repetitions(self, number: int) -> list[str]:
        raw = self.field(number)
        if self.name == "MSH" and number == 2:
            return [raw]
        return raw.split(self.delimiters.repetition) if raw else []

    def value(
        self, number: int, component: int = 1, subcomponent: int = 1, repetition: int = 1
    ) -> str:
        """SEG-number.component.subcomponent of one repetition, unescaped ('' if empty)."""
        repetitions = self.repetitions(number)
        if repetition > len(repetitions):
            return ""
        return component_of(repetitions[repetition - 1], self.delimiters, component, subcomponent)


def component_of(
    field_value: str, delimiters: Delimiters, component: int = 1, subcomponent: int = 1
) -> str:
    """One component (and subcomponent) of a field repetition, unescaped."""
    components = field_value.split(delimiters.component)
    if component > len(components):
        return ""
    subcomponents = components[component - 1].split(delimiters.subcomponent)
    if subcomponent > len(subcomponents):
        return ""
    return unescape(subcomponents[subcomponent - 1], delimiters)


_FORMATTING = {
    "H": "",
    "N": "",
    ".br": "\n",
    ".sp": "\n",
    ".fi": "",
    ".nf": "",
    ".in": "",
    ".ti": "",
    ".ce": "",
}


def unescape(text: str, delimiters: Delimiters) -> str:
    """Decode HL7 escape sequences: \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, \\Xhh\\, formatting."""
    escape = delimiters.escape
    if escape not in text:
        return text
    out: list[str] = []
    position = 0
    while True:
        start = text.find(escape, position)
        if start < 0:
            out.append(text[position:])
            return "".join(out)
        end = text.find(escape, start + 1)
        if end < 0:  # a lone escape character: keep it
            out.append(text[position:])
            return "".join(out)
        out.append(text[position:start])
        out.append(_escaped(text[start + 1 : end], delimiters))
        position = end + 1


def _escaped(code: str, delimiters: Delimiters) -> str:
    simple = {
        "F": delimiters.field,
        "S": delimiters.component,
        "T": delimiters.subcomponent,
        "R": delimiters.repetition,
        "E": delimiters.escape,
    }
    if code in simple:
        return simple[code]
    if code.startswith("X") and len(code) > 1:
        try:
            return bytes.fromhex(code[1:]).decode("latin-1")
        except ValueError:
            return ""
    if code in _FORMATTING or code[:3] in _FORMATTING:
        return _FORMATTING.get(code, _FORMATTING.get(code[:3], ""))
    return ""  # unknown escapes (\Cxxyy\, \Mxxyyzz\, \Zxxx\) carry no text we can render


class Message:
    """A tokenized HL7 v2 message."""

    def __init__(self, text: str, charset: str) -> None:
        if not text.startswith("MSH") or len(text) < 8:
            raise Hl7ParseError("The message does not start with an MSH segment.")
        field = text[3]
        encoding = text[4:8]
        if len(set(field + encoding)) != 5 or field.isalnum() or any(c.isalnum() for c in encoding):
            raise Hl7ParseError("MSH-1/MSH-2 do not hold five distinct delimiters.")
        self.delimiters = Delimiters(field, encoding[0], encoding[1], encoding[2], encoding[3])
        self.charset = charset
        self.text = text
        self.segments: list[Segment] = []
        for line in SEGMENT_SEPARATORS.split(text):
            if not line.strip():
                continue
            parts = line.split(field)
            name = parts[0]
            if len(name) != 3 or not name.isalnum() or not name[0].isalpha():
                raise Hl7ParseError(f"'{name[:10]}' is not a segment name.")
            self.segments.append(Segment(name, parts, self.delimiters))

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    @cached_property
    def control_id(self) -> str:
        return self.msh.value(10)

    @cached_property
    def message_type(self) -> tuple[str, str, str]:
        """MSH-9: (message code, trigger event, message structure)."""
        return self.msh.value(9, 1), self.msh.value(9, 2), self.msh.value(9, 3)

    @property
    def type_name(self) -> str:
        code, trigger, _ = self.message_type
        return f"{code}^{trigger}" if trigger else code

    @property
    def version(self) -> str:
        return self.msh.value(12)

    @property
    def sender(self) -> tuple[str, str]:
        """(MSH-3 sending application, MSH-4 sending facility), namespace ids."""
        return self.msh.value(3), self.msh.value(4)


def decode(raw: bytes) -> tuple[str, str]:
    """The text of a message and the codec used, by its MSH-18 (HL7 table 0211)."""
    head = raw[:1024].split(b"\r", 1)[0].split(b"\n", 1)[0]
    declared = ""
    if head.startswith(b"MSH") and len(head) > 3:
        fields = head.split(head[3:4])
        if len(fields) > 17:
            declared = fields[17].split(head[4:5])[0].decode("ascii", "replace").strip()
    if declared:
        codec = CHARSETS.get(declared.upper())
        if codec is None:
            raise Hl7ParseError(f"MSH-18 character set '{declared}' is not supported.")
        try:
            return raw.decode(codec), codec
        except UnicodeDecodeError as exc:
            raise Hl7ParseError(f"The message is not valid {declared}.") from exc
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return raw.decode("iso-8859-1"), "iso-8859-1"


def parse_message(raw: bytes) -> Message:
    """Tokenize raw message bytes (Hl7ParseError if they are not an HL7 v2 message)."""
    text, codec = decode(raw)
    return Message(text.lstrip("\x0b").rstrip("\x1c\r\n"), codec)
