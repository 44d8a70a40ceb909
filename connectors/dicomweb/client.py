"""The DICOMweb client of one outside PACS: QIDO-RS, WADO-RS, STOW-RS (PS3.18).

    async with DicomWebClient(source) as pacs:
        studies = await pacs.search_studies(patient_id="123", issuer_of_patient_id="HOSP")
        await pacs.retrieve_study(uid, store.staging_file, take_instance)

Searches return DICOM JSON (PS3.18 F.2) as dicts. Retrieves stream each instance to a
staged file (see retrieve.py); stores stream files out (see stow.py). The client is also a
Connector: `deliver` sends an Envelope's payload (one Part 10 instance) by STOW-RS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from connectors.base import ConnectorHealth, DeliveryResult, Envelope
from connectors.dicomweb.config import DicomWebSource
from connectors.dicomweb.errors import (
    DicomWebError,
    DicomWebHttpError,
    DicomWebProtocolError,
    DicomWebUnavailable,
)
from connectors.dicomweb.qido import (
    QueryValue,
    dicom_json_list,
    first_value,
    patient_keys,
    query_string,
)
from connectors.dicomweb.results import RetrievedInstance, RetrieveResult, StowFailure, StowResult
from connectors.dicomweb.retrieve import OnInstance, Staging, stream_instances
from connectors.dicomweb.session import DicomWebSession, Sleep
from connectors.dicomweb.stow import (
    StowItem,
    StowRequest,
    answer_json,
    read_stow_answer,
    stow_result,
    unanswered,
)

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
# "transfer-syntax=*" asks for each instance as stored (PS3.18 §8.7.3.5.2): no
# transcoding by the peer, pixel data byte for byte.
AS_STORED = "*"
QIDO_PAGE = 500
# STOW-RS statuses that come with a per-instance answer worth reading (PS3.18 §10.5.3):
# 409 when every instance failed, 400 from peers that use it so.
STOW_ANSWERED = frozenset({400, 409})
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"


class DicomWebClient:
    """QIDO-RS, WADO-RS and STOW-RS against one DicomWebSource.

    `transport`, `sleep` and `environ` are for tests (see DicomWebSession). Raises
    MissingSecret when the source's secret variable is unset. Close it with `aclose()` or
    use it as an async context manager.
    """

    def __init__(
        self,
        source: DicomWebSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.source = source
        self.name = source.name
        self._session = DicomWebSession(source, transport=transport, sleep=sleep, environ=environ)

    async def __aenter__(self) -> DicomWebClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._session.aclose()

    # -- Connector --------------------------------------------------------------------

    async def health(self) -> ConnectorHealth:
        """One cheap QIDO (`/studies?limit=1`), one attempt: healthy when it answers 2xx."""
        try:
            await self._qido("/studies", {}, (), limit=1, attempts=1)
        except DicomWebError as exc:
            return ConnectorHealth(False, str(exc))
        return ConnectorHealth(True, "QIDO-RS answers")

    async def deliver(self, envelope: Envelope) -> DeliveryResult:
        """STOW-RS of the envelope's payload, one Part 10 instance."""
        return await self._store([StowItem.from_bytes(envelope.payload)], None)

    # -- QIDO-RS ----------------------------------------------------------------------

    async def search_studies(
        self,
        *,
        patient_id: str | None = None,
        issuer_of_patient_id: str | None = None,
        patient_name: str | None = None,
        patient_birth_date: str | None = None,
        includefield: Iterable[str] = (),
        limit: int | None = None,
        offset: int | None = None,
        fuzzymatching: bool | None = None,
        **filters: QueryValue,
    ) -> list[dict[str, Any]]:
        """Studies matching the query, as DICOM JSON objects (PS3.18 §10.6).

        Patient matching: `patient_id` with `issuer_of_patient_id`, or `patient_name`
        (PN, `^` between components, `*` wildcards) with `patient_birth_date`
        (YYYYMMDD, or a range). `filters` adds any attribute by keyword or tag
        (`ModalitiesInStudy="MR"`, `StudyDate="20240101-20240331"`, `00080050="A1"`);
        `includefield` asks for more attributes (keywords or tags, or "all").
        `limit` and `offset` page through large answers. Raises ValueError for an
        unknown attribute, and the DicomWebError subclasses.
        """
        query = patient_keys(patient_id, issuer_of_patient_id, patient_name, patient_birth_date)
        return await self._qido(
            "/studies", {**query, **filters}, includefield, limit, offset, fuzzymatching
        )

    async def search_series(
        self,
        study_instance_uid: str | None = None,
        *,
        patient_id: str | None = None,
        issuer_of_patient_id: str | None = None,
        patient_name: str | None = None,
        patient_birth_date: str | None = None,
        includefield: Iterable[str] = (),
        limit: int | None = None,
        offset: int | None = None,
        fuzzymatching: bool | None = None,
        **filters: QueryValue,
    ) -> list[dict[str, Any]]:
        """Series matching the query, within one study when `study_instance_uid` is given
        (otherwise across studies). Parameters as for `search_studies`."""
        path = f"/studies/{study_instance_uid}/series" if study_instance_uid else "/series"
        query = patient_keys(patient_id, issuer_of_patient_id, patient_name, patient_birth_date)
        return await self._qido(
            path, {**query, **filters}, includefield, limit, offset, fuzzymatching
        )

    async def search_instances(
        self,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        *,
        patient_id: str | None = None,
        issuer_of_patient_id: str | None = None,
        patient_name: str | None = None,
        patient_birth_date: str | None = None,
        includefield: Iterable[str] = (),
        limit: int | None = None,
        offset: int | None = None,
        fuzzymatching: bool | None = None,
        **filters: QueryValue,
    ) -> list[dict[str, Any]]:
        """Instances matching the query, within a study, or a series of a study, when
        given. Parameters as for `search_studies`."""
        if series_instance_uid and not study_instance_uid:
            raise ValueError("a series UID needs its study UID")
        if study_instance_uid and series_instance_uid:
            path = f"/studies/{study_instance_uid}/series/{series_instance_uid}/instances"
        elif study_instance_uid:
            path = f"/studies/{study_instance_uid}/instances"
        else:
            path = "/instances"
        query = patient_keys(patient_id, issuer_of_patient_id, patient_name, patient_birth_date)
        return await self._qido(
            path, {**query, **filters}, includefield, limit, offset, fuzzymatching
        )

    # -- WADO-RS ----------------------------------------------------------------------

    async def retrieve_study(
        self,
        study_instance_uid: str,
        staging: Staging,
        on_instance: OnInstance,
        *,
        transfer_syntax: str | None = AS_STORED,
    ) -> RetrieveResult:
        """Every instance of a study, each streamed to `staging()` and handed to
        `on_instance` once complete; never a whole instance in memory.

        `transfer_syntax` is asked of the peer: "*" (as stored, the default; a peer that
        cannot answer so, 406, is asked again for its default), a UID, or None (the
        peer's default, Explicit VR Little Endian for most). Raises RetrieveInterrupted
        when the transfer breaks (`.completed` says what to keep; `retrieve_missing`
        fetches the rest), DicomWebNotFound for an unknown study, and the other
        DicomWebError subclasses.
        """
        path = f"/studies/{study_instance_uid}"
        return await self._retrieve(path, "retrieve study", staging, on_instance, transfer_syntax)

    async def retrieve_series(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        staging: Staging,
        on_instance: OnInstance,
        *,
        transfer_syntax: str | None = AS_STORED,
    ) -> RetrieveResult:
        """Every instance of one series; as `retrieve_study`."""
        path = f"/studies/{study_instance_uid}/series/{series_instance_uid}"
        return await self._retrieve(path, "retrieve series", staging, on_instance, transfer_syntax)

    async def retrieve_instance(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        staging: Staging,
        on_instance: OnInstance,
        *,
        transfer_syntax: str | None = AS_STORED,
    ) -> RetrieveResult:
        """One instance; as `retrieve_study`."""
        path = (
            f"/studies/{study_instance_uid}/series/{series_instance_uid}"
            f"/instances/{sop_instance_uid}"
        )
        return await self._retrieve(
            path, "retrieve instance", staging, on_instance, transfer_syntax
        )

    async def retrieve_missing(
        self,
        study_instance_uid: str,
        held: Collection[str],
        staging: Staging,
        on_instance: OnInstance,
        *,
        transfer_syntax: str | None = AS_STORED,
    ) -> RetrieveResult:
        """Resume a study: fetch only the instances whose SOP Instance UID is not in
        `held` (what a broken retrieve completed, or what the store already holds).

        Lists the study's instances by QIDO, then retrieves each series of which nothing
        is held whole, and each other missing instance alone. Raises as `retrieve_study`;
        a RetrieveInterrupted's `.completed` covers this call only.
        """
        missing: dict[str, list[str]] = {}
        series_held: set[str] = set()
        for instance in await self._all_instances(study_instance_uid):
            sop_uid = first_value(instance, SOP_INSTANCE_UID)
            series_uid = first_value(instance, SERIES_INSTANCE_UID)
            if not sop_uid or not series_uid:
                raise DicomWebProtocolError("a QIDO-RS instance lacks its series or SOP UID")
            if sop_uid in held:
                series_held.add(series_uid)
            else:
                missing.setdefault(series_uid, []).append(sop_uid)
        received: list[RetrievedInstance] = []
        for series_uid, sop_uids in missing.items():
            if series_uid not in series_held:
                result = await self.retrieve_series(
                    study_instance_uid,
                    series_uid,
                    staging,
                    on_instance,
                    transfer_syntax=transfer_syntax,
                )
                received.extend(result.instances)
                continue
            for sop_uid in sop_uids:
                result = await self.retrieve_instance(
                    study_instance_uid,
                    series_uid,
                    sop_uid,
                    staging,
                    on_instance,
                    transfer_syntax=transfer_syntax,
                )
                received.extend(result.instances)
        return RetrieveResult(tuple(received))

    async def retrieve_metadata(
        self,
        study_instance_uid: str,
        series_instance_uid: str | None = None,
        sop_instance_uid: str | None = None,
    ) -> list[dict[str, Any]]:
        """The metadata (DICOM JSON, bulk data as BulkDataURI) of every instance of a
        study, a series or one instance."""
        path = f"/studies/{study_instance_uid}"
        if series_instance_uid:
            path += f"/series/{series_instance_uid}"
            if sop_instance_uid:
                path += f"/instances/{sop_instance_uid}"
        elif sop_instance_uid:
            raise ValueError("an instance UID needs its series UID")
        response = await self._session.send(
            "retrieve metadata",
            "GET",
            self._session.url(f"{path}/metadata"),
            headers={"Accept": DICOM_JSON},
        )
        return dicom_json_list(response, "retrieve metadata")

    # -- STOW-RS ----------------------------------------------------------------------

    async def store_instances(
        self, paths: Iterable[Path], *, study_instance_uid: str | None = None
    ) -> StowResult:
        """Send Part 10 files by STOW-RS, `stow_batch_size` to a request, each request
        body streamed from the files.

        Returns a StowResult (a DeliveryResult): accepted when every instance was stored;
        otherwise `failed` (the FailedSOPSequence, with each failure reason) and `unsent`
        (files of requests that got no answer after every retry). Raises
        DicomWebAuthError when the peer refuses our credentials.
        """
        items = [StowItem.from_path(path) for path in paths]
        return await self._store(items, study_instance_uid)

    # -- internals --------------------------------------------------------------------

    async def _qido(
        self,
        path: str,
        query: Mapping[str, QueryValue],
        includefield: Iterable[str],
        limit: int | None = None,
        offset: int | None = None,
        fuzzymatching: bool | None = None,
        *,
        attempts: int | None = None,
    ) -> list[dict[str, Any]]:
        encoded = query_string(query, includefield, limit, offset, fuzzymatching)
        response = await self._session.send(
            "search",
            "GET",
            self._session.url(path, encoded),
            headers={"Accept": DICOM_JSON},
            attempts=attempts,
        )
        return dicom_json_list(response, "search")

    async def _all_instances(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """Every instance of a study, page by page; stops when a page brings nothing new
        (a peer that ignores offset would otherwise be asked forever)."""
        found: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = await self._qido(
                f"/studies/{study_instance_uid}/instances",
                {},
                ("SeriesInstanceUID",),
                limit=QIDO_PAGE,
                offset=offset,
            )
            new = 0
            for instance in page:
                uid = first_value(instance, SOP_INSTANCE_UID)
                if uid and uid not in found:
                    found[uid] = instance
                    new += 1
            if len(page) < QIDO_PAGE or not new:
                return list(found.values())
            offset += len(page)

    async def _retrieve(
        self,
        path: str,
        operation: str,
        staging: Staging,
        on_instance: OnInstance,
        transfer_syntax: str | None,
    ) -> RetrieveResult:
        accept = 'multipart/related; type="application/dicom"'
        url = self._session.url(path)
        try:
            response = await self._session.send(
                operation,
                "GET",
                url,
                headers={"Accept": _with_syntax(accept, transfer_syntax)},
                stream=True,
            )
        except DicomWebHttpError as exc:
            if exc.status_code != 406 or transfer_syntax is None:
                raise
            logger.info(
                "DICOMweb %s cannot send as stored (406); asking for its default", self.name
            )
            response = await self._session.send(
                operation, "GET", url, headers={"Accept": accept}, stream=True
            )
        return await stream_instances(response, staging, on_instance, operation=operation)

    async def _store(self, items: Sequence[StowItem], study_uid: str | None) -> StowResult:
        path = f"/studies/{study_uid}" if study_uid else "/studies"
        stored: list[str] = []
        failed: list[StowFailure] = []
        unsent: list[Path] = []
        codes: list[str] = []
        size = self.source.stow_batch_size
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            request = StowRequest.of(batch)
            try:
                response = await self._session.send(
                    "store",
                    "POST",
                    self._session.url(path),
                    headers=request.headers,
                    body=request.body(),
                    answered=STOW_ANSWERED,
                )
                code = response.status_code
                answer = answer_json(response)
            except DicomWebHttpError as exc:
                if exc.status_code in (401, 403):
                    raise
                code, answer = exc.status_code, None
            except DicomWebUnavailable:
                unsent.extend(item.path for item in batch if item.path is not None)
                codes.append("unavailable")
                continue
            codes.append(str(code))
            outcome = read_stow_answer(answer, batch) if answer is not None else None
            if outcome is not None:
                stored.extend(outcome[0])
                failed.extend(outcome[1])
            elif code >= 500 or code == 429:
                unsent.extend(item.path for item in batch if item.path is not None)
            else:
                failed.extend(unanswered(batch))
        return stow_result(stored, failed, unsent, codes)


def _with_syntax(accept: str, transfer_syntax: str | None) -> str:
    return f"{accept}; transfer-syntax={transfer_syntax}" if transfer_syntax else accept
