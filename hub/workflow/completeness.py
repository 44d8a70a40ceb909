"""Acting on a case's checklist: the job `check-records`, queued when a case opens and
whenever records about its patient arrive while it awaits records.

- every required item on file → the case moves to records-complete by itself;
- a missing item a configured connector can fetch, which that connector has not been asked
  for on this case yet → a pull job on it (FHIR: every `fhir_sources` entry; DICOM: every
  `imaging_sources` entry);
- missing items no connector can fetch (or that they did not bring) → one Communication to
  the referrer asking for them, not repeated for the same list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import codes
from hub.errors import NotFound
from hub.fhir.dates import instant, utc_now
from hub.imaging.events import CATEGORY_SYSTEM
from hub.imaging.pull import PULL_JOB, queue_pull
from hub.jobs.outbox import Job, mark_done
from hub.jobs.worker import JobFailed
from hub.records.fhir_pull import PULL_RECORDS_JOB, queue_record_pull
from hub.storage.repository import ResourceRepository
from hub.storage.search import Criterion, SearchQuery, SearchRunner
from hub.storage.tables import JobRow
from hub.workflow.case_states import RECEIVED_BUSINESS_STATUS
from hub.workflow.cases import CaseWorkflow, business_status_of
from hub.workflow.checklist import (
    Completeness,
    ItemStatus,
    case_program,
    evaluate,
    load_checklist,
)

REQUEST_ID_SYSTEM = f"{codes.CANONICAL_BASE}/sid/records-request"
# The statuses in which a case still gathers records.
GATHERING = ("received", "accepted", "on-hold")


def check_records_job(
    checklist_file: Path,
    fhir_sources: Sequence[str],
    imaging_sources: Sequence[str],
    default_program: str,
) -> Callable[[Session, Job], None]:
    """The job handler: `fhir_sources` / `imaging_sources` are the configured sources' names."""
    items = load_checklist(checklist_file)
    sources = {"fhir": tuple(fhir_sources), "dicom": tuple(imaging_sources)}
    pull_kinds = {"fhir": PULL_RECORDS_JOB, "dicom": PULL_JOB}

    def run(session: Session, job: Job) -> None:
        check(session, job)
        mark_done(session, job)

    def check(session: Session, job: Job) -> None:
        repository = ResourceRepository(session)
        task = repository.find("Task", job.subject)
        if task is None:
            raise JobFailed(f"the case Task/{job.subject} is gone", retryable=False)
        if task.content.get("status") not in GATHERING:
            return
        try:
            referral = CaseWorkflow(repository).referral_of(task)
        except NotFound as exc:
            raise JobFailed(str(exc), retryable=False) from exc
        program = case_program(task, default_program)
        status = evaluate(SearchRunner(session), items, task, referral, program)
        if status.complete:
            _records_complete(repository, task.resource_id)
            return
        unfetched = []
        for missing in status.missing_required:
            asked = [
                _ask_connector(session, job.subject, kind, source, pull_kinds[kind])
                for kind in missing.item.fetch
                for source in sources[kind]
            ]
            if not any(asked):
                unfetched.append(missing)
        if unfetched:
            _ask_referrer(repository, task.resource_id, referral.content, unfetched)

    return run


def _records_complete(repository: ResourceRepository, task_id: str) -> None:
    task = repository.read("Task", task_id)
    if business_status_of(task.content) != RECEIVED_BUSINESS_STATUS:
        return
    status = str(task.content.get("status"))
    CaseWorkflow(repository).transition(task_id, status, "records-complete", None)


def _ask_connector(session: Session, task_id: str, kind: str, source: str, job: str) -> bool:
    """Queue a pull from `source` unless one was ever queued for this case; True if one
    is queued now or still waiting (so the item may yet come)."""
    subject = f"{task_id}|{source}"
    earlier = session.scalars(
        select(JobRow.status).where(JobRow.kind == job, JobRow.subject == subject)
    ).all()
    if not earlier:
        if kind == "fhir":
            queue_record_pull(session, task_id, source)
        else:
            queue_pull(session, task_id, source)
        return True
    return any(status in ("pending", "running") for status in earlier)


def _ask_referrer(
    repository: ResourceRepository,
    task_id: str,
    referral: dict[str, Any],
    missing: list[ItemStatus],
) -> None:
    """One Communication to the referrer listing `missing`; the same list is asked once."""
    ids = sorted(status.item.id for status in missing)
    key = hashlib.sha256(f"{task_id}|{','.join(ids)}".encode()).hexdigest()[:32]
    identifier = {"system": REQUEST_ID_SYSTEM, "value": key}
    asked = Criterion("identifier", None, (f"{REQUEST_ID_SYSTEM}|{key}",))
    query = SearchQuery("Communication", criteria=[asked], count=1)
    if SearchRunner(repository.session).search(query, with_total=False).matches:
        return
    lines = ["To review this case our specialists still need:"]
    communication = referrer_communication(
        task_id, referral, [*lines, *(status.item.title for status in missing)]
    )
    communication["identifier"] = [identifier]
    repository.create("Communication", communication)


def referrer_communication(
    task_id: str, referral: dict[str, Any], lines: list[str]
) -> dict[str, Any]:
    """A Communication to the referrer of `referral` (its requester) about case `task_id`,
    one payload entry per line of `lines`: what the hub (and a case manager) sends them."""
    communication: dict[str, Any] = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": "notification"}]}],
        "basedOn": [{"reference": f"Task/{task_id}"}],
        "about": [{"reference": f"ServiceRequest/{referral['id']}"}],
        "sent": instant(utc_now()),
        "payload": [{"contentString": line} for line in lines],
    }
    if referral.get("subject"):
        communication["subject"] = referral["subject"]
    if referral.get("requester"):
        communication["recipient"] = [referral["requester"]]
    return communication


def summary(status: Completeness) -> dict[str, Any]:
    """The Parameters resource `$completeness` answers with."""
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "program", "valueCode": status.program},
            {"name": "complete", "valueBoolean": status.complete},
            *(_item_parameter(item) for item in status.items),
        ],
    }


def _item_parameter(status: ItemStatus) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [
        {"name": "id", "valueCode": status.item.id},
        {"name": "title", "valueString": status.item.title},
        {"name": "required", "valueBoolean": status.required},
        {"name": "present", "valueBoolean": status.present},
    ]
    parts += [{"name": "evidence", "valueReference": {"reference": r}} for r in status.evidence]
    return {"name": "item", "part": parts}
