"""The `map-hl7` job: a logged message → FHIR resources, a Provenance, a conversion report.

Runs in the job's transaction: the resources, the message's new status and the job's `done`
commit together, so a message is mapped exactly once even if a worker dies mid-way (the
mapping's conditional creates make a second run harmless as well).

Its log lines carry the correlation id the intake gave the message (hub.logs), and say what
was made by resource type and count: never a value from the message.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from hub import codes
from hub.errors import HubError
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.fhir.transactions import process_bundle
from hub.jobs.outbox import Job, mark_done
from hub.jobs.worker import JobFailed
from hub.logs import correlated
from hub.storage.tables import MessageRow
from mappings.engine import map_message
from mappings.errors import MappingError
from mappings.hl7v2.tokenizer import Hl7ParseError, parse_message

MESSAGE_ID_SYSTEM = f"{codes.CANONICAL_BASE}/sid/hl7v2-message"

log = logging.getLogger("hub.messages.mapping")


def map_hl7_message(session: Session, job: Job, *, models: bool = False) -> None:
    """Map the message the job names and store what it produced.

    `models` also validates the resources against the FHIR R4 models before storing (the
    `hl7_model_validation` setting; about 6 ms a 15-OBX result, 2-3x the whole mapping).
    """
    row = session.get(MessageRow, int(job.subject))
    if row is None:
        raise JobFailed(f"message {job.subject} is not in the log", retryable=False)
    # A message logged before correlation ids existed gets one named after it.
    with correlated(row.correlation_id or f"message-{row.message_id}"):
        _map(session, row, job, models)


def _map(session: Session, row: MessageRow, job: Job, models: bool) -> None:
    ids = {"message_id": row.message_id, "control_id": row.control_id, "job_id": job.job_id}
    log.info(
        "mapping message %d (%s, control id %s) started",
        row.message_id,
        row.message_type,
        row.control_id,
        extra=ids,
    )
    try:
        result = map_message(parse_message(row.raw))
    except (MappingError, Hl7ParseError) as exc:
        _failed(session, row, job, f"{type(exc).__name__}: {exc}", None)
        return
    log.info(
        "bundle assembled for message %d: %s",
        row.message_id,
        _by_type(e.get("resource", {}) for e in result.bundle.get("entry", [])),
        extra=ids,
    )
    interactions = FhirInteractions(session)
    savepoint = session.begin_nested()
    try:
        response = process_bundle(interactions, result.bundle, base="", models=models)
        produced = _locations(response)
        if produced:
            interactions.repository.create("Provenance", _provenance(row, produced))
        savepoint.commit()
    except HubError as exc:
        savepoint.rollback()
        where = ", ".join(e for issue in exc.issues for e in issue.expression)
        _failed(
            session,
            row,
            job,
            f"{exc.diagnostics} {where}".strip(),
            json.dumps(result.report.to_json()),
        )
        return
    row.status = "mapped"
    row.error = None
    row.report = json.dumps(result.report.to_json())
    row.produced = json.dumps(produced)
    mark_done(session, job)
    log.info(
        "mapping message %d done: %d resources stored (%s)",
        row.message_id,
        len(produced),
        _by_type({"resourceType": ref.split("/")[0]} for ref in produced),
        extra={**ids, "resources": len(produced)},
    )


def _failed(session: Session, row: MessageRow, job: Job, error: str, report: str | None) -> None:
    # A mapping that failed fails the same way again: the message is marked failed for
    # hospital IT (message log, replay after a fix), and the job is done with it.
    row.status = "failed"
    row.error = error[:4000]
    row.report = report
    mark_done(session, job)
    # The error names fields and codes, which can hold patient data: the log says only
    # that it failed; the message log keeps the error for hospital IT.
    log.warning(
        "mapping message %d failed (see the message log)",
        row.message_id,
        extra={"message_id": row.message_id, "control_id": row.control_id, "job_id": job.job_id},
    )


def _by_type(resources: Iterable[dict[str, Any]]) -> str:
    """`Patient 1, Observation 15`: what a bundle holds, by type, in order of appearance."""
    counts = Counter(str(resource.get("resourceType", "?")) for resource in resources)
    return ", ".join(f"{name} {count}" for name, count in counts.items()) or "nothing"


def _locations(response: dict[str, Any]) -> list[str]:
    produced = []
    for entry in response.get("entry", []):
        location = entry.get("response", {}).get("location", "")
        if location:
            produced.append(location.split("/_history/")[0].lstrip("/"))
    return list(dict.fromkeys(produced))


def _provenance(row: MessageRow, targets: list[str]) -> dict[str, Any]:
    sender = "/".join(p for p in (row.sending_application, row.sending_facility) if p)
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target} for target in targets],
        "recorded": instant(utc_now()),
        "activity": {
            "coding": [{"system": codes.DATA_OPERATION_SYSTEM, "code": "CREATE"}],
            "text": f"Mapped from HL7 v2 {row.message_type}",
        },
        "agent": [{"who": {"display": sender or row.channel}}],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": MESSAGE_ID_SYSTEM, "value": str(row.message_id)},
                    "display": f"{row.message_type} {row.control_id or ''} from {sender}".strip(),
                },
            }
        ],
    }
