"""The `pull-imaging` job: fetch a case's studies from an outside PACS.

The patient is found at the source by each of its identifiers (PatientID); failing that, by
family name and birth date, taken only when a single outside PatientID matches (several are
an ambiguity for a case manager, reported on the transfer, never guessed). Each study found
comes over DICOMweb (WADO-RS, streamed) or DIMSE (C-GET on one association, or C-MOVE to the
hub's own Storage SCP) into a pull transfer for the case; what the hub already holds of a
study is not fetched again, so a transfer that broke resumes where it stopped when the job
is retried. The studies are then attached by the `attach-dicom-study` job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connectors.dicomweb import DicomWebClient, DicomWebError, DicomWebSource
from connectors.dicomweb.qido import first_value
from connectors.dimse import DimseClient
from connectors.dimse.errors import DimseError
from connectors.http import MissingSecret
from dicom.matching import THRESHOLD, match_score
from dicom.reconcile import HubIdentity
from dicom.store import ContentStore
from hub.fhir.dates import utc_now
from hub.imaging.attach import Unattachable, case_and_patient, hub_identity
from hub.imaging.importer import DicomImporter
from hub.imaging.sources import DimsePullSource, ImagingSources
from hub.jobs.outbox import Job, enqueue, mark_done
from hub.jobs.worker import JobFailed, OwnTransactions
from hub.storage.repository import ResourceRepository
from hub.storage.tables import DicomInstanceRow, DicomStudyRow

PULL_JOB = "pull-imaging"
_STUDY_UID = "0020000D"


@dataclass(frozen=True)
class CasePatient:
    """What the source is asked about: the patient of the case."""

    identifiers: tuple[str, ...]
    identity: HubIdentity


class Ambiguous(Exception):
    """The patient cannot be told apart at the source: a person must choose."""


def queue_pull(session: Session, case_task_id: str, source: str) -> None:
    """Queue a pull of the case's studies from `source`, in the caller's transaction."""
    enqueue(session, PULL_JOB, f"{case_task_id}|{source}")


def pull_imaging_job(
    sources: ImagingSources, store: ContentStore, hub_ae_title: str | None
) -> OwnTransactions:
    """The job handler. `hub_ae_title` is the hub's Storage SCP (for C-MOVE)."""

    def run(sessions: sessionmaker[Session], job: Job) -> None:
        importer = DicomImporter(sessions, store)
        task_id, _, source_name = job.subject.partition("|")
        with sessions() as session:
            patient = _case_patient(session, task_id)
        web = {s.name: s for s in sources.dicomweb}.get(source_name)
        dimse = {s.name: s for s in sources.dimse}.get(source_name)
        if web is None and dimse is None:
            raise JobFailed(f"no imaging source named '{source_name}'", retryable=False)
        try:
            if web is not None:
                asyncio.run(_pull_dicomweb(web, patient, task_id, importer))
            elif dimse is not None:
                asyncio.run(_pull_dimse(dimse, patient, task_id, importer, hub_ae_title))
        except Ambiguous as exc:
            transfer = importer.open_transfer("pull", source_name, case_task_id=task_id)
            importer.close_transfer(transfer, failed=str(exc))
        except (DicomWebError, DimseError, MissingSecret) as exc:
            raise JobFailed(f"{source_name}: {exc}") from exc
        with sessions() as session:
            mark_done(session, job)
            session.commit()

    return OwnTransactions(run)


def _case_patient(session: Session, task_id: str) -> CasePatient:
    try:
        _, patient = case_and_patient(ResourceRepository(session), task_id)
    except Unattachable as exc:
        raise JobFailed(str(exc), retryable=False) from exc
    identifiers = patient.content.get("identifier") or []
    return CasePatient(
        tuple(str(i["value"]) for i in identifiers if i.get("value")), hub_identity(patient)
    )


def _by_demographics(candidates: list[Dataset], patient: CasePatient) -> list[str]:
    """The study UIDs of the one outside patient whose demographics match the case's
    (dicom.matching); Ambiguous when several outside patients do."""
    best: dict[str, float] = {}
    studies: dict[str, list[str]] = {}
    for candidate in candidates:
        outside = str(candidate.get("PatientID") or "")
        best[outside] = max(best.get(outside, 0.0), match_score(candidate, patient.identity))
        studies.setdefault(outside, []).append(str(candidate.get("StudyInstanceUID") or ""))
    matching = sorted(p for p, score in best.items() if score >= THRESHOLD)
    if len(matching) > 1:
        listed = ", ".join(f"{p or '(none)'} ({best[p]:.2f})" for p in matching)
        raise Ambiguous(
            f"{len(matching)} patients at the source match the case's patient by name and "
            f"birth date (PatientID and score: {listed}): a case manager must choose"
        )
    return studies[matching[0]] if matching else []


def _name_query(identity: HubIdentity) -> dict[str, str] | None:
    if not identity.family or not identity.birth_date:
        return None
    return {"PatientName": f"{identity.family}*", "PatientBirthDate": identity.birth_date}


async def _pull_dicomweb(
    source: DicomWebSource, patient: CasePatient, task_id: str, importer: DicomImporter
) -> None:
    async with DicomWebClient(source) as client:
        study_uids: list[str] = []
        for identifier in patient.identifiers:
            for study in await client.search_studies(patient_id=identifier):
                study_uids.append(first_value(study, _STUDY_UID) or "")
        by_name = _name_query(patient.identity)
        if not study_uids and by_name:
            found = await client.search_studies(
                patient_name=by_name["PatientName"],
                patient_birth_date=by_name["PatientBirthDate"],
                includefield=("PatientSex",),
            )
            study_uids = _by_demographics([Dataset.from_json(s) for s in found], patient)
        for study_uid in dict.fromkeys(uid for uid in study_uids if uid):
            transfer = importer.open_transfer("pull", source.name, case_task_id=task_id)
            on_instance = _receiver(importer, transfer)
            try:
                await client.retrieve_missing(
                    study_uid, _held(importer, study_uid), importer.store.staging_file, on_instance
                )
            except DicomWebError as exc:
                # What came whole is kept; the retried job fetches only the rest.
                importer.close_transfer(transfer, failed=str(exc))
                raise
            importer.close_transfer(transfer)


async def _pull_dimse(
    source: DimsePullSource,
    patient: CasePatient,
    task_id: str,
    importer: DicomImporter,
    hub_ae_title: str | None,
) -> None:
    client = DimseClient(source)
    found = []
    for identifier in patient.identifiers:
        found += await client.find_studies({"PatientID": identifier})
    study_uids = [str(ds.StudyInstanceUID) for ds in found]
    by_name = _name_query(patient.identity)
    if not found and by_name:
        matches = await client.find_studies({**by_name, "PatientSex": ""})
        study_uids = _by_demographics(matches, patient)
    for study_uid in dict.fromkeys(study_uids):
        if source.retrieve == "c-move":
            if hub_ae_title is None:
                raise JobFailed("C-MOVE needs the hub's Storage SCP (dicom_scp)", retryable=False)
            _expect(importer, study_uid, task_id)
            result = await client.move_study(study_uid, hub_ae_title)
        else:
            transfer = importer.open_transfer("pull", source.name, case_task_id=task_id)
            result = await client.get_study(
                study_uid, importer.store.staging_file, _receiver(importer, transfer)
            )
            importer.close_transfer(
                transfer, failed=None if result.succeeded else f"C-GET: {result}"
            )
        if not result.succeeded:
            raise JobFailed(f"{source.name}: retrieve of a study did not complete: {result}")


def _receiver(importer: DicomImporter, transfer: int) -> Callable[[Path], Awaitable[None]]:
    async def on_instance(path: Path) -> None:
        await asyncio.to_thread(importer.receive, transfer, path)

    return on_instance


def _held(importer: DicomImporter, study_uid: str) -> set[str]:
    with importer.sessions() as session:
        return set(
            session.scalars(
                select(DicomInstanceRow.sop_instance_uid).where(
                    DicomInstanceRow.study_uid == study_uid
                )
            )
        )


def _expect(importer: DicomImporter, study_uid: str, task_id: str) -> None:
    """Before a C-MOVE: the study, arriving on an association of its own, is the case's."""
    with importer.sessions() as session:
        study = session.get(DicomStudyRow, study_uid)
        now = utc_now()
        if study is None:
            session.add(
                DicomStudyRow(
                    study_uid=study_uid,
                    status="receiving",
                    case_task_id=task_id,
                    created_at=now,
                    updated_at=now,
                )
            )
        elif study.case_task_id is None:
            study.case_task_id = task_id
        session.commit()
