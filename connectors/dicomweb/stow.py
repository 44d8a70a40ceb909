"""STOW-RS (PS3.18 §10.5): instances sent as one streamed multipart/related request body,
and the per-instance outcome read back from the answer.

The body is an async generator that reads each file in 1 MiB pieces, so a batch of
whole-slide images never sits in memory; its length is computed up front from the file
sizes and sent as Content-Length, because many PACS refuse chunked request bodies.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydicom import dcmread

from connectors.dicomweb.errors import DicomWebError
from connectors.dicomweb.multipart import closing_delimiter, part_header
from connectors.dicomweb.results import StowFailure, StowResult

READ_SIZE = 1024 * 1024
DICOM = "application/dicom"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
_UID_KEYWORDS = ("SOPClassUID", "SOPInstanceUID")


@dataclass(frozen=True)
class StowItem:
    """One instance to send: a file, or bytes (an Envelope's payload)."""

    size: int
    path: Path | None = None
    data: bytes | None = None
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None

    @classmethod
    def from_path(cls, path: Path) -> StowItem:
        sop_class, sop_instance = _file_meta_uids(path)
        return cls(path.stat().st_size, path, None, sop_class, sop_instance)

    @classmethod
    def from_bytes(cls, data: bytes) -> StowItem:
        sop_class, sop_instance = _file_meta_uids(io.BytesIO(data))
        return cls(len(data), None, data, sop_class, sop_instance)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        assert self.path is not None
        sent = 0
        with self.path.open("rb") as source:
            while chunk := source.read(READ_SIZE):
                sent += len(chunk)
                yield chunk
        if sent != self.size:
            # The Content-Length already promised the old size: the request is now wrong.
            raise DicomWebError(f"{self.path.name} changed size while it was being sent")


@dataclass(frozen=True)
class StowRequest:
    """The body and headers of one STOW-RS request for a batch of items."""

    items: Sequence[StowItem]
    boundary: str

    @classmethod
    def of(cls, items: Sequence[StowItem]) -> StowRequest:
        return cls(items, f"soh-stow-{uuid.uuid4().hex}")

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Content-Type": f'multipart/related; type="{DICOM}"; boundary={self.boundary}',
            "Accept": "application/dicom+json",
            "Content-Length": str(self.content_length),
        }

    @property
    def content_length(self) -> int:
        framing = sum(
            len(part_header(self.boundary, DICOM, first=index == 0))
            for index in range(len(self.items))
        )
        closing = len(closing_delimiter(self.boundary, empty=not self.items))
        return framing + sum(item.size for item in self.items) + closing

    def body(self) -> Callable[[], AsyncIterator[bytes]]:
        """A factory of fresh bodies, one per attempt."""

        async def generate() -> AsyncIterator[bytes]:
            for index, item in enumerate(self.items):
                yield part_header(self.boundary, DICOM, first=index == 0)
                async for chunk in item.chunks():
                    yield chunk
            yield closing_delimiter(self.boundary, empty=not self.items)

        return generate


def read_stow_answer(
    answer: Any, items: Sequence[StowItem]
) -> tuple[list[str], list[StowFailure]] | None:
    """The stored SOP Instance UIDs and the failures of a STOW-RS answer (DICOM JSON), or
    None when it is not one. An item the answer names in neither sequence is a failure
    with no reason: the peer did not say it stored it."""
    if not isinstance(answer, dict):
        return None
    stored = [
        uid
        for item in _sequence(answer, REFERENCED_SOP_SEQUENCE)
        if (uid := _string(item, REFERENCED_SOP_INSTANCE_UID))
    ]
    by_uid = {item.sop_instance_uid: item for item in items if item.sop_instance_uid}
    failures: list[StowFailure] = []
    for failed in _sequence(answer, FAILED_SOP_SEQUENCE):
        uid = _string(failed, REFERENCED_SOP_INSTANCE_UID)
        reason = _first(failed, FAILURE_REASON)
        source = by_uid.get(uid) if uid else None
        failures.append(
            StowFailure(
                sop_class_uid=_string(failed, REFERENCED_SOP_CLASS_UID),
                sop_instance_uid=uid,
                failure_reason=int(reason) if isinstance(reason, int | float) else None,
                path=source.path if source else None,
            )
        )
    answered = set(stored) | {failure.sop_instance_uid for failure in failures}
    failures.extend(
        StowFailure(item.sop_class_uid, item.sop_instance_uid, None, item.path)
        for item in items
        if item.sop_instance_uid is None or item.sop_instance_uid not in answered
    )
    return stored, failures


def unanswered(items: Sequence[StowItem]) -> list[StowFailure]:
    """Failures with no reason for every item of a request the peer refused as a whole."""
    return [StowFailure(i.sop_class_uid, i.sop_instance_uid, None, i.path) for i in items]


def _file_meta_uids(source: Path | io.BytesIO) -> tuple[str | None, str | None]:
    try:
        ds = dcmread(source, stop_before_pixels=True, specific_tags=list(_UID_KEYWORDS))
    except Exception:
        # Not readable DICOM: sent anyway, so that the peer's own verdict is reported.
        return None, None
    meta = getattr(ds, "file_meta", None) or {}
    sop_class = meta.get("MediaStorageSOPClassUID") or ds.get("SOPClassUID")
    sop_instance = meta.get("MediaStorageSOPInstanceUID") or ds.get("SOPInstanceUID")
    return (str(sop_class) if sop_class else None, str(sop_instance) if sop_instance else None)


def _sequence(dataset: dict[str, Any], tag: str) -> list[dict[str, Any]]:
    element = dataset.get(tag)
    if not isinstance(element, dict):
        return []
    return [item for item in element.get("Value", []) if isinstance(item, dict)]


def _first(dataset: dict[str, Any], tag: str) -> Any:
    element = dataset.get(tag)
    if isinstance(element, dict):
        values = element.get("Value")
        if isinstance(values, list) and values:
            return values[0]
    return None


def _string(dataset: dict[str, Any], tag: str) -> str | None:
    value = _first(dataset, tag)
    return str(value) if value is not None else None


def stow_result(
    stored: list[str], failed: list[StowFailure], unsent: list[Path], codes: list[str]
) -> StowResult:
    accepted = not failed and not unsent
    worst = next((code for code in codes if code != "200"), codes[-1] if codes else "200")
    detail = f"{len(stored)} stored, {len(failed)} failed, {len(unsent)} unsent"
    reasons = sorted({f"0x{f.failure_reason:04X}" for f in failed if f.failure_reason})
    if reasons:
        detail += f" (failure reasons {', '.join(reasons)})"
    return StowResult(
        accepted=accepted,
        code=worst,
        detail=detail,
        retryable=bool(unsent) or any(failure.retryable for failure in failed),
        stored=tuple(stored),
        failed=tuple(failed),
        unsent=tuple(unsent),
    )


def answer_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
