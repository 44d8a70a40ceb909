"""read_instance and inspect_instance: what they accept, what they extract, and each
refusal with its reason (the same for both: one walk of the file makes the checks)."""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmwrite
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
from dicom.instances import (
    ACCEPTED_SOP_CLASSES,
    InstanceInfo,
    PixelDataRef,
    inspect_instance,
    read_instance,
)
from dicom.synthetic import Modality, make_dicomdir, make_patient, make_study, write_study

PATIENT = make_patient(21)


def _ct(transfer_syntax: UID = ExplicitVRLittleEndian) -> Dataset:
    return make_study(21, PATIENT, "CT", 1, 1, transfer_syntax)[0]


def _write(path: Path, ds: Dataset, transfer_syntax: UID | None = None) -> Path:
    ds = copy.deepcopy(ds)
    if transfer_syntax is not None:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def _changed(path: Path, **changes: object) -> Path:
    ds = _ct()
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return _write(path, ds)


def _patched(path: Path, old: bytes, new: bytes, ds: Dataset | None = None) -> Path:
    assert len(old) == len(new)
    _write(path, ds if ds is not None else _ct())
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


def _cut(path: Path, keep: Callable[[int], int], ds: Dataset | None = None) -> Path:
    _write(path, ds if ds is not None else _ct())
    data = path.read_bytes()
    path.write_bytes(data[: keep(len(data))])
    return path


def _without_transfer_syntax(path: Path) -> Path:
    ds = _ct()
    del ds.file_meta.TransferSyntaxUID
    ds.preamble = b"\x00" * 128
    dcmwrite(path, ds, implicit_vr=False, little_endian=True)
    return path


def _raw_dataset(path: Path) -> Path:
    ds = _ct()
    del ds.file_meta
    dcmwrite(path, ds, implicit_vr=False, little_endian=True)
    return path


def _dicomdir(path: Path) -> Path:
    return make_dicomdir(path.parent / "cd", [_ct()])


def _zip_bomb(path: Path) -> Path:
    """A small deflated file whose dataset would inflate to 100 MiB."""
    _write(path, _ct(), DeflatedExplicitVRLittleEndian)
    meta_end = scan(path).meta_end
    head = path.read_bytes()[:meta_end]
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as out:
        out.write(head)
        zeros = bytes(1024 * 1024)
        for _ in range(100):
            out.write(deflater.compress(zeros))
        out.write(deflater.flush())
    return path


def _corrupt_deflate(path: Path) -> Path:
    _write(path, _ct(), DeflatedExplicitVRLittleEndian)
    meta_end = scan(path).meta_end
    data = bytearray(path.read_bytes())
    data[meta_end : meta_end + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    return path


EXPLICIT = b"1.2.840.10008.1.2.1\x00"
TRUNCATED_PIXELS = (
    "truncated: pixel data shorter than "
    "Rows*Columns*SamplesPerPixel*NumberOfFrames*BitsAllocated/8 "
)

BAD_FILES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("zero bytes", lambda p: (p.write_bytes(b""), p)[1], "empty file (0 bytes)"),
    (
        "an HL7 message",
        lambda p: (p.write_bytes(b"MSH|^~\\&|LAB|HOSP|HUB|HUB|20240101||ORU^R01|1|P|2.5\r"), p)[1],
        "not a DICOM file (no DICM preamble)",
    ),
    ("shorter than a preamble", lambda p: (p.write_bytes(bytes(100)), p)[1], "not a DICOM file"),
    ("a dataset without Part 10 header", _raw_dataset, "not a DICOM file (no DICM preamble)"),
    (
        "truncated in the file meta",
        lambda p: _cut(p, lambda size: 140),
        "truncated: the file ends inside the file meta information",
    ),
    ("truncated in the header", lambda p: _cut(p, lambda size: 700), "truncated: the file ends"),
    (
        "truncated in the pixel data",
        lambda p: _cut(p, lambda size: size - 100),
        "truncated: the file ends inside Pixel Data (7FE0,0010)",
    ),
    (
        "truncated in an RLE fragment",
        lambda p: _cut(p, lambda size: size - 100, _ct(RLELossless)),
        "truncated: the file ends inside Pixel Data (7FE0,0010)",
    ),
    (
        "RLE without its sequence delimiter",
        lambda p: _cut(p, lambda size: size - 8, _ct(RLELossless)),
        "truncated: the file ends inside an element header",
    ),
    (
        "garbage after the dataset",
        lambda p: (_write(p, _ct()), p.open("ab").write(b"\x01\x02\x03"), p)[2],
        "truncated: the file ends inside an element header",
    ),
    (
        "missing SOPInstanceUID",
        lambda p: _changed(p, SOPInstanceUID=None),
        "missing SOPInstanceUID (0008,0018)",
    ),
    ("missing SOPClassUID", lambda p: _changed(p, SOPClassUID=None), "missing SOPClassUID"),
    (
        "missing StudyInstanceUID",
        lambda p: _changed(p, StudyInstanceUID=None),
        "missing StudyInstanceUID (0020,000D)",
    ),
    (
        "empty SeriesInstanceUID",
        lambda p: _changed(p, SeriesInstanceUID=""),
        "missing SeriesInstanceUID (0020,000E)",
    ),
    (
        "a UID with letters",
        lambda p: _changed(p, StudyInstanceUID="1.2.abc"),
        "StudyInstanceUID (0020,000D) is not a valid UID",
    ),
    (
        "a UID longer than 64 characters",
        lambda p: _changed(p, SeriesInstanceUID="1." + "2" * 70),
        "SeriesInstanceUID (0020,000E) is not a valid UID",
    ),
    (
        "unknown transfer syntax",
        lambda p: _patched(p, EXPLICIT, b"1.2.3.4.5.6.7.8.9.10"),
        "transfer syntax 1.2.3.4.5.6.7.8.9.10 not supported",
    ),
    (
        "no transfer syntax in the meta",
        _without_transfer_syntax,
        "no TransferSyntaxUID (0002,0010) in the file meta",
    ),
    ("a DICOMDIR passed as an instance", _dicomdir, "this is a DICOMDIR"),
    (
        "a SOP class that is not storage",
        lambda p: _changed(p, SOPClassUID="1.2.840.10008.1.1"),
        "SOP class 1.2.840.10008.1.1 (Verification SOP Class) is not a storage SOP class "
        "the hub accepts",
    ),
    (
        "an unknown SOP class",
        lambda p: _changed(p, SOPClassUID="1.2.3.4"),
        "SOP class 1.2.3.4 (unknown) is not a storage SOP class the hub accepts",
    ),
    (
        "missing PatientID",
        lambda p: _changed(p, PatientID=None),
        "missing PatientID (0010,0020): the instance cannot be matched to a patient",
    ),
    (
        "empty PatientID",
        lambda p: _changed(p, PatientID=""),
        "missing PatientID (0010,0020): the instance cannot be matched to a patient",
    ),
    (
        "meta and dataset name different instances",
        lambda p: _patched(p, str(_ct().SOPInstanceUID).encode()[-12:], b"999999999999"),
        "the file meta (0002,0003) and the dataset (0008,0018) name different instances",
    ),
    (
        "Rows larger than the pixel data",
        lambda p: _changed(p, Rows=128),
        TRUNCATED_PIXELS + "(16384 bytes expected, 8192 found)",
    ),
    (
        "more frames than the pixel data holds",
        lambda p: _changed(p, NumberOfFrames=3),
        TRUNCATED_PIXELS + "(24576 bytes expected, 8192 found)",
    ),
    (
        "an image without pixel data",
        lambda p: _changed(p, PixelData=None),
        "missing Pixel Data (7FE0,0010): the file has an image header but no pixels",
    ),
    (
        "native pixel data under a compressed transfer syntax",
        lambda p: _patched(p, EXPLICIT, b"1.2.840.10008.1.2.5\x00"),
        "pixel data is not encapsulated as transfer syntax 1.2.840.10008.1.2.5 (RLE Lossless) "
        "requires",
    ),
    (
        "encapsulated pixel data under a native transfer syntax",
        lambda p: _patched(p, b"1.2.840.10008.1.2.5\x00", EXPLICIT, _ct(RLELossless)),
        "pixel data is encapsulated but transfer syntax 1.2.840.10008.1.2.1 "
        "(Explicit VR Little Endian) is not a compressed one",
    ),
    (
        "a deflated dataset that inflates to 100 MiB",
        _zip_bomb,
        "deflated dataset larger than 64 MiB once inflated: not accepted in this transfer syntax",
    ),
    (
        "a corrupt deflated dataset",
        _corrupt_deflate,
        "corrupt deflated dataset (zlib could not inflate it)",
    ),
]


# The bad UIDs are built on purpose; pydicom warns while writing and reading them.
BAD_UID_WARNINGS = ("ignore:Invalid value for VR UI", "ignore:The value length")


@pytest.mark.filterwarnings(*BAD_UID_WARNINGS)
@pytest.mark.parametrize(
    ("build", "reason"), [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES]
)
def test_bad_files_are_refused_with_their_reason(
    tmp_path: Path, build: Callable[[Path], Path], reason: str
) -> None:
    path = build(tmp_path / "instance.dcm")
    for check in (read_instance, inspect_instance):
        with pytest.raises(InvalidDicom) as caught:
            check(path)
        assert caught.value.reason.startswith(reason), (check.__name__, caught.value.reason)
        assert str(caught.value) == caught.value.reason


@pytest.mark.filterwarnings(*BAD_UID_WARNINGS)
def test_reasons_never_quote_patient_data(tmp_path: Path) -> None:
    for name, build, _ in BAD_FILES:
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        with pytest.raises(InvalidDicom) as caught:
            read_instance(build(folder / "instance.dcm"))
        for value in (PATIENT.patient_id, PATIENT.family_name, PATIENT.given_name):
            assert value not in caught.value.reason


def test_a_missing_file_is_an_os_error_not_invalid_dicom(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_instance(tmp_path / "absent.dcm")


def test_the_deflated_limit_is_a_parameter(tmp_path: Path) -> None:
    path = _write(tmp_path / "deflated.dcm", _ct(), DeflatedExplicitVRLittleEndian)
    read_instance(path)
    with pytest.raises(InvalidDicom) as caught:
        read_instance(path, deflated_limit=4096)
    assert caught.value.reason.startswith("deflated dataset larger than 4096 bytes once inflated")


@pytest.mark.parametrize(
    "transfer_syntax",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
    ],
    ids=lambda uid: UID(uid).name,
)
@pytest.mark.parametrize("modality", ["CT", "MR", "PT", "SM"])
def test_synthetic_instances_are_accepted(
    tmp_path: Path, modality: Modality, transfer_syntax: UID
) -> None:
    native = transfer_syntax in (ImplicitVRLittleEndian, ExplicitVRBigEndian)
    generated = make_study(
        4, PATIENT, modality, 1, 2, ExplicitVRLittleEndian if native else transfer_syntax
    )
    for index, ds in enumerate(generated):
        path = _write(tmp_path / f"{index}.dcm", ds, transfer_syntax)
        header, info = read_instance(path)
        assert inspect_instance(path) == info
        assert "PixelData" not in header
        assert info.sop_instance_uid == ds.SOPInstanceUID
        assert info.transfer_syntax_uid == transfer_syntax
        assert info.modality == modality
        assert info.pixel_data is not None


def test_instance_info_of_a_ct_slice(tmp_path: Path) -> None:
    ds = _ct()
    _, info = read_instance(_write(tmp_path / "ct.dcm", ds))
    assert info == InstanceInfo(
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=PATIENT.patient_id,
        issuer_of_patient_id=PATIENT.issuer,
        patient_name=PATIENT.dicom_name,
        patient_birth_date=PATIENT.birth_date.strftime("%Y%m%d"),
        patient_sex=PATIENT.sex,
        modality="CT",
        study_date=ds.StudyDate,
        study_time=ds.StudyTime,
        study_description="CT chest abdomen pelvis with contrast",
        series_description="Axial 5 mm soft tissue",
        series_number=1,
        instance_number=1,
        body_part_examined="CHEST",
        accession_number=ds.AccessionNumber,
        number_of_frames=None,
        pixel_data=PixelDataRef(0x7FE00010, "OW"),
    )


def test_instance_info_of_a_whole_slide_level(tmp_path: Path) -> None:
    slide = make_study(4, PATIENT, "SM", 1, 3)
    _, info = read_instance(write_study(tmp_path, slide)[0])
    assert info.sop_class_uid == "1.2.840.10008.5.1.4.1.1.77.1.6"
    assert info.sop_class_uid in ACCEPTED_SOP_CLASSES
    assert info.number_of_frames == 16
    assert info.pixel_data == PixelDataRef(0x7FE00010, "OB")
    assert info.body_part_examined == "BRAIN"


def test_implicit_vr_pixel_data_is_announced_as_ow(tmp_path: Path) -> None:
    _, info = read_instance(_write(tmp_path / "implicit.dcm", _ct(), ImplicitVRLittleEndian))
    assert info.pixel_data == PixelDataRef(0x7FE00010, "OW")


def test_zero_padding_after_the_dataset_is_tolerated(tmp_path: Path) -> None:
    path = _write(tmp_path / "padded.dcm", _ct())
    with path.open("ab") as out:
        out.write(b"\x00" * 5)
    read_instance(path)


def test_large_values_stay_in_the_file(tmp_path: Path) -> None:
    ds = _ct()
    ds.add_new(0x00091010, "OB", b"\x01" * 200_000)  # a private blob before the pixels
    ds.add_new(0x00090010, "LO", "SYNTHETIC VENDOR")
    header, _ = read_instance(_write(tmp_path / "blob.dcm", ds))
    assert header.get_item(0x00091010, keep_deferred=True).value is None
    assert header[0x00091010].value == b"\x01" * 200_000  # read when asked for


def test_every_common_storage_class_is_accepted() -> None:
    for uid in (
        "1.2.840.10008.5.1.4.1.1.2",  # CT
        "1.2.840.10008.5.1.4.1.1.4",  # MR
        "1.2.840.10008.5.1.4.1.1.128",  # PET
        "1.2.840.10008.5.1.4.1.1.77.1.6",  # VL Whole Slide Microscopy
        "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography
        "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
        "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    ):
        assert uid in ACCEPTED_SOP_CLASSES
    assert "1.2.840.10008.1.3.10" not in ACCEPTED_SOP_CLASSES  # Media Storage Directory


# (SpecificCharacterSet, PatientName as it reads, a description) for the decoding test.
CHARACTER_SETS = [
    (None, "Testchild^Leo", "plain ASCII, the default repertoire"),
    ("ISO_IR 100", "Müller^Zoë", "Latin-1"),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東", "UTF-8"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎", "ISO 2022 escapes, 7-bit bytes"),
    ("ISO_IR 144", "Иванова^Анна", "Cyrillic"),
]


@pytest.mark.parametrize(
    ("charset", "name", "description"), CHARACTER_SETS, ids=[c[2] for c in CHARACTER_SETS]
)
def test_values_read_as_pydicom_reads_them(
    tmp_path: Path, charset: str | list[str] | None, name: str, description: str
) -> None:
    """inspect_instance decodes plain ASCII itself and leaves the rest to pydicom: the
    values are those of pydicom's own reading of the whole header, in any character set,
    multi-valued or not."""
    from pydicom import dcmread

    ds = _ct()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.StudyDescription = description
    ds.SeriesDescription = "Axial\\Coronal"  # two values
    ds.SeriesNumber = " 7"
    ds.AccessionNumber = ""
    path = _write(tmp_path / "instance.dcm", ds)
    info = inspect_instance(path)
    pydicom_reads = dcmread(path, stop_before_pixels=True)
    assert info.patient_name == str(pydicom_reads.PatientName) == name
    assert info.study_description == str(pydicom_reads.StudyDescription)
    assert info.series_description == str(pydicom_reads.SeriesDescription).strip(" \x00")
    assert (info.series_number, info.accession_number) == (7, None)
    assert info == read_instance(path)[1]
