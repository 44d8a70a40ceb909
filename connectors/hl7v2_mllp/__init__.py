"""HL7 v2 over MLLP: framing, a listener that hands messages to the hub, a sender.

from connectors.hl7v2_mllp import MllpListener, MllpListenerConfig, MllpSender
"""

from __future__ import annotations

from connectors.hl7v2_mllp.acknowledgment import acknowledgment_result
from connectors.hl7v2_mllp.errors import (
    FrameTooLarge,
    FramingError,
    ListenerStateError,
    MllpError,
    UnframeablePayload,
    UnsendableMessage,
)
from connectors.hl7v2_mllp.framing import (
    DEFAULT_MAX_MESSAGE_BYTES,
    END_BLOCK,
    START_BLOCK,
    MllpFrameDecoder,
    frame,
)
from connectors.hl7v2_mllp.listener import (
    MllpListener,
    MllpListenerConfig,
    MllpListenerStats,
    MllpTlsConfig,
)
from connectors.hl7v2_mllp.sender import MllpSender

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "END_BLOCK",
    "START_BLOCK",
    "FrameTooLarge",
    "FramingError",
    "ListenerStateError",
    "MllpError",
    "MllpFrameDecoder",
    "MllpListener",
    "MllpListenerConfig",
    "MllpListenerStats",
    "MllpSender",
    "MllpTlsConfig",
    "UnframeablePayload",
    "UnsendableMessage",
    "acknowledgment_result",
    "frame",
]
