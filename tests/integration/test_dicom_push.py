"""An outside modality pushes a study to the hub's Storage SCP with dcmtk's storescu (a peer
we did not write), on both backends: it is kept as received, then reconciled to the case's
patient and attached as an ImagingStudy; a study whose demographics disagree is held."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.dimse import StorageScpConfig
from dicom.synthetic import make_patient, make_study, write_study
from hub.app import create_app
from hub.imaging.attach import HUB_ISSUER
from hub.jobs.worker import JobWorker
from hub.storage.db import make_engine
from hub.storage.tables import DicomInstanceRow, DicomStudyRow, DicomTransferRow
from tests.dicom_cases import open_case, upload
from tests.fhir_client import bearer, path_jobs

HUB_AE = "SOH_HUB"


@pytest.fixture
def hub(settings, tmp_path):
    hub_settings = settings.model_copy(
        update={
            "dicom_store_dir": tmp_path / "dicom",
            "dicom_scp": StorageScpConfig(ae_title=HUB_AE, port=0),
        }
    )
    app = create_app(hub_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app, hub_settings


def storescu(port: int, files: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["storescu", "-aet", "OUTSIDE_CT", "-aec", HUB_AE, "127.0.0.1", str(port)]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_jobs(app: Any, settings: Any) -> int:
    """Once every transfer is closed (the SCP learns of the release after storescu has
    exited), run the jobs their closing queued."""
    for _ in range(300):  # a guard against a hang, not a performance expectation
        with app.state.hub.sessions() as session:
            still_open = session.scalars(
                select(DicomTransferRow).where(DicomTransferRow.status == "open")
            ).first()
        if still_open is None:
            break
        time.sleep(0.1)
    return JobWorker(app.state.hub.sessions, path_jobs(settings)).run_until_idle()


def test_a_pushed_study_is_reconciled_and_attached_to_the_case(hub, tmp_path):
    client, app, settings = hub
    child = make_patient(41)
    patient_id, task_id = open_case(client, settings, child)
    files = write_study(tmp_path / "ct", make_study(41, child, "CT", series=2, instances=3))

    sent = storescu(app.state.storage_scp.bound_port, files)
    assert sent.returncode == 0, sent.stderr
    assert run_jobs(app, settings) == 1

    with app.state.hub.sessions() as session:
        study = session.scalars(select(DicomStudyRow)).one()
        assert (study.status, study.case_task_id, study.patient_id) == (
            "attached",
            task_id,
            patient_id,
        )
        rows = list(session.scalars(select(DicomInstanceRow)))
        transfer = session.scalars(select(DicomTransferRow)).one()
    assert len(rows) == 6
    assert (transfer.kind, transfer.source, transfer.status) == ("push", "OUTSIDE_CT", "closed")
    store = app.state.dicom_importer.store
    served = dcmread(store.path(rows[0].digest))
    received = dcmread(store.path(rows[0].received_digest))
    assert (served.PatientID, served.IssuerOfPatientID) == (patient_id, HUB_ISSUER)
    outside = served.OtherPatientIDsSequence[0]
    assert (outside.PatientID, outside.IssuerOfPatientID) == (child.patient_id, child.issuer)
    assert served.OriginalAttributesSequence[0].ModifiedAttributesSequence[0].PatientID == (
        child.patient_id
    )
    assert served.SOPInstanceUID == received.SOPInstanceUID
    assert served.PixelData == received.PixelData
    assert received.PatientID == child.patient_id  # the file as received is kept unchanged

    manager = bearer(
        settings,
        subject="cm-1",
        roles=("case-manager",),
        scope="user/*.cruds",
        programs=("oncology",),
    )
    found = client.get("/fhir/ImagingStudy", params={"patient": patient_id}, headers=manager)
    imaging = found.json()["entry"][0]["resource"]
    assert imaging["id"] == study.imaging_study_id
    assert (imaging["numberOfSeries"], imaging["numberOfInstances"]) == (2, 6)
    assert imaging["identifier"][0]["value"] == f"urn:oid:{study.study_uid}"
    endpoint = client.get(f"/fhir/{imaging['endpoint'][0]['reference']}", headers=manager).json()
    assert endpoint["address"] == settings.dicomweb_url

    # The same study pushed again: no second ImagingStudy, no new instances.
    assert storescu(app.state.storage_scp.bound_port, files).returncode == 0
    run_jobs(app, settings)
    again = client.get("/fhir/ImagingStudy", params={"patient": patient_id}, headers=manager)
    assert again.json()["total"] == 1


def test_a_study_whose_demographics_disagree_is_held_for_a_case_manager(hub, tmp_path):
    client, app, settings = hub
    child = make_patient(42)
    patient_id, task_id = open_case(client, settings, child)
    impostor = replace(child, birth_date=date(2001, 1, 1))  # same MRN, another birth date
    files = write_study(tmp_path / "mr", make_study(42, impostor, "MR", series=1, instances=2))

    assert storescu(app.state.storage_scp.bound_port, files).returncode == 0
    run_jobs(app, settings)

    with app.state.hub.sessions() as session:
        study = session.scalars(select(DicomStudyRow)).one()
        digests = [r.digest for r in session.scalars(select(DicomInstanceRow))]
    assert study.status == "held"
    assert "birth" in (study.hold_reason or "").lower()
    assert digests == [None, None]  # nothing reconciled while it is held
    manager = bearer(
        settings,
        subject="cm-1",
        roles=("case-manager",),
        scope="user/*.cruds",
        programs=("oncology",),
    )
    events = client.get(
        "/fhir/Communication", params={"subject": f"Patient/{patient_id}"}, headers=manager
    ).json()
    assert [e["resource"]["about"][0]["reference"] for e in events["entry"]] == [f"Task/{task_id}"]
    assert "held" in events["entry"][0]["resource"]["payload"][0]["contentString"]


def test_a_study_for_a_patient_the_hub_does_not_know_is_held(hub, tmp_path):
    _, app, settings = hub
    stranger = make_patient(43)
    files = write_study(tmp_path / "pt", make_study(43, stranger, "PT", series=1, instances=1))

    assert storescu(app.state.storage_scp.bound_port, files).returncode == 0
    run_jobs(app, settings)

    with app.state.hub.sessions() as session:
        study = session.scalars(select(DicomStudyRow)).one()
    assert study.status == "held"
    assert stranger.patient_id in (study.hold_reason or "")


def test_a_calling_ae_the_scp_does_not_allow_is_refused(settings, tmp_path):
    guarded = settings.model_copy(
        update={
            "dicom_store_dir": tmp_path / "dicom",
            "dicom_scp": StorageScpConfig(
                ae_title=HUB_AE, port=0, allowed_calling_aes=["KNOWN_PACS"]
            ),
        }
    )
    app = create_app(guarded)
    with TestClient(app):
        files = write_study(tmp_path / "ct", make_study(44, make_patient(44), "CT", 1, 1))
        sent = storescu(app.state.storage_scp.bound_port, files)
        assert sent.returncode != 0
        with app.state.hub.sessions() as session:
            assert session.scalars(select(DicomInstanceRow)).first() is None


def test_an_outside_modality_moves_a_study_from_the_pacs_to_the_hub(hub, orthanc, tmp_path):
    """dcmtk's findscu and movescu, as a radiographer at the referring hospital would: find
    the child's study in their PACS (Orthanc), and have the PACS send it to the hub."""
    client, app, settings = hub
    child = make_patient(45)
    _, task_id = open_case(client, settings, child)
    study = make_study(45, child, "CT", series=1, instances=3)
    upload(orthanc, write_study(tmp_path / "outside", study))
    orthanc.set_modality("soh-hub", HUB_AE, app.state.storage_scp.bound_port)
    orthanc.set_modality("radiographer", "RADIOGRAPHER", 1)
    try:
        asked = ["-S", "-aet", "RADIOGRAPHER", "-aec", orthanc.aet, orthanc.host]
        found = subprocess.run(
            ["findscu", *asked, str(orthanc.dicom_port), "-X", "-k", "QueryRetrieveLevel=STUDY"]
            + ["-k", f"PatientID={child.patient_id}", "-k", "StudyInstanceUID"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,  # -X writes each answer there, as rsp0001.dcm ...
        )
        assert found.returncode == 0, found.stderr
        answers = [dcmread(p) for p in sorted(tmp_path.glob("rsp*.dcm"))]
        assert [str(a.StudyInstanceUID) for a in answers] == [str(study[0].StudyInstanceUID)]
        moved = subprocess.run(
            ["movescu", *asked, str(orthanc.dicom_port), "-aem", HUB_AE]
            + [
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={study[0].StudyInstanceUID}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert moved.returncode == 0, moved.stderr
    finally:
        orthanc.remove_modality("soh-hub")
        orthanc.remove_modality("radiographer")
    run_jobs(app, settings)
    with app.state.hub.sessions() as session:
        row = session.get(DicomStudyRow, str(study[0].StudyInstanceUID))
        transfer = session.scalars(select(DicomTransferRow)).one()
    assert row is not None and (row.status, row.case_task_id) == ("attached", task_id)
    assert (transfer.source, transfer.accepted) == (orthanc.aet, 3)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServedHub:
    """`hub serve` with its Storage SCP, as its own process (what a kill -9 can hit)."""

    def __init__(self, database_url: str, tmp_path: Path, signing_key_file: Path) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "HUB_CONFIG": str(tmp_path / "absent.yaml"),
            "HUB_DATABASE_URL": database_url,
            "HUB_PORT": str(free_port()),
            "HUB_SIGNING_KEY_FILE": str(signing_key_file),
            "HUB_EMBEDDED_WORKER": "false",
            "HUB_DICOM_STORE_DIR": str(tmp_path / "store"),
            "HUB_DICOM_SCP": json.dumps({"ae_title": HUB_AE, "port": self.port}),
        }
        self.log = (tmp_path / "hub.log").open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until its SCP answers C-ECHO (after any recovery)."""
        self.process = subprocess.Popen(
            [str(Path(sys.executable).with_name("hub")), "serve", "--log-level", "info"],
            env=self.env,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.monotonic() + 60  # a guard against a hang
        echo = ["echoscu", "-aet", "OUTSIDE_CT", "-aec", HUB_AE, "127.0.0.1", str(self.port)]
        while subprocess.run(echo, capture_output=True, timeout=30, check=False).returncode:
            assert self.process.poll() is None, "the hub died at start"
            assert time.monotonic() < deadline, "the hub did not start"
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def test_kill_9_during_a_push_loses_no_acknowledged_instance(
    database_url, tmp_path, signing_key_file
):
    """dcmtk's storescu pushes 120 instances; the hub is killed (SIGKILL) once 60 have been
    acknowledged, while the last ones are still being indexed; after a restart every
    instance storescu saw acknowledged is indexed, once, and the transfer is closed."""
    datasets = make_study(46, make_patient(46), "CT", series=2, instances=60)
    files = write_study(tmp_path / "ct", datasets)
    uid_of = {str(path): str(ds.SOPInstanceUID) for path, ds in zip(files, datasets, strict=True)}
    hub = ServedHub(database_url, tmp_path, signing_key_file)
    hub.start()
    acknowledged: list[str] = []
    try:
        pushed = subprocess.Popen(
            ["storescu", "-v", "-aet", "OUTSIDE_CT", "-aec", HUB_AE, "127.0.0.1", str(hub.port)]
            + [str(f) for f in files],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert pushed.stdout is not None
        sending = ""
        for line in pushed.stdout:  # dcmtk's log: "I: Sending file: …", then its response
            if "Sending file:" in line:
                sending = line.split("Sending file:", 1)[1].strip()
            elif "Received Store Response (Success)" in line:
                acknowledged.append(uid_of[sending])
                if len(acknowledged) == 60:
                    hub.kill()
        assert pushed.wait(120) != 0  # storescu saw the hub go
        assert len(acknowledged) == 60
        hub.start()  # on the same database and store: indexes what was accepted, closes
        engine = make_engine(database_url)
        try:
            with Session(engine) as session:
                indexed = list(session.scalars(select(DicomInstanceRow.sop_instance_uid)))
                transfer = session.scalars(select(DicomTransferRow)).one()
        finally:
            engine.dispose()
    finally:
        hub.stop()
    assert set(acknowledged) <= set(indexed) and len(indexed) == len(set(indexed))
    assert transfer.status == "closed" and transfer.accepted == len(indexed)
    assert list((tmp_path / "store" / "accepted").iterdir()) == []
