"""The MLLP listener: accepts HL7 v2 senders and answers each message with the handler's ACK.

HL7 original mode is request/response, so each connection is served strictly in order,
one message at a time: the handler is awaited and its answer written before the next
message of that connection is handed over. Connections are served concurrently, up to
`max_connections` at once; one more is closed as soon as it is accepted.

Nothing here logs message content (it is PHI): only the channel, the peer's address and
the type of a failure.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, model_validator

from connectors.base import Envelope, InboundHandler
from connectors.hl7v2_mllp.errors import FrameTooLarge, ListenerStateError
from connectors.hl7v2_mllp.framing import DEFAULT_MAX_MESSAGE_BYTES, MllpFrameDecoder, frame
from connectors.hl7v2_mllp.streams import close_stream

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024


class MllpTlsConfig(BaseModel):
    """TLS for a listener: its certificate chain and key, and how clients authenticate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    """The CAs that sign client certificates; without it clients are not asked for one."""
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _client_cert_needs_ca(self) -> MllpTlsConfig:
        if self.require_client_cert and self.cafile is None:
            raise ValueError("require_client_cert needs a cafile to check certificates with.")
        return self

    def server_context(self) -> ssl.SSLContext:
        """A server-side SSLContext: TLS 1.2 or later, client certificates as configured."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certfile, self.keyfile)
        if self.cafile is not None:
            context.load_verify_locations(cafile=self.cafile)
            context.verify_mode = (
                ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
            )
        return context


class MllpListenerConfig(BaseModel):
    """One MLLP listener (a channel): where it listens and whom it serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    """The channel name, passed on in each Envelope."""
    host: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    """0 lets the system choose a free port (see MllpListener.bound_port)."""
    allowed_senders: list[IPvAnyNetwork] = Field(default_factory=list)
    """Addresses or CIDR networks allowed to connect; empty allows anyone."""
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, gt=0)
    idle_timeout_seconds: float = Field(default=600.0, gt=0)
    """A connection that sends nothing (or reads no ACK) for this long is closed."""
    max_connections: int = Field(default=100, gt=0)
    """Connections served at once; more are closed on arrival (and counted), so that a
    sender opening connections in a loop cannot starve the others of memory and sockets."""
    tls: MllpTlsConfig | None = None

    def allows(self, address: str) -> bool:
        """Whether a peer at this IP address may connect."""
        if not self.allowed_senders:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
        return any(ip in network for network in self.allowed_senders)


@dataclass(frozen=True)
class MllpListenerStats:
    """What a listener has seen since it was created."""

    open_connections: int
    refused_over_limit: int
    """Connections closed on arrival because max_connections were open."""
    refused_not_allowed: int
    """Connections closed on arrival because the peer is not in allowed_senders."""


_READING, _HANDLING, _WRITING = "reading", "handling", "writing"


class _Connection:
    """One accepted connection and where its conversation stands."""

    __slots__ = ("task", "writer", "peer", "phase", "deadline", "timer", "expired")

    def __init__(self, task: asyncio.Task[None], writer: asyncio.StreamWriter, peer: str) -> None:
        self.task = task
        self.writer = writer
        self.peer = peer
        self.phase = _READING
        self.deadline = 0.0
        """When the current read or write times out (idle_timeout_seconds after it began)."""
        self.timer: asyncio.TimerHandle | None = None
        self.expired = False

    @property
    def busy(self) -> bool:
        """Between a complete message and the write of its answer."""
        return self.phase != _READING


class MllpListener:
    """Serves one MllpListenerConfig, handing every message to `handler`.

    The handler gets an Envelope (transport "mllp", channel = config.name, peer "ip:port")
    and returns the bytes to answer with (the ACK), which are framed and written back;
    empty bytes send no answer. A handler that raises closes that connection only (its
    exception type is logged, never its message). `reuse_port` binds with SO_REUSEPORT, so
    that listeners of several processes share the port (the kernel spreads connections).
    """

    def __init__(
        self, config: MllpListenerConfig, handler: InboundHandler, *, reuse_port: bool = False
    ) -> None:
        self.config = config
        self._handler = handler
        self._reuse_port = reuse_port
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._stopping = False
        self._refused_over_limit = 0
        self._refused_not_allowed = 0

    @property
    def stats(self) -> MllpListenerStats:
        """Open connections and refusals, for health checks and metrics."""
        return MllpListenerStats(
            len(self._connections), self._refused_over_limit, self._refused_not_allowed
        )

    @property
    def bound_port(self) -> int:
        """The port listened on (the chosen one when config.port is 0)."""
        if self._server is None or not self._server.sockets:
            raise ListenerStateError("The listener is not started.")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise ListenerStateError("The listener is already started.")
        tls = self.config.tls
        self._stopping = False
        self._server = await asyncio.start_server(
            self._serve,
            self.config.host,
            self.config.port,
            ssl=tls.server_context() if tls is not None else None,
            ssl_handshake_timeout=self.config.idle_timeout_seconds if tls is not None else None,
            limit=READ_SIZE,
            reuse_port=self._reuse_port,
        )
        logger.info("MLLP listener %s listening on port %d", self.config.name, self.bound_port)

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, close idle connections, let in-flight handler calls finish.

        A message being handled is answered before its connection closes; messages not yet
        handed over are dropped unanswered (the sender resends them). After `timeout`
        seconds, the handler calls still running are cancelled.
        """
        server = self._server
        if server is None:
            return
        self._stopping = True
        server.close()
        for connection in list(self._connections):
            if not connection.busy:  # waiting for data: closing ends its read with EOF
                connection.writer.close()
        tasks = [connection.task for connection in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        await server.wait_closed()
        self._server = None
        logger.info("MLLP listener %s stopped", self.config.name)

    async def __aenter__(self) -> MllpListener:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        address, port = (str(peername[0]), int(peername[1])) if peername else ("", 0)
        peer = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        if self._stopping:
            await close_stream(writer)
            return
        if len(self._connections) >= self.config.max_connections:
            self._refused_over_limit += 1
            logger.warning(
                "MLLP %s refused a connection from %s: %d connections open",
                self.config.name,
                peer,
                len(self._connections),
            )
            await close_stream(writer)
            return
        if not self.config.allows(address):
            self._refused_not_allowed += 1
            logger.warning("MLLP %s refused a connection from %s", self.config.name, address)
            await close_stream(writer)
            return
        connection = _Connection(task, writer, peer)
        self._connections.add(connection)
        try:
            logger.debug("MLLP %s connection from %s", self.config.name, peer)
            await self._converse(reader, writer, connection)
        except OSError as exc:  # reset, broken pipe, TLS errors
            if not connection.expired:  # else _check_idle has said why
                logger.info(
                    "MLLP %s connection from %s lost: %s",
                    self.config.name,
                    peer,
                    type(exc).__name__,
                )
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # Cancelled by stop() after its timeout. Ending quietly also spares Python 3.11's
            # start_server callback, which logs an error for a cancelled connection task.
            logger.warning("MLLP %s: a handler call was cut short by stop()", self.config.name)
        finally:
            if connection.timer is not None:
                connection.timer.cancel()
            self._connections.discard(connection)
            await close_stream(writer)

    def _check_idle(self, connection: _Connection) -> None:
        """The idle timer: closes a connection whose read or write has waited too long.

        One timer per connection, moved on only when it fires, instead of a timeout per
        read and per write: those cost more than the rest of a small message's handling.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        if connection.phase == _HANDLING:  # the handler's time is not the peer's idleness
            connection.deadline = now + self.config.idle_timeout_seconds
        if now < connection.deadline:
            connection.timer = loop.call_at(connection.deadline, self._check_idle, connection)
            return
        connection.timer, connection.expired = None, True
        if connection.phase == _WRITING:
            logger.info("MLLP %s: %s read no ACK in time", self.config.name, connection.peer)
        else:
            logger.info("MLLP %s closed idle connection from %s", self.config.name, connection.peer)
        # Abort, not close: nothing is left to flush when reading, and when writing the peer
        # does not read what is left (a close would wait for it, and so would a TLS close).
        # The pending read or drain then ends, and with it the conversation.
        connection.writer.transport.abort()

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: _Connection
    ) -> None:
        """Read frames and answer them in order until EOF, idle timeout, error or stop."""
        loop = asyncio.get_running_loop()
        decoder = MllpFrameDecoder(self.config.max_message_bytes)
        idle = self.config.idle_timeout_seconds
        connection.deadline = loop.time() + idle
        connection.timer = loop.call_at(connection.deadline, self._check_idle, connection)
        while not self._stopping:
            connection.phase, connection.deadline = _READING, loop.time() + idle
            data = await reader.read(READ_SIZE)
            if not data:
                return
            too_large = False
            try:
                payloads = decoder.feed(data)
            except FrameTooLarge as exc:
                payloads, too_large = list(exc.completed), True
            for payload in payloads:
                if self._stopping or not await self._answer(payload, writer, connection):
                    return
            if too_large:
                logger.warning(
                    "MLLP %s closed the connection from %s: a message exceeded %d bytes",
                    self.config.name,
                    connection.peer,
                    self.config.max_message_bytes,
                )
                return

    async def _answer(
        self, payload: bytes, writer: asyncio.StreamWriter, connection: _Connection
    ) -> bool:
        """Hand one message to the handler and write its answer; False closes the connection."""
        peer = connection.peer
        envelope = Envelope(payload, transport="mllp", channel=self.config.name, peer=peer)
        connection.phase = _HANDLING
        try:
            answer = await self._handler(envelope)
            framed = frame(answer) if answer else b""
        except Exception as exc:  # the handler's failure must not reach the listener
            logger.error(
                "MLLP %s handler failed on a message from %s: %s; connection closed",
                self.config.name,
                peer,
                type(exc).__name__,
            )
            return False
        if framed:
            writer.write(framed)
            # Usually the socket took it all; only a peer slow to read makes us wait.
            if writer.transport.get_write_buffer_size():
                connection.phase = _WRITING
                connection.deadline = asyncio.get_running_loop().time() + (
                    self.config.idle_timeout_seconds
                )
                await writer.drain()
                if connection.expired:
                    return False
        return True
