"""What every connector shares: the Envelope a transport hands over, the DeliveryResult it
reports, and the Connector protocol. Connectors know nothing of the hub (no `hub.*`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol


@dataclass(frozen=True)
class Envelope:
    """One message as a transport received it, or as it is to be sent."""

    payload: bytes
    transport: str
    """"mllp", "fhir-rest", "dicomweb", "dimse", "filedrop"."""
    channel: str
    """The configured listener or connector it passed through."""
    peer: str = ""
    """The remote end: an address, a URL, an AE title."""
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    """How a peer answered a delivery. Outcomes are values, not exceptions (as in DIMSE)."""

    accepted: bool
    code: str
    """The peer's own code: an ACK code (AA, AE, AR), an HTTP status, a DIMSE status."""
    detail: str = ""
    retryable: bool = False
    """False when sending again cannot help (the peer rejected the content)."""
    response: bytes = b""


@dataclass(frozen=True)
class ConnectorHealth:
    healthy: bool
    detail: str = ""


# A listener hands each received Envelope to the hub and sends back what it returns.
InboundHandler = Callable[[Envelope], Awaitable[bytes]]


class Connector(Protocol):
    """Every connector: a name, a health check, and delivery of an outbound Envelope."""

    name: str

    async def health(self) -> ConnectorHealth: ...

    async def deliver(self, envelope: Envelope) -> DeliveryResult: ...
