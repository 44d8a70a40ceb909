"""Patient CDs: a DICOMDIR folder, a zip of one, or files without a DICOMDIR, imported as a
media transfer with a report per file, on both backends; and the watched drop folder."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import select

from dicom.store import ContentStore
from dicom.synthetic import make_dicomdir, make_patient, make_study, write_study
from hub.errors import InvalidRequest
from hub.imaging.importer import ATTACH_JOB, DicomImporter
from hub.imaging.media import import_media, process_media_folder
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade
from hub.storage.tables import DicomInstanceRow, DicomStudyRow, JobRow


@pytest.fixture
def importer(database_url, tmp_path):
    engine = make_engine(database_url)
    upgrade(engine)
    return DicomImporter(make_session_factory(engine), ContentStore(tmp_path / "store"))


def patient_cd(folder: Path, seed: int) -> list[str]:
    """A CD: a DICOMDIR file-set of a 2-series study, plus the viewer a CD carries; returns
    the SOP Instance UIDs."""
    datasets = make_study(seed, make_patient(seed), "CT", series=2, instances=2)
    make_dicomdir(folder, datasets)
    (folder / "VIEWER").mkdir()
    (folder / "VIEWER" / "viewer.exe").write_bytes(b"MZ\x90\x00 not DICOM")
    (folder / "AUTORUN.INF").write_text("[autorun]\nopen=VIEWER\\viewer.exe\n")
    return [str(ds.SOPInstanceUID) for ds in datasets]


def held_uids(importer: DicomImporter) -> set[str]:
    with importer.sessions() as session:
        return set(session.scalars(select(DicomInstanceRow.sop_instance_uid)))


def test_a_cd_folder_imports_what_its_dicomdir_lists(importer, tmp_path):
    uids = patient_cd(tmp_path / "cd", 71)
    report = import_media(importer, tmp_path / "cd", name="cd-71").to_json()
    assert (report["dicomdir"], report["accepted"], report["rejected"]) == (True, 4, 0)
    assert report["ignored"] == ["AUTORUN.INF", "VIEWER/viewer.exe"]
    assert held_uids(importer) == set(uids)
    with importer.sessions() as session:
        study = session.scalars(select(DicomStudyRow)).one()
        jobs = list(session.scalars(select(JobRow).where(JobRow.kind == ATTACH_JOB)))
    assert study.status == "receiving" and [j.subject for j in jobs] == [study.study_uid]
    assert (tmp_path / "cd" / "DICOMDIR").is_file()  # the upload itself is left alone


def test_a_zipped_cd_is_read_member_by_member(importer, tmp_path):
    uids = patient_cd(tmp_path / "cd", 72)
    archive = tmp_path / "cd.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for path in sorted((tmp_path / "cd").rglob("*")):
            if path.is_file():
                zipped.write(path, f"PATIENT_CD/{path.relative_to(tmp_path / 'cd').as_posix()}")
    report = import_media(importer, archive, name="cd.zip").to_json()
    assert (report["dicomdir"], report["accepted"]) == (True, 4)
    assert held_uids(importer) == set(uids)


def test_without_a_dicomdir_every_file_is_tried_and_each_refusal_reported(importer, tmp_path):
    folder = tmp_path / "usb"
    datasets = make_study(73, make_patient(73), "MR", series=1, instances=2)
    write_study(folder, datasets)
    (folder / "notes.txt").write_text("scan notes")
    (folder / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00")
    report = import_media(importer, folder, name="usb").to_json()
    assert (report["dicomdir"], report["accepted"], report["rejected"]) == (False, 2, 2)
    refused = {p["file"]: p["reason"] for p in report["problems"]}  # type: ignore[union-attr]
    assert set(refused) == {"notes.txt", "broken.dcm"}
    assert all(reason for reason in refused.values())


def test_something_that_is_neither_a_folder_nor_a_zip_is_refused(importer, tmp_path):
    not_media = tmp_path / "scan.pdf"
    not_media.write_bytes(b"%PDF-1.7")
    with pytest.raises(InvalidRequest, match="zip"):
        import_media(importer, not_media, name="scan.pdf")


def test_the_drop_folder_imports_and_files_away_each_medium(importer, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    patient_cd(drop / "cd-74", 74)
    (drop / "letter.pdf").write_bytes(b"%PDF-1.7")
    assert process_media_folder(importer, drop, settle_seconds=0) == 2
    done = json.loads((drop / "done" / "cd-74.report.json").read_text())
    assert done["accepted"] == 4
    failed = json.loads((drop / "failed" / "letter.pdf.report.json").read_text())
    assert "zip" in failed["error"]
    assert (drop / "done" / "cd-74" / "DICOMDIR").is_file()
    assert process_media_folder(importer, drop, settle_seconds=0) == 0
