"""HL7 v2 batch files (HL7 v2.5.1 §2.10.3): split them into messages, say what is wrong.

    [FHS] { [BHS] { MSH ... } [BTS] } [FTS]

A file may hold a file header/trailer around batches, bare BHS/BTS batches, or only messages;
segments end with CR, LF or CRLF (files written on any system). `split_batch` returns every
message it finds (as bytes, CR-separated, starting with MSH), the headers, the counts the
trailers declare and a list of problems: content problems never raise. Only input that is
not HL7 v2 at all (no FHS, BHS or MSH segment) raises BatchError.

The per-message outcome of processing a batch is the caller's: `Batch.report()` gives the
entries (index, control id, type) with an empty outcome to fill in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mappings.hl7v2.outbound.datatypes import dtm, escape
from mappings.hl7v2.tokenizer import Delimiters, Hl7ParseError, component_of, parse_message

__all__ = [
    "Batch",
    "BatchError",
    "BatchHeader",
    "BatchMessage",
    "BatchProblem",
    "BatchReport",
    "BatchSection",
    "BatchTrailer",
    "MessageOutcome",
    "ProblemCode",
    "build_batch",
    "split_batch",
]


class BatchError(ValueError):
    """The input is not HL7 v2 at all: no FHS, BHS or MSH segment in it."""


class ProblemCode(StrEnum):
    TEXT_OUTSIDE_MESSAGE = "text-outside-message"
    TEXT_INSIDE_MESSAGE = "text-inside-message"
    SEGMENT_OUTSIDE_MESSAGE = "segment-outside-message"
    MESSAGE_OUTSIDE_BATCH = "message-outside-batch"
    UNREADABLE_MESSAGE = "unreadable-message"
    MISSING_BATCH_HEADER = "missing-batch-header"
    MISSING_BATCH_TRAILER = "missing-batch-trailer"
    MISSING_FILE_HEADER = "missing-file-header"
    MISSING_FILE_TRAILER = "missing-file-trailer"
    UNEXPECTED_FILE_HEADER = "unexpected-file-header"
    CONTENT_AFTER_FILE_TRAILER = "content-after-file-trailer"
    INVALID_COUNT = "invalid-count"
    MESSAGE_COUNT_MISMATCH = "message-count-mismatch"
    BATCH_COUNT_MISMATCH = "batch-count-mismatch"


PROBLEM_TEXT: dict[ProblemCode, str] = {
    ProblemCode.TEXT_OUTSIDE_MESSAGE: "A line that is no HL7 segment, between messages.",
    ProblemCode.TEXT_INSIDE_MESSAGE: "A line that is no HL7 segment, after a message's MSH "
    "(left out of the message).",
    ProblemCode.SEGMENT_OUTSIDE_MESSAGE: "A segment before any MSH of its batch (dropped).",
    ProblemCode.MESSAGE_OUTSIDE_BATCH: "A message outside BHS ... BTS in a file with batches.",
    ProblemCode.UNREADABLE_MESSAGE: "A message the tokenizer cannot read.",
    ProblemCode.MISSING_BATCH_HEADER: "A BTS without a BHS before it.",
    ProblemCode.MISSING_BATCH_TRAILER: "A BHS without its BTS.",
    ProblemCode.MISSING_FILE_HEADER: "An FTS without an FHS.",
    ProblemCode.MISSING_FILE_TRAILER: "An FHS without its FTS.",
    ProblemCode.UNEXPECTED_FILE_HEADER: "An FHS after the start of the file (ignored).",
    ProblemCode.CONTENT_AFTER_FILE_TRAILER: "Content after the FTS.",
    ProblemCode.INVALID_COUNT: "BTS-1 or FTS-1 is not a count.",
    ProblemCode.MESSAGE_COUNT_MISMATCH: "BTS-1 differs from the messages in the batch.",
    ProblemCode.BATCH_COUNT_MISMATCH: "FTS-1 differs from the batches in the file.",
}

# FHS / BHS fields (HL7 v2.5.1 §2.15.5 FHS, §2.15.1 BHS): field number → BatchHeader attribute.
# Values are the first component, unescaped (HD namespace id, TS time).
HEADER_FIELDS: dict[int, str] = {
    3: "sending_application",
    4: "sending_facility",
    5: "receiving_application",
    6: "receiving_facility",
    7: "created",
    9: "name",
    10: "comment",
    11: "control_id",
    12: "reference_control_id",
}
# BTS-1 batch message count, BTS-2 comment; FTS-1 file batch count, FTS-2 comment.
TRAILER_COUNT, TRAILER_COMMENT = 1, 2
HEADERS = {b"MSH", b"FHS", b"BHS"}  # segments whose 4th character is the field separator

_LINES = re.compile(rb"\r\n|\r|\n")
_SEGMENT_NAME = re.compile(rb"[A-Z][A-Z0-9]{2}")
_FRAMING = b"\x0b\x1c"  # MLLP start/end block characters some file writers leave in
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class BatchHeader:
    """An FHS or a BHS."""

    segment: str
    line: int
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    created: str = ""
    name: str = ""
    comment: str = ""
    control_id: str = ""
    reference_control_id: str = ""


@dataclass(frozen=True)
class BatchTrailer:
    """A BTS or an FTS: the count it declares (None if absent or not a number)."""

    segment: str
    line: int
    count: int | None
    comment: str = ""


@dataclass(frozen=True)
class BatchSection:
    """One batch: BHS ... BTS, or the messages of a file that has no BHS (header None)."""

    index: int
    header: BatchHeader | None
    trailer: BatchTrailer | None
    message_indexes: tuple[int, ...]

    @property
    def declared_count(self) -> int | None:
        """BTS-1, the number of messages the batch says it holds."""
        return self.trailer.count if self.trailer else None


@dataclass(frozen=True)
class BatchMessage:
    """One message of the file: its bytes (CR after each segment) and what identifies it."""

    index: int
    line: int
    raw: bytes
    control_id: str
    message_type: str
    section: int


@dataclass(frozen=True)
class BatchProblem:
    """Something wrong with the file; `line` is 1-based, `message_index` where it applies."""

    code: ProblemCode
    line: int | None
    detail: str
    message_index: int | None = None


@dataclass
class MessageOutcome:
    """What became of one message of a batch; `outcome` (e.g. an ACK code) is the caller's."""

    index: int
    control_id: str
    message_type: str
    outcome: str | None = None
    detail: str = ""


@dataclass
class BatchReport:
    """The outcome of a whole batch: one entry per message, and the file's problems."""

    control_id: str
    entries: list[MessageOutcome]
    problems: list[BatchProblem]

    @property
    def complete(self) -> bool:
        """Whether every message has an outcome."""
        return all(entry.outcome is not None for entry in self.entries)


@dataclass(frozen=True)
class Batch:
    """A split batch file."""

    file_header: BatchHeader | None
    file_trailer: BatchTrailer | None
    sections: tuple[BatchSection, ...]
    messages: tuple[BatchMessage, ...]
    problems: tuple[BatchProblem, ...]

    @property
    def header(self) -> BatchHeader | None:
        """The FHS, else the first BHS: who sent the file, when, under which control id."""
        if self.file_header is not None:
            return self.file_header
        return next((s.header for s in self.sections if s.header is not None), None)

    @property
    def raw_messages(self) -> list[bytes]:
        return [message.raw for message in self.messages]

    @property
    def declared_batch_count(self) -> int | None:
        """FTS-1, the number of batches the file says it holds."""
        return self.file_trailer.count if self.file_trailer else None

    def report(self) -> BatchReport:
        """A report with one entry per message, outcomes left for the caller to fill in."""
        header = self.header
        return BatchReport(
            control_id=header.control_id if header else "",
            entries=[MessageOutcome(m.index, m.control_id, m.message_type) for m in self.messages],
            problems=list(self.problems),
        )


# -- splitting ---------------------------------------------------------------------------------


@dataclass
class _OpenSection:
    header: BatchHeader | None
    trailer: BatchTrailer | None = None
    messages: list[int] = field(default_factory=list)


@dataclass
class _Splitter:
    file_header: BatchHeader | None = None
    file_trailer: BatchTrailer | None = None
    sections: list[_OpenSection] = field(default_factory=list)
    open_section: _OpenSection | None = None
    messages: list[BatchMessage] = field(default_factory=list)
    problems: list[BatchProblem] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)  # segments of the message being read
    pending_line: int = 0
    separator: bytes = b"|"
    seen_content: bool = False

    def problem(
        self, code: ProblemCode, line: int | None, message: int | None = None, extra: str = ""
    ) -> None:
        detail = f"{PROBLEM_TEXT[code]} {extra}".strip()
        self.problems.append(BatchProblem(code, line, detail, message))

    def flush(self) -> None:
        """End the message being read, if any."""
        if not self.pending:
            return
        raw = b"\r".join(self.pending) + b"\r"
        index = len(self.messages)
        control_id = message_type = ""
        try:
            tokenized = parse_message(raw)
            control_id, message_type = tokenized.control_id, tokenized.type_name
        except Hl7ParseError:
            self.problem(ProblemCode.UNREADABLE_MESSAGE, self.pending_line, index)
        section = self._section_for_message()
        section.messages.append(index)
        self.messages.append(
            BatchMessage(
                index=index,
                line=self.pending_line,
                raw=raw,
                control_id=control_id,
                message_type=message_type,
                section=self.sections.index(section),
            )
        )
        self.pending = []

    def _section_for_message(self) -> _OpenSection:
        if self.open_section is None:
            self.open_section = _OpenSection(header=None)
            self.sections.append(self.open_section)
        return self.open_section

    def close_section(self) -> None:
        section = self.open_section
        if section is not None and section.header is not None and section.trailer is None:
            self.problem(ProblemCode.MISSING_BATCH_TRAILER, section.header.line)
        self.open_section = None

    def feed(self, number: int, line: bytes) -> None:
        name = line[:3]
        if name in HEADERS and len(line) > 3 and not line[3:4].isalnum():
            self.separator = line[3:4]
        is_segment = _SEGMENT_NAME.fullmatch(name) is not None and (
            len(line) == 3 or line[3:4] == self.separator
        )
        if not is_segment:
            inside = bool(self.pending)
            code = ProblemCode.TEXT_INSIDE_MESSAGE if inside else ProblemCode.TEXT_OUTSIDE_MESSAGE
            self.problem(code, number, len(self.messages) if inside else None)
            return
        if self.file_trailer is not None:
            self.problem(ProblemCode.CONTENT_AFTER_FILE_TRAILER, number)
        handler = {
            b"FHS": self._fhs,
            b"BHS": self._bhs,
            b"BTS": self._bts,
            b"FTS": self._fts,
            b"MSH": self._msh,
        }.get(name)
        if handler is not None:
            handler(number, line)
        elif self.pending:
            self.pending.append(line)
        else:
            self.problem(ProblemCode.SEGMENT_OUTSIDE_MESSAGE, number)

    def _fhs(self, number: int, line: bytes) -> None:
        self.flush()
        if self.file_header is not None or self.seen_content:
            self.problem(ProblemCode.UNEXPECTED_FILE_HEADER, number)
        else:
            self.file_header = _header("FHS", number, line)
        self.seen_content = True

    def _bhs(self, number: int, line: bytes) -> None:
        self.flush()
        self.close_section()
        self.open_section = _OpenSection(header=_header("BHS", number, line))
        self.sections.append(self.open_section)
        self.seen_content = True

    def _bts(self, number: int, line: bytes) -> None:
        self.flush()
        trailer = self._trailer("BTS", number, line)
        section = self.open_section
        if section is None:
            self.problem(ProblemCode.MISSING_BATCH_HEADER, number)
            section = _OpenSection(header=None)
            self.sections.append(section)
        elif section.header is None:
            self.problem(ProblemCode.MISSING_BATCH_HEADER, number)
        section.trailer = trailer
        self.open_section = None
        self.seen_content = True

    def _fts(self, number: int, line: bytes) -> None:
        self.flush()
        self.close_section()
        if self.file_header is None:
            self.problem(ProblemCode.MISSING_FILE_HEADER, number)
        if self.file_trailer is None:
            self.file_trailer = self._trailer("FTS", number, line)
        self.seen_content = True

    def _msh(self, number: int, line: bytes) -> None:
        self.flush()
        self.pending = [line]
        self.pending_line = number
        self.seen_content = True

    def _trailer(self, segment: str, number: int, line: bytes) -> BatchTrailer:
        fields = _text(line).split(self.separator.decode("latin-1"))
        count_text = fields[TRAILER_COUNT].strip() if len(fields) > TRAILER_COUNT else ""
        count = int(count_text) if count_text.isdigit() else None
        if count_text and count is None:
            self.problem(ProblemCode.INVALID_COUNT, number)
        comment = fields[TRAILER_COMMENT] if len(fields) > TRAILER_COMMENT else ""
        return BatchTrailer(segment, number, count, comment)

    def finish(self) -> Batch:
        self.flush()
        self.close_section()
        if self.file_header is not None and self.file_trailer is None:
            self.problem(ProblemCode.MISSING_FILE_TRAILER, self.file_header.line)
        uses_batches = any(s.header is not None for s in self.sections)
        sections: list[BatchSection] = []
        for index, open_section in enumerate(self.sections):
            section = BatchSection(
                index, open_section.header, open_section.trailer, tuple(open_section.messages)
            )
            sections.append(section)
            declared = section.declared_count
            if declared is not None and declared != len(section.message_indexes):
                line = section.trailer.line if section.trailer else None
                found = len(section.message_indexes)
                self.problem(
                    ProblemCode.MESSAGE_COUNT_MISMATCH,
                    line,
                    extra=f"(BTS-1 {declared}, messages {found})",
                )
            if uses_batches and section.header is None:
                for message in section.message_indexes:
                    self.problem(
                        ProblemCode.MESSAGE_OUTSIDE_BATCH, self.messages[message].line, message
                    )
        trailer = self.file_trailer
        if trailer is not None and trailer.count is not None and trailer.count != len(sections):
            self.problem(
                ProblemCode.BATCH_COUNT_MISMATCH,
                trailer.line,
                extra=f"(FTS-1 {trailer.count}, batches {len(sections)})",
            )
        return Batch(
            file_header=self.file_header,
            file_trailer=self.file_trailer,
            sections=tuple(sections),
            messages=tuple(self.messages),
            problems=tuple(self.problems),
        )


def _text(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("iso-8859-1")


def _header(segment: str, number: int, line: bytes) -> BatchHeader:
    text = _text(line)
    encoding = text[4:8]
    delimiters = (
        Delimiters(text[3], encoding[0], encoding[1], encoding[2], encoding[3])
        if len(encoding) == 4
        else Delimiters(field=text[3])
    )
    parts = text.split(delimiters.field)
    values = {  # FHS-n / BHS-n is parts[n - 1]: FHS-1 is the separator itself
        attribute: component_of(parts[position - 1], delimiters)
        for position, attribute in HEADER_FIELDS.items()
        if position - 1 < len(parts)
    }
    return BatchHeader(segment, number, **values)


def _is_hl7(lines: Sequence[bytes]) -> bool:
    return any(line[:3] in HEADERS and len(line) > 3 and not line[3:4].isalnum() for line in lines)


def split_batch(raw: bytes) -> Batch:
    """Split an HL7 v2 batch file (or a file of bare messages) into its messages.

    Segments may end with CR, LF or CRLF; MLLP framing characters at line ends are ignored.
    Returns the Batch with every message found and every problem seen (counts that do not
    match, text outside messages, a missing header or trailer, ...). Raises BatchError only
    when `raw` holds no FHS, BHS or MSH segment at all.
    """
    body = raw[len(_BOM) :] if raw.startswith(_BOM) else raw
    lines = [line.lstrip(_FRAMING).rstrip(_FRAMING) for line in _LINES.split(body)]
    if not _is_hl7(lines):
        raise BatchError("The input holds no FHS, BHS or MSH segment: it is not HL7 v2.")
    splitter = _Splitter()
    for number, line in enumerate(lines, start=1):
        if line.strip():
            splitter.feed(number, line)
    return splitter.finish()


def build_batch(
    messages: Sequence[bytes],
    *,
    sending: tuple[str, str],
    receiving: tuple[str, str],
    control_id: str,
    now: datetime,
    file_envelope: bool = True,
) -> bytes:
    """Messages wrapped as one batch: [FHS] BHS messages BTS [FTS], CR after each segment.

    Each message's own segment separators (CR, LF or CRLF) become CR. FHS-11 and BHS-11 are
    `control_id`; BTS-1 and FTS-1 count the messages and the (single) batch.
    """
    header_fields = [
        "^~\\&",
        escape(sending[0]),
        escape(sending[1]),
        escape(receiving[0]),
        escape(receiving[1]),
        dtm(now),
        "",
        "",
        "",
        escape(control_id),
    ]
    segments: list[bytes] = []
    if file_envelope:
        segments.append(("FHS|" + "|".join(header_fields)).encode("utf-8"))
    segments.append(("BHS|" + "|".join(header_fields)).encode("utf-8"))
    for message in messages:
        segments.extend(line for line in _LINES.split(message) if line.strip())
    segments.append(f"BTS|{len(messages)}".encode("ascii"))
    if file_envelope:
        segments.append(b"FTS|1")
    return b"\r".join(segments) + b"\r"
