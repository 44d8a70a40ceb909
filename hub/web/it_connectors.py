"""The state of each configured connector for hospital IT, derived from what the hub
stored: the message log (MLLP listeners, destinations, the batch folder), the job outbox
(pulls, write-backs, deliveries that failed), the record pulls and the DICOM transfers.

For each: whether this process serves it (listeners and the Storage SCP), the newest
success and the newest failure. Health follows from them: a listener that is not running is
down; a connector whose newest event failed is failing; one that succeeded last works.
Nothing here names a patient: only ids, message types, control ids and errors, which the
hub writes without PHI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, cast, select
from sqlalchemy.orm import Session

from connectors.dimse import ScpStateError
from connectors.hl7v2_mllp import ListenerStateError
from hub.imaging.pull import PULL_JOB
from hub.messages.outbound import DELIVER_JOB
from hub.records.fhir_pull import PULL_RECORDS_JOB
from hub.records.write_back import WRITE_BACK_JOB
from hub.settings import Settings
from hub.storage.tables import DicomTransferRow, JobRow, MessageRow, RecordPullRow

HEALTH_LABELS = {
    "ok": "Working",
    "failing": "Failing",
    "down": "Not running",
    "idle": "No traffic yet",
}


@dataclass(frozen=True)
class Event:
    at: datetime
    detail: str


@dataclass(frozen=True)
class ConnectorStatus:
    kind: str
    name: str
    where: str
    running: str | None
    """For what listens (MLLP listener, Storage SCP): how it listens now, or "" if it does
    not; None for what the hub calls out to."""
    last_success: Event | None
    last_failure: Event | None

    @property
    def health(self) -> str:
        if self.running == "":
            return "down"
        if self.last_failure and (
            self.last_success is None or self.last_failure.at >= self.last_success.at
        ):
            return "failing"
        if self.last_success:
            return "ok"
        return "idle"

    @property
    def health_label(self) -> str:
        return HEALTH_LABELS[self.health]


Finder = Callable[[Session], Event | None]


def connector_statuses(
    session: Session, settings: Settings, listeners: list[Any], scp: Any
) -> list[ConnectorStatus]:
    """Every connector of `settings`, in configuration order; `listeners` and `scp`: the
    MLLP listeners and Storage SCP this process runs (app.state)."""
    running = {listener.config.name: listener for listener in listeners}
    statuses = []
    for config in settings.mllp_listeners:
        statuses.append(
            _status(
                session,
                "MLLP listener (HL7 v2 in)",
                config.name,
                f"{config.host}:{config.port}",
                _listening(running.get(config.name)),
                _messages("in", config.name, ("accepted", "mapped")),
                _messages("in", config.name, ("rejected", "failed")),
            )
        )
    for destination in settings.mllp_destinations:
        statuses.append(
            _status(
                session,
                "MLLP destination (HL7 v2 out)",
                destination.name,
                f"{destination.host}:{destination.port}",
                None,
                _deliveries(destination.name, succeeded=True),
                _deliveries(destination.name, succeeded=False),
            )
        )
    for source in settings.fhir_sources:
        statuses.append(
            _status(
                session,
                "FHIR source (records pulled)",
                source.name,
                str(source.base_url),
                None,
                _pulls(source.name, succeeded=True),
                _newest(
                    _pulls(source.name, succeeded=False), _job_errors(PULL_RECORDS_JOB, source.name)
                ),
            )
        )
        if source.write_back is not None:
            statuses.append(
                _status(
                    session,
                    "FHIR write-back (opinions out)",
                    source.name,
                    str(source.base_url),
                    None,
                    _jobs_done(WRITE_BACK_JOB, source.name),
                    _job_errors(WRITE_BACK_JOB, source.name),
                )
            )
    imaging = settings.imaging_sources
    peers = [
        *((s.name, str(s.base_url)) for s in imaging.dicomweb),
        *((s.name, f"{s.host}:{s.port} ({s.called_ae})") for s in imaging.dimse),
    ]
    for peer, where in peers:
        statuses.append(
            _status(
                session,
                "Imaging source (studies pulled)",
                peer,
                where,
                None,
                _transfers("pull", peer, succeeded=True),
                _newest(_transfers("pull", peer, succeeded=False), _job_errors(PULL_JOB, peer)),
            )
        )
    if settings.dicom_scp is not None:
        scp_config = settings.dicom_scp
        statuses.append(
            _status(
                session,
                "DICOM Storage SCP (studies pushed)",
                scp_config.ae_title,
                f"{scp_config.host}:{scp_config.port}",
                _scp_running(scp),
                _transfers("push", None, succeeded=True),
                _transfers("push", None, succeeded=False),
            )
        )
    if settings.hl7_batch_folder is not None:
        folder = settings.hl7_batch_folder
        channel = f"folder:{folder.name}"
        statuses.append(
            _status(
                session,
                "HL7 batch file drop",
                folder.name,
                str(folder),
                None,
                _messages("in", channel, ("accepted", "mapped")),
                _messages("in", channel, ("rejected", "failed")),
            )
        )
    if settings.dicom_media_folder is not None:
        folder = settings.dicom_media_folder
        statuses.append(
            _status(
                session,
                "DICOM media drop (patient CDs)",
                folder.name,
                str(folder),
                None,
                _transfers("media", None, succeeded=True),
                _transfers("media", None, succeeded=False),
            )
        )
    return statuses


def _status(
    session: Session,
    kind: str,
    name: str,
    where: str,
    running: str | None,
    success: Finder,
    failure: Finder,
) -> ConnectorStatus:
    return ConnectorStatus(kind, name, where, running, success(session), failure(session))


def _listening(listener: Any) -> str:
    if listener is None:
        return ""
    try:
        return f"listening on port {listener.bound_port}"
    except ListenerStateError:
        return ""


def _scp_running(scp: Any) -> str:
    if scp is None:
        return ""
    try:
        return f"listening on port {scp.bound_port}"
    except ScpStateError:
        return ""


def _newest(*finders: Finder) -> Finder:
    def find(session: Session) -> Event | None:
        found = [event for event in (f(session) for f in finders) if event is not None]
        return max(found, key=lambda event: event.at) if found else None

    return find


def _messages(direction: str, channel: str, statuses: tuple[str, ...]) -> Finder:
    """The newest message of `channel` in one of `statuses`."""

    def find(session: Session) -> Event | None:
        row = session.execute(
            select(
                MessageRow.message_id,
                MessageRow.received_at,
                MessageRow.message_type,
                MessageRow.control_id,
                MessageRow.status,
                MessageRow.error,
            )
            .where(
                MessageRow.direction == direction,
                MessageRow.channel == channel,
                MessageRow.status.in_(statuses),
            )
            .order_by(MessageRow.received_at.desc(), MessageRow.message_id.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        what = f"message {row.message_id} {row.message_type} {row.control_id or ''}".strip()
        return Event(row.received_at, f"{what}: {row.status}" + _error(row.error))

    return find


def _deliveries(destination: str, *, succeeded: bool) -> Finder:
    """The newest delivery to `destination` that the peer ACKed, or that failed (its job
    holds the error until a later attempt succeeds)."""

    def find(session: Session) -> Event | None:
        condition: ColumnElement[bool] = (
            JobRow.status == "done" if succeeded else JobRow.last_error.is_not(None)
        )
        row = session.execute(
            select(
                MessageRow.message_id, MessageRow.control_id, JobRow.updated_at, JobRow.last_error
            )
            .join(JobRow, JobRow.subject == cast(MessageRow.message_id, String))
            .where(
                JobRow.kind == DELIVER_JOB,
                MessageRow.direction == "out",
                MessageRow.channel == destination,
                condition,
            )
            .order_by(JobRow.updated_at.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        what = f"message {row.message_id} {row.control_id or ''}".strip()
        if succeeded:
            return Event(row.updated_at, f"{what}: delivered")
        return Event(row.updated_at, f"{what}{_error(row.last_error)}")

    return find


def _pulls(source: str, *, succeeded: bool) -> Finder:
    statuses = ("complete", "incomplete") if succeeded else ("failed",)

    def find(session: Session) -> Event | None:
        row = session.execute(
            select(
                RecordPullRow.case_task_id,
                RecordPullRow.status,
                RecordPullRow.updated_at,
                RecordPullRow.error,
            )
            .where(RecordPullRow.source == source, RecordPullRow.status.in_(statuses))
            .order_by(RecordPullRow.updated_at.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        detail = f"pull for case Task/{row.case_task_id}: {row.status}" + _error(row.error)
        return Event(row.updated_at, detail)

    return find


def _job_errors(kind: str, target: str) -> Finder:
    """The newest job of `kind` for `target` (subject `…|target`) that failed an attempt."""

    def find(session: Session) -> Event | None:
        row = session.execute(
            select(JobRow.job_id, JobRow.status, JobRow.updated_at, JobRow.last_error)
            .where(
                JobRow.kind == kind,
                JobRow.subject.endswith(f"|{target}", autoescape=True),
                JobRow.last_error.is_not(None),
            )
            .order_by(JobRow.updated_at.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        state = "in the dead letters" if row.status == "dead" else "to be retried"
        return Event(row.updated_at, f"job {row.job_id} ({state}){_error(row.last_error)}")

    return find


def _jobs_done(kind: str, target: str) -> Finder:
    def find(session: Session) -> Event | None:
        row = session.execute(
            select(JobRow.job_id, JobRow.subject, JobRow.updated_at)
            .where(
                JobRow.kind == kind,
                JobRow.subject.endswith(f"|{target}", autoescape=True),
                JobRow.status == "done",
            )
            .order_by(JobRow.updated_at.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        return Event(row.updated_at, f"job {row.job_id} done ({row.subject.rsplit('|', 1)[0]})")

    return find


def _transfers(kind: str, source: str | None, *, succeeded: bool) -> Finder:
    def find(session: Session) -> Event | None:
        statement = select(DicomTransferRow).where(
            DicomTransferRow.kind == kind,
            DicomTransferRow.status == ("closed" if succeeded else "failed"),
        )
        if source is not None:
            statement = statement.where(DicomTransferRow.source == source)
        row = session.scalars(
            statement.order_by(DicomTransferRow.transfer_id.desc()).limit(1)
        ).first()
        if row is None:
            return None
        when = row.closed_at or row.opened_at
        detail = f"transfer {row.transfer_id} from {row.source}: {row.accepted} accepted"
        if not succeeded:
            reasons = [
                p.get("reason", "")
                for p in json.loads(row.report or "[]")
                if p.get("file") == "(transfer)"
            ]
            detail += _error("; ".join(reasons) or f"{row.rejected} rejected")
        return Event(when, detail)

    return find


def _error(error: str | None) -> str:
    return f": {error}" if error else ""
