"""Helpers of the DICOM integration tests: a case through the FHIR API, a study into the
outside PACS (Orthanc) with dcmtk's storescu."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from dicom.synthetic import SyntheticPatient
from tests.fhir_client import bearer, post, referral
from tests.orthanc_peer import OrthancPeer


def upload(orthanc: OrthancPeer, files: list[Path]) -> None:
    sent = subprocess.run(
        ["storescu", "-aet", "OUTSIDE_CT", "-aec", orthanc.aet, orthanc.host]
        + [str(orthanc.dicom_port), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr


def open_case(client: TestClient, settings: Any, child: SyntheticPatient) -> tuple[str, str]:
    """A referral for `child` through the FHIR API: (Patient id, case Task id)."""
    headers = {
        **bearer(settings, subject="ehr-1", roles=("referrer",), scope="system/*.cruds"),
        "Content-Type": "application/fhir+json",
    }
    patient = post(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "https://outside.example/mrn", "value": child.patient_id}],
            "name": [{"family": child.family_name, "given": [child.given_name]}],
            "birthDate": child.birth_date.isoformat(),
            "gender": {"F": "female", "M": "male"}[child.sex],
        },
        **headers,
    )
    post(client, referral(f"Patient/{patient['id']}"), **headers)
    tasks = client.get("/fhir/Task", params={"patient": patient["id"]}, headers=headers).json()
    return patient["id"], tasks["entry"][0]["resource"]["id"]
