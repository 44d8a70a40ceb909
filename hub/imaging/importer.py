"""DICOM arriving at the hub: transfers, instances kept as received, then attachment as a job.

Every way in (a push to the Storage SCP, a pull from a PACS, an uploaded patient CD) is a
transfer: `open_transfer`, then `receive` for each staged file, then `close_transfer`.
`receive` checks the file (a bad one is refused with its reason, in the transfer's report),
moves it into the content-addressed store as received and commits its row before the
sender is told it was stored. A study stays `receiving`, invisible to the DICOMweb API,
until its transfer closes; closing queues one `attach-dicom-study` job per study, which
reconciles its identity and makes its ImagingStudy (hub.imaging.attach).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom.errors import InvalidDicom
from dicom.instances import InstanceInfo, read_instance
from dicom.store import ContentStore
from hub.errors import NotFound
from hub.fhir.dates import utc_now
from hub.imaging.events import record_case_event
from hub.jobs.outbox import enqueue
from hub.storage.tables import DicomInstanceRow, DicomStudyRow, DicomTransferRow
from hub.storage.upsert import insert_on

log = logging.getLogger("hub.imaging")

ATTACH_JOB = "attach-dicom-study"
TRANSFER_KINDS = ("push", "pull", "media")


@dataclass(frozen=True)
class Received:
    """What became of one file: stored (with its UIDs), or refused and why."""

    name: str
    accepted: bool
    reason: str = ""
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    duplicate: bool = False


@dataclass
class TransferSummary:
    transfer_id: int
    accepted: int
    rejected: int
    studies: list[str] = field(default_factory=list)
    problems: list[dict[str, str]] = field(default_factory=list)


def _refusals(transfer: DicomTransferRow, problems: list[dict[str, str]]) -> str:
    lines = [f"{p['file']}: {p['reason']}" for p in problems[:20]]
    more = f"\n… and {len(problems) - 20} more" if len(problems) > 20 else ""
    return (
        f"DICOM {transfer.kind} from {transfer.source} (transfer {transfer.transfer_id}): "
        f"{transfer.accepted} instance(s) stored, {len(problems)} problem(s):\n"
        + "\n".join(lines)
        + more
    )


def info_json(info: InstanceInfo) -> str:
    values = asdict(info)
    values.pop("pixel_data", None)  # where the pixels sit in the received file, not the served
    return json.dumps(values, separators=(",", ":"))


def info_from_json(text: str) -> InstanceInfo:
    values: dict[str, Any] = json.loads(text)
    return InstanceInfo(**values)


class DicomImporter:
    """Takes staged DICOM files into the store and the database, transfer by transfer."""

    def __init__(self, sessions: sessionmaker[Session], store: ContentStore) -> None:
        self.sessions = sessions
        self.store = store

    def open_transfer(self, kind: str, source: str, *, case_task_id: str | None = None) -> int:
        if kind not in TRANSFER_KINDS:
            raise ValueError(f"transfer kind must be one of {TRANSFER_KINDS}")
        with self.sessions() as session:
            row = DicomTransferRow(
                kind=kind,
                source=source[:255],
                case_task_id=case_task_id,
                status="open",
                accepted=0,
                rejected=0,
                report="[]",
                opened_at=utc_now(),
            )
            session.add(row)
            session.commit()
            return row.transfer_id

    def receive(self, transfer_id: int, staged: Path, name: str = "") -> Received:
        """Check the staged file and keep it; the file is gone from staging either way."""
        name = name or staged.name
        try:
            _, info = read_instance(staged)
        except InvalidDicom as exc:
            staged.unlink(missing_ok=True)
            self.record_refusal(transfer_id, name, exc.reason)
            return Received(name, False, exc.reason)
        stored = self.store.put_file(staged)
        now = utc_now()
        # Core statements, one round trip each: no ORM reads before the writes (the SCP
        # answers each C-STORE only after this commits).
        with self.sessions() as session:
            counted = session.execute(
                update(DicomTransferRow)
                .where(
                    DicomTransferRow.transfer_id == transfer_id, DicomTransferRow.status == "open"
                )
                .values(accepted=DicomTransferRow.accepted + 1)
                .returning(DicomTransferRow.case_task_id)
            ).first()
            if counted is None:
                raise NotFound(f"DICOM transfer {transfer_id} is not open.")
            added = session.execute(
                insert_on(session, DicomInstanceRow)
                .values(
                    sop_instance_uid=info.sop_instance_uid,
                    study_uid=info.study_instance_uid,
                    series_uid=info.series_instance_uid,
                    sop_class_uid=info.sop_class_uid,
                    transfer_syntax_uid=info.transfer_syntax_uid,
                    received_digest=stored.digest,
                    digest=None,
                    size=stored.size,
                    info=info_json(info),
                    transfer_id=transfer_id,
                    received_at=now,
                )
                .on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            )
            duplicate = added.rowcount == 0  # type: ignore[attr-defined]
            changes: dict[str, Any] = {"last_transfer_id": transfer_id, "updated_at": now}
            if not duplicate:  # more instances for an attached study: attached again once complete
                changes["status"] = case(
                    (DicomStudyRow.status == "attached", "receiving"), else_=DicomStudyRow.status
                )
            session.execute(
                insert_on(session, DicomStudyRow)
                .values(
                    study_uid=info.study_instance_uid,
                    status="receiving",
                    case_task_id=counted.case_task_id,
                    outside_patient_id=info.patient_id,
                    outside_issuer=info.issuer_of_patient_id,
                    last_transfer_id=transfer_id,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_update(index_elements=["study_uid"], set_=changes)
            )
            session.commit()
        return Received(
            name,
            True,
            sop_instance_uid=info.sop_instance_uid,
            study_uid=info.study_instance_uid,
            duplicate=duplicate,
        )

    def close_transfer(self, transfer_id: int, *, failed: str | None = None) -> TransferSummary:
        """End the transfer; queue the attachment of each study it brought (even a failed
        transfer's complete instances are kept: a retry fetches only what is missing)."""
        with self.sessions() as session:
            transfer = self._open(session, transfer_id)
            studies = list(
                session.scalars(
                    select(DicomStudyRow.study_uid)
                    .where(DicomStudyRow.last_transfer_id == transfer_id)
                    .order_by(DicomStudyRow.study_uid)
                )
            )
            problems: list[dict[str, str]] = json.loads(transfer.report)
            if failed:
                problems.append({"file": "(transfer)", "reason": failed})
                transfer.report = json.dumps(problems)
            transfer.status = "failed" if failed else "closed"
            transfer.closed_at = utc_now()
            if transfer.case_task_id and problems:
                record_case_event(session, transfer.case_task_id, _refusals(transfer, problems))
            if not failed:
                for study_uid in studies:
                    enqueue(session, ATTACH_JOB, study_uid)
            summary = TransferSummary(
                transfer_id, transfer.accepted, transfer.rejected, studies, problems
            )
            session.commit()
            return summary

    def record_refusal(self, transfer_id: int, name: str, reason: str) -> None:
        """Note in the transfer's report a file that was not taken, and why."""
        log.warning("DICOM transfer %d: a file was refused: %s", transfer_id, reason)
        with self.sessions() as session:
            transfer = self._open(session, transfer_id)
            problems = json.loads(transfer.report)
            problems.append({"file": name, "reason": reason})
            transfer.report = json.dumps(problems)
            transfer.rejected += 1
            session.commit()

    @staticmethod
    def _open(session: Session, transfer_id: int) -> DicomTransferRow:
        transfer = session.get(DicomTransferRow, transfer_id)
        if transfer is None:
            raise NotFound(f"DICOM transfer {transfer_id} is not known.")
        return transfer
