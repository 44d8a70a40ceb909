"""The incremental multipart/related parser: any chunking of a body gives the same parts,
CRLF or bare LF, with or without preamble and epilogue, parts far larger than a chunk."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.dicomweb.errors import MultipartError, MultipartTruncated
from connectors.dicomweb.multipart import (
    MultipartParser,
    PartData,
    PartEnded,
    PartStarted,
    closing_delimiter,
    multipart_boundary,
    part_header,
)

BOUNDARY = "72f01828-5790-4207-be39-8a7af410111a"


def body_of(
    parts: list[bytes],
    *,
    boundary: str = BOUNDARY,
    newline: bytes = b"\r\n",
    preamble: bytes = b"",
    epilogue: bytes = b"",
    headers: bytes = b"Content-Type: application/dicom",
) -> bytes:
    out = bytearray(preamble)
    if preamble:
        out += newline
    mark = b"--" + boundary.encode()
    for index, part in enumerate(parts):
        if index:
            out += newline
        out += mark + newline + headers + newline + newline + part
    out += (newline if parts else b"") + mark + b"--" + newline + epilogue
    return bytes(out)


def parse(
    body: bytes, cuts: list[int], boundary: str = BOUNDARY
) -> list[tuple[dict[str, str], bytes]]:
    """Feed `body` split at `cuts`; the parts with their headers. Checks that the events
    come in a legal order and that no single event holds more than its chunk could."""
    parser = MultipartParser(boundary)
    parts: list[tuple[dict[str, str], bytes]] = []
    current: tuple[dict[str, str], bytearray] | None = None
    edges = [0, *sorted(set(c for c in cuts if 0 < c < len(body))), len(body)]
    for start, end in zip(edges, edges[1:], strict=False):
        chunk = body[start:end]
        for event in parser.feed(chunk):
            if isinstance(event, PartStarted):
                assert current is None
                current = (dict(event.headers), bytearray())
            elif isinstance(event, PartData):
                assert current is not None
                assert event.data
                # Never more than this chunk plus what was held back for a delimiter.
                assert len(event.data) <= len(chunk) + len(BOUNDARY) + 4
                current[1].extend(event.data)
            else:
                assert isinstance(event, PartEnded) and current is not None
                parts.append((current[0], bytes(current[1])))
                current = None
    parser.finish()
    assert current is None
    return parts


def bodies(parts: list[tuple[dict[str, str], bytes]]) -> list[bytes]:
    return [data for _, data in parts]


def test_one_chunk_two_parts_with_headers() -> None:
    body = body_of([b"first", b"second part"])
    parts = parse(body, [])
    assert bodies(parts) == [b"first", b"second part"]
    assert parts[0][0] == {"content-type": "application/dicom"}


def test_every_single_split_point_gives_the_same_parts() -> None:
    payloads = [b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n", b"x\r", b"\n-"]
    body = body_of(payloads, preamble=b"preamble text", epilogue=b"epilogue\r\n")
    for cut in range(len(body) + 1):
        assert bodies(parse(body, [cut])) == payloads, cut


def test_byte_by_byte() -> None:
    payloads = [bytes(range(256)) * 3, b"", b"--"]
    body = body_of(payloads)
    assert bodies(parse(body, list(range(len(body))))) == payloads


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"], ids=["CRLF", "LF"])
def test_preamble_and_epilogue_are_skipped(newline: bytes) -> None:
    body = body_of(
        [b"a", b"b"],
        newline=newline,
        preamble=b"This is a multi-part message." + newline + b"--not-the-boundary",
        epilogue=b"ignored" + newline + b"--" + BOUNDARY.encode() + newline + b"still ignored",
    )
    assert bodies(parse(body, [7, 40, 41, 90])) == [b"a", b"b"]


def test_mixed_newlines_and_transport_padding() -> None:
    mark = b"--" + BOUNDARY.encode()
    body = (
        mark
        + b"  \t\r\nContent-Type: application/dicom\n\n"
        + b"one"
        + b"\n"
        + mark
        + b" \nContent-Type: application/dicom\r\n\r\n"
        + b"two"
        + b"\r\n"
        + mark
        + b"--"
    )
    assert bodies(parse(body, [len(mark) + 1, 60])) == [b"one", b"two"]


def test_a_part_far_larger_than_any_chunk() -> None:
    rng = random.Random(5)
    big = rng.randbytes(3 * 1024 * 1024 + 17)
    body = body_of([big, b"tail"])
    cuts = list(range(0, len(body), 65_536))
    assert bodies(parse(body, cuts)) == [big, b"tail"]


def test_the_parser_holds_back_only_a_delimiter_worth() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(b"--" + BOUNDARY.encode() + b"\r\n\r\n")
    events = parser.feed(b"x" * 100_000)
    received = sum(len(event.data) for event in events if isinstance(event, PartData))
    assert received >= 100_000 - len(BOUNDARY) - 4


def test_headers_are_case_insensitive_and_folded() -> None:
    body = body_of(
        [b"data"],
        headers=b"CONTENT-TYPE: application/dicom\r\nContent-Location: /a\r\n  /b\r\nX-Empty:",
    )
    headers, data = parse(body, [3])[0]
    assert data == b"data"
    assert headers == {
        "content-type": "application/dicom",
        "content-location": "/a /b",
        "x-empty": "",
    }


def test_a_part_without_headers() -> None:
    mark = b"--" + BOUNDARY.encode()
    body = mark + b"\r\n\r\nno headers\r\n" + mark + b"--\r\n"
    assert parse(body, []) == [({}, b"no headers")]


def test_an_empty_multipart_body() -> None:
    assert parse(b"--" + BOUNDARY.encode() + b"--\r\n", [1]) == []


def test_a_body_cut_before_its_closing_delimiter_is_truncated() -> None:
    body = body_of([b"complete", b"incomplete part"])
    cut = body.index(b"incomplete") + 4
    parser = MultipartParser(BOUNDARY)
    events = parser.feed(body[:cut])
    assert sum(isinstance(event, PartEnded) for event in events) == 1
    assert parser.in_part
    with pytest.raises(MultipartTruncated, match="after 1 complete part"):
        parser.finish()


def test_a_body_cut_inside_the_closing_delimiter_is_truncated() -> None:
    body = body_of([b"only"])
    parser = MultipartParser(BOUNDARY)
    parser.feed(body[:-3])
    with pytest.raises(MultipartTruncated):
        parser.finish()


def test_garbage_after_a_boundary_is_refused() -> None:
    mark = b"--" + BOUNDARY.encode()
    with pytest.raises(MultipartError, match="more than the boundary"):
        MultipartParser(BOUNDARY).feed(mark + b"-extra\r\n\r\ndata")


def test_oversized_part_headers_are_refused() -> None:
    parser = MultipartParser(BOUNDARY, max_header_bytes=100)
    with pytest.raises(MultipartError, match="exceed 100 bytes"):
        parser.feed(b"--" + BOUNDARY.encode() + b"\r\nX: " + b"y" * 200)


def test_boundary_from_content_type() -> None:
    assert (
        multipart_boundary(f'multipart/related; type="application/dicom"; boundary={BOUNDARY}')
        == BOUNDARY
    )
    assert (
        multipart_boundary('Multipart/Related; boundary="a b:c"; type=application/dicom') == "a b:c"
    )
    with pytest.raises(MultipartError, match="expected multipart/related"):
        multipart_boundary("application/dicom+json")
    with pytest.raises(MultipartError, match="no boundary"):
        multipart_boundary('multipart/related; type="application/dicom"')


def test_what_the_writer_frames_the_parser_reads() -> None:
    payloads = [b"\x00" * 10, b"DICM" * 3]
    body = b"".join(
        part_header(BOUNDARY, "application/dicom", first=index == 0) + payload
        for index, payload in enumerate(payloads)
    ) + closing_delimiter(BOUNDARY)
    assert bodies(parse(body, [5, 50])) == payloads
    assert parse(closing_delimiter(BOUNDARY, empty=True), []) == []


# Bytes that look like pieces of a delimiter are the hard cases: draw them often.
_tricky = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b"-", b"--", b"--" + BOUNDARY[:10].encode(), BOUNDARY[:-1].encode()]
)
_payload = st.lists(st.one_of(st.binary(max_size=64), _tricky), max_size=12).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(_payload, max_size=6),
    newline=st.sampled_from([b"\r\n", b"\n"]),
    preamble=st.binary(max_size=40).filter(lambda b: b"--" not in b),
    epilogue=st.binary(max_size=40),
    data=st.data(),
)
def test_any_chunking_gives_the_parts_back(
    payloads: list[bytes], newline: bytes, preamble: bytes, epilogue: bytes, data: st.DataObject
) -> None:
    # RFC 2046 forbids the delimiter inside a part; a bare-LF body cannot end a part in CR.
    payloads = [
        p
        for p in payloads
        if b"\n--" + BOUNDARY.encode() not in p and not (newline == b"\n" and p.endswith(b"\r"))
    ]
    body = body_of(payloads, newline=newline, preamble=preamble, epilogue=epilogue)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(body)), max_size=30))
    assert bodies(parse(body, cuts)) == payloads
