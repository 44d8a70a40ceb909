"""The hub's own DICOMweb (QIDO-RS, WADO-RS) on both backends, arranged the real way: a
referral through the FHIR API opens a case, synthetic studies arrive through the importer,
the job worker reconciles and attaches one and holds the other (its birth date differs)."""

from __future__ import annotations

import email.parser
import email.policy
import json
import shutil
from dataclasses import dataclass, replace
from datetime import date
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from dicom.synthetic import SyntheticPatient, make_patient, make_study, write_study
from hub.imaging.attach import HUB_ISSUER
from hub.jobs.worker import JobWorker
from hub.settings import Settings
from hub.storage.tables import DicomStudyRow
from tests.fhir_client import assert_outcome, bearer, path_jobs, post, referral

DICOM_PART = 'multipart/related; type="application/dicom"'


@dataclass
class Imaging:
    """One case with one attached CT study and one held MR study (and who may ask)."""

    client: TestClient
    settings: Settings
    folder: Path
    child: SyntheticPatient
    patient_id: str
    task_id: str
    ct: list[Dataset]
    mr: list[Dataset]
    mr_transfer: int
    headers: dict[str, dict[str, str]]

    @property
    def ct_uid(self) -> str:
        return str(self.ct[0].StudyInstanceUID)

    @property
    def mr_uid(self) -> str:
        return str(self.mr[0].StudyInstanceUID)

    def status(self, study_uid: str) -> str:
        with self.client.app.state.hub.sessions() as session:
            return session.get(DicomStudyRow, study_uid).status

    def run_jobs(self) -> int:
        sessions = self.client.app.state.hub.sessions
        return JobWorker(sessions, path_jobs(self.settings)).run_until_idle()

    def receive(self, files: list[Path], case_task_id: str | None) -> int:
        """One pull transfer for the case through the importer, closed; its id."""
        importer = self.client.app.state.dicom_importer
        transfer = importer.open_transfer("pull", "outside-pacs", case_task_id=case_task_id)
        for path in files:
            staged = importer.store.staging_file()  # receive() takes (and consumes) staged files
            shutil.copyfile(path, staged)
            importer.receive(transfer, staged, name=path.name)
        importer.close_transfer(transfer)
        return transfer


def _ehr(settings: Settings) -> dict[str, str]:
    return bearer(settings, subject="ehr-1", roles=("referrer",), scope="system/*.cruds")


def _manager(settings: Settings) -> dict[str, str]:
    return bearer(
        settings,
        subject="cm-1",
        roles=("case-manager",),
        scope="user/*.cruds",
        programs=("oncology",),
    )


def _headers(settings: Settings, owner: str) -> dict[str, dict[str, str]]:
    return {
        "ehr": _ehr(settings),
        "manager": _manager(settings),
        "other-manager": bearer(
            settings,
            subject="cm-2",
            roles=("case-manager",),
            scope="user/*.cruds",
            programs=("hematology",),
        ),
        "specialist": bearer(
            settings,
            subject="dr-a",
            roles=("specialist",),
            scope="user/*.rs",
            fhir_user=f"Practitioner/{owner}",
        ),
        "outsider": bearer(
            settings,
            subject="dr-b",
            roles=("specialist",),
            scope="user/*.rs",
            fhir_user="Practitioner/someone-else",
        ),
        "admin": bearer(settings, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs"),
    }


@pytest.fixture
def imaging(anonymous: TestClient, settings: Settings, tmp_path: Path) -> Imaging:
    child = make_patient(51)
    ehr = _ehr(settings)
    patient = post(
        anonymous,
        {
            "resourceType": "Patient",
            "name": [{"family": child.family_name, "given": [child.given_name]}],
            "birthDate": child.birth_date.isoformat(),
            "gender": {"F": "female", "M": "male"}[child.sex],
        },
        **ehr,
    )
    request = post(anonymous, referral(f"Patient/{patient['id']}"), **ehr)
    manager = _manager(settings)
    found = anonymous.get(
        "/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"}, headers=manager
    ).json()
    task = found["entry"][0]["resource"]
    specialist = post(
        anonymous, {"resourceType": "Practitioner", "name": [{"family": "Ada"}]}, **manager
    )
    task["owner"] = {"reference": f"Practitioner/{specialist['id']}"}
    assigned = anonymous.put(f"/fhir/Task/{task['id']}", content=json.dumps(task), headers=manager)
    assert assigned.status_code == 200, assigned.text

    ct = make_study(51, child, "CT", series=2, instances=3)
    impostor = replace(child, birth_date=date(2001, 1, 1))  # the same child? A person decides
    mr = make_study(51, impostor, "MR", series=1, instances=2)
    world = Imaging(
        anonymous,
        settings,
        tmp_path,
        child,
        patient["id"],
        task["id"],
        ct,
        mr,
        0,
        _headers(settings, specialist["id"]),
    )
    world.receive(write_study(tmp_path / "ct", ct), task["id"])
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"Scanned on the old CT, see the report.\n")
    world.mr_transfer = world.receive([*write_study(tmp_path / "mr", mr), notes], task["id"])
    assert world.run_jobs() == 2
    assert (world.status(world.ct_uid), world.status(world.mr_uid)) == ("attached", "held")
    return world


def values(model: dict[str, Any], tag: str) -> list[Any]:
    return list(model.get(tag, {}).get("Value", []))


def dicom_parts(response: Any) -> list[tuple[Any, bytes]]:
    """The parts of a multipart/related body, read by the standard library's MIME parser."""
    head = f"Content-Type: {response.headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    assert message.is_multipart()
    return [(part, part.get_payload(decode=True)) for part in message.iter_parts()]


def sop_uids(datasets: list[Dataset]) -> set[str]:
    return {str(ds.SOPInstanceUID) for ds in datasets}


# -- QIDO-RS -----------------------------------------------------------------------------------


def test_qido_finds_the_attached_study_by_the_hubs_patient_id_not_the_held_one(imaging):
    client, headers = imaging.client, imaging.headers["specialist"]
    found = client.get(
        "/dicomweb/studies", params={"PatientID": imaging.patient_id}, headers=headers
    )
    assert found.status_code == 200, found.text
    assert found.headers["content-type"].startswith("application/dicom+json")
    (study,) = found.json()
    assert values(study, "0020000D") == [imaging.ct_uid]
    assert values(study, "00100020") == [imaging.patient_id]
    assert values(study, "00100021") == [HUB_ISSUER]
    assert values(study, "00080061") == ["CT"]
    assert (values(study, "00201206"), values(study, "00201208")) == ([2], [6])
    assert values(study, "00081190") == [
        f"{imaging.settings.dicomweb_url}/studies/{imaging.ct_uid}"
    ]

    everything = client.get("/dicomweb/studies", headers=headers).json()
    assert [values(s, "0020000D") for s in everything] == [[imaging.ct_uid]]
    for params in (
        {"StudyInstanceUID": imaging.mr_uid},
        {"PatientID": imaging.child.patient_id},  # the outside id is not the served one
    ):
        assert client.get("/dicomweb/studies", params=params, headers=headers).json() == []


def test_qido_matches_dates_modalities_accession_numbers_and_pages(imaging):
    client, headers = imaging.client, imaging.headers["specialist"]
    day = str(imaging.ct[0].StudyDate)
    accession = str(imaging.ct[0].AccessionNumber)

    def count(**params: str) -> int:
        response = client.get("/dicomweb/studies", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return len(response.json())

    assert count(StudyDate=day) == 1
    assert count(StudyDate=f"{day}-") == 1
    assert count(StudyDate=f"-{day}") == 1
    assert count(StudyDate="19990101-19991231") == 0
    assert count(ModalitiesInStudy="MR") == 0
    assert count(ModalitiesInStudy="MR,CT") == 1
    assert count(AccessionNumber=accession) == 1
    assert count(AccessionNumber="SYN*") == 1
    assert count(AccessionNumber="nope") == 0
    assert count(**{"00100020": imaging.patient_id}) == 1  # a key may be given as its tag
    assert count(limit="1", offset="1") == 0

    ignored = client.get("/dicomweb/studies", params={"PatientName": "X*"}, headers=headers)
    assert ignored.status_code == 200 and ignored.headers["warning"].startswith("299")
    for params, where in (
        ({"StudyDate": "2024"}, "StudyDate"),
        ({"Bogus": "1"}, "Bogus"),
        ({"limit": "-1"}, "limit"),
    ):
        refused = client.get("/dicomweb/studies", params=params, headers=headers)
        assert_outcome(refused, 400, expression=where)


def test_series_and_instances_are_listed(imaging):
    client, headers = imaging.client, imaging.headers["specialist"]
    series = client.get(f"/dicomweb/studies/{imaging.ct_uid}/series", headers=headers)
    assert series.status_code == 200, series.text
    listed = series.json()
    assert {values(s, "0020000E")[0] for s in listed} == {
        str(ds.SeriesInstanceUID) for ds in imaging.ct
    }
    assert [values(s, "00201209") for s in listed] == [[3], [3]]
    assert [values(s, "00080060") for s in listed] == [["CT"], ["CT"]]

    series_uid = values(listed[0], "0020000E")[0]
    instances = client.get(
        f"/dicomweb/studies/{imaging.ct_uid}/series/{series_uid}/instances", headers=headers
    ).json()
    expected = {str(d.SOPInstanceUID) for d in imaging.ct if d.SeriesInstanceUID == series_uid}
    assert {values(i, "00080018")[0] for i in instances} == expected
    assert [values(i, "00200013") for i in instances] == [[1], [2], [3]]
    missing = client.get(
        f"/dicomweb/studies/{imaging.ct_uid}/series/1.2.3/instances", headers=headers
    )
    assert_outcome(missing, 404)


# -- WADO-RS -----------------------------------------------------------------------------------


def test_metadata_carries_the_hubs_identity_and_keeps_the_outside_one(imaging):
    client, headers = imaging.client, imaging.headers["specialist"]
    response = client.get(f"/dicomweb/studies/{imaging.ct_uid}/metadata", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    models = response.json()
    assert {values(m, "00080018")[0] for m in models} == sop_uids(imaging.ct)
    for model in models:
        assert values(model, "00100020") == [imaging.patient_id]
        assert values(model, "00100021") == [HUB_ISSUER]
        (outside,) = values(model, "00101002")  # OtherPatientIDsSequence
        assert values(outside, "00100020") == [imaging.child.patient_id]
        assert values(outside, "00100021") == [imaging.child.issuer]
        series, instance = values(model, "0020000E")[0], values(model, "00080018")[0]
        url = (
            f"{imaging.settings.dicomweb_url}/studies/{imaging.ct_uid}"
            f"/series/{series}/instances/{instance}"
        )
        assert model["7FE00010"]["BulkDataURI"].startswith(url)

    series_uid = str(imaging.ct[0].SeriesInstanceUID)
    one_series = client.get(
        f"/dicomweb/studies/{imaging.ct_uid}/series/{series_uid}/metadata", headers=headers
    ).json()
    assert len(one_series) == 3
    one = client.get(
        f"/dicomweb/studies/{imaging.ct_uid}/series/{series_uid}/instances/"
        f"{imaging.ct[0].SOPInstanceUID}/metadata",
        headers=headers,
    ).json()
    assert [values(m, "00080018") for m in one] == [[str(imaging.ct[0].SOPInstanceUID)]]


def test_retrieve_streams_parts_that_parse_as_the_reconciled_instances(imaging):
    client, headers = imaging.client, imaging.headers["specialist"]
    response = client.get(f"/dicomweb/studies/{imaging.ct_uid}", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(DICOM_PART)
    parts = dicom_parts(response)
    originals = {str(ds.SOPInstanceUID): ds for ds in imaging.ct}
    served = {}
    for part, body in parts:
        assert part.get_content_type() == "application/dicom"
        assert int(part["Content-Length"]) == len(body)
        ds = dcmread(BytesIO(body))
        served[str(ds.SOPInstanceUID)] = ds
        assert part["Content-Location"].endswith(f"/instances/{ds.SOPInstanceUID}")
    assert served.keys() == originals.keys()
    for uid, ds in served.items():
        assert (ds.PatientID, ds.IssuerOfPatientID) == (imaging.patient_id, HUB_ISSUER)
        assert ds.PixelData == originals[uid].PixelData

    first = imaging.ct[0]
    series_url = f"/dicomweb/studies/{imaging.ct_uid}/series/{first.SeriesInstanceUID}"
    assert len(dicom_parts(client.get(series_url, headers=headers))) == 3
    (single,) = dicom_parts(
        client.get(f"{series_url}/instances/{first.SOPInstanceUID}", headers=headers)
    )
    assert dcmread(BytesIO(single[1])).SOPInstanceUID == first.SOPInstanceUID


def test_instances_larger_than_a_chunk_arrive_whole(imaging):
    slides = make_study(51, imaging.child, "SM", series=1, instances=6)  # level 0 is ~3 MB
    imaging.receive(write_study(imaging.folder / "sm", slides), imaging.task_id)
    imaging.run_jobs()
    uid = str(slides[0].StudyInstanceUID)
    response = imaging.client.get(f"/dicomweb/studies/{uid}", headers=imaging.headers["specialist"])
    assert response.status_code == 200, response.text
    parts = dicom_parts(response)
    assert max(len(body) for _, body in parts) > 2 * 1024 * 1024
    originals = {str(ds.SOPInstanceUID): ds.PixelData for ds in slides}
    assert {
        str(ds.SOPInstanceUID): ds.PixelData for ds in (dcmread(BytesIO(body)) for _, body in parts)
    } == originals


def test_the_accept_header_is_honoured(imaging):
    client, headers = imaging.client, imaging.headers["specialist"]
    study = f"/dicomweb/studies/{imaging.ct_uid}"
    explicit = "1.2.840.10008.1.2.1"
    for url, accept, status in (
        ("/dicomweb/studies", "application/dicom+json", 200),
        ("/dicomweb/studies", "application/json, */*;q=0.1", 200),
        ("/dicomweb/studies", "application/xml", 406),
        (f"{study}/metadata", DICOM_PART, 406),
        (study, "*/*", 200),
        (study, f"{DICOM_PART}; transfer-syntax=*", 200),
        (study, f"{DICOM_PART}; transfer-syntax={explicit}", 200),
        (study, f"{DICOM_PART}; transfer-syntax=1.2.840.10008.1.2.4.50", 406),
        (study, "application/dicom+json", 406),
        (study, 'multipart/related; type="application/octet-stream"', 406),
    ):
        response = client.get(url, headers={**headers, "Accept": accept})
        if status == 406:
            assert_outcome(response, 406)
        else:
            assert response.status_code == status, (url, accept, response.text)


# -- who may see it ----------------------------------------------------------------------------


def _study_routes(imaging: Imaging) -> list[str]:
    study = f"/dicomweb/studies/{imaging.ct_uid}"
    series = f"{study}/series/{imaging.ct[0].SeriesInstanceUID}"
    instance = f"{series}/instances/{imaging.ct[0].SOPInstanceUID}"
    return [
        study,
        f"{study}/metadata",
        f"{study}/series",
        series,
        f"{series}/metadata",
        f"{series}/instances",
        instance,
        f"{instance}/metadata",
    ]


def test_a_specialist_not_assigned_to_the_case_finds_nothing(imaging):
    client, outsider = imaging.client, imaging.headers["outsider"]
    assert client.get("/dicomweb/studies", headers=outsider).json() == []
    for url in _study_routes(imaging):
        refused = client.get(url, headers=outsider)
        assert_outcome(refused, 404)
        unknown = client.get(url.replace(imaging.ct_uid, "1.2.3.4"), headers=outsider)
        assert refused.json() == unknown.json(), url  # indistinguishable from a missing study
    for url in _study_routes(imaging)[:2]:
        assert client.get(url, headers=imaging.headers["specialist"]).status_code == 200


def test_a_held_study_is_invisible_even_to_its_case_manager(imaging):
    manager = imaging.headers["manager"]
    held = imaging.client.get(f"/dicomweb/studies/{imaging.mr_uid}/metadata", headers=manager)
    assert_outcome(held, 404)
    found = imaging.client.get("/dicomweb/studies", headers=manager).json()
    assert [values(s, "0020000D") for s in found] == [[imaging.ct_uid]]


def test_no_token_is_401_and_a_token_without_the_scope_or_role_is_403(imaging):
    client, settings = imaging.client, imaging.settings
    for url in ["/dicomweb/studies", *_study_routes(imaging)]:
        assert_outcome(client.get(url), 401)
        for headers in (
            bearer(settings, subject="dr-a", roles=("specialist",), scope="user/Patient.rs"),
            imaging.headers["admin"],
        ):
            assert_outcome(client.get(url, headers=headers), 403)
    read_only = bearer(
        settings, subject="cm-1", roles=("case-manager",), scope="user/ImagingStudy.r"
    )
    assert_outcome(client.get("/dicomweb/studies", headers=read_only), 403)  # QIDO is a search
    metadata = client.get(f"/dicomweb/studies/{imaging.ct_uid}/metadata", headers=read_only)
    assert metadata.status_code == 200, metadata.text


def audit_trail(imaging: Imaging) -> list[dict[str, Any]]:
    found = imaging.client.get(
        "/fhir/AuditEvent",
        params={"patient": imaging.patient_id, "_count": "500"},
        headers=imaging.headers["admin"],
    )
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


def test_each_request_for_imaging_writes_one_audit_event(imaging):
    client, headers = imaging.client, imaging.headers["specialist"]
    with client.app.state.hub.sessions() as session:
        imaging_id = session.scalars(
            select(DicomStudyRow.imaging_study_id).where(DicomStudyRow.study_uid == imaging.ct_uid)
        ).one()
    for interaction, url in (
        ("search-type", f"/dicomweb/studies?PatientID={imaging.patient_id}"),
        ("search-type", f"/dicomweb/studies/{imaging.ct_uid}/series"),
        ("read", f"/dicomweb/studies/{imaging.ct_uid}/metadata"),
        ("read", f"/dicomweb/studies/{imaging.ct_uid}"),
    ):
        before = audit_trail(imaging)
        assert client.get(url, headers=headers).status_code == 200, url
        new = [e for e in audit_trail(imaging) if e not in before]
        assert len(new) == 1, (url, new)
        (event,) = new
        assert event["agent"][0]["who"]["identifier"]["value"] == "dr-a"
        assert (event["subtype"][0]["code"], event["outcome"]) == (interaction, "0")
        named = {e.get("what", {}).get("reference") for e in event["entity"]}
        assert {f"ImagingStudy/{imaging_id}", f"Patient/{imaging.patient_id}"} <= named, url
