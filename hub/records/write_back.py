"""The `write-back-fhir` job: a finished opinion to the referrer's own FHIR server.

What the referrer receives: a DocumentReference holding the opinion's PDF, the opinion
DiagnosticReport (its PDF as presentedForm), both about the referrer's own patient; the
referrer's Task for the referral completed, its output the opinion; and a Communication
telling them it is there. Each create is conditional on the opinion's identifier, so a
retry after a half-finished attempt makes nothing twice. A refusal of the content (400,
422) goes straight to the dead letters; anything else is retried with backoff first. The
outcome is written on the case for the case manager.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from connectors.fhir_rest.client import FhirClient
from connectors.fhir_rest.config import FhirSource
from connectors.fhir_rest.errors import FhirHttpError, FhirSourceError
from connectors.http import MissingSecret
from hub import codes
from hub.fhir.dates import instant, utc_now
from hub.imaging.events import record_case_event
from hub.jobs.outbox import Job, enqueue, mark_done
from hub.jobs.worker import JobFailed, OwnTransactions
from hub.records.patient_match import find_patient
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.tables import RecordPullRow
from hub.workflow.cases import CaseWorkflow
from hub.workflow.opinion_rules import referral_reference

WRITE_BACK_JOB = "write-back-fhir"
OPINION_SYSTEM = f"{codes.CANONICAL_BASE}/sid/opinion"
CONSULT_NOTE = {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
_CONTENT_REFUSED = (400, 409, 412, 422)
JsonObject = dict[str, Any]


class NotAnOpinion(Exception):
    """The report cannot be sent: it is not a case's opinion, or has no PDF."""


@dataclass(frozen=True)
class Opinion:
    """What the job sends, read from the hub before the network is touched."""

    report_id: str
    report: JsonObject
    pdf: bytes
    case_task_id: str
    patient: JsonObject
    referral_identifiers: list[JsonObject]
    source_patient_id: str | None


def queue_write_back(session: Session, report_id: str, source: str) -> None:
    """Queue the delivery of opinion DiagnosticReport/`report_id` to `source`."""
    enqueue(session, WRITE_BACK_JOB, f"{report_id}|{source}")


WrittenBack = Callable[[Session, str, str], None]
"""Told (session, report id, source name) of each opinion a source accepted, in the
transaction that records it."""


def write_back_job(
    sources: list[FhirSource], on_delivered: WrittenBack | None = None
) -> OwnTransactions:
    by_name = {source.name: source for source in sources}

    def run(sessions: sessionmaker[Session], job: Job) -> None:
        report_id, _, name = job.subject.partition("|")
        source = by_name.get(name)
        if source is None or source.write_back is None:
            raise JobFailed(f"no FHIR source '{name}' with write_back", retryable=False)
        with sessions() as session:
            try:
                opinion = read_opinion(session, report_id, name)
            except NotAnOpinion as exc:
                raise JobFailed(str(exc), retryable=False) from exc
        try:
            delivered = asyncio.run(_deliver(source, opinion))
        except (FhirSourceError, MissingSecret) as exc:
            refused = isinstance(exc, FhirHttpError) and exc.status_code in _CONTENT_REFUSED
            final = refused or job.attempts >= job.max_attempts
            if final:
                with sessions() as session:
                    record_case_event(
                        session,
                        opinion.case_task_id,
                        f"The opinion could not be delivered to {name}: {exc} "
                        "(in the dead letters, for replay).",
                    )
                    session.commit()
            raise JobFailed(f"{name}: {exc}", retryable=not refused) from exc
        with sessions() as session:
            record_case_event(
                session, opinion.case_task_id, f"Opinion delivered to {name}: {delivered}"
            )
            if on_delivered is not None:
                on_delivered(session, report_id, name)
            mark_done(session, job)
            session.commit()

    return OwnTransactions(run)


def read_opinion(session: Session, report_id: str, source: str) -> Opinion:
    repository = ResourceRepository(session)
    report = repository.find("DiagnosticReport", report_id)
    if report is None:
        raise NotAnOpinion(f"DiagnosticReport/{report_id} is not known")
    referral = _referral(repository, report)
    case = CaseWorkflow(repository, None, "").case_task_for(referral.resource_id)
    if case is None:
        raise NotAnOpinion(f"DiagnosticReport/{report_id} is not the opinion of a case")
    patient_ref = (report.content.get("subject") or {}).get("reference", "")
    patient = repository.find("Patient", patient_ref.removeprefix("Patient/"))
    if patient is None:
        raise NotAnOpinion(f"DiagnosticReport/{report_id} names no patient the hub holds")
    pulled = session.scalar(
        select(RecordPullRow.source_patient_id).where(
            RecordPullRow.case_task_id == case.resource_id, RecordPullRow.source == source
        )
    )
    return Opinion(
        report_id,
        report.content,
        _pdf(repository, report),
        case.resource_id,
        patient.content,
        list(referral.content.get("identifier") or []),
        pulled,
    )


def _referral(repository: ResourceRepository, report: StoredResource) -> StoredResource:
    target = referral_reference(report.content)
    found = repository.find(*target) if target else None
    if found is not None:
        return found
    raise NotAnOpinion(
        f"DiagnosticReport/{report.resource_id} is based on no referral (basedOn ServiceRequest)"
    )


def _pdf(repository: ResourceRepository, report: StoredResource) -> bytes:
    for form in report.content.get("presentedForm") or []:
        if form.get("contentType") != "application/pdf":
            continue
        if form.get("data"):
            return base64.b64decode(form["data"])
        url = str(form.get("url", ""))
        binary = repository.find("Binary", url.removeprefix("Binary/")) if url else None
        if binary is not None and binary.content.get("data"):
            return base64.b64decode(binary.content["data"])
    raise NotAnOpinion(f"DiagnosticReport/{report.resource_id} has no PDF (presentedForm)")


async def _deliver(source: FhirSource, opinion: Opinion) -> str:
    """Send the opinion; a line saying what the referrer now holds."""
    assert source.write_back is not None
    criteria = f"identifier={OPINION_SYSTEM}|{opinion.report_id}"
    async with FhirClient(source) as client:
        subject = await _their_patient(client, opinion)
        request = await _their_referral(client, opinion)
        pdf = base64.b64encode(opinion.pdf).decode("ascii")
        document = await _create_or_update(
            client, _document(opinion, subject, request, pdf), criteria
        )
        report = await _create_or_update(client, _report(opinion, subject, request, pdf), criteria)
        said = [f"DocumentReference/{document.get('id')}", f"DiagnosticReport/{report.get('id')}"]
        task = None
        if source.write_back.update_task and request is not None:
            task = await _complete_task(client, request, f"DiagnosticReport/{report.get('id')}")
            said.append(f"Task/{task} completed" if task else "no Task for the referral there")
        if source.write_back.notify:
            note = await client.create(
                _communication(opinion, subject, request, task, report), if_none_exist=criteria
            )
            said.append(f"Communication/{note.get('id')}")
    return ", ".join(said)


async def _create_or_update(client: FhirClient, resource: JsonObject, criteria: str) -> JsonObject:
    """Create `resource` unless `criteria` find it; one found that differs (an amended
    opinion) is updated in place: the referrer keeps one report, at its latest version."""
    found = await client.create(resource, if_none_exist=criteria)
    if all(found.get(key) == value for key, value in resource.items()):
        return found
    version = (found.get("meta") or {}).get("versionId")
    return await client.update(
        {**resource, "id": found["id"]}, if_match=f'W/"{version}"' if version else None
    )


async def _their_patient(client: FhirClient, opinion: Opinion) -> JsonObject:
    if opinion.source_patient_id:
        return {"reference": f"Patient/{opinion.source_patient_id}"}
    match = await find_patient(client, opinion.patient)
    if match.found is not None:
        return {"reference": f"Patient/{match.found.source_id}"}
    identifiers = [i for i in opinion.patient.get("identifier") or [] if i.get("value")]
    if not identifiers:
        raise NotAnOpinion("the patient is not known at the referrer and has no identifier")
    return {"identifier": identifiers[0]}


async def _their_referral(client: FhirClient, opinion: Opinion) -> str | None:
    """The referrer's own ServiceRequest for the referral (by its identifier), if any."""
    for identifier in opinion.referral_identifiers:
        if not identifier.get("system") or not identifier.get("value"):
            continue
        criteria = {"identifier": f"{identifier['system']}|{identifier['value']}"}
        async for page in client.search("ServiceRequest", criteria):
            for entry in page.get("entry") or []:
                if (entry.get("resource") or {}).get("resourceType") == "ServiceRequest":
                    return f"ServiceRequest/{entry['resource']['id']}"
    return None


async def _complete_task(client: FhirClient, request: str, report: str) -> str | None:
    async for page in client.search("Task", {"focus": request}):
        for entry in page.get("entry") or []:
            task = entry.get("resource") or {}
            if task.get("resourceType") != "Task":
                continue
            if task.get("status") != "completed":
                version = (task.get("meta") or {}).get("versionId")
                task = {
                    **task,
                    "status": "completed",
                    "lastModified": instant(utc_now()),
                    "output": [
                        *(task.get("output") or []),
                        {
                            "type": {"text": "Second opinion"},
                            "valueReference": {"reference": report},
                        },
                    ],
                }
                await client.update(task, if_match=f'W/"{version}"' if version else None)
            return str(task["id"])
    return None


def _identifier(opinion: Opinion) -> list[JsonObject]:
    return [{"system": OPINION_SYSTEM, "value": opinion.report_id}]


def _document(opinion: Opinion, subject: JsonObject, request: str | None, pdf: str) -> JsonObject:
    document: JsonObject = {
        "resourceType": "DocumentReference",
        "identifier": _identifier(opinion),
        "status": "current",
        "type": {"coding": [CONSULT_NOTE], "text": "Second opinion"},
        "subject": subject,
        # The opinion's own time, not the attempt's: a retry finds the document unchanged.
        "date": opinion.report.get("issued") or instant(utc_now()),
        "description": opinion.report.get("conclusion", "Second opinion")[:500],
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "data": pdf,
                    "title": "Second opinion",
                }
            }
        ],
    }
    if request:
        document["context"] = {"related": [{"reference": request}]}
    return document


def _report(opinion: Opinion, subject: JsonObject, request: str | None, pdf: str) -> JsonObject:
    """The opinion as the referrer's server can hold it: its own references (performers,
    results at the hub) kept as names only."""
    report: JsonObject = _names_only(
        {k: v for k, v in opinion.report.items() if k not in ("id", "meta", "result")}
    )
    report["identifier"] = [*(opinion.report.get("identifier") or []), *_identifier(opinion)]
    report["subject"] = subject
    report["presentedForm"] = [
        {"contentType": "application/pdf", "data": pdf, "title": "Second opinion"}
    ]
    if request:
        report["basedOn"] = [{"reference": request}]
    else:
        report.pop("basedOn", None)
    return report


def _names_only(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _names_only(v) for k, v in node.items() if k != "reference"}
    if isinstance(node, list):
        return [_names_only(child) for child in node]
    return node


def _communication(
    opinion: Opinion,
    subject: JsonObject,
    request: str | None,
    task: str | None,
    report: JsonObject,
) -> JsonObject:
    about = [{"reference": r} for r in (f"Task/{task}" if task else None, request) if r]
    communication: JsonObject = {
        "resourceType": "Communication",
        "identifier": _identifier(opinion),
        "status": "completed",
        "subject": subject,
        "sent": instant(utc_now()),
        "payload": [
            {"contentString": "The second opinion you asked for is available."},
            {"contentReference": {"reference": f"DiagnosticReport/{report.get('id')}"}},
        ],
    }
    if about:
        communication["about"] = about
    return communication
