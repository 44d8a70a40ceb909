"""The case managers' records desk: pulls of a case's records from outside FHIR servers
(start one, choose the patient when the source had several, read the reports), the
opinion sent back to a referrer's FHIR server, and the sources' health for hospital IT.

Pulls: for the role case-manager, on the cases of their programs; a case the caller may not
see answers 404 like an unknown one. Everything is audited (a report may quote names).
Source health: for admins and case managers; it names no patient.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import select

from connectors.fhir_rest.client import FhirClient
from connectors.fhir_rest.config import FhirSource
from connectors.http import MissingSecret
from hub.api.deps import Caller, authenticate, hub_state, read_body, unit_of_work, wake_worker
from hub.api.desk import case_manager, case_task, json_body, text_field
from hub.errors import Forbidden, InvalidRequest
from hub.records.fhir_pull import queue_record_pull
from hub.records.write_back import NotAnOpinion, queue_write_back, read_opinion
from hub.security.audit import audit_event, write_audit_event
from hub.security.principal import Principal
from hub.storage.tables import RecordPullRow

Reader = Annotated[Principal, Depends(case_manager("records", "Task", "r"))]
Puller = Annotated[Principal, Depends(case_manager("records", "Task", "u"))]
router = APIRouter(prefix="/records", tags=["Records"], dependencies=[Depends(authenticate)])
_TASK_ID = r"^[A-Za-z0-9\-.]{1,64}$"


@router.post(
    "/cases/{task_id}/$pull",
    status_code=202,
    openapi_extra=json_body(
        {
            "source": {"type": "string", "minLength": 1},
            "patient": {"type": "string", "minLength": 1},
        },
        ["source"],
    ),
)
def pull_records(
    request: Request,
    caller: Puller,
    task_id: Annotated[str, Path(pattern=_TASK_ID)],
    body: Annotated[Any, Depends(read_body)],
) -> JSONResponse:
    """Pull the case's records from a configured FHIR source (as a job). `patient`: the
    patient's id at the source, when a case manager chose among several candidates."""
    with unit_of_work(request, caller) as fhir:
        source = text_field(body, "source", 64)
        patient = text_field(body, "patient", 64, required=False) or None
        if source not in {s.name for s in hub_state(request).settings.fhir_sources}:
            raise InvalidRequest(f"No FHIR source named '{source}'.", expression="source")
        task = case_task(fhir, task_id)
        queue_record_pull(fhir.session, task.resource_id, source, patient)
        description = f"$pull of records from {source}" + (
            f" (patient {patient})" if patient else ""
        )
        write_audit_event(
            fhir.repository, audit_event(caller, "operation", [task], description=description)
        )
    wake_worker(request)
    return JSONResponse({"case": f"Task/{task_id}", "source": source}, status_code=202)


@router.post(
    "/cases/{task_id}/$send-opinion",
    status_code=202,
    openapi_extra=json_body(
        {
            "source": {"type": "string", "minLength": 1},
            "report": {"type": "string", "pattern": "^DiagnosticReport/"},
        },
        ["source", "report"],
    ),
)
def send_opinion(
    request: Request,
    caller: Puller,
    task_id: Annotated[str, Path(pattern=_TASK_ID)],
    body: Annotated[Any, Depends(read_body)],
) -> JSONResponse:
    """Send the case's opinion (a DiagnosticReport based on its referral, with its PDF) to
    the referrer's FHIR server (a source with `write_back`), as a job."""
    with unit_of_work(request, caller) as fhir:
        name = text_field(body, "source", 64)
        report = text_field(body, "report", 100).removeprefix("DiagnosticReport/")
        sources = {s.name: s for s in hub_state(request).settings.fhir_sources}
        if name not in sources or sources[name].write_back is None:
            raise InvalidRequest(
                f"No FHIR source named '{name}' takes write-backs.", expression="source"
            )
        task = case_task(fhir, task_id)
        try:
            opinion = read_opinion(fhir.session, report, name)
        except NotAnOpinion as exc:
            raise InvalidRequest(str(exc), expression="report") from exc
        if opinion.case_task_id != task.resource_id:
            raise InvalidRequest(
                f"DiagnosticReport/{report} is not this case's opinion.", expression="report"
            )
        queue_write_back(fhir.session, report, name)
        event = audit_event(caller, "operation", [task], description=f"opinion sent to {name}")
        write_audit_event(fhir.repository, event)
    wake_worker(request)
    return JSONResponse({"case": f"Task/{task_id}", "source": name}, status_code=202)


@router.get("/cases/{task_id}/pulls")
def case_pulls(
    request: Request, caller: Reader, task_id: Annotated[str, Path(pattern=_TASK_ID)]
) -> JSONResponse:
    """The case's pulls, one per source: status, the patient there, the report."""
    with unit_of_work(request, caller) as fhir:
        task = case_task(fhir, task_id)
        rows = fhir.session.scalars(
            select(RecordPullRow)
            .where(RecordPullRow.case_task_id == task.resource_id)
            .order_by(RecordPullRow.source)
        )
        pulls = [_pull(row) for row in rows]
        write_audit_event(
            fhir.repository, audit_event(caller, "read", [task], description="record pulls")
        )
    return JSONResponse({"case": f"Task/{task_id}", "pulls": pulls})


@router.get("/sources")
async def source_health(request: Request, caller: Caller) -> JSONResponse:
    """Each configured FHIR source: does it answer now (its CapabilityStatement, one
    attempt), and how many pulls from it failed, with the last failure."""
    if not caller.has_role("admin", "case-manager"):
        raise Forbidden("Source health is for the roles admin and case-manager.")
    sources = hub_state(request).settings.fhir_sources
    checks = await asyncio.gather(*(_check(source) for source in sources))
    failures = await run_in_threadpool(_failures, request)
    return JSONResponse(
        {
            "sources": [
                {"name": s.name, "base_url": s.base_url, **check, **failures.get(s.name, {})}
                for s, check in zip(sources, checks, strict=True)
            ]
        }
    )


async def _check(source: FhirSource) -> dict[str, Any]:
    try:
        async with FhirClient(source) as client:
            health = await client.health()
    except MissingSecret as exc:
        return {"healthy": False, "detail": str(exc)}
    return {"healthy": health.healthy, "detail": health.detail}


def _failures(request: Request) -> dict[str, dict[str, Any]]:
    """Source → failed pulls now and the latest error (which names no patient)."""
    found: dict[str, dict[str, Any]] = {}
    with hub_state(request).sessions() as session:
        rows = session.execute(
            select(RecordPullRow.source, RecordPullRow.error, RecordPullRow.updated_at)
            .where(RecordPullRow.status == "failed")
            .order_by(RecordPullRow.updated_at)
        )
        for source, error, when in rows:
            entry = found.setdefault(source, {"failed_pulls": 0})
            entry["failed_pulls"] += 1
            entry["last_error"] = error
            entry["last_error_at"] = when.isoformat()
    return found


def _pull(row: RecordPullRow) -> dict[str, Any]:
    return {
        "source": row.source,
        "status": row.status,
        "source_patient": row.source_patient_id,
        "stored": row.stored,
        "since": row.since,
        "error": row.error,
        "updated": row.updated_at.isoformat(),
        "report": json.loads(row.report or "{}"),
    }
