"""The outside PACS is real and usable: dcmtk's echoscu and storescu talk DIMSE to the
session's Orthanc, and its DICOMweb plugin finds and describes what they stored."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless

from dicom.synthetic import Modality, SyntheticPatient, make_patient, make_study, write_study
from tests.orthanc_peer import OrthancPeer

pytestmark = pytest.mark.integration

CALLING_AET = "SOH_TEST_SCU"
DICOM_JSON = {"Accept": "application/dicom+json"}
STUDY_INSTANCE_UID = "0020000D"
SOP_INSTANCE_UID = "00080018"
PATIENT_ID = "00100020"
# storescu proposes uncompressed syntaxes unless told otherwise, and cannot decode RLE to
# fall back on them; deflate it could inflate, but proposing it proves Orthanc accepts it.
PROPOSE = {
    ExplicitVRLittleEndian: [],
    DeflatedExplicitVRLittleEndian: ["--propose-deflated"],
    RLELossless: ["--propose-rle"],
}


def dcmtk(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(arguments, capture_output=True, text=True, timeout=120, check=False)


def store(orthanc: OrthancPeer, files: list[Path], syntax: UID = ExplicitVRLittleEndian) -> None:
    """storescu the files to Orthanc. --required: its default list of SOP classes, cut to
    fit 128 presentation contexts, leaves out VL Whole Slide Microscopy (dcmtk 3.6.7)."""
    result = dcmtk(
        "storescu",
        "--required",
        *PROPOSE[syntax],
        "-aet",
        CALLING_AET,
        "-aec",
        orthanc.aet,
        orthanc.host,
        str(orthanc.dicom_port),
        *map(str, files),
    )
    assert result.returncode == 0, result.stderr + result.stdout


def stored_instances(orthanc: OrthancPeer, study_uid: str) -> list[str]:
    """Orthanc's ids of the instances it holds for a study."""
    with orthanc.client() as client:
        found = client.post(
            "/tools/find", json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}
        )
    found.raise_for_status()
    return [str(instance) for instance in found.json()]


@pytest.fixture(scope="module")
def pushed_ct(
    orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[SyntheticPatient, list[Dataset]]:
    """A synthetic CT study (one series of five slices) sent by storescu, as a modality would."""
    patient = make_patient(910_001)
    datasets = make_study(910_001, patient, "CT", series=1, instances=5)
    store(orthanc, write_study(tmp_path_factory.mktemp("ct"), datasets))
    return patient, datasets


def test_echoscu_verifies_orthanc(orthanc: OrthancPeer) -> None:
    result = dcmtk(
        "echoscu", "-aet", CALLING_AET, "-aec", orthanc.aet, orthanc.host, str(orthanc.dicom_port)
    )
    assert result.returncode == 0, result.stderr


def test_orthanc_refuses_an_association_to_another_called_aet(orthanc: OrthancPeer) -> None:
    result = dcmtk(
        "echoscu", "-aet", CALLING_AET, "-aec", "NOT_ORTHANC", orthanc.host, str(orthanc.dicom_port)
    )
    assert result.returncode != 0


def test_rest_api_needs_the_password(orthanc: OrthancPeer) -> None:
    assert httpx.get(f"{orthanc.base_url}/system").status_code == 401
    assert httpx.get(f"{orthanc.base_url}/system", auth=orthanc.auth).status_code == 200


def test_stored_ct_study_is_listed_by_the_rest_api(
    orthanc: OrthancPeer, pushed_ct: tuple[SyntheticPatient, list[Dataset]]
) -> None:
    _, datasets = pushed_ct
    with orthanc.client() as client:
        studies = client.get("/studies", params={"expand": ""}).json()
    listed = {study["MainDicomTags"]["StudyInstanceUID"]: study for study in studies}
    study = listed[datasets[0].StudyInstanceUID]
    assert len(study["Series"]) == 1
    assert len(stored_instances(orthanc, datasets[0].StudyInstanceUID)) == len(datasets)


def test_qido_rs_finds_the_study_by_patient_id(
    orthanc: OrthancPeer, pushed_ct: tuple[SyntheticPatient, list[Dataset]]
) -> None:
    patient, datasets = pushed_ct
    response = httpx.get(
        f"{orthanc.dicomweb_url}/studies",
        params={"PatientID": patient.patient_id},
        headers=DICOM_JSON,
        auth=orthanc.auth,
    )
    assert response.status_code == 200, response.text
    matches = response.json()
    assert [match[STUDY_INSTANCE_UID]["Value"] for match in matches] == [
        [datasets[0].StudyInstanceUID]
    ]
    assert matches[0][PATIENT_ID]["Value"] == [patient.patient_id]


def test_wado_rs_metadata_describes_every_instance(
    orthanc: OrthancPeer, pushed_ct: tuple[SyntheticPatient, list[Dataset]]
) -> None:
    _, datasets = pushed_ct
    response = httpx.get(
        f"{orthanc.dicomweb_url}/studies/{datasets[0].StudyInstanceUID}/metadata",
        headers=DICOM_JSON,
        auth=orthanc.auth,
    )
    assert response.status_code == 200, response.text
    metadata = response.json()
    assert len(metadata) == len(datasets)
    assert {item[SOP_INSTANCE_UID]["Value"][0] for item in metadata} == {
        ds.SOPInstanceUID for ds in datasets
    }


@pytest.mark.parametrize(
    ("seed", "modality", "syntax"),
    [
        (910_002, "MR", DeflatedExplicitVRLittleEndian),
        (910_003, "PT", ExplicitVRLittleEndian),
        (910_004, "SM", RLELossless),
    ],
    ids=["MR-deflated", "PT-explicit", "WSI-RLE"],
)
def test_orthanc_accepts_every_generated_kind(
    orthanc: OrthancPeer, tmp_path: Path, seed: int, modality: Modality, syntax: UID
) -> None:
    datasets = make_study(
        seed, make_patient(seed), modality, series=1, instances=2, transfer_syntax=syntax
    )
    store(orthanc, write_study(tmp_path, datasets), syntax)
    stored = stored_instances(orthanc, datasets[0].StudyInstanceUID)
    assert len(stored) == len(datasets)
    with orthanc.client() as client:
        for instance in stored:
            kept = client.get(f"/instances/{instance}/metadata/TransferSyntax").text
            assert kept == syntax  # stored as sent, not transcoded on the way in


def test_a_declared_modality_can_be_changed_per_test(orthanc: OrthancPeer) -> None:
    orthanc.set_modality("hub", "HUB_STORE_SCP", 11112)
    orthanc.set_modality("hub", "HUB_STORE_SCP", 11113)
    with orthanc.client() as client:
        declared = client.get("/modalities", params={"expand": ""}).json()
    assert declared["hub"]["AET"] == "HUB_STORE_SCP" and declared["hub"]["Port"] == 11113
    orthanc.remove_modality("hub")
    with orthanc.client() as client:
        assert "hub" not in client.get("/modalities").json()
