"""The synthetic DICOM generator: deterministic, unique UIDs, complete enough IODs, files
pydicom reads back, WSI tiling that matches its matrix, and a DICOMDIR that lists it all."""

from __future__ import annotations

import io
import math
from datetime import date
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.fileset import FileSet
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    VLWholeSlideMicroscopyImageStorage,
)

from dicom.synthetic import (
    SUPPORTED_TRANSFER_SYNTAXES,
    Modality,
    make_dicomdir,
    make_patient,
    make_study,
    write_study,
)

MODALITIES: list[Modality] = ["CT", "MR", "PT", "SM"]

COMMON = [
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "InstanceNumber",
    "FrameOfReferenceUID",
    "Manufacturer",
    "ContentDate",
    "ContentTime",
    "ImageType",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PixelData",
]
CROSS_SECTIONAL = [
    "PixelSpacing",
    "SliceThickness",
    "ImageOrientationPatient",
    "ImagePositionPatient",
]
REQUIRED: dict[str, list[str]] = {
    "CT": [*CROSS_SECTIONAL, "PatientPosition", "KVP", "RescaleIntercept", "RescaleSlope"],
    "MR": [
        *CROSS_SECTIONAL,
        "PatientPosition",
        "ScanningSequence",
        "SequenceVariant",
        "ScanOptions",
        "MRAcquisitionType",
        "EchoTime",
        "EchoTrainLength",
    ],
    "PT": [
        *CROSS_SECTIONAL,
        "Units",
        "CountsSource",
        "SeriesType",
        "CorrectedImage",
        "DecayCorrection",
        "ImageIndex",
        "RadiopharmaceuticalInformationSequence",
        "PatientOrientationCodeSequence",
        "RescaleSlope",
    ],
    "SM": [
        "TotalPixelMatrixColumns",
        "TotalPixelMatrixRows",
        "TotalPixelMatrixOriginSequence",
        "DimensionOrganizationType",
        "DimensionOrganizationSequence",
        "NumberOfFrames",
        "ImagedVolumeWidth",
        "ImagedVolumeHeight",
        "ImagedVolumeDepth",
        "ImageOrientationSlide",
        "SharedFunctionalGroupsSequence",
        "OpticalPathSequence",
        "ContainerIdentifier",
        "SpecimenDescriptionSequence",
        "AcquisitionContextSequence",
        "VolumetricProperties",
        "SpecimenLabelInImage",
        "BurnedInAnnotation",
        "FocusMethod",
        "ExtendedDepthOfField",
        "PlanarConfiguration",
    ],
}


def round_trip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def test_patient_is_a_fictional_child_drawn_from_the_seed() -> None:
    patient = make_patient(42)
    assert make_patient(42) == patient
    assert make_patient(43).patient_id != patient.patient_id
    assert patient.issuer and patient.sex in ("F", "M")
    assert date(2010, 1, 1) <= patient.birth_date < date(2022, 1, 1)
    for ds in make_study(1, patient, "MR", series=1, instances=1):
        assert ds.PatientName == patient.dicom_name
        assert int(ds.PatientAge.rstrip("Y")) < 18


@pytest.mark.parametrize("modality", MODALITIES)
def test_same_seed_gives_the_same_study(modality: Modality) -> None:
    first = make_study(7, make_patient(1), modality)
    again = make_study(7, make_patient(1), modality)
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in again]
    assert [ds.PixelData for ds in first] == [ds.PixelData for ds in again]
    other_seed = make_study(8, make_patient(1), modality)
    other_patient = make_study(7, make_patient(2), modality)
    assert other_seed[0].StudyInstanceUID != first[0].StudyInstanceUID
    assert other_patient[0].StudyInstanceUID != first[0].StudyInstanceUID


def test_uids_are_unique_and_valid_across_instances_series_and_studies() -> None:
    patient = make_patient(3)
    datasets = [
        ds
        for seed in (1, 2)
        for modality in MODALITIES
        for ds in make_study(seed, patient, modality, series=3, instances=3)
    ]
    instances = [ds.SOPInstanceUID for ds in datasets]
    series = {(ds.StudyInstanceUID, ds.SeriesInstanceUID) for ds in datasets}
    studies = {ds.StudyInstanceUID for ds in datasets}
    assert len(set(instances)) == len(instances) == 2 * 4 * 3 * 3
    assert len({uid for _, uid in series}) == len(series) == 2 * 4 * 3
    assert len(studies) == 2 * 4
    for uid in [*instances, *studies, *(uid for _, uid in series)]:
        assert UID(uid).is_valid, uid


def test_transfer_syntax_changes_the_encoding_not_the_instance() -> None:
    patient = make_patient(5)
    uids = {
        syntax: [ds.SOPInstanceUID for ds in make_study(1, patient, "CT", transfer_syntax=syntax)]
        for syntax in SUPPORTED_TRANSFER_SYNTAXES
    }
    assert len({tuple(value) for value in uids.values()}) == 1


@pytest.mark.parametrize("modality", MODALITIES)
def test_required_attributes_are_present(modality: Modality) -> None:
    for ds in make_study(11, make_patient(11), modality, series=2, instances=2):
        missing = [keyword for keyword in [*COMMON, *REQUIRED[modality]] if keyword not in ds]
        assert not missing
        assert ds.Modality == modality
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID


@pytest.mark.parametrize("syntax", SUPPORTED_TRANSFER_SYNTAXES, ids=lambda uid: uid.name)
@pytest.mark.parametrize("modality", MODALITIES)
def test_every_instance_round_trips_through_dcmread(modality: Modality, syntax: UID) -> None:
    patient = make_patient(13)
    native = make_study(13, patient, modality, series=1, instances=2)
    encoded = make_study(13, patient, modality, series=1, instances=2, transfer_syntax=syntax)
    for original, ds in zip(native, encoded, strict=True):
        read = round_trip(ds)
        assert read.file_meta.TransferSyntaxUID == syntax
        assert read.SOPInstanceUID == original.SOPInstanceUID
        assert read.PatientID == patient.patient_id
        frames = int(read.get("NumberOfFrames", 1))
        if syntax != RLELossless:
            assert read.PixelData == original.PixelData
        elif read.SamplesPerPixel == 1:
            decoded, _ = get_decoder(RLELossless).as_buffer(read)
            assert bytes(decoded) == original.PixelData
        else:
            # RLE keeps one fragment per frame (PS3.5 A.4.2); its colour planes come back
            # planar, so the frame count is what this checks.
            assert len(list(generate_frames(read.PixelData, number_of_frames=frames))) == frames


def test_whole_slide_pyramid_tiles_match_its_matrix() -> None:
    levels = make_study(17, make_patient(17), "SM", series=1, instances=3)
    assert {ds.SOPClassUID for ds in levels} == {VLWholeSlideMicroscopyImageStorage}
    assert len({ds.PyramidUID for ds in levels}) == 1
    assert len({ds.FrameOfReferenceUID for ds in levels}) == 1
    widths = [ds.TotalPixelMatrixColumns for ds in levels]
    assert widths == sorted(widths, reverse=True) and widths[-1] == levels[-1].Columns
    for level, ds in enumerate(levels):
        assert ds.DimensionOrganizationType == "TILED_FULL"
        assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
        assert list(ds.ImageType)[2:] == (
            ["VOLUME", "NONE"] if level == 0 else ["VOLUME", "RESAMPLED"]
        )
        tiles = math.ceil(ds.TotalPixelMatrixColumns / ds.Columns) * math.ceil(
            ds.TotalPixelMatrixRows / ds.Rows
        )
        assert ds.NumberOfFrames == tiles * ds.TotalPixelMatrixFocalPlanes * ds.NumberOfOpticalPaths
        assert len(ds.PixelData) == ds.NumberOfFrames * ds.Rows * ds.Columns * 3
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        assert ds.ImagedVolumeWidth == pytest.approx(ds.TotalPixelMatrixColumns * spacing[1])
        profile = bytes(ds.OpticalPathSequence[0].ICCProfile)
        assert profile[36:40] == b"acsp" and int.from_bytes(profile[:4], "big") == len(profile)


def test_write_study_writes_one_readable_file_per_instance(tmp_path: Path) -> None:
    datasets = make_study(19, make_patient(19), "MR", series=2, instances=3)
    paths = write_study(tmp_path, datasets)
    assert len(paths) == len(set(paths)) == 6
    for path, ds in zip(paths, datasets, strict=True):
        read = dcmread(path)
        assert read.preamble is not None
        assert read.SOPInstanceUID == ds.SOPInstanceUID


def test_dicomdir_lists_every_instance_and_reads_back(tmp_path: Path) -> None:
    patient = make_patient(23)
    datasets = [
        *make_study(23, patient, "MR", series=2, instances=3),
        *make_study(23, patient, "CT", series=1, instances=2),
        *make_study(23, patient, "PT", 1, 2, transfer_syntax=DeflatedExplicitVRLittleEndian),
        *make_study(23, patient, "SM", 1, 2, transfer_syntax=RLELossless),
    ]
    dicomdir = make_dicomdir(tmp_path / "cd", datasets)
    assert dicomdir == tmp_path / "cd" / "DICOMDIR"
    file_set = FileSet(dcmread(dicomdir))
    assert len(file_set) == len(datasets)
    assert {instance.SOPInstanceUID for instance in file_set} == {
        ds.SOPInstanceUID for ds in datasets
    }
    assert file_set.find_values("PatientID") == [patient.patient_id]
    assert len(file_set.find_values("StudyInstanceUID")) == 4
    expected = {ds.SOPInstanceUID: ds for ds in datasets}
    for instance in file_set:
        loaded = instance.load()
        assert (
            loaded.file_meta.TransferSyntaxUID
            == expected[loaded.SOPInstanceUID].file_meta.TransferSyntaxUID
        )
        # PS3.10 9.2: each File ID component is at most 8 upper-case characters
        relative = Path(instance.path).relative_to(tmp_path / "cd")
        assert all(len(part) <= 8 and part == part.upper() for part in relative.parts)


def test_refuses_what_it_cannot_make() -> None:
    patient = make_patient(1)
    with pytest.raises(ValueError):
        make_study(1, patient, "US", series=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_study(1, patient, "CT", transfer_syntax=UID("1.2.840.10008.1.2.4.50"))
    with pytest.raises(ValueError):
        make_study(1, patient, "CT", series=0)
    assert ExplicitVRLittleEndian in SUPPORTED_TRANSFER_SYNTAXES
