"""The `pull-fhir-records` job: a case's records from an outside FHIR server.

1. The case's patient is found at the source (hub.records.patient_match); an ambiguous one
   is held for a case manager (the pull's report lists the candidates), never guessed.
2. Its records come by `Patient/$everything` where the source offers it, else by the
   source's query set, or by a Bulk Data `$export`; after a complete pull, the next asks only
   for what changed since (`_lastUpdated`, `_since`). Resources they reference but did not
   bring are read one by one; attachments at the source are fetched.
3. Each resource is checked against the FHIR R4 models (an invalid one is reported, not
   stored), normalized into the hub's id space (hub.records.normalize) and stored in one
   transaction with a Provenance naming the source; the patient's identifiers at the source
   are added to the hub's patient, so the next pull finds it by identifier.
4. The pull's report (what was fetched, stored, skipped, what could not be had and why) is
   kept on the pull and summed up on the case as a Communication for the case manager.

A source that fails (refuses our credentials, does not answer, breaks a page after
retries) fails the query it was answering: the rest is stored and the pull is
`incomplete`, saying exactly what is missing. Only a pull that could not start (no token,
the patient search failed) fails the job, which is retried with backoff and at last lands
in the dead letters, replayable.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from connectors.fhir_rest.bulk import export_patient
from connectors.fhir_rest.client import FhirClient
from connectors.fhir_rest.config import FhirSource
from connectors.fhir_rest.errors import FhirSourceError
from connectors.http import MissingSecret
from hub import codes
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.imaging.attach import Unattachable, case_and_patient
from hub.imaging.events import record_case_event
from hub.jobs.outbox import Job, enqueue, mark_done
from hub.jobs.worker import JobFailed, OwnTransactions
from hub.records.normalize import Normalizer, Problem, hub_id
from hub.records.patient_match import PatientMatch, find_patient
from hub.records.validation import Validation
from hub.storage.repository import ResourceRepository
from hub.storage.tables import RecordPullRow, ResourceRow

PULL_RECORDS_JOB = "pull-fhir-records"
SOURCE_SYSTEM = f"{codes.CANONICAL_BASE}/sid/fhir-source"
PROVENANCE_CHUNK = 1000
SINCE_MARGIN = timedelta(minutes=5)
JsonObject = dict[str, Any]


def queue_record_pull(
    session: Session, case_task_id: str, source: str, source_patient_id: str | None = None
) -> RecordPullRow:
    """Queue a pull of the case's records from `source`, in the caller's transaction.
    `source_patient_id`: the patient at the source, as a case manager chose it."""
    row = _pull_row(session, case_task_id, source)
    row.status = "queued"
    if source_patient_id:
        row.source_patient_id = source_patient_id
        row.since = None
    row.updated_at = utc_now()
    enqueue(session, PULL_RECORDS_JOB, f"{case_task_id}|{source}")
    return row


def pull_records_job(sources: Sequence[FhirSource]) -> OwnTransactions:
    by_name = {source.name: source for source in sources}

    def run(sessions: sessionmaker[Session], job: Job) -> None:
        task_id, _, name = job.subject.partition("|")
        source = by_name.get(name)
        if source is None:
            raise JobFailed(f"no FHIR source named '{name}'", retryable=False)
        with sessions() as session:
            try:
                _, patient = case_and_patient(ResourceRepository(session), task_id)
            except Unattachable as exc:
                raise JobFailed(str(exc), retryable=False) from exc
            row = _pull_row(session, task_id, name)
            known_patient, since = row.source_patient_id, row.since
            session.commit()
        try:
            outcome = asyncio.run(
                _pull(source, patient.content, patient.resource_id, known_patient, since, sessions)
            )
        except (FhirSourceError, MissingSecret) as exc:
            with sessions() as session:
                _finish(session, task_id, name, "failed", error=str(exc), report={})
                session.commit()
            raise JobFailed(f"{name}: {exc}") from exc
        with sessions() as session:
            _store(session, task_id, source, outcome)
            mark_done(session, job)
            session.commit()

    return OwnTransactions(run)


@dataclass
class PullOutcome:
    status: str
    """complete, incomplete, held, not-found"""
    normalizer: Normalizer | None
    match: PatientMatch | None
    strategy: str
    started: str
    held: set[str]
    """Source `Type/id`s referenced and already in the hub from earlier pulls."""
    seconds: dict[str, float]
    """Wall time of each stage, for the report."""
    validation: Validation | None
    clock: float = 0.0
    """time.perf_counter() at the start of the pull."""


async def _pull(
    source: FhirSource,
    patient: JsonObject,
    hub_patient_id: str,
    known_patient: str | None,
    since: str | None,
    sessions: sessionmaker[Session],
) -> PullOutcome:
    # The next pull asks for what changed after this moment, less a margin for the clocks
    # of the hub and the source disagreeing (what changed within it comes again, unchanged).
    started = instant(utc_now() - SINCE_MARGIN)
    clock = time.perf_counter()
    async with FhirClient(source) as client:
        match = None
        if known_patient is None:
            match = await find_patient(client, patient)
            if match.found is None:
                status = "held" if match.candidates else "not-found"
                return PullOutcome(status, None, match, "", started, set(), {}, None)
            known_patient = match.found.source_id
            since = None  # a patient newly found: all of the record
        normalizer = Normalizer(source.name, source.base_url, known_patient, hub_patient_id)
        validation = Validation()
        pull = Collector(normalizer, validation)
        pull.add(await client.read("Patient", known_patient))
        strategy = source.strategy
        if strategy == "auto":
            strategy = "everything" if await client.offers("everything") else "queries"
        await _fetch(client, strategy, known_patient, since, pull)
        held = await _resolve_references(client, pull, sessions)
        if source.fetch_attachments:
            await _fetch_attachments(client, normalizer)
    validation.submit()  # before normalization rewrites the resources in place
    seconds = {"fetch": time.perf_counter() - clock}
    incomplete = any(p.kind == "query" for p in normalizer.problems)
    status = "incomplete" if incomplete else "complete"
    return PullOutcome(
        status, normalizer, match, strategy, started, held, seconds, validation, clock
    )


@dataclass
class Collector:
    """Where pulled resources go: the normalizer, and the validation of what it keeps."""

    normalizer: Normalizer
    validation: Validation

    def add(self, resource: JsonObject) -> None:
        key = self.normalizer.add(resource)
        if key is not None:
            self.validation.add(key, resource)


async def _fetch(
    client: FhirClient, strategy: str, patient_id: str, since: str | None, into: Collector
) -> None:
    source = client.source
    if strategy == "everything":
        await _collect("Patient/$everything", _entries(client.everything(patient_id, since)), into)
        return
    if strategy == "bulk-export":
        types = sorted({query.split("?")[0] for query in source.queries})
        await _collect("$export", export_patient(client, patient_id, types, since), into)
        return
    limit = asyncio.Semaphore(source.max_concurrency)

    async def one(query: str) -> None:
        resource_type, _, template = query.partition("?")
        params = [tuple(p.split("=", 1)) for p in template.format(patient=patient_id).split("&")]
        params.append(("_count", str(source.page_size)))
        if since:
            params.append(("_lastUpdated", f"gt{since}"))
        async with limit:
            pages = client.search(resource_type, [(k, v) for k, v in params])
            await _collect(query, _entries(pages), into)

    await asyncio.gather(*(one(query) for query in source.queries))


async def _entries(pages: AsyncIterator[JsonObject]) -> AsyncIterator[JsonObject]:
    async for page in pages:
        for entry in page.get("entry") or []:
            if isinstance(entry.get("resource"), dict):
                yield entry["resource"]


async def _collect(what: str, resources: AsyncIterator[JsonObject], into: Collector) -> None:
    """Add what `resources` yields; a failure of the source becomes a `query` problem (what
    came before it is kept)."""
    try:
        async for resource in resources:
            into.add(resource)
    except FhirSourceError as exc:
        into.normalizer.problems.append(Problem("query", what, str(exc)))


async def _resolve_references(
    client: FhirClient, pull: Collector, sessions: sessionmaker[Session]
) -> set[str]:
    """Read what pulled resources reference but the pull did not bring (one level), unless
    the hub holds it from an earlier pull; returns the source `Type/id`s it holds."""
    normalizer = pull.normalizer
    targets = normalizer.outside_targets()
    held = await asyncio.to_thread(_held, sessions, client.name, targets)
    wanted = sorted(t for t in targets if f"{t[0]}/{t[1]}" not in held)
    limit = client.source.max_reference_lookups
    for resource_type, source_id in wanted[limit:]:
        normalizer.unavailable[f"{resource_type}/{source_id}"] = (
            f"beyond the source's max_reference_lookups ({limit})"
        )
    gate = asyncio.Semaphore(client.source.max_concurrency)

    async def read(resource_type: str, source_id: str) -> None:
        key = f"{resource_type}/{source_id}"
        async with gate:
            try:
                pull.add(await client.read(resource_type, source_id))
            except FhirSourceError as exc:
                normalizer.unavailable[key] = str(exc)
        if key not in normalizer.pulled and key not in normalizer.unavailable:
            normalizer.unavailable[key] = "the hub does not store this resource (see skipped)"

    await asyncio.gather(*(read(t, i) for t, i in wanted[:limit]))
    return held


def _held(sessions: sessionmaker[Session], source: str, targets: set[tuple[str, str]]) -> set[str]:
    by_reference = {f"{t}/{hub_id(source, t, i)}": f"{t}/{i}" for t, i in targets}
    with sessions() as session:
        held = _existing(session, list(by_reference), live_only=True)
    return {by_reference[reference] for reference in held}


async def _fetch_attachments(client: FhirClient, normalizer: Normalizer) -> None:
    gate = asyncio.Semaphore(client.source.max_concurrency)

    async def fetch(url: str) -> None:
        async with gate:
            try:
                data, content_type = await client.attachment(url)
            except FhirSourceError as exc:
                normalizer.unavailable[url] = str(exc)
                return
        normalizer.add_attachment(url, data, content_type)

    await asyncio.gather(*(fetch(url) for url in sorted(normalizer.attachment_urls())))


def _store(session: Session, task_id: str, source: FhirSource, outcome: PullOutcome) -> None:
    normalizer = outcome.normalizer
    if normalizer is None:
        candidates = [c.to_json() for c in (outcome.match.candidates if outcome.match else [])]
        _finish(session, task_id, source.name, outcome.status, report={"candidates": candidates})
        return
    clock = time.perf_counter()
    resources = list(normalizer.normalized(outcome.held))
    outcome.seconds["normalize"] = time.perf_counter() - clock
    interactions = FhirInteractions(session)
    written = _write(interactions, resources)
    # The validation ran beside the fetching and the writing: only now is it known whether
    # something invalid must go (rarely: then the writing is done again without it).
    waited = time.perf_counter()
    rejected = outcome.validation.problems() if outcome.validation else {}
    outcome.seconds["validation wait"] = time.perf_counter() - waited
    if outcome.validation is not None:
        outcome.seconds["validated"] = outcome.validation.done_at - outcome.clock
    if rejected:
        session.rollback()
        resources = normalizer.demote(resources, rejected)
        interactions = FhirInteractions(session)
        written = _write(interactions, resources)
    _add_identifiers(interactions, normalizer)
    interactions.finish()
    targets = [reference for reference, _ in resources]
    for start in range(0, len(targets), PROVENANCE_CHUNK):
        interactions.repository.create(
            "Provenance", _provenance(source, targets[start : start + PROVENANCE_CHUNK])
        )
    report = {
        "strategy": outcome.strategy,
        "source_patient": normalizer.source_patient_id,
        "fetched": dict(sorted(normalizer.fetched.items())),
        "stored": dict(written),
        "contained": dict(sorted(normalizer.contained.items())),
        "problems": [p.to_json() for p in normalizer.problems],
        "seconds": {
            **{k: round(v, 3) for k, v in outcome.seconds.items()},
            "store": round(time.perf_counter() - clock, 3),
        },
    }
    row = _finish(session, task_id, source.name, outcome.status, report=report)
    row.source_patient_id = normalizer.source_patient_id
    row.stored = len(resources)
    if outcome.status == "complete":
        row.since = outcome.started


def _write(interactions: FhirInteractions, resources: list[tuple[str, JsonObject]]) -> Counter[str]:
    """Create or update each resource (references checked later, by `finish`)."""
    session = interactions.session
    existing = _existing(session, [reference for reference, _ in resources])
    written: Counter[str] = Counter()
    for reference, resource in resources:
        resource_type, resource_id = reference.split("/")
        if reference in existing:
            stored, _ = interactions.update(resource_type, resource_id, resource, validated=True)
            changed = stored.version_id > existing[reference]
            written["updated" if changed else "unchanged"] += 1
        else:
            interactions.create(resource_type, resource, resource_id=resource_id, validated=True)
            written["created"] += 1
    session.flush()
    return written


def _existing(
    session: Session, references: list[str], *, live_only: bool = False
) -> dict[str, int]:
    """Reference → current version, for those of `references` the hub holds (with
    `live_only`, not deleted)."""
    keys = [tuple(reference.split("/")) for reference in references]
    found: dict[str, int] = {}
    for start in range(0, len(keys), 500):
        query = select(ResourceRow.res_type, ResourceRow.res_id, ResourceRow.version_id).where(
            tuple_(ResourceRow.res_type, ResourceRow.res_id).in_(keys[start : start + 500])
        )
        if live_only:
            query = query.where(ResourceRow.deleted.is_(False))
        rows = session.execute(query)
        found |= {f"{row.res_type}/{row.res_id}": row.version_id for row in rows}
    return found


def _add_identifiers(interactions: FhirInteractions, normalizer: Normalizer) -> None:
    """The patient's identifiers at the source, added to the hub's patient (never its
    name or other demographics: those stay as the referral gave them)."""
    source_patient = normalizer.source_patient or {}
    patient = interactions.repository.read("Patient", normalizer.hub_patient_id)
    content = dict(patient.content)
    identifiers = list(content.get("identifier") or [])
    known = {(i.get("system"), i.get("value")) for i in identifiers}
    added = [
        {**identifier, "assigner": {"display": normalizer.source}}
        for identifier in source_patient.get("identifier") or []
        if identifier.get("value")
        and (identifier.get("system"), identifier.get("value")) not in known
    ]
    if added:
        content["identifier"] = identifiers + added
        interactions.update("Patient", patient.resource_id, content, validated=True)


def _provenance(source: FhirSource, targets: list[str]) -> JsonObject:
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target} for target in targets],
        "recorded": instant(utc_now()),
        "activity": {
            "coding": [{"system": codes.DATA_OPERATION_SYSTEM, "code": "UPDATE"}],
            "text": "Pulled from an outside FHIR server",
        },
        "agent": [{"who": {"display": f"FHIR REST connector ({source.name})"}}],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": SOURCE_SYSTEM, "value": source.name},
                    "display": source.base_url,
                },
            }
        ],
    }


def _pull_row(session: Session, case_task_id: str, source: str) -> RecordPullRow:
    row = session.scalar(
        select(RecordPullRow).where(
            RecordPullRow.case_task_id == case_task_id, RecordPullRow.source == source
        )
    )
    if row is None:
        now = utc_now()
        row = RecordPullRow(
            case_task_id=case_task_id,
            source=source,
            status="queued",
            stored=0,
            report="{}",
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
    return row


def _finish(
    session: Session,
    task_id: str,
    source: str,
    status: str,
    *,
    report: JsonObject,
    error: str | None = None,
) -> RecordPullRow:
    """Record how the pull ended, and tell the case (a Communication for its manager; once
    for a failure that the job's retries meet again)."""
    row = _pull_row(session, task_id, source)
    if (row.status, row.error) != (status, error):
        record_case_event(session, task_id, _event_text(source, status, report, error))
    row.status, row.error, row.report, row.updated_at = status, error, json.dumps(report), utc_now()
    return row


def _event_text(source: str, status: str, report: JsonObject, error: str | None) -> str:
    if status == "failed":
        return f"Records from {source}: the pull failed: {error}"
    if status == "held":
        listed = "; ".join(
            f"{c['id']} ({c['summary']}, score {c['score']})" for c in report["candidates"]
        )
        return (
            f"Records from {source}: several patients there match the case's patient "
            f"({listed}); a case manager must choose one."
        )
    if status == "not-found":
        return f"Records from {source}: the case's patient was not found there."
    problems = report.get("problems") or []
    kinds = Counter(p["kind"] for p in problems)
    missing = [p for p in problems if p["kind"] == "query"]
    text = (
        f"Records from {source}: {status}; {sum(report.get('stored', {}).values())} resources "
        f"stored ({', '.join(f'{k} {v}' for k, v in sorted(report.get('stored', {}).items()))})"
    )
    if kinds:
        text += "; reported: " + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
    if missing:
        text += ". Missing: " + "; ".join(f"{p['where']}: {p['detail']}" for p in missing)
    return text
