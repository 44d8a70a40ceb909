"""The `attach-dicom-study` job: a complete study becomes part of its case, or waits for a
person.

The study's case is the one its transfer was for (a pull), else the one open case of the
patient whose identifier is the study's PatientID (a push, a CD). Its demographics are
compared with the case's patient: a disagreement, no case or several hold the study for a
case manager (`held`, with the reasons), never attach it silently. Otherwise each instance
is reconciled to the hub's identity (dicom.reconcile: the outside PatientID kept in
OtherPatientIDsSequence, the changes in OriginalAttributesSequence), and the study's
ImagingStudy is created or updated, pointing at the hub's own DICOMweb Endpoint, with a
Provenance naming the transfer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicom.imaging_study import build_imaging_study
from dicom.instances import read_instance
from dicom.reconcile import HubIdentity, demographic_differences, reconcile_file
from dicom.store import ContentStore
from hub import codes
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.fhir.transactions import process_bundle
from hub.imaging.events import record_case_event
from hub.imaging.importer import info_from_json
from hub.jobs.outbox import Job, mark_done
from hub.jobs.worker import InTransaction, JobFailed
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.search import Criterion, SearchQuery, SearchRunner
from hub.storage.tables import DicomInstanceRow, DicomStudyRow, DicomTransferRow
from hub.workflow.case_states import STATUS_MOVES

HUB_ISSUER = "SECOND-OPINION-HUB"
"""IssuerOfPatientID of the hub's own patient identifiers (its Patient ids)."""
STUDY_UID_SYSTEM = "urn:dicom:uid"
ENDPOINT_IDENTIFIER = f"{codes.CANONICAL_BASE}/sid/endpoint|dicomweb"
_SEX = {"female": "F", "male": "M", "other": "O"}


class Unattachable(Exception):
    """Why a study cannot be attached without a person: it is held with this reason."""


def attach_study_job(store: ContentStore, dicomweb_url: str) -> InTransaction:
    """The job handler; `dicomweb_url` is the hub's DICOMweb base, for the Endpoint."""

    def run(session: Session, job: Job) -> None:
        study = session.get(DicomStudyRow, job.subject)
        if study is None:
            raise JobFailed(f"study {job.subject} is not held", retryable=False)
        if study.status in ("receiving", "released"):
            try:
                attach(session, store, study, dicomweb_url)
            except Unattachable as reason:
                study.status = "held"
                study.hold_reason = str(reason)
                study.updated_at = utc_now()
                if study.case_task_id:
                    record_case_event(
                        session,
                        study.case_task_id,
                        f"The DICOM study {study.study_uid} is held for a case manager, not "
                        f"attached: {reason}",
                    )
        mark_done(session, job)

    return run


def attach(session: Session, store: ContentStore, study: DicomStudyRow, dicomweb_url: str) -> None:
    """Reconcile and attach `study` (Unattachable: why it must be held instead)."""
    instances = list(
        session.scalars(
            select(DicomInstanceRow).where(DicomInstanceRow.study_uid == study.study_uid)
        )
    )
    interactions = FhirInteractions(session)
    task, patient = _case_of(session, interactions, study)
    study.case_task_id = task.resource_id  # a held study shows the case it was matched to
    identity = hub_identity(patient)
    if study.status != "released":  # a person who released it has looked at the differences
        header, _ = read_instance(store.path(instances[0].received_digest))
        differences = demographic_differences(header, identity)
        if differences:
            raise Unattachable(
                f"The study's demographics differ from the case's patient: {'; '.join(differences)}"
            )
    now = utc_now()
    for row in instances:
        if row.digest is None:
            staged = store.staging_file()
            reconcile_file(
                store.path(row.received_digest),
                staged,
                identity,
                reason="COERCE",
                when=now,
            )
            row.digest = store.put_file(staged).digest
    focus = (task.content.get("focus") or {}).get("reference")
    imaging = build_imaging_study(
        [info_from_json(row.info) for row in instances],
        patient_reference=patient.reference,
        based_on=focus,
        endpoint_reference=_endpoint(interactions, dicomweb_url),
        study_identifier_system=STUDY_UID_SYSTEM,
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": imaging,
                "request": {
                    "method": "PUT",
                    "url": f"ImagingStudy?identifier={STUDY_UID_SYSTEM}|urn:oid:{study.study_uid}",
                },
            }
        ],
    }
    response = process_bundle(interactions, bundle, base="")
    location = response["entry"][0]["response"]["location"].lstrip("/")
    imaging_id = location.split("/")[1]
    transfer = session.get(DicomTransferRow, study.last_transfer_id or -1)
    interactions.repository.create("Provenance", _provenance(imaging_id, transfer, len(instances)))
    interactions.finish()
    study.status = "attached"
    study.hold_reason = None
    study.imaging_study_id = imaging_id
    study.case_task_id = task.resource_id
    study.patient_id = patient.resource_id
    study.updated_at = now


def hub_identity(patient: StoredResource) -> HubIdentity:
    """The identity imported instances get: the hub's Patient id and its demographics."""
    content = patient.content
    name: dict[str, Any] = next(iter(content.get("name") or []), {})
    given = " ".join(name.get("given") or []) or None
    return HubIdentity(
        patient_id=patient.resource_id,
        issuer=HUB_ISSUER,
        family=_dicom_safe(name.get("family")),
        given=_dicom_safe(given),
        birth_date=dicom_date(content.get("birthDate")),
        sex=_SEX.get(content.get("gender") or ""),
    )


def _dicom_safe(text: str | None) -> str | None:
    # ^ = \ separate PN components, groups and values in DICOM: never part of a name.
    if not text:
        return None
    return "".join(c for c in text if c not in "^=\\") or None


def _case_of(
    session: Session, interactions: FhirInteractions, study: DicomStudyRow
) -> tuple[StoredResource, StoredResource]:
    repository = interactions.repository
    if study.case_task_id:
        return case_and_patient(repository, study.case_task_id)
    task = _only_open_case(session, _patient_for(session, study))
    return case_and_patient(repository, task.resource_id)


def case_and_patient(
    repository: ResourceRepository, task_id: str
) -> tuple[StoredResource, StoredResource]:
    """The case Task and its Patient; Unattachable (saying why) if either is gone."""
    task = repository.find("Task", task_id)
    if task is None:
        raise Unattachable(f"The case Task/{task_id} is not known.")
    subject = (task.content.get("for") or {}).get("reference", "")
    patient = repository.find("Patient", subject.removeprefix("Patient/"))
    if patient is None:
        raise Unattachable(f"The case Task/{task_id} names no patient the hub holds.")
    return task, patient


def dicom_date(value: object) -> str | None:
    """A FHIR date YYYY-MM-DD as DICOM DA (YYYYMMDD); None for a partial date or none."""
    return value.replace("-", "") if isinstance(value, str) and len(value) == 10 else None


def _patient_for(session: Session, study: DicomStudyRow) -> str:
    outside = study.outside_patient_id or ""
    if study.outside_issuer == HUB_ISSUER:
        return outside
    runner = SearchRunner(session)
    query = SearchQuery("Patient", criteria=[Criterion("identifier", None, (outside,))], count=3)
    matches = runner.search(query, with_total=False).matches
    issuer = f" (issuer {study.outside_issuer})" if study.outside_issuer else ""
    if not matches:
        raise Unattachable(f"No patient the hub knows has the PatientID '{outside}'{issuer}.")
    if len(matches) > 1:
        raise Unattachable(f"Several patients have the PatientID '{outside}'{issuer}.")
    return matches[0].resource_id


def _only_open_case(session: Session, patient_id: str) -> StoredResource:
    query = SearchQuery(
        "Task",
        criteria=[
            Criterion("patient", None, (f"Patient/{patient_id}",)),
            Criterion("code", None, (f"{codes.CASE_TASK_SYSTEM}|{codes.CASE_TASK_CODE}",)),
        ],
        count=20,
    )
    tasks = SearchRunner(session).search(query, with_total=False).matches
    open_cases = [t for t in tasks if STATUS_MOVES.get(t.content.get("status") or "")]
    if not open_cases:
        raise Unattachable(f"Patient/{patient_id} has no open case to attach the study to.")
    if len(open_cases) > 1:
        raise Unattachable(f"Patient/{patient_id} has several open cases: choose one.")
    return open_cases[0]


def _endpoint(interactions: FhirInteractions, dicomweb_url: str) -> str:
    """The hub's DICOMweb Endpoint (made once)."""
    system, _, value = ENDPOINT_IDENTIFIER.partition("|")
    stored, _ = interactions.create(
        "Endpoint",
        {
            "resourceType": "Endpoint",
            "identifier": [{"system": system, "value": value}],
            "status": "active",
            "name": "Second-opinion hub DICOMweb",
            "connectionType": {
                "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                "code": "dicom-wado-rs",
            },
            "payloadType": [{"text": "DICOM"}],
            "payloadMimeType": ["application/dicom"],
            "address": dicomweb_url,
        },
        if_none_exist=f"identifier={ENDPOINT_IDENTIFIER}",
    )
    return stored.reference


def _provenance(imaging_id: str, transfer: DicomTransferRow | None, count: int) -> dict[str, Any]:
    source = f"{transfer.kind} from {transfer.source}" if transfer else "DICOM import"
    return {
        "resourceType": "Provenance",
        "target": [{"reference": f"ImagingStudy/{imaging_id}"}],
        "recorded": instant(utc_now()),
        "activity": {
            "coding": [{"system": codes.DATA_OPERATION_SYSTEM, "code": "UPDATE"}],
            "text": f"DICOM import reconciliation of {count} instance(s), {source}",
        },
        "agent": [{"who": {"display": "Second-opinion hub"}}],
    }
