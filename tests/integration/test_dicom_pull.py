"""Pulling a case's studies from an outside PACS, a real Orthanc, on both backends: over
DICOMweb (QIDO-RS then WADO-RS), DIMSE C-GET and C-MOVE to the hub's own Storage SCP. The
studies are reconciled and attached to the case; what the hub holds is not fetched again."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.dicomweb import BasicAuth, DicomWebSource
from connectors.dimse import StorageScpConfig
from dicom.synthetic import make_patient, make_study, write_study
from hub.app import create_app
from hub.imaging.pull import queue_pull
from hub.imaging.sources import DimsePullSource, ImagingSources
from hub.jobs.worker import JobWorker
from hub.runtime import job_handlers
from hub.storage.tables import DicomStudyRow, DicomTransferRow
from tests.dicom_cases import open_case, upload
from tests.fhir_client import bearer
from tests.orthanc_peer import OrthancPeer

HUB_AE = "SOH_PULL"
PASSWORD_ENV = "SOH_TEST_ORTHANC_PASSWORD"
SEEDS = {"dicomweb": 61, "c-get": 62, "c-move": 63}


def sources(orthanc: OrthancPeer) -> ImagingSources:
    return ImagingSources(
        dicomweb=[
            DicomWebSource(
                name="dicomweb",
                base_url=orthanc.dicomweb_url,
                auth=BasicAuth(username=orthanc.auth[0], password_env=PASSWORD_ENV),
            )
        ],
        dimse=[
            DimsePullSource(
                name=mode,
                host=orthanc.host,
                port=orthanc.dicom_port,
                called_ae=orthanc.aet,
                calling_ae=HUB_AE,
                retrieve=mode,
            )
            for mode in ("c-get", "c-move")
        ],
    )


def run_until_attached(app: Any, settings: Any) -> None:
    """Jobs until none is due and no transfer is open (C-MOVE's instances come on an
    association of their own, closed a moment after the move answers)."""
    worker = JobWorker(app.state.hub.sessions, job_handlers(settings))
    for _ in range(300):  # a guard against a hang, not a performance expectation
        worker.run_until_idle()
        with app.state.hub.sessions() as session:
            busy = session.scalars(
                select(DicomTransferRow).where(DicomTransferRow.status == "open")
            ).first()
        if busy is None and worker.run_until_idle() == 0:
            return
        time.sleep(0.1)


@pytest.mark.parametrize("mode", list(SEEDS))
def test_a_case_pulls_its_study_from_the_outside_pacs(
    mode, settings, orthanc, tmp_path, monkeypatch
):
    monkeypatch.setenv(PASSWORD_ENV, orthanc.auth[1])
    hub_settings = settings.model_copy(
        update={
            "dicom_store_dir": tmp_path / "dicom",
            "dicom_scp": StorageScpConfig(ae_title=HUB_AE, port=0),
            "imaging_sources": sources(orthanc),
            "pull_missing_records": False,  # each test pulls from one source, explicitly
        }
    )
    seed = SEEDS[mode]
    child = make_patient(seed)
    datasets = make_study(seed, child, "MR", series=2, instances=2)
    upload(orthanc, write_study(tmp_path / "outside", datasets))
    app = create_app(hub_settings)
    with TestClient(app) as client:
        orthanc.set_modality("soh-pull", HUB_AE, app.state.storage_scp.bound_port)
        patient_id, task_id = open_case(client, hub_settings, child)
        with app.state.hub.sessions() as session:
            queue_pull(session, task_id, mode)
            session.commit()
        run_until_attached(app, hub_settings)

        with app.state.hub.sessions() as session:
            study = session.get(DicomStudyRow, str(datasets[0].StudyInstanceUID))
            transfers = list(session.scalars(select(DicomTransferRow)))
        assert study is not None
        assert (study.status, study.case_task_id, study.patient_id) == (
            "attached",
            task_id,
            patient_id,
        )
        assert {t.kind for t in transfers} == ({"push"} if mode == "c-move" else {"pull"})
        assert sum(t.accepted for t in transfers) == 4
        manager = bearer(
            hub_settings,
            subject="cm-1",
            roles=("case-manager",),
            scope="user/*.cruds",
            programs=("oncology",),
        )
        found = client.get(
            "/fhir/ImagingStudy", params={"patient": patient_id}, headers=manager
        ).json()
        assert found["entry"][0]["resource"]["numberOfInstances"] == 4

        # Pulled again: the hub holds every instance, so nothing more is fetched.
        with app.state.hub.sessions() as session:
            queue_pull(session, task_id, mode)
            session.commit()
        run_until_attached(app, hub_settings)
        with app.state.hub.sessions() as session:
            received = sum(t.accepted for t in session.scalars(select(DicomTransferRow)))
        assert received == 4 if mode == "dicomweb" else received >= 4
    orthanc.remove_modality("soh-pull")


def test_without_a_shared_identifier_the_patient_is_found_by_name_and_birth_date(
    settings, orthanc, tmp_path, monkeypatch
):
    monkeypatch.setenv(PASSWORD_ENV, orthanc.auth[1])
    hub_settings = settings.model_copy(
        update={
            "dicom_store_dir": tmp_path / "dicom",
            "imaging_sources": sources(orthanc),
            "pull_missing_records": False,
        }
    )
    # A family name of its own: the session's Orthanc keeps what earlier runs uploaded.
    child = replace(make_patient(64), family_name=f"Pullcheck{uuid.uuid4().hex[:8]}")
    twin_ids = replace(child, patient_id="OTHER-64")  # the same child under a second MRN
    found_once = make_study(uuid.uuid4().int % 10**6, child, "CT", series=1, instances=1)
    upload(orthanc, write_study(tmp_path / "outside", found_once))
    app = create_app(hub_settings)
    with TestClient(app) as client:
        _, task_id = open_case(client, hub_settings, replace(child, patient_id="HUB-ONLY-64"))
        with app.state.hub.sessions() as session:
            queue_pull(session, task_id, "dicomweb")
            session.commit()
        run_until_attached(app, hub_settings)
        with app.state.hub.sessions() as session:
            study = session.get(DicomStudyRow, str(found_once[0].StudyInstanceUID))
        assert study is not None and study.status == "attached"

        # A second outside patient with that name and birth date: ambiguous, nothing pulled.
        upload(
            orthanc,
            write_study(
                tmp_path / "twin", make_study(uuid.uuid4().int % 10**6, twin_ids, "CT", 1, 1)
            ),
        )
        with app.state.hub.sessions() as session:
            queue_pull(session, task_id, "dicomweb")
            session.commit()
        run_until_attached(app, hub_settings)
        with app.state.hub.sessions() as session:
            failed = session.scalars(
                select(DicomTransferRow).where(DicomTransferRow.status == "failed")
            ).one()
        problem = json.loads(failed.report)[0]["reason"]
        assert "case manager must choose" in problem and "OTHER-64" in problem
