"""The hub's own DICOMweb service (PS3.18): QIDO-RS search and WADO-RS retrieve of the
studies it holds, so that a viewer can open a case's imaging.

Only attached studies exist here: one still receiving, held for a case manager or rejected
answers 404 like an unknown one, and so does a study of a case the caller may not see (the
study's ImagingStudy decides, through the same AccessPolicy as the FHIR API). QIDO-RS needs
an ImagingStudy search scope, WADO-RS an ImagingStudy read scope. Each answer that hands
out patient data writes one AuditEvent naming the ImagingStudy.

Instances are served as reconciled (the hub's PatientID, the outside one kept in
OtherPatientIDsSequence), in the transfer syntax they arrived in, streamed from the file
store 1 MiB at a time.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import Response, StreamingResponse
from pydicom.datadict import tag_for_keyword
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from dicom.frames import FrameNotFound, read_frames
from dicom.instances import InstanceInfo, dicom_json, read_instance
from dicom.store import CHUNK_SIZE, ContentStore
from hub.api.deps import Caller, authenticate, hub_state, unit_of_work
from hub.errors import Forbidden, HubError, InvalidRequest, NotFound
from hub.fhir.interactions import FhirInteractions
from hub.imaging.attach import HUB_ISSUER
from hub.imaging.importer import info_from_json
from hub.runtime import dicom_store
from hub.security.audit import audit_event, write_audit_event
from hub.security.principal import Principal
from hub.storage.repository import StoredResource
from hub.storage.tables import DicomInstanceRow, DicomStudyRow, ResourceRow

DICOM_JSON = "application/dicom+json"
_MISSING = "The study is not known."  # the same words whether it is absent or not the caller's
_CHUNK_OF_STUDIES = 200


class NotAcceptable(HubError):
    """406: none of the Accept header's media types is one this resource is served in."""

    status_code = 406
    issue_code = "not-supported"


class DicomJsonResponse(Response):
    media_type = DICOM_JSON

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _scope(interaction: str) -> Callable[[Request, Principal], Principal]:
    def require(request: Request, caller: Caller) -> Principal:
        # Checked before anything is looked up, so that a token without the scope learns
        # nothing; inside a unit of work so that the refusal is audited like any other.
        with unit_of_work(request, caller) as fhir:
            if fhir.access is None:  # pragma: no cover - a caller always has a policy
                raise Forbidden("No access policy for this caller.")
            fhir.access.require("ImagingStudy", interaction)
        return caller

    return require


Searcher = Annotated[Principal, Depends(_scope("s"))]
Reader = Annotated[Principal, Depends(_scope("r"))]
router = APIRouter(prefix="/dicomweb", tags=["DICOMweb"], dependencies=[Depends(authenticate)])


def _query_parameters(*names: str) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in names
    ]
    for name in ("limit", "offset"):
        parameters.append(
            {"name": name, "in": "query", "required": False, "schema": {"type": "integer"}}
        )
    return {"parameters": parameters}


# -- QIDO-RS (PS3.18 10.6) -------------------------------------------------------------------


@router.get(
    "/studies",
    response_class=DicomJsonResponse,
    openapi_extra=_query_parameters(
        "PatientID", "StudyInstanceUID", "StudyDate", "ModalitiesInStudy", "AccessionNumber"
    ),
)
def search_studies(request: Request, caller: Searcher) -> DicomJsonResponse:
    """QIDO-RS: the attached studies the caller may see, at study level."""
    with unit_of_work(request, caller) as fhir:
        _require_json(request)
        query = _parse_query(request, _STUDY_KEYS)
        limit, offset, warnings = _paging(request, query)
        uids: list[str] = list(fhir.session.scalars(_visible_studies(fhir, query)))
        if not query.needs_instances:
            uids, offset = uids[offset : offset + limit + 1], 0
        found = _matching_summaries(fhir.session, uids, query, offset, limit + 1)
        page = found[:limit]
        what = [f"ImagingStudy/{s.imaging_study_id}" for s in page]
        what += sorted({f"Patient/{s.patient_id}" for s in page if s.patient_id})
        event = audit_event(
            caller, "search-type", [], query=f"dicomweb/studies?{request.url.query}", what=what
        )
        write_audit_event(fhir.repository, event)
    base = hub_state(request).settings.dicomweb_url
    if len(found) > limit:
        warnings.append("There are additional results that can be requested.")
    return DicomJsonResponse(
        [_study_attributes(s, base, dicom_store_of(request)) for s in page],
        headers=_warning(warnings),
    )


@router.get(
    "/studies/{study}/series",
    response_class=DicomJsonResponse,
    openapi_extra=_query_parameters("Modality", "SeriesInstanceUID"),
)
def search_series(request: Request, caller: Searcher, study: str) -> DicomJsonResponse:
    """QIDO-RS: the series of one study."""
    with unit_of_work(request, caller) as fhir:
        _require_json(request)
        query = _parse_query(request, _SERIES_KEYS)
        limit, offset, warnings = _paging(request, query)
        _, imaging = visible_study(fhir, study)
        series = _series_summaries(fhir.session, [study]).get(study, [])
        fhir.audited_export("search-type", [imaging])
    matching = [s for s in series if query.matches_series(s)]
    page = matching[offset : offset + limit]
    if len(matching) > offset + limit:
        warnings.append("There are additional results that can be requested.")
    base = hub_state(request).settings.dicomweb_url
    return DicomJsonResponse(
        [_series_attributes(study, s, base) for s in page], headers=_warning(warnings)
    )


@router.get(
    "/studies/{study}/series/{series}/instances",
    response_class=DicomJsonResponse,
    openapi_extra=_query_parameters("SOPInstanceUID", "SOPClassUID"),
)
def search_instances(
    request: Request, caller: Searcher, study: str, series: str
) -> DicomJsonResponse:
    """QIDO-RS: the instances of one series."""
    with unit_of_work(request, caller) as fhir:
        _require_json(request)
        query = _parse_query(request, _INSTANCE_KEYS)
        limit, offset, warnings = _paging(request, query)
        _, imaging = visible_study(fhir, study)
        rows = stored_instances(fhir.session, study, series)
        if not rows:
            raise NotFound("The series is not known.")
        fhir.audited_export("search-type", [imaging])
        infos = sorted(
            (info_from_json(row.info) for row in rows),
            key=lambda i: (i.instance_number is None, i.instance_number or 0, i.sop_instance_uid),
        )
    matching = [
        i
        for i in infos
        if query.matches("SOPInstanceUID", i.sop_instance_uid)
        and query.matches("SOPClassUID", i.sop_class_uid)
    ]
    page = matching[offset : offset + limit]
    if len(matching) > offset + limit:
        warnings.append("There are additional results that can be requested.")
    base = hub_state(request).settings.dicomweb_url
    return DicomJsonResponse(
        [_instance_attributes(i, base) for i in page], headers=_warning(warnings)
    )


# -- WADO-RS metadata (PS3.18 10.4, 10.4.1.1.2) --------------------------------------------------


@router.get("/studies/{study}/metadata", response_class=DicomJsonResponse)
def study_metadata(request: Request, caller: Reader, study: str) -> DicomJsonResponse:
    """WADO-RS: the DICOM JSON header of every instance of a study."""
    return _metadata(request, caller, study, None, None)


@router.get("/studies/{study}/series/{series}/metadata", response_class=DicomJsonResponse)
def series_metadata(request: Request, caller: Reader, study: str, series: str) -> DicomJsonResponse:
    """WADO-RS: the DICOM JSON header of every instance of a series."""
    return _metadata(request, caller, study, series, None)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/metadata",
    response_class=DicomJsonResponse,
)
def instance_metadata(
    request: Request, caller: Reader, study: str, series: str, instance: str
) -> DicomJsonResponse:
    """WADO-RS: the DICOM JSON header of one instance."""
    return _metadata(request, caller, study, series, instance)


def _metadata(
    request: Request, caller: Principal, study: str, series: str | None, instance: str | None
) -> DicomJsonResponse:
    with unit_of_work(request, caller) as fhir:
        _require_json(request)
        _, imaging = visible_study(fhir, study)
        rows = stored_instances(fhir.session, study, series, instance)
        if not rows:
            raise NotFound("The series or instance is not known.")
        served = [(row.series_uid, row.sop_instance_uid, row.digest or "") for row in rows]
        fhir.audited_export("read", [imaging])
    base = hub_state(request).settings.dicomweb_url
    store = dicom_store_of(request)
    models = []
    for series_uid, sop_uid, digest in served:
        ds, info = read_instance(store.path(digest))
        url = _instance_url(base, study, series_uid, sop_uid)
        models.append(dicom_json(ds, bulk_data_uri=url, pixel_data=info.pixel_data))
    return DicomJsonResponse(models)


# -- WADO-RS retrieve (PS3.18 10.4.1.1.1) ------------------------------------------------------


@router.get("/studies/{study}", response_class=StreamingResponse)
def retrieve_study(request: Request, caller: Reader, study: str) -> StreamingResponse:
    """WADO-RS: every instance of a study, as multipart/related application/dicom."""
    return _retrieve(request, caller, study, None, None)


@router.get("/studies/{study}/series/{series}", response_class=StreamingResponse)
def retrieve_series(request: Request, caller: Reader, study: str, series: str) -> StreamingResponse:
    """WADO-RS: every instance of a series, as multipart/related application/dicom."""
    return _retrieve(request, caller, study, series, None)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}", response_class=StreamingResponse
)
def retrieve_instance(
    request: Request, caller: Reader, study: str, series: str, instance: str
) -> StreamingResponse:
    """WADO-RS: one instance, as multipart/related application/dicom."""
    return _retrieve(request, caller, study, series, instance)


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    response_class=StreamingResponse,
)
def retrieve_frames(
    request: Request,
    caller: Reader,
    study: str,
    series: str,
    instance: str,
    frames: Annotated[str, PathParam(pattern=r"^[1-9][0-9]{0,6}(,[1-9][0-9]{0,6}){0,99}$")],
) -> StreamingResponse:
    """WADO-RS frames (what a viewer draws): each asked frame's pixel data, as stored."""
    return _frames(request, caller, study, series, instance, [int(n) for n in frames.split(",")])


@router.get(
    "/studies/{study}/series/{series}/instances/{instance}/7FE00010",
    response_class=StreamingResponse,
)
def retrieve_pixel_data(
    request: Request, caller: Reader, study: str, series: str, instance: str
) -> StreamingResponse:
    """The bulk data the metadata's Pixel Data BulkDataURI names: every frame."""
    return _frames(request, caller, study, series, instance, None)


def _frames(
    request: Request,
    caller: Principal,
    study: str,
    series: str,
    instance: str,
    numbers: list[int] | None,
) -> StreamingResponse:
    with unit_of_work(request, caller) as fhir:
        _, imaging = visible_study(fhir, study)
        rows = stored_instances(fhir.session, study, series, instance)
        digest = rows[0].digest if rows else None
        if digest is None:
            raise NotFound("The series or instance is not known.")
        row = rows[0]
        info = info_from_json(row.info)
        wanted = numbers or list(range(1, (info.number_of_frames or 1) + 1))
        path = dicom_store_of(request).path(digest)
        try:
            first = next(read_frames(path, wanted[:1]))  # refuse a wrong frame before streaming
        except FrameNotFound as exc:
            raise NotFound(f"No such frame: {exc}.") from exc
        fhir.audited_export("read", [imaging])
    boundary = uuid.uuid4().hex
    syntax = row.transfer_syntax_uid

    def parts() -> Iterator[bytes]:
        frames = chain([first], read_frames(path, wanted[1:])) if wanted[1:] else iter([first])
        for frame in frames:
            yield (
                f"--{boundary}\r\nContent-Type: application/octet-stream; "
                f"transfer-syntax={syntax}\r\nContent-Length: {len(frame)}\r\n\r\n"
            ).encode("ascii")
            yield frame
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode("ascii")

    return StreamingResponse(
        parts(),
        media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
    )


@dataclass(frozen=True)
class _Part:
    digest: str
    transfer_syntax: str
    location: str


def _retrieve(
    request: Request, caller: Principal, study: str, series: str | None, instance: str | None
) -> StreamingResponse:
    with unit_of_work(request, caller) as fhir:
        syntaxes = _retrieve_syntaxes(request)
        _, imaging = visible_study(fhir, study)
        rows = stored_instances(fhir.session, study, series, instance)
        if not rows:
            raise NotFound("The series or instance is not known.")
        offered = {row.transfer_syntax_uid for row in rows}
        if syntaxes is not None and not offered <= syntaxes:
            raise NotAcceptable(
                "The hub serves instances in the transfer syntax they arrived in "
                f"({', '.join(sorted(offered))}); ask for transfer-syntax=* or one of those."
            )
        base = hub_state(request).settings.dicomweb_url
        parts = [
            _Part(
                row.digest or "",
                row.transfer_syntax_uid,
                _instance_url(base, study, row.series_uid, row.sop_instance_uid),
            )
            for row in rows
        ]
        fhir.audited_export("read", [imaging])
    boundary = uuid.uuid4().hex
    return StreamingResponse(
        _multipart(dicom_store_of(request), parts, boundary),
        media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def _multipart(store: ContentStore, parts: Sequence[_Part], boundary: str) -> Iterator[bytes]:
    """RFC 2387 body, one file open at a time and read 1 MiB at a time (PS3.18 8.6.1.2)."""
    for part in parts:
        with store.open(part.digest) as file:
            size = os.fstat(file.fileno()).st_size
            yield (
                f"--{boundary}\r\n"
                f"Content-Type: application/dicom; transfer-syntax={part.transfer_syntax}\r\n"
                f"Content-Length: {size}\r\n"
                f"Content-Location: {part.location}\r\n\r\n"
            ).encode("ascii")
            while chunk := file.read(CHUNK_SIZE):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("ascii")


# -- which studies and instances ---------------------------------------------------------------


def visible_study(fhir: FhirInteractions, study_uid: str) -> tuple[DicomStudyRow, StoredResource]:
    """The attached study and its ImagingStudy, if the caller may see them; else NotFound."""
    study = fhir.session.get(DicomStudyRow, study_uid) if _UID.fullmatch(study_uid) else None
    if study is None or study.status != "attached" or not study.imaging_study_id:
        raise NotFound(_MISSING)
    imaging = fhir.repository.find("ImagingStudy", study.imaging_study_id)
    if imaging is None or not fhir.may_read(imaging):
        raise NotFound(_MISSING)
    return study, imaging


def _visible_studies(fhir: FhirInteractions, query: _Query) -> Select[Any]:
    """The UIDs of the attached studies the caller may see, filtered on the study row."""
    statement = (
        select(DicomStudyRow.study_uid)
        .join(
            ResourceRow,
            and_(
                ResourceRow.res_type == "ImagingStudy",
                ResourceRow.res_id == DicomStudyRow.imaging_study_id,
            ),
        )
        .where(DicomStudyRow.status == "attached", ResourceRow.deleted.is_(False))
        .order_by(DicomStudyRow.created_at, DicomStudyRow.study_uid)
    )
    if fhir.access is not None:
        statement = statement.where(fhir.access.visible("ImagingStudy"))
    if query.values.get("StudyInstanceUID"):
        statement = statement.where(DicomStudyRow.study_uid.in_(query.values["StudyInstanceUID"]))
    patient_ids = query.values.get("PatientID")
    if patient_ids:
        statement = statement.where(
            or_(*[DicomStudyRow.patient_id.like(_like(v), escape="\\") for v in patient_ids])
        )
    return statement


def stored_instances(
    session: Session, study: str, series: str | None = None, instance: str | None = None
) -> list[DicomInstanceRow]:
    if any(uid is not None and not _UID.fullmatch(uid) for uid in (series, instance)):
        return []
    statement = select(DicomInstanceRow).where(
        DicomInstanceRow.study_uid == study, DicomInstanceRow.digest.is_not(None)
    )
    if series is not None:
        statement = statement.where(DicomInstanceRow.series_uid == series)
    if instance is not None:
        statement = statement.where(DicomInstanceRow.sop_instance_uid == instance)
    order = (DicomInstanceRow.series_uid, DicomInstanceRow.sop_instance_uid)
    return list(session.scalars(statement.order_by(*order)))


def dicom_store_of(request: Request) -> ContentStore:
    importer = getattr(request.app.state, "dicom_importer", None)
    if importer is not None:
        store: ContentStore = importer.store
        return store
    return dicom_store(hub_state(request).settings)


# -- summaries: what QIDO-RS answers, from the instances' info ----------------------------------


@dataclass(frozen=True)
class _Series:
    uid: str
    instances: int
    first: InstanceInfo  # one instance's: its series' and study's values are shared
    first_digest: str


@dataclass(frozen=True)
class _Study:
    uid: str
    patient_id: str | None
    imaging_study_id: str
    series: list[_Series]

    @property
    def modalities(self) -> list[str]:
        return sorted({s.first.modality for s in self.series if s.first.modality})


def _series_summaries(session: Session, study_uids: Sequence[str]) -> dict[str, list[_Series]]:
    """Per study, its series: instance counts and one instance's info each (two queries)."""
    counted = session.execute(
        select(
            DicomInstanceRow.study_uid,
            DicomInstanceRow.series_uid,
            func.min(DicomInstanceRow.sop_instance_uid),
            func.count(),
        )
        .where(DicomInstanceRow.study_uid.in_(study_uids), DicomInstanceRow.digest.is_not(None))
        .group_by(DicomInstanceRow.study_uid, DicomInstanceRow.series_uid)
    ).all()
    firsts = {
        row.sop_instance_uid: row
        for row in session.scalars(
            select(DicomInstanceRow).where(
                DicomInstanceRow.sop_instance_uid.in_([c[2] for c in counted])
            )
        )
    }
    found: dict[str, list[_Series]] = {}
    for study_uid, series_uid, first_uid, count in counted:
        row = firsts[first_uid]
        info = info_from_json(row.info)
        found.setdefault(study_uid, []).append(_Series(series_uid, count, info, row.digest or ""))
    for series in found.values():
        series.sort(
            key=lambda s: (s.first.series_number is None, s.first.series_number or 0, s.uid)
        )
    return found


def _matching_summaries(
    session: Session, uids: Sequence[str], query: _Query, skip: int, wanted: int
) -> list[_Study]:
    """Up to `wanted` studies of `uids` that match `query`, after skipping `skip` matches;
    read in chunks, so that a filter on the instances' values never loads every study."""
    found: list[_Study] = []
    for start in range(0, len(uids), _CHUNK_OF_STUDIES):
        chunk = uids[start : start + _CHUNK_OF_STUDIES]
        rows = {
            row.study_uid: row
            for row in session.scalars(
                select(DicomStudyRow).where(DicomStudyRow.study_uid.in_(chunk))
            )
        }
        series = _series_summaries(session, chunk)
        for uid in chunk:
            if uid not in series:
                continue
            study = _Study(uid, rows[uid].patient_id, rows[uid].imaging_study_id or "", series[uid])
            if not query.matches_study(study):
                continue
            if skip:
                skip -= 1
                continue
            found.append(study)
            if len(found) >= wanted:
                return found
    return found


# -- matching (PS3.18 8.3.4, PS3.4 C.2.2.2) ------------------------------------------------------

_STUDY_KEYS = (
    "PatientID",
    "StudyInstanceUID",
    "StudyDate",
    "ModalitiesInStudy",
    "AccessionNumber",
)
_SERIES_KEYS = ("Modality", "SeriesInstanceUID")
_INSTANCE_KEYS = ("SOPInstanceUID", "SOPClassUID")
_CONTROL_KEYS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_DATE = re.compile(r"\d{8}")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # PS3.5 9.1; anything else cannot name a study
_TAG = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass(frozen=True)
class _Query:
    values: dict[str, list[str]]
    dates: tuple[str, str] | None
    ignored: list[str]

    @property
    def needs_instances(self) -> bool:
        return bool(
            self.dates or self.values.get("ModalitiesInStudy") or self.values.get("AccessionNumber")
        )

    def matches(self, keyword: str, value: str | None) -> bool:
        wanted = self.values.get(keyword)
        if not wanted:
            return True  # universal matching
        return value is not None and any(re.fullmatch(_wildcard(w), value) for w in wanted)

    def matches_study(self, study: _Study) -> bool:
        first = study.series[0].first
        if self.dates is not None:
            low, high = self.dates
            date = first.study_date or ""
            if not _DATE.fullmatch(date) or not (low or date) <= date <= (high or date):
                return False
        modalities = self.values.get("ModalitiesInStudy")
        if modalities and not set(modalities) & set(study.modalities):
            return False
        return self.matches("AccessionNumber", first.accession_number)

    def matches_series(self, series: _Series) -> bool:
        return self.matches("Modality", series.first.modality) and self.matches(
            "SeriesInstanceUID", series.uid
        )


def _parse_query(request: Request, keywords: Sequence[str]) -> _Query:
    """The matching keys this level supports, by keyword or tag; other DICOM attributes are
    ignored with a warning (PS3.18 8.3.4.1), a key that is none is refused."""
    by_tag = {f"{tag_for_keyword(k):08X}": k for k in keywords}
    values: dict[str, list[str]] = {}
    ignored: list[str] = []
    for key, value in request.query_params.multi_items():
        if not key or key in _CONTROL_KEYS:
            continue
        if "\x00" in value:
            raise InvalidRequest(f"The value of {key} holds a NUL character.", expression=key)
        keyword = key if key in keywords else by_tag.get(key.upper())
        if keyword is None:
            if tag_for_keyword(key) is None and not _TAG.fullmatch(key):
                raise InvalidRequest(
                    f"'{key}' is neither a DICOM attribute nor a QIDO-RS parameter.",
                    expression=key,
                )
            ignored.append(key)
            continue
        # UID and CS lists may come as one comma-separated value (PS3.18 8.3.4.1).
        values.setdefault(keyword, []).extend(v for v in value.split(",") if v)
    dates = None
    for text in values.pop("StudyDate", []):
        low, dash, high = text.partition("-")
        if any(part and not _DATE.fullmatch(part) for part in (low, high)) or not (low or high):
            raise InvalidRequest(
                "StudyDate is a date YYYYMMDD or a range YYYYMMDD-YYYYMMDD (either end may be "
                "left open).",
                expression="StudyDate",
            )
        dates = (low, high if dash else low)
    return _Query(values, dates, ignored)


def _like(value: str) -> str:
    """A DICOM wild card value as a LIKE pattern (escape character backslash)."""
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _wildcard(value: str) -> str:
    """A DICOM wild card value (* any run, ? one character) as a regular expression."""
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value)


def _paging(request: Request, query: _Query) -> tuple[int, int, list[str]]:
    """limit and offset (PS3.18 8.3.4.4), and the warnings the answer carries."""
    settings = hub_state(request).settings
    numbers = []
    for name, default in (("limit", settings.max_page_size), ("offset", 0)):
        raw = request.query_params.get(name)
        if raw is None:
            numbers.append(default)
        elif raw.isdigit() and len(raw) < 10 and int(raw) >= (name == "limit"):
            numbers.append(int(raw))
        else:
            raise InvalidRequest(f"{name} must be a whole number.", expression=name)
    limit, offset = numbers
    warnings = []
    if limit > settings.max_page_size:
        warnings.append(f"The limit was lowered to {settings.max_page_size}.")
        limit = settings.max_page_size
    if request.query_params.get("fuzzymatching", "").lower() == "true":
        warnings.append("Fuzzy matching is not supported: only literal matching was done.")
    if query.ignored:
        warnings.append(f"Not supported for matching, ignored: {', '.join(query.ignored)}.")
    return limit, offset, warnings


def _warning(texts: list[str]) -> dict[str, str]:
    # PS3.18 8.3.4.1 and 8.3.4.2: the origin server says what it ignored or left out.
    if not texts:
        return {}
    return {"Warning": ", ".join(f'299 hub: "{t}"' for t in texts)}


# -- content negotiation (PS3.18 8.7) ----------------------------------------------------------

_SPLIT_COMMAS = re.compile(r',(?=(?:[^"]*"[^"]*")*[^"]*$)')
_JSON_RANGES = frozenset(
    {("application", "dicom+json"), ("application", "json"), ("application", "*"), ("*", "*")}
)


@dataclass(frozen=True)
class _MediaRange:
    type: str
    subtype: str
    parameters: dict[str, str]


def _media_ranges(request: Request) -> list[_MediaRange]:
    """The Accept header's media ranges, those with q=0 left out; */* without one."""
    header = request.headers.get("accept", "").strip()
    if not header:
        return [_MediaRange("*", "*", {})]
    ranges = []
    for item in _SPLIT_COMMAS.split(header):
        main, *pairs = item.split(";")
        kind, slash, subtype = main.strip().lower().partition("/")
        parameters = {}
        for pair in pairs:
            name, _, value = pair.partition("=")
            parameters[name.strip().lower()] = value.strip().strip('"')
        try:
            weight = float(parameters.pop("q", "1"))
        except ValueError:
            weight = 0.0
        if slash and weight > 0:
            ranges.append(_MediaRange(kind, subtype.strip(), parameters))
    return ranges


def _require_json(request: Request) -> None:
    if not any((r.type, r.subtype) in _JSON_RANGES for r in _media_ranges(request)):
        raise NotAcceptable(f"This resource is served as {DICOM_JSON} only.")


def _retrieve_syntaxes(request: Request) -> frozenset[str] | None:
    """The transfer syntaxes the caller accepts for instances; None: any (as stored)."""
    wanted: set[str] = set()
    for media in _media_ranges(request):
        if (media.type, media.subtype) in (("*", "*"), ("multipart", "*")):
            return None
        part_type = media.parameters.get("type", "application/dicom").lower()
        if (media.type, media.subtype) == ("multipart", "related") and (
            part_type == "application/dicom"
        ):
            syntax = media.parameters.get("transfer-syntax", "*")
            if syntax == "*":
                return None
            wanted.add(syntax)
    if not wanted:
        raise NotAcceptable(
            'Instances are served as multipart/related; type="application/dicom" only.'
        )
    return frozenset(wanted)


# -- the DICOM JSON model of QIDO-RS answers (PS3.18 F.2, Tables 10.6.3-3 to -5) ----------------


def _attribute(vr: str, *values: Any) -> dict[str, Any]:
    present = [v for v in values if v not in (None, "")]
    if vr == "PN":
        present = [{"Alphabetic": str(v)} for v in present]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


def _model(attributes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return dict(sorted(attributes.items()))


def _study_url(base: str, study: str) -> str:
    return f"{base}/studies/{quote(study, safe='.')}"


def _instance_url(base: str, study: str, series: str, instance: str) -> str:
    series_url = f"{_study_url(base, study)}/series/{quote(series, safe='.')}"
    return f"{series_url}/instances/{quote(instance, safe='.')}"


def _study_attributes(study: _Study, base: str, store: ContentStore) -> dict[str, Any]:
    first = study.series[0]
    # The patient's values as served: read from a reconciled instance, not the received one.
    _, served = read_instance(store.path(first.first_digest))
    info = first.first
    return _model(
        {
            "00080005": _attribute("CS", "ISO_IR 192"),
            "00080020": _attribute("DA", info.study_date),
            "00080030": _attribute("TM", info.study_time),
            "00080050": _attribute("SH", info.accession_number),
            "00080056": _attribute("CS", "ONLINE"),
            "00080061": _attribute("CS", *study.modalities),
            "00081030": _attribute("LO", info.study_description),
            "00081190": _attribute("UR", _study_url(base, study.uid)),
            "00100010": _attribute("PN", served.patient_name),
            "00100020": _attribute("LO", served.patient_id),
            "00100021": _attribute("LO", served.issuer_of_patient_id or HUB_ISSUER),
            "00100030": _attribute("DA", served.patient_birth_date),
            "00100040": _attribute("CS", served.patient_sex),
            "0020000D": _attribute("UI", study.uid),
            "00201206": _attribute("IS", len(study.series)),
            "00201208": _attribute("IS", sum(s.instances for s in study.series)),
        }
    )


def _series_attributes(study: str, series: _Series, base: str) -> dict[str, Any]:
    info = series.first
    return _model(
        {
            "00080005": _attribute("CS", "ISO_IR 192"),
            "00080056": _attribute("CS", "ONLINE"),
            "00080060": _attribute("CS", info.modality),
            "0008103E": _attribute("LO", info.series_description),
            "00081190": _attribute(
                "UR", f"{_study_url(base, study)}/series/{quote(series.uid, safe='.')}"
            ),
            "00180015": _attribute("CS", info.body_part_examined),
            "0020000D": _attribute("UI", study),
            "0020000E": _attribute("UI", series.uid),
            "00200011": _attribute("IS", info.series_number),
            "00201209": _attribute("IS", series.instances),
        }
    )


def _instance_attributes(info: InstanceInfo, base: str) -> dict[str, Any]:
    return _model(
        {
            "00080016": _attribute("UI", info.sop_class_uid),
            "00080018": _attribute("UI", info.sop_instance_uid),
            "00080056": _attribute("CS", "ONLINE"),
            "00080060": _attribute("CS", info.modality),
            "00081190": _attribute(
                "UR",
                _instance_url(
                    base,
                    info.study_instance_uid,
                    info.series_instance_uid,
                    info.sop_instance_uid,
                ),
            ),
            "00083002": _attribute("UI", info.transfer_syntax_uid),
            "0020000D": _attribute("UI", info.study_instance_uid),
            "0020000E": _attribute("UI", info.series_instance_uid),
            "00200013": _attribute("IS", info.instance_number),
            "00280008": _attribute("IS", info.number_of_frames),
        }
    )
