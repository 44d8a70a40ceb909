"""The MLLP sender against python-hl7's asyncio MLLP server (a peer we did not write).

The server runs in a background thread with its own event loop; each test gives it a
behaviour per connection. Its ACKs are built by python-hl7 (`Message.create_ack`).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from connectors.base import DeliveryResult
from connectors.hl7v2_mllp import MllpSender, UnsendableMessage
from mappings.hl7v2.tokenizer import parse_message
from tests.mllp_peer import GUARD_SECONDS, Hl7Peer, acknowledge_all, hl7_peer

pytestmark = pytest.mark.integration


def hl7_message(control_id: str) -> bytes:
    return (
        f"MSH|^~\\&|HUB|SO|EHR|ST-MARY|20240101120000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r"
        f"PID|1||P-1^^^ST-MARY^MR||Testchild^Mia||20150101|F\r"
        "OBR|1||R1|11488-4^Consult note^LN\r"
        "OBX|1|TX|11488-4^Consult note^LN||Second opinion: agree with the plan.||||||F"
    ).encode()


def answered_id(result: DeliveryResult) -> str:
    msa = parse_message(result.response).first("MSA")
    assert msa is not None
    return msa.value(2)


def sending(port: int, **options: Any) -> MllpSender:
    options.setdefault("ack_timeout", GUARD_SECONDS)
    return MllpSender("127.0.0.1", port, **options)


def test_ack_is_matched_by_control_id_and_the_connection_reused() -> None:
    async def scenario(port: int) -> list[DeliveryResult]:
        async with sending(port) as sender:
            return [await sender.send(hl7_message(f"CTRL-{n}")) for n in range(3)]

    with hl7_peer(acknowledge_all) as peer:
        results = asyncio.run(scenario(peer.port))
    assert [(r.accepted, r.code, r.retryable) for r in results] == [(True, "AA", False)] * 3
    assert [answered_id(r) for r in results] == ["CTRL-0", "CTRL-1", "CTRL-2"]
    assert peer.connections == 1


def test_foreign_ack_never_confirms_the_message() -> None:
    async def foreign_first(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
        while True:
            message = await peer.read(reader)
            ack = str(message.create_ack())
            own = str(message.segment("MSH")(10))
            writer.writeblock(ack.replace(f"MSA|AA|{own}", "MSA|AA|SOMEONE-ELSE").encode())
            writer.writemessage(message.create_ack("AE"))
            await writer.drain()

    async def scenario(port: int) -> DeliveryResult:
        async with sending(port) as sender:
            return await sender.send(hl7_message("MINE-1"))

    with hl7_peer(foreign_first) as peer:
        result = asyncio.run(scenario(peer.port))
    # Had the foreign AA confirmed it, the result would be accepted; the right answer is AE.
    assert (result.accepted, result.code, result.retryable) == (False, "AE", True)
    assert answered_id(result) == "MINE-1"


def test_only_foreign_acks_end_in_a_timeout() -> None:
    async def only_foreign(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
        while True:
            message = await peer.read(reader)
            ack = str(message.create_ack())
            own = str(message.segment("MSH")(10))
            writer.writeblock(ack.replace(f"MSA|AA|{own}", "MSA|AA|LATE-0").encode())
            await writer.drain()

    async def scenario(port: int) -> DeliveryResult:
        async with sending(port, ack_timeout=0.5) as sender:
            return await sender.send(hl7_message("MINE-2"))

    with hl7_peer(only_foreign) as peer:
        result = asyncio.run(scenario(peer.port))
    assert (result.accepted, result.code, result.retryable) == (False, "timeout", True)


@pytest.mark.parametrize(
    ("code", "err", "retryable"),
    [
        ("AR", "ERR|||200^Unsupported message type^HL70357|E\r", False),
        ("AE", "ERR|||101^Required field missing^HL70357|E||||PID-3 is empty\r", False),
        ("CR", "", False),
        ("AR", "", True),
        ("AE", "ERR|||207^Application internal error^HL70357|E\r", True),
    ],
)
def test_negative_acks_map_to_results(code: str, err: str, retryable: bool) -> None:
    async def negative(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
        message = await peer.read(reader)
        ack = str(message.create_ack(code))
        writer.writeblock((ack + err).encode())
        await writer.drain()

    async def scenario(port: int) -> DeliveryResult:
        async with sending(port) as sender:
            return await sender.send(hl7_message("NEG-1"))

    with hl7_peer(negative) as peer:
        result = asyncio.run(scenario(peer.port))
    assert (result.accepted, result.code, result.retryable) == (False, code, retryable)
    assert answered_id(result) == "NEG-1"
    if err:
        assert result.detail


def test_silent_peer_gives_a_timeout_then_a_new_connection() -> None:
    async def silent_first(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
        if number == 1:
            await peer.read(reader)
            await reader.readmessage()  # never answers; ends when the sender gives up
        await acknowledge_all(peer, reader, writer, number)

    async def scenario(port: int) -> list[DeliveryResult]:
        async with sending(port, ack_timeout=0.5) as sender:
            first = await sender.send(hl7_message("SILENT-1"))
            second = await sender.send(hl7_message("SILENT-2"))
        return [first, second]

    with hl7_peer(silent_first) as peer:
        first, second = asyncio.run(scenario(peer.port))
    assert (first.accepted, first.code, first.retryable) == (False, "timeout", True)
    assert second.accepted and answered_id(second) == "SILENT-2"
    assert peer.connections == 2


def test_peer_closing_after_its_ack_leads_to_a_reconnect() -> None:
    async def one_per_connection(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
        message = await peer.read(reader)
        writer.writemessage(message.create_ack())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def scenario(peer: Hl7Peer) -> list[DeliveryResult]:
        async with sending(peer.port) as sender:
            first = await sender.send(hl7_message("CLOSE-1"))
            assert await asyncio.to_thread(peer.events.get, timeout=GUARD_SECONDS) == "closed"
            second = await sender.send(hl7_message("CLOSE-2"))
        return [first, second]

    with hl7_peer(one_per_connection) as peer:
        results = asyncio.run(scenario(peer))
    assert [(r.accepted, answered_id(r)) for r in results] == [(True, "CLOSE-1"), (True, "CLOSE-2")]
    assert peer.connections == 2


def test_peer_closing_without_ack_is_a_retryable_connection_failure() -> None:
    async def drop_first(peer: Hl7Peer, reader: Any, writer: Any, number: int) -> None:
        if number == 1:
            await peer.read(reader)
            return  # closes without answering
        await acknowledge_all(peer, reader, writer, number)

    async def scenario(port: int) -> list[DeliveryResult]:
        async with sending(port) as sender:
            return [await sender.send(hl7_message(f"DROP-{n}")) for n in (1, 2)]

    with hl7_peer(drop_first) as peer:
        first, second = asyncio.run(scenario(peer.port))
    assert (first.accepted, first.code, first.retryable) == (False, "connection", True)
    assert second.accepted and answered_id(second) == "DROP-2"
    assert peer.received == ["DROP-1", "DROP-2"]


def test_concurrent_senders_each_get_their_own_ack() -> None:
    ids = [f"CONC-{n}" for n in range(12)]

    async def scenario(port: int) -> list[DeliveryResult]:
        async with sending(port) as sender:
            return await asyncio.gather(*(sender.send(hl7_message(c)) for c in ids))

    with hl7_peer(acknowledge_all) as peer:
        results = asyncio.run(scenario(peer.port))
    assert all(result.accepted for result in results)
    assert [answered_id(result) for result in results] == ids
    assert sorted(peer.received) == sorted(ids)
    assert peer.connections == 1


def test_nobody_listening_is_a_retryable_connection_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the send: nothing listens

    async def scenario() -> DeliveryResult:
        async with sending(port) as sender:
            return await sender.send(hl7_message("NOBODY"))

    result = asyncio.run(scenario())
    assert (result.accepted, result.code, result.retryable) == (False, "connection", True)


@pytest.mark.parametrize(
    "message",
    [
        b"not hl7 at all",
        b"MSH|^~\\&|HUB|SO|EHR|ST-MARY|20240101||ORU^R01||P|2.5.1",
        b"MSH|^~\\&|A\x0b|B|C|D|2024||ADT^A01|ID1|P|2.5",
    ],
)
def test_unsendable_messages_are_refused_before_any_io(message: bytes) -> None:
    async def scenario() -> None:
        sender = MllpSender("127.0.0.1", 9, connect_timeout=GUARD_SECONDS)
        with pytest.raises(UnsendableMessage):
            await sender.send(message)

    asyncio.run(scenario())
