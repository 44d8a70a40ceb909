"""The case managers' imaging desk: studies held for a person, transfer reports, and the
two decisions a person makes on a held study (release it to a case, or reject it).

For the role case-manager: the studies of the cases of their programs; a study that names
no case yet is for the managers of the default program. (Not for admins: hold reasons quote
names and birth dates, and admins see no clinical data.) Listing and
reports need an ImagingStudy search or read scope, the decisions an update scope. A study
or transfer the caller may not see answers 404 like an unknown one. Everything is audited.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, CursorResult, false, func, or_, select, update
from sqlalchemy.orm import Session

from hub.api.deps import authenticate, hub_state, read_body, unit_of_work, wake_worker
from hub.api.desk import case_manager, case_task, json_body, policy, text_field
from hub.errors import (
    IllegalTransition,
    InvalidRequest,
    NotFound,
    UnsupportedMediaType,
)
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.imaging.importer import ATTACH_JOB, DicomImporter
from hub.imaging.media import import_media
from hub.imaging.pull import queue_pull
from hub.jobs.outbox import enqueue
from hub.security.audit import audit_event, write_audit_event
from hub.security.principal import Principal
from hub.storage.repository import StoredResource
from hub.storage.tables import DicomInstanceRow, DicomStudyRow, DicomTransferRow, ResourceRow

StudyStatus = Literal["receiving", "held", "released", "attached", "rejected"]
_TASK_REFERENCE = re.compile(r"Task/([A-Za-z0-9\-.]{1,64})")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")  # PS3.5 9.1; anything else cannot name a study
_MAX_REASON = 1000
_UNKNOWN_STUDY = "The study is not known."
_UNKNOWN_TRANSFER = "The transfer is not known."


Lister = Annotated[Principal, Depends(case_manager("imaging", "ImagingStudy", "s"))]
Reader = Annotated[Principal, Depends(case_manager("imaging", "ImagingStudy", "r"))]
Decider = Annotated[Principal, Depends(case_manager("imaging", "ImagingStudy", "u"))]
router = APIRouter(prefix="/imaging", tags=["Imaging"], dependencies=[Depends(authenticate)])


@router.get("/studies")
def list_studies(
    request: Request,
    caller: Lister,
    status: StudyStatus = "held",
    count: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> JSONResponse:
    """Studies in one state (held by default): why, for which case, how many instances."""
    with unit_of_work(request, caller) as fhir:
        session = fhir.session
        where = [DicomStudyRow.status == status, _manageable(fhir, request)]
        total = session.scalar(select(func.count()).select_from(DicomStudyRow).where(*where))
        rows = list(
            session.scalars(
                select(DicomStudyRow)
                .where(*where)
                .order_by(DicomStudyRow.created_at, DicomStudyRow.study_uid)
                .offset(offset)
                .limit(count)
            )
        )
        counts = _instance_counts(session, [row.study_uid for row in rows])
        cases = _cases(fhir, [row.case_task_id for row in rows])
        event = audit_event(
            caller,
            "search-type",
            cases,
            query=f"imaging/studies?{request.url.query}",
            what=[f"Patient/{row.patient_id}" for row in rows if row.patient_id],
        )
        write_audit_event(fhir.repository, event)
        studies = [_study(row, counts.get(row.study_uid, 0)) for row in rows]
    return JSONResponse({"total": total or 0, "studies": studies})


@router.get("/transfers/{transfer_id}")
def show_transfer(
    request: Request, caller: Reader, transfer_id: Annotated[int, Path(ge=1, le=2**31 - 1)]
) -> JSONResponse:
    """A transfer's report: accepted and refused files (each with its reason), its studies."""
    with unit_of_work(request, caller) as fhir:
        session = fhir.session
        transfer = session.get(DicomTransferRow, transfer_id)
        if transfer is None or not _may_manage(fhir, request, transfer.case_task_id):
            raise NotFound(_UNKNOWN_TRANSFER)
        studies = session.execute(
            select(DicomInstanceRow.study_uid, func.count(), DicomStudyRow.status)
            .join(DicomStudyRow, DicomStudyRow.study_uid == DicomInstanceRow.study_uid)
            .where(DicomInstanceRow.transfer_id == transfer_id)
            .group_by(DicomInstanceRow.study_uid, DicomStudyRow.status)
            .order_by(DicomInstanceRow.study_uid)
        ).all()
        cases = _cases(fhir, [transfer.case_task_id])
        event = audit_event(caller, "read", cases, description=f"DICOM transfer {transfer_id}")
        write_audit_event(fhir.repository, event)
        report = {
            "id": transfer.transfer_id,
            "kind": transfer.kind,
            "source": transfer.source,
            "status": transfer.status,
            "case": _reference(transfer.case_task_id),
            "accepted": transfer.accepted,
            "rejected": transfer.rejected,
            "openedAt": instant(transfer.opened_at),
            "closedAt": instant(transfer.closed_at) if transfer.closed_at else None,
            "refused": json.loads(transfer.report),
            "studies": [
                {"studyInstanceUid": uid, "instances": n, "status": status}
                for uid, n, status in studies
            ],
        }
    return JSONResponse(report)


@router.post(
    "/studies/{study}/$release",
    status_code=202,
    openapi_extra=json_body({"case": {"type": "string", "pattern": "^Task/"}}, ["case"]),
)
def release_study(
    request: Request,
    caller: Decider,
    study: str,
    body: Annotated[Any, Depends(read_body)],
) -> JSONResponse:
    """A person confirms a held study belongs to a case: it is attached to it next."""
    with unit_of_work(request, caller) as fhir:
        case = text_field(body, "case", 80)
        match = _TASK_REFERENCE.fullmatch(case)
        if match is None:
            raise InvalidRequest("'case' must be a reference Task/<id>.", expression="case")
        row = _study_row(fhir, request, study)
        task = case_task(fhir, match.group(1))
        _move(fhir.session, row, "released", case_task_id=task.resource_id, hold_reason=None)
        enqueue(fhir.session, ATTACH_JOB, row.study_uid)
        event = audit_event(
            caller, "operation", [task], description=f"$release of a held DICOM study to {case}"
        )
        write_audit_event(fhir.repository, event)
        result = _study(row, _instance_counts(fhir.session, [study]).get(study, 0))
    wake_worker(request)
    return JSONResponse(result, status_code=202)


@router.post(
    "/studies/{study}/$reject",
    openapi_extra=json_body({"reason": {"type": "string", "minLength": 1}}, ["reason"]),
)
def reject_study(
    request: Request,
    caller: Decider,
    study: str,
    body: Annotated[Any, Depends(read_body)],
) -> JSONResponse:
    """A person decides a held study is not to be attached (wrong patient, unwanted)."""
    with unit_of_work(request, caller) as fhir:
        reason = text_field(body, "reason", _MAX_REASON)
        row = _study_row(fhir, request, study)
        cases = _cases(fhir, [row.case_task_id])
        # The study's row keeps why it was rejected where it kept why it was held.
        _move(fhir.session, row, "rejected", case_task_id=row.case_task_id, hold_reason=reason)
        event = audit_event(caller, "operation", cases, description="$reject of a DICOM study")
        write_audit_event(fhir.repository, event)
        result = _study(row, _instance_counts(fhir.session, [study]).get(study, 0))
    return JSONResponse(result)


@router.post(
    "/cases/{task_id}/$pull",
    status_code=202,
    openapi_extra=json_body({"source": {"type": "string", "minLength": 1}}, ["source"]),
)
def pull_for_case(
    request: Request,
    caller: Decider,
    task_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9\-.]{1,64}$")],
    body: Annotated[Any, Depends(read_body)],
) -> JSONResponse:
    """Fetch the case's studies from a configured outside PACS (as a job): found by the
    patient's identifiers, else by name and birth date; then attached like any arrival."""
    with unit_of_work(request, caller) as fhir:
        source = text_field(body, "source", 128)
        if source not in hub_state(request).settings.imaging_sources.names():
            raise InvalidRequest(f"No imaging source named '{source}'.", expression="source")
        task = case_task(fhir, task_id)
        queue_pull(fhir.session, task.resource_id, source)
        event = audit_event(
            caller, "operation", [task], description=f"$pull of imaging from {source}"
        )
        write_audit_event(fhir.repository, event)
    wake_worker(request)
    return JSONResponse({"case": f"Task/{task_id}", "source": source}, status_code=202)


@router.post(
    "/media",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_media(
    request: Request,
    caller: Decider,
    case: Annotated[str | None, Query(pattern=r"^Task/[A-Za-z0-9\-.]{1,64}$")] = None,
) -> JSONResponse:
    """A patient CD as a zip (its DICOMDIR folder, or loose files): streamed to disk,
    imported file by file; the answer is the import's report."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/zip":
        raise UnsupportedMediaType("A patient CD is uploaded as application/zip.")
    state = hub_state(request)
    importer = request.app.state.dicom_importer
    staged = importer.store.staging_file()
    try:
        size = 0
        with staged.open("wb") as target:
            async for chunk in request.stream():
                size += len(chunk)
                if size > state.settings.max_media_bytes:
                    raise InvalidRequest("The upload is larger than max_media_bytes.")
                target.write(chunk)
        report = await run_in_threadpool(_import_upload, request, caller, importer, staged, case)
    finally:
        staged.unlink(missing_ok=True)
    return JSONResponse(report)


def _import_upload(
    request: Request,
    caller: Principal,
    importer: DicomImporter,
    staged: pathlib.Path,
    case: str | None,
) -> dict[str, object]:
    with unit_of_work(request, caller) as fhir:
        task = case_task(fhir, case.removeprefix("Task/")) if case else None
        tasks = [task] if task else []
        event = audit_event(caller, "create", tasks, description="upload of a patient CD")
        write_audit_event(fhir.repository, event)
    name = f"upload by {caller.subject}"
    return import_media(
        importer, staged, name=name, case_task_id=task.resource_id if task else None
    ).to_json()


# -- who may see what ---------------------------------------------------------------------------


def _manageable(fhir: FhirInteractions, request: Request) -> ColumnElement[bool]:
    """A condition on DicomStudyRow: the studies the caller may manage."""
    caller = policy(fhir).principal
    visible_cases = select(ResourceRow.res_id).where(
        ResourceRow.res_type == "Task",
        ResourceRow.deleted.is_(False),
        policy(fhir).visible("Task"),
    )
    without_case = (
        DicomStudyRow.case_task_id.is_(None)
        if hub_state(request).settings.default_program in caller.programs
        else false()
    )
    return or_(DicomStudyRow.case_task_id.in_(visible_cases), without_case)


def _may_manage(fhir: FhirInteractions, request: Request, case_task_id: str | None) -> bool:
    access = policy(fhir)
    if case_task_id is None:
        return hub_state(request).settings.default_program in access.principal.programs
    task = fhir.repository.find("Task", case_task_id)
    return task is not None and access.can_see(task)


def _study_row(fhir: FhirInteractions, request: Request, study: str) -> DicomStudyRow:
    row = fhir.session.get(DicomStudyRow, study) if _UID.fullmatch(study) else None
    if row is None or not _may_manage(fhir, request, row.case_task_id):
        raise NotFound(_UNKNOWN_STUDY)
    return row


def _cases(fhir: FhirInteractions, task_ids: Sequence[str | None]) -> list[StoredResource]:
    """The case Tasks named (for the audit trail: each names its patient)."""
    found = (
        fhir.repository.find("Task", task_id) for task_id in sorted(set(filter(None, task_ids)))
    )
    return [task for task in found if task is not None]


# -- state and shape ----------------------------------------------------------------------------


def _move(
    session: Session,
    row: DicomStudyRow,
    status: str,
    *,
    case_task_id: str | None,
    hold_reason: str | None,
) -> None:
    """held → `status`, unless the study left `held` meanwhile (one decision wins)."""
    if row.status != "held":
        raise IllegalTransition(
            f"The study is {row.status}; only a held study can be {status}.",
            expression="status",
        )
    moved = session.execute(
        update(DicomStudyRow)
        .where(DicomStudyRow.study_uid == row.study_uid, DicomStudyRow.status == "held")
        .values(
            status=status,
            case_task_id=case_task_id,
            hold_reason=hold_reason,
            updated_at=utc_now(),
        )
    )
    if cast("CursorResult[Any]", moved).rowcount != 1:
        raise IllegalTransition("Another decision on the study came first; reload it.")


def _instance_counts(session: Session, study_uids: Sequence[str]) -> dict[str, int]:
    if not study_uids:
        return {}
    rows = session.execute(
        select(DicomInstanceRow.study_uid, func.count())
        .where(DicomInstanceRow.study_uid.in_(study_uids))
        .group_by(DicomInstanceRow.study_uid)
    )
    return {uid: n for uid, n in rows}


def _study(row: DicomStudyRow, instances: int) -> dict[str, Any]:
    return {
        "studyInstanceUid": row.study_uid,
        "status": row.status,
        "outsidePatientId": row.outside_patient_id,
        "outsideIssuer": row.outside_issuer,
        "reason": row.hold_reason,
        "case": _reference(row.case_task_id),
        "patient": f"Patient/{row.patient_id}" if row.patient_id else None,
        "instances": instances,
        "transfer": row.last_transfer_id,
        "receivedAt": instant(row.created_at),
        "updatedAt": instant(row.updated_at),
    }


def _reference(task_id: str | None) -> str | None:
    return f"Task/{task_id}" if task_id else None
