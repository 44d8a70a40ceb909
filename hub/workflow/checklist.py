"""The records a second-opinion review needs (config/checklist.yaml) and, for one case,
which are on file and which are missing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl

import yaml
from pydantic import BaseModel, ConfigDict, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import codes
from hub.errors import HubError
from hub.fhir.dates import date_range, utc_now
from hub.fhir.search_parameters import supported_types
from hub.jobs.outbox import enqueue
from hub.storage.repository import StoredResource
from hub.storage.search import SearchRunner, VisibleRows, parse_search
from hub.storage.tables import JobRow

CHECK_RECORDS_JOB = "check-records"
ALL_PROGRAMS = "all"
# Evidence shown per item: enough to open it, not the whole record.
EVIDENCE = 5


class ChecklistItem(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    title: str
    queries: tuple[str, ...]
    required: tuple[str, ...] = ()
    fetch: tuple[Literal["fhir", "dicom"], ...] = ()
    within_days: int | None = None

    @field_validator("queries")
    @classmethod
    def _searches(cls, queries: tuple[str, ...]) -> tuple[str, ...]:
        for query in queries:
            resource_type, _, params = query.partition("?")
            if resource_type not in supported_types():
                raise ValueError(f"{query!r}: {resource_type!r} is not a type the hub serves")
            example = params.format(patient="p", referral="r", since="2026-01-01")
            try:
                parse_search(resource_type, parse_qsl(example), default_count=1, max_count=1)
            except HubError as exc:
                raise ValueError(f"{query!r}: {exc.diagnostics}") from exc
        return queries

    @field_validator("required")
    @classmethod
    def _programs(cls, required: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(required) - {ALL_PROGRAMS, *codes.PROGRAMS}
        if unknown:
            raise ValueError(f"unknown programs {sorted(unknown)}; known: {list(codes.PROGRAMS)}")
        return required

    def required_for(self, program: str) -> bool:
        return ALL_PROGRAMS in self.required or program in self.required


class Checklist(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    checklist: tuple[ChecklistItem, ...]


@cache
def load_checklist(path: Path) -> tuple[ChecklistItem, ...]:
    """The checklist of `path` (validated; a bad query names the item)."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return Checklist.model_validate(document).checklist


@dataclass(frozen=True)
class ItemStatus:
    item: ChecklistItem
    required: bool
    found: int
    """How many resources satisfy it (counted up to EVIDENCE per query)."""
    evidence: tuple[str, ...]
    """References (`Type/id`) of some of them."""

    @property
    def present(self) -> bool:
        return self.found > 0


@dataclass(frozen=True)
class Completeness:
    program: str
    items: tuple[ItemStatus, ...]

    @property
    def missing_required(self) -> list[ItemStatus]:
        return [status for status in self.items if status.required and not status.present]

    @property
    def complete(self) -> bool:
        return not self.missing_required


def case_program(task: StoredResource, default: str) -> str:
    for concept in task.content.get("performerType") or []:
        for coding in concept.get("coding") or []:
            if coding.get("system") == codes.PROGRAM_SYSTEM and coding.get("code"):
                return str(coding["code"])
    return default


def evaluate(
    searcher: SearchRunner,
    items: tuple[ChecklistItem, ...],
    task: StoredResource,
    referral: StoredResource,
    program: str,
    visible: VisibleRows | None = None,
) -> Completeness:
    """What of `items` the case of `task` (for `referral`) has on file."""
    patient = str((task.content.get("for") or {}).get("reference", "")).removeprefix("Patient/")
    referred = referral.content.get("authoredOn")
    day = date_range(referred)[0] if isinstance(referred, str) else utc_now()
    statuses = []
    for item in items:
        since = (day - timedelta(days=item.within_days or 0)).date().isoformat()
        evidence: list[str] = []
        for query in item.queries:
            resource_type, _, params = query.partition("?")
            filled = params.format(patient=patient, referral=referral.resource_id, since=since)
            search = parse_search(
                resource_type, parse_qsl(filled), default_count=EVIDENCE, max_count=EVIDENCE
            )
            page = searcher.search(search, visible, with_total=False)
            evidence.extend(found.reference for found in page.matches)
            if evidence:
                break
        statuses.append(
            ItemStatus(item, item.required_for(program), len(evidence), tuple(evidence))
        )
    return Completeness(program, tuple(statuses))


def queue_records_check(session: Session, case_task_id: str) -> None:
    """Queue a check of the case's records, unless one is already waiting to run."""
    waiting = session.scalar(
        select(JobRow.job_id).where(
            JobRow.kind == CHECK_RECORDS_JOB,
            JobRow.subject == case_task_id,
            JobRow.status == "pending",
        )
    )
    if waiting is None:
        enqueue(session, CHECK_RECORDS_JOB, case_task_id)
