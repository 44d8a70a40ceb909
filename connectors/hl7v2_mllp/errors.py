"""The exceptions of the MLLP transport.

Protocol outcomes (an ACK code, a timeout, a lost connection) are values, returned in a
`DeliveryResult`; these exceptions mean that a caller or a peer broke the framing rules.
None of them carries message content: it is PHI.

    MllpError
    ├── FramingError
    │   ├── FrameTooLarge ........ a frame outgrew max_message_bytes (the listener closes)
    │   └── UnframeablePayload ... frame() of bytes holding <VT> or <FS> (also ValueError)
    ├── UnsendableMessage ........ the sender got bytes it cannot send and match an ACK to:
    │                              no MSH-10, or not framable (also ValueError)
    └── ListenerStateError ....... start() twice, bound_port before start()
"""

from __future__ import annotations


class MllpError(Exception):
    """Base of every exception of this package."""


class FramingError(MllpError):
    """The bytes do not follow MLLP framing (<VT> payload <FS><CR>)."""


class FrameTooLarge(FramingError):
    """A frame grew beyond the maximum message size.

    `completed` holds the payloads that were complete in the same `feed()` before the
    oversized frame; the decoder has dropped the oversized frame and what followed it in
    that chunk.
    """

    def __init__(self, limit: int, completed: tuple[bytes, ...] = ()) -> None:
        super().__init__(f"An MLLP frame exceeds the maximum of {limit} bytes.")
        self.limit = limit
        self.completed = completed


class UnframeablePayload(FramingError, ValueError):
    """The payload holds a start-block (0x0B) or end-block (0x1C) byte, which MLLP forbids."""


class UnsendableMessage(MllpError, ValueError):
    """The sender cannot send these bytes: not HL7 v2 with an MSH-10, or not framable."""


class ListenerStateError(MllpError):
    """The listener is not in the state the call needs (started twice, not started)."""
