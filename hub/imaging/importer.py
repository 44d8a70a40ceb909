"""DICOM arriving at the hub: transfers, instances kept as received, then attachment as a job.

Every way in (a push to the Storage SCP, a pull from a PACS, an uploaded patient CD) is a
transfer: `open_transfer`, then `receive` for each staged file, then `close_transfer`.
`receive` checks the file (a bad one is refused with its reason, in the transfer's report),
moves it into the content-addressed store as received and commits its row before the
sender is told it was stored. The Storage SCP checks each file in its association's
thread and leaves the rest to hub.imaging.indexer, which links them into the store and
`record`s their rows in batches, then closes the transfer. A study stays `receiving`,
invisible to the DICOMweb API, until its transfer closes; closing queues one
`attach-dicom-study` job per study, which reconciles its identity and makes its
ImagingStudy (hub.imaging.attach).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session, sessionmaker

from dicom.errors import InvalidDicom
from dicom.instances import InstanceInfo, inspect_instance
from dicom.store import ContentStore, StoredObject
from hub.errors import NotFound
from hub.fhir.dates import utc_now
from hub.imaging.events import record_case_event
from hub.jobs.outbox import enqueue
from hub.storage.tables import DicomInstanceRow, DicomStudyRow, DicomTransferRow
from hub.storage.upsert import insert_on

log = logging.getLogger("hub.imaging")

ATTACH_JOB = "attach-dicom-study"
TRANSFER_KINDS = ("push", "pull", "media")
_IN_CHUNK = 500  # SOP Instance UIDs per IN (...) list: under every backend's limit


@dataclass(frozen=True)
class Received:
    """What became of one file: stored (with its UIDs), or refused and why."""

    name: str
    accepted: bool
    reason: str = ""
    sop_instance_uid: str | None = None
    study_uid: str | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class Checked:
    """An instance that passed the checks, in the store: what `DicomImporter.record` rows."""

    transfer_id: int
    info: InstanceInfo
    stored: StoredObject


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
    # Its fields are str, int or None but `pixel_data`: a shallow copy is asdict's result.
    values = dict(vars(info))
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
        """Check the staged file and keep it; the file is gone from staging either way.

        The file is in the store and its row committed when this returns (a pull or an
        upload: one instance at a time; the Storage SCP batches, see hub.imaging.indexer).
        """
        name = name or staged.name
        try:
            info = inspect_instance(staged)
        except InvalidDicom as exc:
            staged.unlink(missing_ok=True)
            self.record_refusal(transfer_id, name, exc.reason)
            return Received(name, False, exc.reason)
        stored = self.store.put_file(staged)
        with self.sessions() as session:
            (duplicate,) = self.record(session, [Checked(transfer_id, info, stored)])
            session.commit()
        return Received(
            name,
            True,
            sop_instance_uid=info.sop_instance_uid,
            study_uid=info.study_instance_uid,
            duplicate=duplicate,
        )

    def record(
        self, session: Session, instances: Sequence[Checked], *, recovering: bool = False
    ) -> list[bool]:
        """The rows of stored instances, in the caller's transaction (one commit for all);
        for each, whether its SOP Instance UID was already indexed (a duplicate: its first
        row stays).

        Each counts as accepted in its transfer, which must be open (NotFound otherwise),
        except when `recovering` the Storage SCP's accepted files after a crash: then an
        instance that its own transfer already indexed (the crash came after the commit)
        is not counted twice, and the transfer may have been closed meanwhile.
        Core statements, a few per batch: no ORM reads before the writes.
        """
        uids = list({checked.info.sop_instance_uid for checked in instances})
        indexed: dict[str, int] = {}
        for chunk in range(0, len(uids), _IN_CHUNK):
            indexed.update(
                session.execute(
                    select(DicomInstanceRow.sop_instance_uid, DicomInstanceRow.transfer_id).where(
                        DicomInstanceRow.sop_instance_uid.in_(uids[chunk : chunk + _IN_CHUNK])
                    )
                ).all()
            )
        now = utc_now()
        counts: Counter[int] = Counter()
        duplicates: list[bool] = []
        rows: list[dict[str, Any]] = []
        # (study, transfer) -> (its first instance's info, whether it brings a new instance),
        # in the order of their last instance: the last transfer to bring a study owns it.
        studies: dict[tuple[str, int], tuple[InstanceInfo, bool]] = {}
        for checked in instances:
            info, transfer_id = checked.info, checked.transfer_id
            uid = info.sop_instance_uid
            duplicate = uid in indexed
            if not (recovering and indexed.get(uid) == transfer_id):
                counts[transfer_id] += 1
            if not duplicate:
                indexed[uid] = transfer_id
                rows.append(
                    {
                        "sop_instance_uid": uid,
                        "study_uid": info.study_instance_uid,
                        "series_uid": info.series_instance_uid,
                        "sop_class_uid": info.sop_class_uid,
                        "transfer_syntax_uid": info.transfer_syntax_uid,
                        "received_digest": checked.stored.digest,
                        "digest": None,
                        "size": checked.stored.size,
                        "info": info_json(info),
                        "transfer_id": transfer_id,
                        "received_at": now,
                    }
                )
            duplicates.append(duplicate)
            key = (info.study_instance_uid, transfer_id)
            first, new = studies.pop(key, (info, False))
            studies[key] = (first, new or not duplicate)
        cases: dict[int, str | None] = {}
        for transfer_id, count in counts.items():
            query = update(DicomTransferRow).where(DicomTransferRow.transfer_id == transfer_id)
            if not recovering:
                query = query.where(DicomTransferRow.status == "open")
            counted = session.execute(
                query.values(accepted=DicomTransferRow.accepted + count).returning(
                    DicomTransferRow.case_task_id
                )
            ).first()
            if counted is None:
                raise NotFound(f"DICOM transfer {transfer_id} is not open.")
            cases[transfer_id] = counted.case_task_id
        if rows:
            session.execute(
                insert_on(session, DicomInstanceRow).on_conflict_do_nothing(
                    index_elements=["sop_instance_uid"]
                ),
                rows,
            )
        for (study_uid, transfer_id), (info, new) in studies.items():
            changes: dict[str, Any] = {"last_transfer_id": transfer_id, "updated_at": now}
            if new:  # more instances for an attached study: attached again once complete
                changes["status"] = case(
                    (DicomStudyRow.status == "attached", "receiving"), else_=DicomStudyRow.status
                )
            session.execute(
                insert_on(session, DicomStudyRow)
                .values(
                    study_uid=study_uid,
                    status="receiving",
                    case_task_id=cases.get(transfer_id),
                    outside_patient_id=info.patient_id,
                    outside_issuer=info.issuer_of_patient_id,
                    last_transfer_id=transfer_id,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_update(index_elements=["study_uid"], set_=changes)
            )
        return duplicates

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
