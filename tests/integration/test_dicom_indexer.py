"""The Storage SCP's acknowledgement model (hub.imaging.indexer), on both backends: an
instance answered with success is on disk under its transfer; its rows come later, in
batches; the transfer closes (and its studies go to attachment) only once every instance
accepted on it is indexed; what a killed process accepted and did not index is indexed
at the next start, once; a refused file is answered with its reason and leaves nothing."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom.instances import read_instance
from dicom.store import ContentStore
from dicom.synthetic import make_patient, make_study, write_study
from hub.imaging.importer import ATTACH_JOB, DicomImporter
from hub.imaging.indexer import InstanceIndexer
from hub.imaging.indexer_process import IndexerProcess
from hub.imaging.push import CANNOT_UNDERSTAND, SUCCESS, PushIntake
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade
from hub.storage.tables import DicomInstanceRow, DicomStudyRow, DicomTransferRow, JobRow

pytestmark = pytest.mark.integration

MODALITY = "OUTSIDE_CT"
GUARD_SECONDS = 60.0  # against a hang, not a performance expectation


@pytest.fixture
def importer(database_url: str, tmp_path: Path) -> DicomImporter:
    engine = make_engine(database_url)
    upgrade(engine)
    return DicomImporter(make_session_factory(engine), ContentStore(tmp_path / "store"))


def ct_study(folder: Path, seed: int, instances: int) -> list[Path]:
    return write_study(folder, make_study(seed, make_patient(seed), "CT", 1, instances))


def staged(importer: DicomImporter, source: Path) -> Path:
    """A received file as the Storage SCP hands it over: in the store's staging folder."""
    path = importer.store.staging_file()
    shutil.copyfile(source, path)
    return path


def accepted_files(importer: DicomImporter) -> list[Path]:
    return sorted((importer.store.root / "accepted").rglob("*.dcm"))


def stored_objects(importer: DicomImporter) -> list[Path]:
    return [p for p in (importer.store.root / "objects").rglob("*") if p.is_file()]


def instance_rows(importer: DicomImporter) -> list[DicomInstanceRow]:
    with importer.sessions() as session:
        return list(session.scalars(select(DicomInstanceRow)))


def transfers(importer: DicomImporter) -> list[tuple[str, int, int]]:
    with importer.sessions() as session:
        return [
            (t.status, t.accepted, t.rejected)
            for t in session.scalars(
                select(DicomTransferRow).order_by(DicomTransferRow.transfer_id)
            )
        ]


def attach_jobs(importer: DicomImporter) -> list[str]:
    with importer.sessions() as session:
        return list(session.scalars(select(JobRow.subject).where(JobRow.kind == ATTACH_JOB)))


@pytest.mark.parametrize("flush_before_success", [True, False], ids=["flush", "page-cache"])
def test_a_transfer_closes_only_once_its_instances_are_indexed(
    importer: DicomImporter, tmp_path: Path, flush_before_success: bool
) -> None:
    files = ct_study(tmp_path / "ct", 61, 5)
    indexer = InstanceIndexer(importer, flush_before_success=flush_before_success)
    push = PushIntake(indexer)  # the writer is not started yet: a slow database
    for path in files:
        assert push.on_instance(staged(importer, path), MODALITY, "assoc-1") == SUCCESS
    push.on_released("assoc-1", MODALITY)

    # Every instance acknowledged is on disk, under its transfer; none is indexed, the
    # transfer is still open and its study nowhere to be seen.
    assert len(accepted_files(importer)) == 5
    assert instance_rows(importer) == [] and attach_jobs(importer) == []
    assert transfers(importer) == [("open", 0, 0)]

    indexer.start()
    try:
        assert indexer.drain(GUARD_SECONDS)
    finally:
        indexer.stop()
    rows = instance_rows(importer)
    assert len(rows) == 5 and all(importer.store.exists(r.received_digest) for r in rows)
    assert transfers(importer) == [("closed", 5, 0)]
    assert attach_jobs(importer) == [rows[0].study_uid]
    assert accepted_files(importer) == []
    assert list((importer.store.root / "staging").iterdir()) == []


def test_what_a_killed_process_accepted_is_indexed_at_the_next_start(
    importer: DicomImporter, tmp_path: Path
) -> None:
    files = ct_study(tmp_path / "ct", 62, 6)
    first = InstanceIndexer(importer)
    push = PushIntake(first)
    first.start()
    for path in files[:2]:
        assert push.on_instance(staged(importer, path), MODALITY, "assoc-1") == SUCCESS
    assert first.drain(GUARD_SECONDS)
    first.stop()  # the writer is gone: from here on, as after a kill -9
    for path in files[2:]:
        assert push.on_instance(staged(importer, path), MODALITY, "assoc-1") == SUCCESS
    # A crash between a batch's commit and the removal of its files leaves one of them.
    (folder,) = (importer.store.root / "accepted").iterdir()
    shutil.copyfile(files[0], folder / "indexed-then-killed.dcm")
    assert (len(instance_rows(importer)), len(accepted_files(importer))) == (2, 5)
    assert transfers(importer) == [("open", 2, 0)]

    restarted = DicomImporter(importer.sessions, ContentStore(importer.store.root))
    assert InstanceIndexer(restarted).recover() == 5

    rows = instance_rows(importer)
    assert sorted(r.sop_instance_uid for r in rows) == sorted(
        str(ds.SOPInstanceUID) for ds in make_study(62, make_patient(62), "CT", 1, 6)
    )
    assert transfers(importer) == [("closed", 6, 0)]  # none counted twice
    assert attach_jobs(importer) == [rows[0].study_uid]
    assert accepted_files(importer) == []
    assert list((importer.store.root / "accepted").iterdir()) == []


def test_a_refused_instance_is_answered_with_its_reason_and_leaves_nothing(
    importer: DicomImporter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = ct_study(tmp_path / "ct", 63, 1)[0]
    not_dicom = tmp_path / "report.hl7"
    not_dicom.write_bytes(b"MSH|^~\\&|LAB|HOSP|HUB|HUB|20240101||ORU^R01|1|P|2.5\r")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[:-100])
    wrong_class = ct_study(tmp_path / "sr", 64, 1)[0]
    data = wrong_class.read_bytes()
    wrong_class.write_bytes(  # the Verification SOP Class, not a storage one: same length
        data.replace(b"1.2.840.10008.5.1.4.1.1.2\x00", b"1.2.840.10008.1.1\x00" + b"\x00" * 8)
    )
    indexer = InstanceIndexer(importer)
    indexer.start()
    push = PushIntake(indexer)
    try:
        with caplog.at_level(logging.WARNING, logger="hub.imaging"):
            answers = [
                push.on_instance(staged(importer, path), MODALITY, "assoc-1")
                for path in (not_dicom, truncated, wrong_class, good)
            ]
        push.on_released("assoc-1", MODALITY)
        assert indexer.drain(GUARD_SECONDS)
    finally:
        indexer.stop()

    assert answers == [CANNOT_UNDERSTAND] * 3 + [SUCCESS]
    reasons = ["not a DICOM file", "truncated: the file ends inside Pixel Data", "SOP class"]
    for reason in reasons:
        assert f"instance refused: {reason}" in caplog.text
    assert transfers(importer) == [("closed", 1, 3)]
    with importer.sessions() as session:
        report = session.scalars(select(DicomTransferRow.report)).one()
        study = session.scalars(select(DicomStudyRow)).one()
    assert all(reason in report for reason in reasons)
    assert len(instance_rows(importer)) == 1 and len(stored_objects(importer)) == 1
    assert study.study_uid == str(make_study(63, make_patient(63), "CT", 1, 1)[0].StudyInstanceUID)
    assert accepted_files(importer) == []
    assert list((importer.store.root / "staging").iterdir()) == []


def test_an_instance_pushed_twice_is_indexed_once(importer: DicomImporter, tmp_path: Path) -> None:
    files = ct_study(tmp_path / "ct", 65, 2)
    indexer = InstanceIndexer(importer)
    indexer.start()
    push = PushIntake(indexer)
    try:
        for association in ("assoc-1", "assoc-2"):
            for path in [*files, files[0]]:
                assert push.on_instance(staged(importer, path), MODALITY, association) == SUCCESS
            push.on_released(association, MODALITY)
        assert indexer.drain(GUARD_SECONDS)
    finally:
        indexer.stop()
    assert len(instance_rows(importer)) == 2 and len(stored_objects(importer)) == 2
    assert transfers(importer) == [("closed", 3, 0), ("closed", 3, 0)]
    assert attach_jobs(importer) == [instance_rows(importer)[0].study_uid] * 2


def test_the_indexer_process_is_replaced_when_killed_and_nothing_is_lost(
    importer: DicomImporter, database_url: str, tmp_path: Path
) -> None:
    """The writer in a process of its own (hub.imaging.indexer_process): killed with
    instances accepted and perhaps not indexed, it is replaced once the next instance is
    told to it, and every instance of the association is indexed and counted once."""
    files = ct_study(tmp_path / "ct", 64, 8)
    indexer = IndexerProcess(InstanceIndexer(importer), database_url=database_url)
    push = PushIntake(indexer)
    indexer.start()
    try:
        for path in files[:3]:
            assert push.on_instance(staged(importer, path), MODALITY, "assoc-1") == SUCCESS
        assert indexer.drain(GUARD_SECONDS)
        assert len(instance_rows(importer)) == 3 and accepted_files(importer) == []

        for path in files[3:6]:  # the writer waits a moment for more: killed before it wakes
            assert push.on_instance(staged(importer, path), MODALITY, "assoc-1") == SUCCESS
        first = indexer.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + GUARD_SECONDS
        while first in {child.pid for child in multiprocessing.active_children()}:
            assert time.monotonic() < deadline, "the indexer process did not die"
            time.sleep(0.05)

        for path in files[6:]:
            assert push.on_instance(staged(importer, path), MODALITY, "assoc-1") == SUCCESS
        while indexer.pid in (None, first):  # told of them, the sender found the pipe broken
            assert time.monotonic() < deadline, "no indexer process was started again"
            time.sleep(0.05)
        push.on_released("assoc-1", MODALITY)
        assert indexer.drain(GUARD_SECONDS)
        replacement = indexer.pid
        assert replacement is not None  # batch work, as the first: see _run_as_batch_work
        assert os.sched_getscheduler(replacement) == os.SCHED_BATCH
    finally:
        indexer.stop()
    rows = instance_rows(importer)
    expected = {str(read_instance(path)[1].sop_instance_uid) for path in files}
    assert sorted(r.sop_instance_uid for r in rows) == sorted(expected)
    assert transfers(importer) == [("closed", 8, 0)]
    assert attach_jobs(importer) == [rows[0].study_uid]
    assert accepted_files(importer) == []
