"""The MLLP listener on loopback, against python-hl7's `mllp_send` and raw sockets.

The listener runs in a background thread with its own event loop, so the tests can drive
it with blocking sockets and subprocesses. Socket timeouts are guards against a hung test,
never a way to wait for something.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import ipaddress
import logging
import socket
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.base import Envelope
from connectors.hl7v2_mllp import (
    MllpFrameDecoder,
    MllpListener,
    MllpListenerConfig,
    MllpSender,
    frame,
)
from mappings.hl7v2.tokenizer import Hl7ParseError, parse_message

pytestmark = pytest.mark.integration

T = TypeVar("T")
GUARD_SECONDS = 20.0
MLLP_SEND = Path(sys.executable).parent / "mllp_send"


# --- helpers -------------------------------------------------------------------------------


def hl7_message(control_id: str, *, patient: str = "Testchild^Mia") -> bytes:
    return (
        f"MSH|^~\\&|LAB|ST-MARY|HUB|SO|20240101120000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r"
        f"PID|1||P-{control_id}^^^ST-MARY^MR||{patient}||20150101|F\r"
        "OBR|1||R1|718-7^Hemoglobin^LN\r"
        "OBX|1|NM|718-7^Hemoglobin^LN||11.2|g/dL|||||F"
    ).encode()


def ack_for(payload: bytes, code: str = "AA") -> bytes:
    """The test handler's answer: MSA-2 = the message's MSH-10 (AR when it is not HL7)."""
    try:
        control_id = parse_message(payload).control_id
    except Hl7ParseError:
        control_id, code = "", "AR"
    return (
        f"MSH|^~\\&|HUB|SO|LAB|ST-MARY|20240101120001||ACK^R01^ACK|A-{control_id}|P|2.5.1\r"
        f"MSA|{code}|{control_id}"
    ).encode()


def answered_id(ack: bytes) -> str:
    msa = parse_message(ack).first("MSA")
    assert msa is not None
    return msa.value(2)


async def acknowledge(envelope: Envelope) -> bytes:
    return ack_for(envelope.payload)


class LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.submit(coro).result(GUARD_SECONDS)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(GUARD_SECONDS)
        self.loop.close()


@contextmanager
def serving(
    handler: Callable[[Envelope], Awaitable[bytes]] = acknowledge, **config: Any
) -> Iterator[tuple[MllpListener, LoopThread]]:
    thread = LoopThread()
    listener = MllpListener(MllpListenerConfig(name="test-mllp", port=0, **config), handler)
    thread.run(listener.start())
    try:
        yield listener, thread
    finally:
        thread.run(listener.stop(timeout=5))
        thread.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=GUARD_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Closed(Exception):
    """The listener closed the connection."""


def read_frames(sock: socket.socket, count: int, decoder: MllpFrameDecoder) -> list[bytes]:
    frames: list[bytes] = []
    while len(frames) < count:
        try:
            data = sock.recv(65536)
        except ConnectionResetError as exc:
            raise Closed from exc
        if not data:
            raise Closed
        frames += decoder.feed(data)
    return frames


def is_closed_without_answer(sock: socket.socket) -> bool:
    """True when the listener closes the connection before answering anything."""
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True


def send(sock: socket.socket, data: bytes) -> bool:
    """sendall; False when the listener has already closed the connection."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def assert_serves(port: int) -> None:
    """A valid message on a new connection still gets its ACK."""
    control_id = f"ALIVE-{uuid.uuid4().hex[:8]}"
    with connect(port) as sock:
        sock.sendall(frame(hl7_message(control_id)))
        [ack] = read_frames(sock, 1, MllpFrameDecoder())
    assert answered_id(ack) == control_id


# --- (a) a real MLLP client we did not write -------------------------------------------------


def test_mllp_send_from_python_hl7_gets_an_ack_per_message(tmp_path: Path) -> None:
    received: list[Envelope] = []

    async def record(envelope: Envelope) -> bytes:
        received.append(envelope)
        return ack_for(envelope.payload)

    ids = [f"MLLPSEND-{n}" for n in range(4)]
    messages = [hl7_message(control_id) for control_id in ids]
    batch = tmp_path / "messages.hl7"
    batch.write_bytes(b"".join(frame(message) for message in messages))
    with serving(record) as (listener, _):
        done = subprocess.run(
            [str(MLLP_SEND), "--port", str(listener.bound_port), "--file", str(batch), "127.0.0.1"],
            capture_output=True,
            timeout=60,
            check=True,
        )
    acks = MllpFrameDecoder().feed(done.stdout)
    assert [answered_id(ack) for ack in acks] == ids
    assert [envelope.payload for envelope in received] == messages
    assert {(e.transport, e.channel) for e in received} == {("mllp", "test-mllp")}
    assert all(e.peer.startswith("127.0.0.1:") for e in received)


# --- (b) several messages per write, one message over many writes ----------------------------


def test_messages_in_one_write_are_answered_in_order_one_at_a_time() -> None:
    in_flight = 0
    most_in_flight = 0

    async def one_at_a_time(envelope: Envelope) -> bytes:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0)  # a suspension point where a second call could slip in
        in_flight -= 1
        return ack_for(envelope.payload)

    ids = [f"BATCH-{n}" for n in range(6)]
    with serving(one_at_a_time) as (listener, _), connect(listener.bound_port) as sock:
        sock.sendall(b"".join(frame(hl7_message(control_id)) for control_id in ids))
        acks = read_frames(sock, len(ids), MllpFrameDecoder())
    assert [answered_id(ack) for ack in acks] == ids
    assert most_in_flight == 1


def test_message_split_byte_by_byte_is_answered() -> None:
    ids = ["SPLIT-1", "SPLIT-2"]
    data = b"".join(frame(hl7_message(control_id)) for control_id in ids)
    with serving() as (listener, _), connect(listener.bound_port) as sock:
        for index in range(len(data)):
            sock.sendall(data[index : index + 1])
        acks = read_frames(sock, 2, MllpFrameDecoder())
    assert [answered_id(ack) for ack in acks] == ids


def test_connections_are_served_concurrently() -> None:
    entered = threading.Barrier(3, timeout=GUARD_SECONDS)

    async def wait_for_all(envelope: Envelope) -> bytes:
        # Each call returns only once three calls are in progress at the same time.
        await asyncio.to_thread(entered.wait)
        return ack_for(envelope.payload)

    with serving(wait_for_all) as (listener, _):
        sockets = [connect(listener.bound_port) for _ in range(3)]
        for n, sock in enumerate(sockets):
            sock.sendall(frame(hl7_message(f"CONC-{n}")))
        answers = [read_frames(sock, 1, MllpFrameDecoder())[0] for sock in sockets]
        for sock in sockets:
            sock.close()
    assert [answered_id(ack) for ack in answers] == ["CONC-0", "CONC-1", "CONC-2"]


# --- (c) allowed senders -------------------------------------------------------------------


def test_sender_not_allowed_is_closed_unanswered() -> None:
    calls: list[Envelope] = []

    async def record(envelope: Envelope) -> bytes:
        calls.append(envelope)
        return ack_for(envelope.payload)

    allowed = ["10.0.0.0/8", "192.0.2.7"]
    with (
        serving(record, allowed_senders=allowed) as (listener, _),
        connect(listener.bound_port) as sock,
    ):
        send(sock, frame(hl7_message("NOT-ALLOWED")))
        assert is_closed_without_answer(sock)
    assert calls == []


def test_allowed_sender_by_address_or_network_is_served() -> None:
    for allowed in (["127.0.0.1"], ["10.0.0.0/8", "127.0.0.0/8"]):
        with serving(allowed_senders=allowed) as (listener, _):
            assert_serves(listener.bound_port)


# --- (c') connection limit -----------------------------------------------------------------


def test_a_connection_beyond_max_connections_is_closed_and_the_others_are_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="connectors.hl7v2_mllp")
    limit = 3
    with serving(max_connections=limit) as (listener, thread):
        port = listener.bound_port
        held = [connect(port) for _ in range(limit)]
        decoders = [MllpFrameDecoder() for _ in held]
        try:
            # An ACK on each proves the listener has taken all three in.
            for n, (sock, decoder) in enumerate(zip(held, decoders, strict=True)):
                sock.sendall(frame(hl7_message(f"HELD-{n}")))
                assert answered_id(read_frames(sock, 1, decoder)[0]) == f"HELD-{n}"
            with connect(port) as extra:
                extra_port = extra.getsockname()[1]
                send(extra, frame(hl7_message("ONE-TOO-MANY")))
                assert is_closed_without_answer(extra)
            for n, (sock, decoder) in enumerate(zip(held, decoders, strict=True)):
                sock.sendall(frame(hl7_message(f"AFTER-{n}")))
                assert answered_id(read_frames(sock, 1, decoder)[0]) == f"AFTER-{n}"
            stats = listener.stats
            assert (stats.open_connections, stats.refused_over_limit) == (limit, 1)
            # Once one of them has gone, a new connection is served again.
            held.pop().close()

            async def one_gone() -> None:
                while listener.stats.open_connections >= limit:
                    await asyncio.sleep(0.01)

            thread.run(one_gone())
            assert_serves(port)
        finally:
            for sock in held:
                sock.close()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == [
        f"MLLP test-mllp refused a connection from 127.0.0.1:{extra_port}: {limit} connections open"
    ]


# --- (d) oversized frames ------------------------------------------------------------------


def test_oversized_frame_closes_the_connection_and_others_are_served() -> None:
    oversized = hl7_message("BIG") + b"\rNTE|1||" + b"x" * 2000
    with serving(max_message_bytes=1024) as (listener, _):
        with connect(listener.bound_port) as sock:
            send(sock, frame(oversized))
            assert is_closed_without_answer(sock)
        assert_serves(listener.bound_port)


def test_messages_before_an_oversized_frame_are_still_answered() -> None:
    oversized = hl7_message("BIG") + b"\rNTE|1||" + b"x" * 2000
    with serving(max_message_bytes=1024) as (listener, _), connect(listener.bound_port) as sock:
        sock.sendall(frame(hl7_message("BEFORE")) + frame(oversized))
        decoder = MllpFrameDecoder()
        [ack] = read_frames(sock, 1, decoder)
        assert answered_id(ack) == "BEFORE"
        with pytest.raises(Closed):
            read_frames(sock, 1, decoder)


# --- (e) idle timeout ----------------------------------------------------------------------


def test_idle_connection_is_closed() -> None:
    with serving(idle_timeout_seconds=0.2) as (listener, _):
        with connect(listener.bound_port) as sock:
            assert is_closed_without_answer(sock)
        with connect(listener.bound_port) as sock:
            sock.sendall(b"\x0b" + hl7_message("HALF")[:20])  # a frame that never ends
            assert is_closed_without_answer(sock)
        assert_serves(listener.bound_port)


def test_a_peer_that_reads_no_answer_is_closed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connectors.hl7v2_mllp")

    async def bulky(envelope: Envelope) -> bytes:
        # More than loopback's socket buffers hold, so that the write waits for the peer.
        return ack_for(envelope.payload) + b"\rNTE|1||" + b"x" * (32 * 1024 * 1024)

    with serving(bulky, idle_timeout_seconds=0.2) as (listener, thread):

        async def given_up() -> None:
            while not listener.stats.open_connections:  # taken in (it lasts 0.2 s at least)
                await asyncio.sleep(0.01)
            while listener.stats.open_connections:
                await asyncio.sleep(0.01)

        with connect(listener.bound_port) as sock:
            sock.sendall(frame(hl7_message("NEVER-READS")))
            thread.run(given_up())
    assert any("read no ACK in time" in record.getMessage() for record in caplog.records)
    assert not any(" lost: " in record.getMessage() for record in caplog.records)


# --- (f) a failing handler -----------------------------------------------------------------


def test_handler_failure_closes_only_that_connection_and_logs_no_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fragile(envelope: Envelope) -> bytes:
        if b"Fragile^Felix" in envelope.payload:
            raise RuntimeError(f"cannot map {envelope.payload!r}")
        return ack_for(envelope.payload)

    caplog.set_level(logging.DEBUG, logger="connectors.hl7v2_mllp")
    with serving(fragile) as (listener, _):
        with connect(listener.bound_port) as sock:
            sock.sendall(frame(hl7_message("FAILS", patient="Fragile^Felix")))
            assert is_closed_without_answer(sock)
        assert_serves(listener.bound_port)
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert "RuntimeError" in failures[0].getMessage()
    assert not any("Felix" in record.getMessage() for record in caplog.records)


def test_handler_answer_that_cannot_be_framed_closes_the_connection() -> None:
    async def bad_answer(envelope: Envelope) -> bytes:
        return b"MSH|^~\\&|\x1c"

    with serving(bad_answer) as (listener, _), connect(listener.bound_port) as sock:
        sock.sendall(frame(hl7_message("BADACK")))
        assert is_closed_without_answer(sock)


# --- graceful stop -------------------------------------------------------------------------


def test_stop_refuses_new_connections_and_finishes_the_message_in_hand() -> None:
    entered = threading.Event()
    release = threading.Event()

    async def slow(envelope: Envelope) -> bytes:
        entered.set()
        await asyncio.to_thread(release.wait, GUARD_SECONDS)
        return ack_for(envelope.payload)

    thread = LoopThread()
    listener = MllpListener(MllpListenerConfig(name="test-mllp", port=0), slow)
    thread.run(listener.start())
    port = listener.bound_port
    try:
        with connect(port) as busy, connect(port) as idle:
            busy.sendall(frame(hl7_message("IN-FLIGHT")))
            assert entered.wait(GUARD_SECONDS)
            stopping = thread.submit(listener.stop())

            async def nothing() -> None:
                return None

            # Tasks start in submission order: once this one ran, stop() is past close().
            thread.run(nothing())
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=GUARD_SECONDS)
            assert not stopping.done()
            release.set()
            [ack] = read_frames(busy, 1, MllpFrameDecoder())
            assert answered_id(ack) == "IN-FLIGHT"
            stopping.result(GUARD_SECONDS)
            assert is_closed_without_answer(busy)
            assert is_closed_without_answer(idle)
    finally:
        release.set()
        thread.close()


# --- (g) TLS -------------------------------------------------------------------------------


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certfile, keyfile)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / f"{name}.crt", directory / f"{name}.key"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def test_tls_listener_serves_a_tls_sender(tmp_path: Path) -> None:
    certfile, keyfile = self_signed(tmp_path, "listener")
    client = ssl.create_default_context(cafile=str(certfile))
    peers: list[str] = []

    async def record(envelope: Envelope) -> bytes:
        peers.append(envelope.peer)
        return ack_for(envelope.payload)

    async def deliver(port: int) -> list[str]:
        async with MllpSender("127.0.0.1", port, tls=client, ack_timeout=GUARD_SECONDS) as s:
            results = [await s.send(hl7_message(f"TLS-{n}")) for n in range(2)]
        assert all(result.accepted for result in results)
        return [answered_id(result.response) for result in results]

    with serving(record, tls={"certfile": certfile, "keyfile": keyfile}) as (listener, _):
        assert asyncio.run(deliver(listener.bound_port)) == ["TLS-0", "TLS-1"]
        assert len(peers) == 2 and peers[0] == peers[1]  # one connection, reused
        with connect(listener.bound_port) as plain:  # no TLS: the handshake fails
            send(plain, frame(hl7_message("PLAIN")))
            assert is_closed_without_answer(plain)
        assert not asyncio.run(deliver_plain(listener.bound_port)).accepted


async def deliver_plain(port: int) -> Any:
    async with MllpSender("127.0.0.1", port, ack_timeout=GUARD_SECONDS) as sender:
        return await sender.send(hl7_message("PLAIN-SENDER"))


def test_tls_listener_requiring_client_certificates(tmp_path: Path) -> None:
    certfile, keyfile = self_signed(tmp_path, "listener")
    client_cert, client_key = self_signed(tmp_path, "referring-ehr")
    calls: list[Envelope] = []

    async def record(envelope: Envelope) -> bytes:
        calls.append(envelope)
        return ack_for(envelope.payload)

    async def deliver(port: int, with_certificate: bool) -> Any:
        context = ssl.create_default_context(cafile=str(certfile))
        if with_certificate:
            context.load_cert_chain(client_cert, client_key)
        async with MllpSender("127.0.0.1", port, tls=context, ack_timeout=GUARD_SECONDS) as s:
            return await s.send(hl7_message("MTLS"))

    tls = {
        "certfile": certfile,
        "keyfile": keyfile,
        "cafile": client_cert,
        "require_client_cert": True,
    }
    with serving(record, tls=tls) as (listener, _):
        refused = asyncio.run(deliver(listener.bound_port, with_certificate=False))
        assert (refused.accepted, refused.code, refused.retryable) == (False, "connection", True)
        assert calls == []
        accepted = asyncio.run(deliver(listener.bound_port, with_certificate=True))
        assert accepted.accepted
        assert answered_id(accepted.response) == "MTLS"


# --- (h) fuzz ------------------------------------------------------------------------------

tokens = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [b"\x0b", b"\x1c\r", b"\x1c", b"\r", b"\n", b"MSH|^~\\&|", b"|", b"^~\\&", b"MSA|AA|"]
    ),
    st.builds(lambda cid: frame(hl7_message(cid)), st.text("ABC123-", min_size=1, max_size=8)),
    # A run of content longer than the listener's 512-byte limit.
    st.integers(min_value=400, max_value=700).map(lambda n: b"Z" * n),
    # A message whose MSH-10 holds <FS>: the test handler's ACK then cannot be framed.
    st.just(b"\x0bMSH|^~\\&|LAB|ST-MARY|HUB|SO|20240101||ADT^A01|C\x1cD|P|2.5\x1c\r"),
)
fuzz_inputs = st.lists(tokens, max_size=30).map(b"".join)


def test_fuzzed_input_never_stops_the_listener() -> None:
    """10,000 random inputs over real sockets, on one connection (reopened when closed).

    Each input is followed by a valid probe message on the same connection. Whatever the
    input did (answered frames inside it, left a frame open, which the probe's <VT>
    restarts), the probe must be answered, or the connection closed (an oversized frame, an
    answer that cannot be framed); then the probe, sent again on a new connection, must be
    answered. The listener must still serve at the end.
    """
    outcomes = {"answered": 0, "closed": 0}

    with serving(max_message_bytes=512) as (listener, _):
        port = listener.bound_port
        link: dict[str, Any] = {}

        def reconnect() -> None:
            if "sock" in link:
                link["sock"].close()
            link["sock"], link["decoder"] = connect(port), MllpFrameDecoder()

        def probe_answered(data: bytes, control_id: str) -> bool:
            if not send(link["sock"], data + frame(hl7_message(control_id))):
                return False
            try:
                while True:
                    for answer in read_frames(link["sock"], 1, link["decoder"]):
                        assert answer.startswith(b"MSH|")
                        if answered_id(answer) == control_id:
                            return True
            except Closed:
                return False

        reconnect()

        @settings(
            max_examples=10_000,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(data=fuzz_inputs)
        def fuzz(data: bytes) -> None:
            control_id = f"PROBE-{uuid.uuid4().hex[:12]}"
            if probe_answered(data, control_id):
                outcomes["answered"] += 1
                return
            outcomes["closed"] += 1
            reconnect()
            assert probe_answered(b"", control_id)

        try:
            fuzz()
        finally:
            link["sock"].close()
        assert_serves(port)
    assert outcomes["answered"] + outcomes["closed"] >= 10_000
    assert outcomes["answered"] > 0 and outcomes["closed"] > 0
