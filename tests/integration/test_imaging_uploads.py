"""The imaging desk's two ways in, on both backends: a case manager uploads a patient CD (a
zip, streamed) for a case, and asks for a case's studies to be pulled from an outside PACS."""

from __future__ import annotations

import io
import json
import zipfile

from fastapi.testclient import TestClient
from sqlalchemy import select

from dicom.synthetic import make_dicomdir, make_study
from hub.app import create_app
from hub.imaging.pull import PULL_JOB
from hub.storage.tables import JobRow
from tests.fhir_client import assert_outcome
from tests.integration.test_dicomweb_api import Imaging, imaging

__all__ = ["imaging"]  # the fixture, shared with the DICOMweb tests


def zipped_cd(world: Imaging, seed: int) -> bytes:
    folder = world.folder / f"cd-{seed}"
    make_dicomdir(folder, make_study(seed, world.child, "PT", series=1, instances=2))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def test_a_case_manager_uploads_a_patient_cd_for_a_case(imaging):
    manager = {**imaging.headers["manager"], "Content-Type": "application/zip"}
    answer = imaging.client.post(
        "/imaging/media",
        params={"case": f"Task/{imaging.task_id}"},
        content=zipped_cd(imaging, 81),
        headers=manager,
    )
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert (report["dicomdir"], report["accepted"], report["rejected"]) == (True, 2, 0)
    assert imaging.run_jobs() == 1
    assert imaging.status(report["studies"][0]) == "attached"


def test_an_upload_that_is_not_a_zip_or_from_the_wrong_role_is_refused(imaging):
    manager = imaging.headers["manager"]
    not_zip = imaging.client.post(
        "/imaging/media",
        content=b"%PDF-1.7",
        headers={**manager, "Content-Type": "application/zip"},
    )
    assert_outcome(not_zip, 400)
    wrong_type = imaging.client.post(
        "/imaging/media", content=b"PK", headers={**manager, "Content-Type": "text/plain"}
    )
    assert_outcome(wrong_type, 415)
    specialist = {**imaging.headers["specialist"], "Content-Type": "application/zip"}
    assert_outcome(imaging.client.post("/imaging/media", content=b"PK", headers=specialist), 403)


def test_a_pull_is_queued_for_a_configured_source_only(imaging):
    manager = {**imaging.headers["manager"], "Content-Type": "application/json"}
    unknown = imaging.client.post(
        f"/imaging/cases/{imaging.task_id}/$pull",
        content=json.dumps({"source": "nowhere"}),
        headers=manager,
    )
    assert_outcome(unknown, 400, expression="source")
    with imaging.client.app.state.hub.sessions() as session:
        assert session.scalars(select(JobRow).where(JobRow.kind == PULL_JOB)).first() is None


def test_files_refused_from_a_case_upload_are_an_event_on_the_case(imaging):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("IMG0001", b"\x00" * 128 + b"DICM" + b"\x02\x00\x00")  # truncated
        archive.writestr("README.TXT", "Images from the outside hospital")
    answer = imaging.client.post(
        "/imaging/media",
        params={"case": f"Task/{imaging.task_id}"},
        content=buffer.getvalue(),
        headers={**imaging.headers["manager"], "Content-Type": "application/zip"},
    )
    assert (answer.json()["accepted"], answer.json()["rejected"]) == (0, 2)
    events = imaging.client.get(
        "/fhir/Communication",
        params={"subject": f"Patient/{imaging.patient_id}"},
        headers=imaging.headers["manager"],
    ).json()
    texts = [e["resource"]["payload"][0]["contentString"] for e in events["entry"]]
    refused = [t for t in texts if "IMG0001" in t]
    assert len(refused) == 1 and "README.TXT" in refused[0]


def test_a_viewer_on_a_configured_origin_may_call_dicomweb_from_the_browser(settings):
    viewer = "https://viewer.hospital.example"
    app = create_app(settings.model_copy(update={"cors_origins": [viewer]}))
    with TestClient(app) as client:
        asked = {
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        allowed = client.options("/dicomweb/studies", headers={"Origin": viewer, **asked})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == viewer
        other = client.options(
            "/dicomweb/studies", headers={"Origin": "https://evil.example", **asked}
        )
        assert "access-control-allow-origin" not in other.headers
        # CORS opens no door: the call itself still needs a token.
        assert client.get("/dicomweb/studies", headers={"Origin": viewer}).status_code == 401
