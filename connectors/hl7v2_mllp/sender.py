"""The MLLP sender: one HL7 v2 message per call, answered by the ACK that names it.

The sender makes one attempt per call: retries, backoff and dead letters belong to the
caller's outbox. It keeps one connection open and reuses it; calls from concurrent tasks
take turns on it (HL7 original mode allows one outstanding message per connection).
"""

from __future__ import annotations

import asyncio
import logging
import select
import ssl

from connectors.base import DeliveryResult
from connectors.hl7v2_mllp.acknowledgment import acknowledgment_result
from connectors.hl7v2_mllp.errors import FramingError, UnsendableMessage
from connectors.hl7v2_mllp.framing import DEFAULT_MAX_MESSAGE_BYTES, MllpFrameDecoder, frame
from connectors.hl7v2_mllp.streams import close_stream
from mappings.hl7v2.tokenizer import Hl7ParseError, parse_message

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
TIMEOUT = "timeout"
"""DeliveryResult.code when no connection or no matching ACK came in time."""
CONNECTION = "connection"
"""DeliveryResult.code when the connection failed or the peer closed it."""


class _Link:
    """One open connection with its own frame decoder."""

    __slots__ = ("reader", "writer", "decoder")

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_bytes: int
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = MllpFrameDecoder(max_bytes)

    def looks_closed(self) -> bool:
        """Whether the peer has closed (or written unasked) while the link sat idle.

        An idle HL7 connection has nothing to read, so a readable socket means EOF or
        stray data; as HTTP clients do with pooled connections, such a link is not reused.
        """
        if self.writer.is_closing() or self.reader.at_eof():
            return True
        sock = self.writer.get_extra_info("socket")
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def close(self) -> None:
        self.writer.close()


class MllpSender:
    """Sends HL7 v2 messages to one MLLP peer and reports each ACK as a DeliveryResult.

    Parameters: the peer's host and port; `tls`, a client SSLContext (None: plain TCP);
    `server_hostname` to check the certificate against (default: host); `connect_timeout`
    and `ack_timeout` in seconds (the latter covers writing the message and receiving its
    ACK); `max_message_bytes` bounds an ACK frame.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float = 10.0,
        ack_timeout: float = 30.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self._tls = tls
        self._server_hostname = server_hostname
        self._connect_timeout = connect_timeout
        self._ack_timeout = ack_timeout
        self._max_message_bytes = max_message_bytes
        self._link: _Link | None = None
        self._lock = asyncio.Lock()

    async def send(self, message: bytes) -> DeliveryResult:
        """Send one message; the result of the ACK whose MSA-2 equals the message's MSH-10.

        ACKs for other control ids (late answers, foreign ones) are skipped. No matching ACK
        within ack_timeout gives code "timeout"; a failed or lost connection gives code
        "connection"; both are retryable and close the connection (the next call opens a
        new one). Raises UnsendableMessage for bytes that are not an HL7 v2 message with
        an MSH-10, or that cannot be framed.
        """
        control_id = _control_id(message)
        try:
            data = frame(message)
        except FramingError as exc:
            raise UnsendableMessage("The message holds MLLP framing bytes.") from exc
        async with self._lock:
            link = self._link
            if link is None or link.looks_closed():
                try:
                    async with asyncio.timeout(self._connect_timeout):
                        link = await self._reconnect()
                except TimeoutError:
                    return _failure(TIMEOUT, "No connection within the connect timeout.")
                except OSError as exc:
                    return _failure(CONNECTION, f"Cannot connect: {type(exc).__name__}.")
            try:
                async with asyncio.timeout(self._ack_timeout):
                    return await self._exchange(link, data, control_id)
            except TimeoutError:
                self._drop(link)
                return _failure(TIMEOUT, "No acknowledgment within the ACK timeout.")
            except (OSError, EOFError, FramingError) as exc:
                self._drop(link)
                return _failure(CONNECTION, f"Connection lost: {type(exc).__name__}.")
            except BaseException:  # cancelled mid-exchange: the link's state is unknown
                self._drop(link)
                raise

    async def close(self) -> None:
        """Close the connection (a later send() opens a new one)."""
        async with self._lock:
            link, self._link = self._link, None
            if link is not None:
                await close_stream(link.writer)

    async def __aenter__(self) -> MllpSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _reconnect(self) -> _Link:
        """A new connection, in place of the closed one if any."""
        if self._link is not None:
            self._drop(self._link)
        reader, writer = await asyncio.open_connection(
            self.host,
            self.port,
            ssl=self._tls,
            server_hostname=(self._server_hostname or self.host) if self._tls else None,
            limit=READ_SIZE,
        )
        self._link = _Link(reader, writer, self._max_message_bytes)
        return self._link

    async def _exchange(self, link: _Link, data: bytes, control_id: str) -> DeliveryResult:
        link.writer.write(data)
        await link.writer.drain()
        while True:
            chunk = await link.reader.read(READ_SIZE)
            if not chunk:
                raise EOFError("The peer closed the connection before acknowledging.")
            for payload in link.decoder.feed(chunk):
                try:
                    ack = parse_message(payload)
                except Hl7ParseError:
                    logger.warning(
                        "MLLP %s:%d answered with a non-HL7 frame; skipped", self.host, self.port
                    )
                    continue
                msa = ack.first("MSA")
                answered = msa.value(2) if msa is not None else ""
                if answered == control_id:
                    return acknowledgment_result(ack, payload)
                logger.warning(
                    "MLLP %s:%d: skipped an ACK for control id %r while awaiting %r",
                    self.host,
                    self.port,
                    answered,
                    control_id,
                )

    def _drop(self, link: _Link) -> None:
        link.close()
        if self._link is link:
            self._link = None


def _control_id(message: bytes) -> str:
    # MSH alone: the rest of the message can be large (embedded documents).
    header = message.lstrip(b"\x0b").split(b"\r", 1)[0].split(b"\n", 1)[0]
    try:
        control_id = parse_message(header).control_id
    except Hl7ParseError as exc:
        raise UnsendableMessage("The message is not HL7 v2.") from exc
    if not control_id:
        raise UnsendableMessage("The message has no MSH-10 control id to match an ACK to.")
    return control_id


def _failure(code: str, detail: str) -> DeliveryResult:
    return DeliveryResult(accepted=False, code=code, detail=detail, retryable=True)
