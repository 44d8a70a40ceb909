"""MLLP framing: the incremental decoder on split, merged, garbled and oversized input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.hl7v2_mllp import (
    END_BLOCK,
    START_BLOCK,
    FrameTooLarge,
    MllpFrameDecoder,
    UnframeablePayload,
    frame,
)

MESSAGE = b"MSH|^~\\&|LAB|HOSP|HUB|SO|20240101120000||ORU^R01|MSG1|P|2.5.1\rPID|1||123^^^HOSP^MR"

# Payloads MLLP can carry: anything without <VT> (0x0B) or <FS> (0x1C).
payloads = st.binary(max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
# Bytes between frames: anything without <VT>, so they cannot open a frame.
interframe = st.binary(max_size=20).map(lambda b: b.replace(b"\x0b", b""))
# Input rich in the bytes that matter to the decoder.
tokens = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([START_BLOCK, END_BLOCK, b"\x1c", b"\r", b"MSH|^~\\&|", b"\x0b\x0b"]),
)
garbage = st.lists(tokens, max_size=40).map(b"".join)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def feed_all(decoder: MllpFrameDecoder, chunks: list[bytes]) -> list[bytes]:
    return [payload for chunk in chunks for payload in decoder.feed(chunk)]


def reference(data: bytes) -> list[bytes]:
    """A plain reading of the rules: <VT> opens (and reopens) a frame, <FS><CR> closes it."""
    out: list[bytes] = []
    current: bytearray | None = None
    for byte in data:
        if byte == 0x0B:
            current = bytearray()
        elif current is not None:
            if byte == 0x0D and current.endswith(b"\x1c"):
                out.append(bytes(current[:-1]))
                current = None
            else:
                current.append(byte)
    return out


def test_frame_wraps_the_payload() -> None:
    assert frame(MESSAGE) == b"\x0b" + MESSAGE + b"\x1c\r"


@pytest.mark.parametrize("payload", [b"A\x0bB", b"A\x1cB", b"\x1c\r"])
def test_frame_refuses_framing_bytes(payload: bytes) -> None:
    with pytest.raises(UnframeablePayload):
        frame(payload)


def test_one_frame_in_one_chunk() -> None:
    decoder = MllpFrameDecoder()
    assert decoder.feed(frame(MESSAGE)) == [MESSAGE]
    assert not decoder.in_frame
    assert decoder.discarded_bytes == 0


def test_frame_split_byte_by_byte() -> None:
    decoder = MllpFrameDecoder()
    data = frame(MESSAGE)
    out = feed_all(decoder, [data[i : i + 1] for i in range(len(data))])
    assert out == [MESSAGE]


def test_end_block_split_between_chunks() -> None:
    decoder = MllpFrameDecoder()
    assert decoder.feed(b"\x0bMSH|x\x1c") == []
    assert decoder.in_frame
    assert decoder.feed(b"\r") == [b"MSH|x"]


def test_several_frames_in_one_chunk() -> None:
    decoder = MllpFrameDecoder()
    data = frame(b"one") + frame(b"two") + frame(b"") + frame(b"three")
    assert decoder.feed(data) == [b"one", b"two", b"", b"three"]


def test_bytes_outside_frames_are_discarded_and_counted() -> None:
    decoder = MllpFrameDecoder()
    data = b"noise" + frame(b"one") + b"\r\n" + frame(b"two") + b"tail"
    assert decoder.feed(data) == [b"one", b"two"]
    assert decoder.discarded_bytes == len(b"noise") + 2 + len(b"tail")


def test_lone_fs_inside_a_frame_is_content() -> None:
    decoder = MllpFrameDecoder()
    assert decoder.feed(b"\x0bA\x1cB\x1c\r") == [b"A\x1cB"]


def test_start_block_inside_a_frame_starts_over() -> None:
    decoder = MllpFrameDecoder()
    assert decoder.feed(b"\x0bhalf a mess") == []
    assert decoder.feed(b"age\x0bwhole\x1c\r") == [b"whole"]
    assert decoder.discarded_bytes == len(b"\x0bhalf a message")


def test_frame_at_the_limit_is_accepted() -> None:
    decoder = MllpFrameDecoder(max_message_bytes=10)
    assert decoder.feed(frame(b"x" * 10)) == [b"x" * 10]
    data = frame(b"y" * 10)
    assert feed_all(decoder, [data[i : i + 1] for i in range(len(data))]) == [b"y" * 10]


def test_oversized_frame_raises_before_its_end() -> None:
    decoder = MllpFrameDecoder(max_message_bytes=10)
    decoder.feed(b"\x0b" + b"x" * 10)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(b"x")
    assert caught.value.limit == 10
    assert caught.value.completed == ()
    assert decoder.pending_bytes == 0
    assert not decoder.in_frame


def test_oversized_frame_keeps_earlier_payloads_and_decoder_recovers() -> None:
    decoder = MllpFrameDecoder(max_message_bytes=10)
    with pytest.raises(FrameTooLarge) as caught:
        decoder.feed(frame(b"ok") + frame(b"z" * 11) + frame(b"lost"))
    assert caught.value.completed == (b"ok",)
    assert decoder.feed(frame(b"again")) == [b"again"]


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MllpFrameDecoder(max_message_bytes=0)


@given(
    messages=st.lists(st.tuples(interframe, payloads), max_size=8),
    tail=interframe,
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
)
def test_any_chunking_of_valid_frames_gives_exactly_the_payloads(
    messages: list[tuple[bytes, bytes]], tail: bytes, cuts: list[int]
) -> None:
    data = b"".join(noise + frame(payload) for noise, payload in messages) + tail
    decoder = MllpFrameDecoder()
    assert feed_all(decoder, split(data, cuts)) == [payload for _, payload in messages]
    assert decoder.discarded_bytes == sum(len(noise) for noise, _ in messages) + len(tail)


@given(data=garbage, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30))
def test_decoding_does_not_depend_on_chunking(data: bytes, cuts: list[int]) -> None:
    decoder = MllpFrameDecoder()
    assert feed_all(decoder, split(data, cuts)) == reference(data)


@settings(max_examples=500)
@given(
    chunks=st.lists(st.one_of(garbage, st.binary(max_size=200)), max_size=20),
    limit=st.integers(min_value=1, max_value=64),
)
def test_garbage_raises_nothing_but_frame_too_large(chunks: list[bytes], limit: int) -> None:
    decoder = MllpFrameDecoder(max_message_bytes=limit)
    for chunk in chunks:
        try:
            out = decoder.feed(chunk)
        except FrameTooLarge as exc:
            out = list(exc.completed)
        for payload in out:
            assert len(payload) <= limit
            assert START_BLOCK not in payload
            assert END_BLOCK not in payload
        assert decoder.pending_bytes <= limit + 1
