"""multipart/related (RFC 2046 §5.1, RFC 2387) read incrementally and written as a stream.

WADO-RS answers a study as one multipart body whose parts are whole DICOM files, and
whole-slide instances can be hundreds of megabytes each: the reader is a push parser that
turns arbitrary chunks into events (a part starts with its headers, a piece of its body,
the part ends) and holds back only what might still be the start of a delimiter. Neither a
whole body nor a whole part is ever buffered.

Peers are not all strict: a bare LF is accepted wherever RFC 2046 says CRLF, a preamble and
an epilogue are skipped, and transport padding (spaces, tabs) after a delimiter is allowed.
"""

from __future__ import annotations

import email.message
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, auto

from connectors.dicomweb.errors import MultipartError, MultipartTruncated

DEFAULT_MAX_HEADER_BYTES = 16 * 1024
# RFC 2046 allows padding after a delimiter; a line this long is no longer padding.
MAX_PADDING_BYTES = 1024
# RFC 2046 §5.1.1 says 1 to 70 characters; some servers send longer ones, so the bound
# is only a sanity check.
MAX_BOUNDARY_LENGTH = 256
_WHITESPACE = b" \t"


@dataclass(frozen=True)
class PartStarted:
    """A part begins; `headers` with lower-cased names (a later duplicate wins)."""

    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartData:
    """The next bytes of the current part's body."""

    data: bytes


@dataclass(frozen=True)
class PartEnded:
    """The current part is complete."""


MultipartEvent = PartStarted | PartData | PartEnded


class _State(Enum):
    PREAMBLE = auto()
    DELIMITER_TAIL = auto()
    HEADERS = auto()
    BODY = auto()
    EPILOGUE = auto()


class MultipartParser:
    """Incremental parser of one multipart body with a known boundary.

    `feed()` each chunk as it arrives and act on the events it returns; `finish()` at the
    end of the body. Raises MultipartError for a body that breaks RFC 2046 and
    MultipartTruncated (from `finish()`) for one that ended early.
    """

    def __init__(
        self, boundary: str | bytes, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    ) -> None:
        raw = boundary.encode("ascii") if isinstance(boundary, str) else bytes(boundary)
        if not 1 <= len(raw) <= MAX_BOUNDARY_LENGTH:
            raise MultipartError(f"a boundary must have 1 to 256 characters, not {len(raw)}")
        self._marker = b"\n--" + raw
        self._max_header_bytes = max_header_bytes
        self._state = _State.PREAMBLE
        # The leading LF lets a body that opens with its first delimiter (no preamble)
        # match the same marker as every later delimiter.
        self._buffer = bytearray(b"\n")
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self.parts_completed = 0
        """How many parts have ended so far."""

    @property
    def complete(self) -> bool:
        """Whether the closing delimiter has been read."""
        return self._state is _State.EPILOGUE

    @property
    def in_part(self) -> bool:
        """Whether a part has started and not yet ended."""
        return self._state is _State.BODY

    def feed(self, data: bytes) -> list[MultipartEvent]:
        """Parse the next chunk; the events it completes, in order."""
        if self._state is _State.EPILOGUE:
            return []
        self._buffer += data
        events: list[MultipartEvent] = []
        while self._step(events):
            pass
        return events

    def finish(self) -> None:
        """Declare the end of the body; raises MultipartTruncated unless it was complete."""
        if self._state is not _State.EPILOGUE:
            raise MultipartTruncated(
                f"the multipart body ended before its closing delimiter, after "
                f"{self.parts_completed} complete part(s)"
            )

    def _step(self, events: list[MultipartEvent]) -> bool:
        """Advance as far as the buffer allows; False when more input is needed."""
        if self._state is _State.PREAMBLE:
            return self._skip_preamble()
        if self._state is _State.DELIMITER_TAIL:
            return self._read_delimiter_tail()
        if self._state is _State.HEADERS:
            return self._read_header_line(events)
        if self._state is _State.BODY:
            return self._read_body(events)
        self._buffer.clear()
        return False

    def _skip_preamble(self) -> bool:
        found = self._buffer.find(self._marker)
        if found < 0:
            keep = len(self._marker) - 1
            if len(self._buffer) > keep:
                del self._buffer[: len(self._buffer) - keep]
            return False
        del self._buffer[: found + len(self._marker)]
        self._state = _State.DELIMITER_TAIL
        return True

    def _read_delimiter_tail(self) -> bool:
        if len(self._buffer) < 2:
            return False
        if self._buffer.startswith(b"--"):
            self._state = _State.EPILOGUE
            self._buffer.clear()
            return False
        line_end = self._buffer.find(b"\n")
        if line_end < 0:
            if len(self._buffer) > MAX_PADDING_BYTES:
                raise MultipartError("a delimiter line does not end")
            if self._buffer.strip(_WHITESPACE + b"\r"):
                raise MultipartError("a delimiter line holds more than the boundary")
            return False
        padding = bytes(self._buffer[:line_end]).rstrip(b"\r")
        if padding.strip(_WHITESPACE):
            raise MultipartError("a delimiter line holds more than the boundary")
        del self._buffer[: line_end + 1]
        self._headers = {}
        self._header_bytes = 0
        self._state = _State.HEADERS
        return True

    def _read_header_line(self, events: list[MultipartEvent]) -> bool:
        line_end = self._buffer.find(b"\n")
        if line_end < 0:
            if self._header_bytes + len(self._buffer) > self._max_header_bytes:
                raise MultipartError(f"the headers of a part exceed {self._max_header_bytes} bytes")
            return False
        self._header_bytes += line_end + 1
        if self._header_bytes > self._max_header_bytes:
            raise MultipartError(f"the headers of a part exceed {self._max_header_bytes} bytes")
        line = bytes(self._buffer[:line_end]).rstrip(b"\r")
        del self._buffer[: line_end + 1]
        if not line:
            events.append(PartStarted(dict(self._headers)))
            self._state = _State.BODY
            return True
        text = line.decode("latin-1")
        if text[0] in " \t" and self._headers:
            # RFC 5322 folding: a continuation of the previous header's value.
            last = next(reversed(self._headers))
            self._headers[last] += " " + text.strip()
            return True
        name, colon, value = text.partition(":")
        if not colon or not name.strip():
            raise MultipartError("a part header line has no name")
        self._headers[name.strip().lower()] = value.strip()
        return True

    def _read_body(self, events: list[MultipartEvent]) -> bool:
        found = self._buffer.find(self._marker)
        if found < 0:
            # Hold back what could be the start of the marker, plus the CR before it.
            safe = len(self._buffer) - len(self._marker)
            if safe > 0:
                events.append(PartData(bytes(self._buffer[:safe])))
                del self._buffer[:safe]
            return False
        end = found - 1 if found > 0 and self._buffer[found - 1] == 0x0D else found
        if end > 0:
            events.append(PartData(bytes(self._buffer[:end])))
        events.append(PartEnded())
        self.parts_completed += 1
        del self._buffer[: found + len(self._marker)]
        self._state = _State.DELIMITER_TAIL
        return True


def content_type_parameters(content_type: str) -> tuple[str, dict[str, str]]:
    """The media type (lower case) and the parameters of a Content-Type header value."""
    message = email.message.Message()
    message["content-type"] = content_type
    params = message.get_params() or []
    media_type = message.get_content_type()
    values = {str(key).lower(): str(value) for key, value in params[1:]}
    return media_type, values


def multipart_boundary(content_type: str) -> str:
    """The boundary of a multipart/related Content-Type; MultipartError if it has none."""
    media_type, params = content_type_parameters(content_type)
    if media_type != "multipart/related":
        raise MultipartError(f"expected multipart/related, got {media_type}")
    boundary = params.get("boundary", "")
    if not boundary:
        raise MultipartError("the multipart/related answer names no boundary")
    return boundary


def part_header(boundary: str, content_type: str, *, first: bool) -> bytes:
    """The delimiter and headers that open a part (RFC 2046: CRLF before each delimiter
    but the first, which may open the body)."""
    lead = b"" if first else b"\r\n"
    return lead + f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")


def closing_delimiter(boundary: str, *, empty: bool = False) -> bytes:
    """The close-delimiter that ends a body (with the CRLF of the last part's end)."""
    return (b"" if empty else b"\r\n") + f"--{boundary}--\r\n".encode("ascii")
