"""build_imaging_study: valid R4 ImagingStudy, deterministic, coded from the tables."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B.imagingstudy import ImagingStudy

from dicom.imaging_study import build_imaging_study
from dicom.instances import InstanceInfo, read_instance
from dicom.synthetic import Modality, make_patient, make_study, write_study

PATIENT = make_patient(71)
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _study_infos(tmp_path: Path) -> list[InstanceInfo]:
    """One study of MR (3 series), PT (2) and SM (2 slides), as one outside visit sends it."""
    datasets = []
    plan: list[tuple[Modality, int, int]] = [("MR", 3, 3), ("PT", 2, 2), ("SM", 2, 2)]
    for modality, series, instances in plan:
        datasets += make_study(71, PATIENT, modality, series, instances)
    study_uid = datasets[0].StudyInstanceUID
    for ds in datasets:
        ds.StudyInstanceUID = study_uid
        ds.SeriesNumber = {"MR": 0, "PT": 10, "SM": 20}[ds.Modality] + ds.SeriesNumber
        ds.StudyDate, ds.StudyTime = "20240312", "093015.5"
    return [read_instance(path)[1] for path in write_study(tmp_path, datasets)]


def _build(infos: list[InstanceInfo], **options: object) -> dict[str, object]:
    return build_imaging_study(
        infos,
        patient_reference="Patient/p-1",
        based_on="ServiceRequest/sr-1",
        endpoint_reference="Endpoint/hub-dicomweb",
        **options,  # type: ignore[arg-type]
    )


def test_a_multi_modality_study_is_a_valid_r4_imaging_study(tmp_path: Path) -> None:
    infos = _study_infos(tmp_path)
    study = _build(infos)

    ImagingStudy.model_validate(study)
    assert study["status"] == "available"
    assert study["identifier"] == [
        {"system": "urn:dicom:uid", "value": f"urn:oid:{infos[0].study_instance_uid}"},
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                ]
            },
            "value": infos[0].accession_number,
        },
    ]
    assert study["subject"] == {"reference": "Patient/p-1"}
    assert study["basedOn"] == [{"reference": "ServiceRequest/sr-1"}]
    assert study["endpoint"] == [{"reference": "Endpoint/hub-dicomweb"}]
    assert study["started"] == "2024-03-12"  # no time zone given: the date alone
    assert study["numberOfSeries"] == 7
    assert study["numberOfInstances"] == 3 * 3 + 2 * 2 + 2 * 2
    assert study["description"] == "MR brain with and without contrast"
    assert study["modality"] == [
        {"system": DCM, "code": "MR", "display": "Magnetic Resonance"},
        {"system": DCM, "code": "PT", "display": "Positron emission tomography"},
        {"system": DCM, "code": "SM", "display": "Slide Microscopy"},
    ]
    series = study["series"]
    assert isinstance(series, list)
    assert [s["number"] for s in series] == [1, 2, 3, 11, 12, 21, 22]
    first = series[0]
    assert first["modality"] == {"system": DCM, "code": "MR", "display": "Magnetic Resonance"}
    assert first["description"] == "T1 axial post contrast"
    assert first["numberOfInstances"] == 3
    assert first["bodySite"] == {
        "system": "http://snomed.info/sct",
        "code": "69536005",
        "display": "Head",
    }
    assert [i["number"] for i in first["instance"]] == [1, 2, 3]
    assert first["instance"][0]["sopClass"] == {
        "system": "urn:ietf:rfc:3986",
        "code": "urn:oid:1.2.840.10008.5.1.4.1.1.4",
        "display": "MR Image Storage",
    }
    assert series[3]["bodySite"]["code"] == "38266002"  # WHOLEBODY: Entire body
    assert series[5]["bodySite"]["code"] == "12738006"  # BRAIN
    assert series[5]["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.77.1.6"


def test_the_same_instances_in_any_order_give_the_same_study(tmp_path: Path) -> None:
    infos = _study_infos(tmp_path)
    expected = _build(infos)
    for seed in range(5):
        shuffled = infos[:]
        random.Random(seed).shuffle(shuffled)
        assert _build(shuffled + shuffled[:4]) == expected  # duplicates count once


def _info(series_uid: str, series_number: int | None, uid: str, number: int | None) -> InstanceInfo:
    return InstanceInfo(
        sop_instance_uid=uid,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid="1.2.3",
        series_instance_uid=series_uid,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        patient_id="P",
        issuer_of_patient_id=None,
        patient_name=None,
        patient_birth_date=None,
        patient_sex=None,
        modality="CT",
        study_date=None,
        study_time=None,
        study_description=None,
        series_description=None,
        series_number=series_number,
        instance_number=number,
        body_part_examined=None,
        accession_number=None,
        number_of_frames=None,
    )


def test_series_by_number_then_uid_and_instances_likewise() -> None:
    infos = [
        _info("1.2.3.9", None, "1.2.3.9.1", 1),
        _info("1.2.3.10", 2, "1.2.3.10.1", 1),
        _info("1.2.3.8", 2, "1.2.3.8.1", 1),
        _info("1.2.3.7", 1, "1.2.3.7.10", None),
        _info("1.2.3.7", 1, "1.2.3.7.9", None),
        _info("1.2.3.7", 1, "1.2.3.7.11", 2),
        _info("1.2.3.7", 1, "1.2.3.7.12", 1),
    ]
    study = build_imaging_study(
        infos, patient_reference="Patient/1", based_on=None, endpoint_reference=None
    )
    ImagingStudy.model_validate(study)
    assert [s["uid"] for s in study["series"]] == ["1.2.3.7", "1.2.3.8", "1.2.3.10", "1.2.3.9"]
    assert [i["uid"] for i in study["series"][0]["instance"]] == [
        "1.2.3.7.12",  # number 1
        "1.2.3.7.11",  # number 2
        "1.2.3.7.9",  # no number: by UID, component by component
        "1.2.3.7.10",
    ]
    assert "number" not in study["series"][3]
    assert "basedOn" not in study and "endpoint" not in study and "started" not in study


def test_only_acquisition_modalities_are_listed_on_the_study() -> None:
    image = _info("1.2.5", 1, "1.2.5.1", 1)
    report = dataclasses.replace(
        _info("1.2.6", 2, "1.2.6.1", 1),
        modality="SR",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.22",
    )
    unknown = dataclasses.replace(_info("1.2.7", 3, "1.2.7.1", 1), modality=None)
    study = build_imaging_study(
        [image, report, unknown],
        patient_reference="Patient/1",
        based_on=None,
        endpoint_reference=None,
    )
    ImagingStudy.model_validate(study)
    assert [m["code"] for m in study["modality"]] == ["CT"]
    assert [s["modality"]["code"] for s in study["series"]] == ["CT", "SR", "OT"]


def test_an_unmapped_body_part_has_no_body_site() -> None:
    info = dataclasses.replace(_info("1.2.5", 1, "1.2.5.1", 1), body_part_examined="LEFTPINKY")
    study = build_imaging_study(
        [info], patient_reference="Patient/1", based_on=None, endpoint_reference=None
    )
    assert "bodySite" not in study["series"][0]


@pytest.mark.parametrize(
    ("study_time", "zone", "started"),
    [
        ("093015.5", UTC, "2024-03-12T09:30:15.500+00:00"),
        ("0930", ZoneInfo("Europe/Berlin"), "2024-03-12T09:30:00+01:00"),
        ("09", ZoneInfo("America/New_York"), "2024-03-12T09:00:00-04:00"),
        ("09:30:15", UTC, "2024-03-12T09:30:15+00:00"),
        ("2530", UTC, "2024-03-12"),  # not a time
        (None, UTC, "2024-03-12"),
    ],
)
def test_started_has_a_time_only_with_a_time_zone(
    study_time: str | None, zone: timezone | ZoneInfo, started: str
) -> None:
    info = dataclasses.replace(
        _info("1.2.5", 1, "1.2.5.1", 1), study_date="20240312", study_time=study_time
    )
    study = build_imaging_study(
        [info],
        patient_reference="Patient/1",
        based_on=None,
        endpoint_reference=None,
        time_zone=zone,
    )
    ImagingStudy.model_validate(study)
    assert study["started"] == started


def test_no_instances_or_two_studies_are_refused() -> None:
    with pytest.raises(ValueError):
        build_imaging_study(
            [], patient_reference="Patient/1", based_on=None, endpoint_reference=None
        )
    other = dataclasses.replace(_info("1.2.5", 1, "1.2.5.1", 1), study_instance_uid="1.2.4")
    with pytest.raises(ValueError):
        build_imaging_study(
            [_info("1.2.5", 1, "1.2.5.2", 2), other],
            patient_reference="Patient/1",
            based_on=None,
            endpoint_reference=None,
        )
