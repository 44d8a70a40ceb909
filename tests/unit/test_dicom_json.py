"""dicom_json: the DICOM JSON model (PS3.18 F.2) as a QIDO-RS or WADO-RS metadata client
expects it, from headers read without their pixel data."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from pydicom import dcmwrite
from pydicom.dataset import Dataset

from dicom.instances import dicom_json, read_instance
from dicom.synthetic import make_patient, make_study, write_study

PATIENT = make_patient(33)
BULK = "https://hub.example/dicomweb/studies/1/series/2/instances/3/bulkdata"


def _read(tmp_path: Path, ds: Dataset, **read: Any) -> tuple[Dataset, Any]:
    path = tmp_path / "instance.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    return read_instance(path, **read)


def test_study_level_attributes_as_qido_returns_them(tmp_path: Path) -> None:
    source = make_study(33, PATIENT, "MR", 1, 1)[0]
    header, info = read_instance(write_study(tmp_path, [source])[0])
    model = dicom_json(header)

    assert model["0020000D"] == {"vr": "UI", "Value": [source.StudyInstanceUID]}
    assert model["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": PATIENT.dicom_name}]}
    assert model["00100020"] == {"vr": "LO", "Value": [PATIENT.patient_id]}
    assert model["00080020"] == {"vr": "DA", "Value": [source.StudyDate]}
    assert model["00080060"] == {"vr": "CS", "Value": ["MR"]}
    assert model["00200011"] == {"vr": "IS", "Value": [1]}  # IS and DS are JSON numbers
    assert model["00180050"] == {"vr": "DS", "Value": [5.0]}
    assert model["00280010"] == {"vr": "US", "Value": [64]}
    assert model["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "OTHER"]}
    assert model["00080090"] == {"vr": "PN"}  # empty: no Value
    assert "7FE00010" not in model  # no bulk data URI given: pixel data left out
    assert all(re.fullmatch(r"[0-9A-F]{8}", key) for key in model)
    assert list(model) == sorted(model)
    assert not any(key.startswith("0002") for key in model)  # no file meta
    json.dumps(model)  # plain JSON types only


def test_pixel_data_is_a_bulk_data_uri_when_one_is_given(tmp_path: Path) -> None:
    header, info = read_instance(write_study(tmp_path, make_study(33, PATIENT, "CT", 1, 1))[0])
    model = dicom_json(header, bulk_data_uri=BULK + "/", pixel_data=info.pixel_data)
    assert model["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{BULK}/7FE00010"}
    assert list(model)[-1] == "7FE00010"


def test_sequences_are_nested(tmp_path: Path) -> None:
    header, _ = read_instance(write_study(tmp_path, make_study(33, PATIENT, "PT", 1, 1))[0])
    model = dicom_json(header)
    radiopharmaceutical = model["00540016"]
    assert radiopharmaceutical["vr"] == "SQ"
    (item,) = radiopharmaceutical["Value"]
    assert item["00180031"] == {"vr": "LO", "Value": ["Fludeoxyglucose F18"]}
    assert item["00540300"] == {
        "vr": "SQ",
        "Value": [
            {
                "00080100": {"vr": "SH", "Value": ["77004003"]},
                "00080102": {"vr": "SH", "Value": ["SCT"]},
                "00080104": {"vr": "LO", "Value": ["^18^Fluorine"]},
            }
        ],
    }
    (orientation,) = model["00540410"]["Value"]
    assert orientation["00080104"] == {"vr": "LO", "Value": ["recumbent"]}
    assert model["00540414"] == {"vr": "SQ"}  # empty sequence


def test_small_binary_values_are_inline(tmp_path: Path) -> None:
    source = make_study(33, PATIENT, "SM", 1, 1)[0]
    header, _ = read_instance(write_study(tmp_path, [source])[0])
    model = dicom_json(header)
    icc = model["00480105"]["Value"][0]["00282000"]
    assert icc["vr"] == "OB"
    assert base64.b64decode(icc["InlineBinary"]) == source.OpticalPathSequence[0].ICCProfile
    assert model["00209222"]["Value"][0]["00209165"] == {"vr": "AT", "Value": ["0048021E"]}


def test_large_binary_values_are_bulk_data_or_left_out(tmp_path: Path) -> None:
    header, _ = read_instance(write_study(tmp_path, make_study(33, PATIENT, "SM", 1, 1))[0])
    with_uri = dicom_json(header, bulk_data_uri=BULK, inline_binary_limit=16)
    icc = with_uri["00480105"]["Value"][0]["00282000"]
    assert icc == {"vr": "OB", "BulkDataURI": f"{BULK}/00480105/0/00282000"}
    without = dicom_json(header, inline_binary_limit=16)
    assert "00282000" not in without["00480105"]["Value"][0]


def test_values_left_in_the_file_are_not_read(tmp_path: Path) -> None:
    ds = make_study(33, PATIENT, "CT", 1, 1)[0]
    ds.add_new(0x00090010, "LO", "SYNTHETIC VENDOR")
    ds.add_new(0x00091010, "OB", b"\x07" * 5000)
    header, _ = _read(tmp_path, ds, defer_size=1024)
    (tmp_path / "instance.dcm").unlink()  # a read would fail now
    model = dicom_json(header, bulk_data_uri=BULK)
    assert model["00091010"] == {"vr": "OB", "BulkDataURI": f"{BULK}/00091010"}
    assert "00091010" not in dicom_json(header)


def test_person_names_with_ideographic_groups_and_multiple_values(tmp_path: Path) -> None:
    ds = make_study(33, PATIENT, "CT", 1, 1)[0]
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎"
    ds.OtherPatientNames = ["Doe^Jane", "Roe^Ann"]
    ds.ImageType = ["ORIGINAL", "", "AXIAL"]
    header, _ = _read(tmp_path, ds)
    model = dicom_json(header)
    assert model["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}
    ]
    assert model["00101001"]["Value"] == [{"Alphabetic": "Doe^Jane"}, {"Alphabetic": "Roe^Ann"}]
    assert model["00080008"]["Value"] == ["ORIGINAL", None, "AXIAL"]  # PS3.18 F.2.5


def test_group_lengths_are_left_out(tmp_path: Path) -> None:
    ds = make_study(33, PATIENT, "CT", 1, 1)[0]
    ds.add_new(0x00080000, "UL", 1234)
    header, _ = _read(tmp_path, ds)
    assert "00080000" not in dicom_json(header)
