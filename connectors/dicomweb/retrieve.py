"""WADO-RS answers streamed part by part to staged files.

Each part of the multipart/related answer goes to a fresh staging path as its bytes
arrive; once it ends, its UIDs are read from its header and `on_instance(path)` takes it
over. A transfer that breaks leaves the completed instances handed over, the partial one
removed, and a RetrieveInterrupted that lists what was complete.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

import httpx
from pydicom import dcmread

from connectors.dicomweb.errors import MultipartTruncated, RetrieveInterrupted
from connectors.dicomweb.multipart import (
    MultipartParser,
    PartData,
    PartEnded,
    PartStarted,
    multipart_boundary,
)
from connectors.dicomweb.results import RetrievedInstance, RetrieveResult

logger = logging.getLogger(__name__)

Staging = Callable[[], Path]
"""Gives a new, unused path to stream one instance into (ContentStore.staging_file)."""
OnInstance = Callable[[Path], Awaitable[None]]
"""Takes over one complete staged instance (moves, validates or deletes it)."""

_UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class _StagedPart:
    """The part being written: its path, open file and size so far."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = path.open("wb")
        self.size = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


async def stream_instances(
    response: httpx.Response,
    staging: Staging,
    on_instance: OnInstance,
    *,
    operation: str,
) -> RetrieveResult:
    """Read a streamed multipart/related `response` to its end, one staged file per part.

    Closes the response. Raises RetrieveInterrupted when the transfer breaks or ends
    before the closing delimiter; MultipartError (a DicomWebProtocolError) for an answer
    that is not multipart/related or breaks RFC 2046; whatever `on_instance` raises.
    """
    completed: list[RetrievedInstance] = []
    current: _StagedPart | None = None
    try:
        parser = MultipartParser(multipart_boundary(response.headers.get("content-type", "")))
        try:
            async for chunk in response.aiter_bytes():
                for event in parser.feed(chunk):
                    if isinstance(event, PartStarted):
                        current = _StagedPart(staging())
                    elif isinstance(event, PartData) and current is not None:
                        current.write(event.data)
                    elif isinstance(event, PartEnded) and current is not None:
                        part, current = current, None
                        part.file.close()
                        instance = _described(part.path, part.size)
                        completed.append(instance)
                        await on_instance(part.path)
                if parser.complete:
                    break
            parser.finish()
        except (httpx.RequestError, MultipartTruncated) as exc:
            raise RetrieveInterrupted(
                f"{operation} broke after {len(completed)} complete instance(s) "
                f"({type(exc).__name__})",
                completed,
            ) from exc
    finally:
        if current is not None:
            current.discard()
        await response.aclose()
    return RetrieveResult(tuple(completed))


def _described(path: Path, size: int) -> RetrievedInstance:
    uids: dict[str, str | None] = dict.fromkeys(_UID_TAGS)
    # Any failure to read the header only means the UIDs are unknown: whether the file is
    # acceptable DICOM is for the caller's validation to say, with its reason.
    with contextlib.suppress(Exception):
        ds = dcmread(path, stop_before_pixels=True, specific_tags=list(_UID_TAGS))
        for keyword in _UID_TAGS:
            value = ds.get(keyword)
            uids[keyword] = str(value) if value else None
    return RetrievedInstance(
        path=path,
        size=size,
        sop_instance_uid=uids["SOPInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
    )
