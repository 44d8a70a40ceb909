"""reconcile_file: the hub's identity in, the outside identity kept where PS3.3 says, and
nothing else of the instance changed: UIDs, every other attribute, the pixel data bytes."""

from __future__ import annotations

import copy
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from dicom._part10 import scan
from dicom.errors import InvalidDicom
from dicom.instances import read_instance
from dicom.reconcile import HubIdentity, reconcile_file
from dicom.synthetic import Modality, make_patient, make_study

OUTSIDE = make_patient(57)
HUB = HubIdentity(
    "HUB-000057",
    "SECOND-OPINION-HUB",
    family="Fictus",
    given="Ines",
    birth_date="20140607",
    sex="F",
)
WHEN = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
IDENTITY_KEYWORDS = {
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "OtherPatientIDsSequence",
    "OriginalAttributesSequence",
    "SpecificCharacterSet",
}
TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
]


def _source(
    tmp_path: Path,
    transfer_syntax: UID = ExplicitVRLittleEndian,
    modality: Modality = "CT",
    ds: Dataset | None = None,
) -> Path:
    if ds is None:
        generated = transfer_syntax if transfer_syntax == RLELossless else ExplicitVRLittleEndian
        ds = make_study(57, OUTSIDE, modality, 1, 1, generated)[0]
    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    path = tmp_path / "outside.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _reconcile(source: Path, identity: HubIdentity = HUB, reason: str = "COERCE") -> Dataset:
    target = source.with_name(f"reconciled-{source.name}")
    reconcile_file(source, target, identity, reason=reason, when=WHEN)
    return dcmread(target)


def _pixel_hash(path: Path) -> str:
    """sha256 of the file from its pixel data element to the end, as stored."""
    layout = scan(path)
    assert layout.pixel_data is not None and layout.inflated is None
    with path.open("rb") as stream:
        stream.seek(layout.pixel_data.offset)
        return hashlib.sha256(stream.read()).hexdigest()


def test_identity_attributes_field_by_field(tmp_path: Path) -> None:
    result = _reconcile(_source(tmp_path))

    assert result.PatientID == "HUB-000057"
    assert result.IssuerOfPatientID == "SECOND-OPINION-HUB"
    assert result.PatientName == "Fictus^Ines"
    assert result.PatientBirthDate == "20140607"
    assert result.PatientSex == "F"

    (other,) = result.OtherPatientIDsSequence
    assert other.PatientID == OUTSIDE.patient_id
    assert other.IssuerOfPatientID == OUTSIDE.issuer
    assert other.TypeOfPatientID == "TEXT"

    (original,) = result.OriginalAttributesSequence
    assert original.AttributeModificationDateTime == "20240506070809+0200"
    assert original.ModifyingSystem == "SECOND-OPINION-HUB"
    assert original.SourceOfPreviousValues == OUTSIDE.issuer
    assert original.ReasonForTheAttributeModification == "COERCE"
    (previous,) = original.ModifiedAttributesSequence
    assert previous.PatientID == OUTSIDE.patient_id
    assert previous.IssuerOfPatientID == OUTSIDE.issuer
    assert previous.PatientName == OUTSIDE.dicom_name
    assert previous.PatientBirthDate == OUTSIDE.birth_date.strftime("%Y%m%d")
    assert previous.PatientSex == OUTSIDE.sex
    assert previous.OtherPatientIDsSequence == []  # it had none before
    assert set(previous.dir()) == {
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "OtherPatientIDsSequence",
    }


@pytest.mark.parametrize("transfer_syntax", TRANSFER_SYNTAXES, ids=lambda uid: UID(uid).name)
@pytest.mark.parametrize("modality", ["CT", "SM"])
def test_nothing_else_changes(tmp_path: Path, transfer_syntax: UID, modality: Modality) -> None:
    source = _source(tmp_path, transfer_syntax, modality)
    before = dcmread(source)
    result = _reconcile(source)

    assert result.file_meta.TransferSyntaxUID == transfer_syntax
    for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID"):
        assert result[keyword].value == before[keyword].value
    assert result.file_meta.MediaStorageSOPInstanceUID == before.SOPInstanceUID
    assert result.PixelData == before.PixelData
    untouched = {element.keyword for element in before} - IDENTITY_KEYWORDS
    for keyword in untouched:
        assert result[keyword] == before[keyword], keyword
    assert {element.keyword for element in result} - IDENTITY_KEYWORDS == untouched
    read_instance(source.with_name(f"reconciled-{source.name}"))  # still acceptable


@pytest.mark.parametrize(
    "transfer_syntax",
    [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless],
    ids=lambda uid: UID(uid).name,
)
def test_pixel_data_bytes_are_copied_verbatim(tmp_path: Path, transfer_syntax: UID) -> None:
    source = _source(tmp_path, transfer_syntax, "SM")
    _reconcile(source)
    assert _pixel_hash(source.with_name(f"reconciled-{source.name}")) == _pixel_hash(source)


def test_an_icon_inside_a_sequence_and_elements_after_the_pixels(tmp_path: Path) -> None:
    ds = make_study(57, OUTSIDE, "CT", 1, 1)[0]
    icon = Dataset()
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.Rows = icon.Columns = 8
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = bytes(range(64))
    ds.IconImageSequence = [icon]  # pixel data nested in the header: not where we cut
    ds.DataSetTrailingPadding = b"\x00" * 32  # (FFFC,FFFC), after the pixel data
    source = _source(tmp_path, ds=ds)
    result = _reconcile(source)

    assert result.IconImageSequence[0].PixelData == bytes(range(64))
    assert result.DataSetTrailingPadding == b"\x00" * 32
    assert result.PixelData == ds.PixelData
    assert _pixel_hash(source.with_name(f"reconciled-{source.name}")) == _pixel_hash(source)
    _, info = read_instance(source)
    assert info.pixel_data is not None and info.pixel_data.tag == 0x7FE00010


def test_only_the_identifier_when_the_hub_has_no_demographics(tmp_path: Path) -> None:
    source = _source(tmp_path)
    result = _reconcile(source, HubIdentity("HUB-9", "SECOND-OPINION-HUB"), reason="CORRECT")
    assert result.PatientName == OUTSIDE.dicom_name
    assert result.PatientBirthDate == OUTSIDE.birth_date.strftime("%Y%m%d")
    (original,) = result.OriginalAttributesSequence
    assert original.ReasonForTheAttributeModification == "CORRECT"
    assert set(original.ModifiedAttributesSequence[0].dir()) == {
        "PatientID",
        "IssuerOfPatientID",
        "OtherPatientIDsSequence",
    }


def test_an_absent_issuer_is_recorded_empty(tmp_path: Path) -> None:
    ds = make_study(57, OUTSIDE, "CT", 1, 1)[0]
    del ds.IssuerOfPatientID
    result = _reconcile(_source(tmp_path, ds=ds))
    (other,) = result.OtherPatientIDsSequence
    assert other.PatientID == OUTSIDE.patient_id
    assert "IssuerOfPatientID" not in other
    (original,) = result.OriginalAttributesSequence
    assert original.SourceOfPreviousValues == ""
    previous = original.ModifiedAttributesSequence[0]
    assert "IssuerOfPatientID" in previous and previous.IssuerOfPatientID == ""


def test_issuer_qualifiers_follow_the_outside_identifier(tmp_path: Path) -> None:
    ds = make_study(57, OUTSIDE, "CT", 1, 1)[0]
    qualifier = Dataset()
    qualifier.UniversalEntityID = "2.16.840.1.113883.3.999"
    qualifier.UniversalEntityIDType = "ISO"
    ds.IssuerOfPatientIDQualifiersSequence = [qualifier]
    result = _reconcile(_source(tmp_path, ds=ds))
    assert "IssuerOfPatientIDQualifiersSequence" not in result
    other = result.OtherPatientIDsSequence[0]
    assert (
        other.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == "2.16.840.1.113883.3.999"
    )
    previous = result.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert previous.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityIDType == "ISO"


def test_a_second_reconciliation_adds_to_the_history(tmp_path: Path) -> None:
    source = _source(tmp_path)
    first = source.with_name("first.dcm")
    reconcile_file(source, first, HUB, reason="COERCE", when=WHEN)
    second = HubIdentity("HUB-000058", "SECOND-OPINION-HUB")
    result = _reconcile(first, second, reason="CORRECT")

    assert result.PatientID == "HUB-000058"
    assert [(o.PatientID, o.IssuerOfPatientID) for o in result.OtherPatientIDsSequence] == [
        (OUTSIDE.patient_id, OUTSIDE.issuer),
        ("HUB-000057", "SECOND-OPINION-HUB"),
    ]
    reasons = [o.ReasonForTheAttributeModification for o in result.OriginalAttributesSequence]
    assert reasons == ["COERCE", "CORRECT"]
    previous = result.OriginalAttributesSequence[1].ModifiedAttributesSequence[0]
    assert previous.PatientID == "HUB-000057"
    assert len(previous.OtherPatientIDsSequence) == 1


def test_an_instance_that_has_the_identity_already_is_copied_unchanged(tmp_path: Path) -> None:
    source = _source(tmp_path)
    first = source.with_name("first.dcm")
    reconcile_file(source, first, HUB, reason="COERCE", when=WHEN)
    again = source.with_name("again.dcm")
    reconcile_file(first, again, HUB, reason="COERCE", when=WHEN + timedelta(days=1))
    assert again.read_bytes() == first.read_bytes()


def test_a_name_outside_the_character_set_switches_to_utf8(tmp_path: Path) -> None:
    ds = make_study(57, OUTSIDE, "PT", 1, 1)[0]
    ds.InstitutionName = "Hôpital Sainte-Élise"  # Latin-1, as the outside system wrote it
    ds.RadiopharmaceuticalInformationSequence[0].Radiopharmaceutical = "Fludésoxyglucose"
    identity = HubIdentity("HUB-1", "SECOND-OPINION-HUB", family="Wiśniewska", given="Zoë")
    result = _reconcile(_source(tmp_path, ds=ds), identity)

    assert result.SpecificCharacterSet == "ISO_IR 192"
    assert result.PatientName == "Wiśniewska^Zoë"
    assert result.InstitutionName == "Hôpital Sainte-Élise"
    assert result.RadiopharmaceuticalInformationSequence[0].Radiopharmaceutical == (
        "Fludésoxyglucose"
    )
    previous = result.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    assert previous.SpecificCharacterSet == "ISO_IR 100"


def test_a_latin1_name_keeps_the_character_set(tmp_path: Path) -> None:
    identity = HubIdentity("HUB-1", "SECOND-OPINION-HUB", family="Müller", given="Zoé")
    result = _reconcile(_source(tmp_path), identity)
    assert result.SpecificCharacterSet == "ISO_IR 100"
    assert result.PatientName == "Müller^Zoé"
    assert (
        "SpecificCharacterSet"
        not in result.OriginalAttributesSequence[0].ModifiedAttributesSequence[0]
    )


def test_a_tiff_preamble_is_cleared(tmp_path: Path) -> None:
    ds = make_study(57, OUTSIDE, "SM", 1, 1)[0]
    ds.preamble = b"II*\x00" + bytes(124)  # a dual-personality DICOM/TIFF file
    result = _reconcile(_source(tmp_path, ds=ds))
    assert result.preamble == bytes(128)


def test_group_lengths_are_dropped(tmp_path: Path) -> None:
    ds = make_study(57, OUTSIDE, "CT", 1, 1)[0]
    ds.add_new(0x00100000, "UL", 42)  # now wrong: the group grows
    result = _reconcile(_source(tmp_path, ds=ds))
    assert 0x00100000 not in result


def test_an_unknown_reason_is_refused(tmp_path: Path) -> None:
    source = _source(tmp_path)
    with pytest.raises(ValueError):
        reconcile_file(source, tmp_path / "out.dcm", HUB, reason="MERGE", when=WHEN)
    assert not (tmp_path / "out.dcm").exists()


def test_nothing_is_left_behind_when_the_source_is_bad(tmp_path: Path) -> None:
    source = _source(tmp_path)
    source.write_bytes(source.read_bytes()[:-50])
    with pytest.raises(InvalidDicom):
        reconcile_file(source, tmp_path / "out.dcm", HUB, reason="COERCE", when=WHEN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.dcm"]


def test_a_large_deflated_instance_is_refused(tmp_path: Path) -> None:
    source = _source(tmp_path, DeflatedExplicitVRLittleEndian)
    with pytest.raises(InvalidDicom) as caught:
        reconcile_file(
            source, tmp_path / "out.dcm", HUB, reason="COERCE", when=WHEN, deflated_limit=2048
        )
    assert caught.value.reason.startswith("deflated dataset larger than 2048 bytes")
    assert not (tmp_path / "out.dcm").exists()


def test_the_source_of_previous_values_can_be_named(tmp_path: Path) -> None:
    source = _source(tmp_path)
    target = tmp_path / "out.dcm"
    reconcile_file(
        source,
        target,
        HUB,
        reason="COERCE",
        when=datetime(2024, 5, 6, 7, 8, 9, 250000),
        source_of_previous_values="ST MARY PACS",
    )
    (original,) = dcmread(target).OriginalAttributesSequence
    assert original.SourceOfPreviousValues == "ST MARY PACS"
    assert original.AttributeModificationDateTime == "20240506070809.250000"
