"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol, Release 2): <VT> payload <FS><CR>.

`frame()` wraps a payload; `MllpFrameDecoder` is fed whatever byte chunks a socket returns
and hands back complete payloads. It copes with frames split over many reads, several
frames in one read, bytes outside any frame (dropped and counted) and a start block inside
an unfinished frame (the partial frame is dropped and a new one starts there: the usual
resynchronisation, since MLLP content may not hold 0x0B), and it bounds memory by a
maximum message size.
"""

from __future__ import annotations

from connectors.hl7v2_mllp.errors import FrameTooLarge, UnframeablePayload

START_BLOCK = b"\x0b"
"""<VT>, which opens a frame."""
END_BLOCK = b"\x1c\x0d"
"""<FS><CR>, which closes it."""
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Room for messages that embed documents (ED data, base64 PDFs of reports)."""

_FS = 0x1C


def frame(payload: bytes) -> bytes:
    """The payload wrapped in an MLLP block.

    Raises UnframeablePayload if the payload holds 0x0B or 0x1C: the receiver could not
    tell where the frame ends (MLLP Release 2, the content excludes <VT> and <FS>).
    """
    if START_BLOCK in payload or _FS in payload:
        raise UnframeablePayload("The payload holds an MLLP start-block or end-block byte.")
    return START_BLOCK + payload + END_BLOCK


class MllpFrameDecoder:
    """Incremental MLLP decoder for one byte stream (one per connection).

    `feed(chunk)` returns the payloads the chunk completed, in order. `discarded_bytes`
    counts what was dropped: bytes outside frames and abandoned partial frames.
    """

    def __init__(self, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive.")
        self.max_message_bytes = max_message_bytes
        self.discarded_bytes = 0
        self._in_frame = False
        self._buffer = bytearray()  # the current frame's bytes after <VT>
        self._scanned = 0  # how much of _buffer is known to hold no END_BLOCK

    @property
    def in_frame(self) -> bool:
        """True while a frame has begun and not yet ended."""
        return self._in_frame

    @property
    def pending_bytes(self) -> int:
        """Bytes of the unfinished frame held in memory."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The payloads completed by this chunk.

        Raises FrameTooLarge as soon as a frame's content exceeds max_message_bytes (before
        its end arrives); its `completed` holds the payloads finished earlier in this chunk.
        The decoder then drops that frame and the rest of the chunk and waits for a new
        start block.
        """
        payloads: list[bytes] = []
        position = 0
        end = len(data)
        while position < end:
            if not self._in_frame:
                start = data.find(START_BLOCK, position)
                if start < 0:
                    self.discarded_bytes += end - position
                    break
                self.discarded_bytes += start - position
                self._begin_frame()
                position = start + 1
                continue
            restart = data.find(START_BLOCK, position)
            segment_end = end if restart < 0 else restart
            self._buffer += data[position:segment_end]
            position = segment_end
            try:
                payload = self._take_payload()
            except FrameTooLarge as exc:
                self.discarded_bytes += end - position
                raise FrameTooLarge(exc.limit, tuple(payloads)) from None
            if payload is not None:
                payloads.append(payload)
            elif restart >= 0:  # <VT> inside an unfinished frame: resynchronise there
                self.discarded_bytes += 1 + len(self._buffer)
                self._begin_frame()
                position = restart + 1
        return payloads

    def _begin_frame(self) -> None:
        self._in_frame = True
        self._buffer.clear()
        self._scanned = 0

    def _take_payload(self) -> bytes | None:
        """The payload if the buffer now holds END_BLOCK; what follows it is dropped."""
        buffer = self._buffer
        found = buffer.find(END_BLOCK, max(self._scanned - 1, 0))
        content = found if found >= 0 else len(buffer) - (1 if buffer.endswith(b"\x1c") else 0)
        if content > self.max_message_bytes:
            self.discarded_bytes += 1 + len(buffer)
            self._reset()
            raise FrameTooLarge(self.max_message_bytes)
        if found < 0:
            self._scanned = len(buffer)
            return None
        payload = bytes(buffer[:found])
        self.discarded_bytes += len(buffer) - found - len(END_BLOCK)
        self._reset()
        return payload

    def _reset(self) -> None:
        self._in_frame = False
        self._buffer.clear()
        self._scanned = 0
