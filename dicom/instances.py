"""Reading and validating one DICOM instance, header only, and its DICOM JSON model.

`read_instance` is the gate every imported file passes (DIMSE, DICOMweb, CD, file drop):
it refuses, with a reason hospital IT can act on, anything the hub would store and later
fail to serve or attach to a patient. It never reads the pixel data into memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, MediaStorageDirectoryStorage
from pynetdicom.presentation import AllStoragePresentationContexts

from dicom._json_model import PixelDataRef, dicom_json
from dicom._part10 import (
    DEFER_SIZE,
    DEFLATED_LIMIT,
    Part10Layout,
    PixelDataElement,
    read_header,
    scan,
)
from dicom.errors import InvalidDicom

__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "DEFER_SIZE",
    "InstanceInfo",
    "PixelDataRef",
    "dicom_json",
    "read_instance",
]

# Every storage SOP class pynetdicom knows, VL Whole Slide Microscopy among them.
ACCEPTED_SOP_CLASSES: frozenset[str] = frozenset(
    str(context.abstract_syntax) for context in AllStoragePresentationContexts
)
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_REQUIRED_UIDS = (
    ("SOPClassUID", "(0008,0016)"),
    ("SOPInstanceUID", "(0008,0018)"),
    ("StudyInstanceUID", "(0020,000D)"),
    ("SeriesInstanceUID", "(0020,000E)"),
)
_IMAGE_TAGS = {"Rows": "(0028,0010)", "Columns": "(0028,0011)", "BitsAllocated": "(0028,0100)"}
_FLOAT_BITS = {0x7FE00008: 32, 0x7FE00009: 64}  # Float and Double Float Pixel Data
# JPIP Referenced (Deflate), and their HTJ2K variants: the pixels stay on a JPIP server.
_JPIP = frozenset(
    {
        "1.2.840.10008.1.2.4.94",
        "1.2.840.10008.1.2.4.95",
        "1.2.840.10008.1.2.4.204",
        "1.2.840.10008.1.2.4.205",
    }
)


@dataclass(frozen=True)
class InstanceInfo:
    """What the hub indexes of one instance (PS3.3 Patient, Study, Series, Image modules).

    Dates are DICOM DA (YYYYMMDD) and times TM, as written. `pixel_data` locates the
    pixel data element the header read left out (None when the instance has none).
    """

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient_id: str
    issuer_of_patient_id: str | None
    patient_name: str | None
    patient_birth_date: str | None
    patient_sex: str | None
    modality: str | None
    study_date: str | None
    study_time: str | None
    study_description: str | None
    series_description: str | None
    series_number: int | None
    instance_number: int | None
    body_part_examined: str | None
    accession_number: str | None
    number_of_frames: int | None
    pixel_data: PixelDataRef | None = None


def read_instance(
    path: Path, *, defer_size: int = DEFER_SIZE, deflated_limit: int = DEFLATED_LIMIT
) -> tuple[Dataset, InstanceInfo]:
    """Read the header of the Part 10 file at `path` and check it is an instance we accept.

    The pixel data is located and its length checked, never read. Values over
    `defer_size` bytes stay in the file until accessed, so the file must stay where it is
    while the dataset is used (`dicom_json` reads none of them but a long sequence). A
    deflated dataset is inflated in memory, refused above `deflated_limit` bytes.

    Raises InvalidDicom(reason) for: an empty or non-DICOM file, a missing or unknown
    transfer syntax, a DICOMDIR, a file ending early, a missing or malformed UID, a SOP
    class that is not a storage SOP class, no PatientID, pixel data that does not match
    its transfer syntax or is shorter than Rows*Columns*... says. OSError is not caught.
    """
    layout = scan(path, deflated_limit=deflated_limit)
    if layout.media_storage_sop_class == MediaStorageDirectoryStorage:
        raise _dicomdir()
    ds = read_header(path, layout, defer_size=defer_size)
    if "DirectoryRecordSequence" in ds:
        raise _dicomdir()
    _check_uids(ds, layout)
    _check_patient(ds)
    _check_pixel_data(ds, layout)
    return ds, _info(ds, layout)


def _dicomdir() -> InvalidDicom:
    return InvalidDicom(
        "this is a DICOMDIR (the index of a CD or USB medium), not an instance: "
        "import the folder or medium that holds it"
    )


def _check_uids(ds: FileDataset, layout: Part10Layout) -> None:
    for keyword, tag in _REQUIRED_UIDS:
        value = _text(ds, keyword)
        if value is None:
            raise InvalidDicom(f"missing {keyword} {tag}")
        if len(value) > 64 or not _UID.fullmatch(value):
            raise InvalidDicom(f"{keyword} {tag} is not a valid UID")
    sop_class = UID(str(ds.SOPClassUID).strip())
    if layout.media_storage_sop_instance not in (None, str(ds.SOPInstanceUID).strip()):
        raise InvalidDicom(
            "the file meta (0002,0003) and the dataset (0008,0018) name different instances"
        )
    if layout.media_storage_sop_class not in (None, sop_class):
        raise InvalidDicom(
            "the file meta (0002,0002) and the dataset (0008,0016) name different SOP classes"
        )
    if sop_class not in ACCEPTED_SOP_CLASSES:
        name = sop_class.name if sop_class.name != sop_class else "unknown"
        raise InvalidDicom(
            f"SOP class {sop_class} ({name}) is not a storage SOP class the hub accepts"
        )


def _check_patient(ds: FileDataset) -> None:
    if _text(ds, "PatientID") is None:
        raise InvalidDicom(
            "missing PatientID (0010,0020): the instance cannot be matched to a patient"
        )


def _check_pixel_data(ds: FileDataset, layout: Part10Layout) -> None:
    pixel_data = layout.pixel_data
    syntax = layout.transfer_syntax
    if pixel_data is None:
        # JPIP: the pixels are referenced by URL (0028,7FE0), not carried.
        if _int(ds, "Rows") and _int(ds, "Columns") and syntax not in _JPIP:
            raise InvalidDicom(
                "missing Pixel Data (7FE0,0010): the file has an image header but no pixels"
            )
        return
    if pixel_data.length is None:
        if not syntax.is_encapsulated:
            raise InvalidDicom(
                f"pixel data is encapsulated but transfer syntax {syntax} ({syntax.name}) "
                "is not a compressed one"
            )
        if pixel_data.fragments < 2:
            raise InvalidDicom("encapsulated pixel data holds no frame, only its offset table")
        return
    if syntax.is_encapsulated:
        raise InvalidDicom(
            f"pixel data is not encapsulated as transfer syntax {syntax} ({syntax.name}) requires"
        )
    expected = _expected_native_length(ds, pixel_data)
    if pixel_data.length < expected:
        raise InvalidDicom(
            "truncated: pixel data shorter than "
            "Rows*Columns*SamplesPerPixel*NumberOfFrames*BitsAllocated/8 "
            f"({expected} bytes expected, {pixel_data.length} found)"
        )


def _expected_native_length(ds: FileDataset, pixel_data: PixelDataElement) -> int:
    """PS3.5 8.1.1: native pixel data is Rows*Columns*Samples*Frames*BitsAllocated bits."""
    values: dict[str, int] = {}
    for keyword, tag in _IMAGE_TAGS.items():
        value = _int(ds, keyword)
        if value is None and keyword == "BitsAllocated":
            value = _FLOAT_BITS.get(pixel_data.tag)
        if value is None or value < 1:
            raise InvalidDicom(f"pixel data without a valid {keyword} {tag}")
        values[keyword] = value
    samples = _int(ds, "SamplesPerPixel") or 1
    frames = _int(ds, "NumberOfFrames") or 1
    bits = values["Rows"] * values["Columns"] * samples * frames * values["BitsAllocated"]
    length = (bits + 7) // 8
    if _text(ds, "PhotometricInterpretation") == "YBR_FULL_422":
        length = length // 3 * 2  # PS3.3 C.7.6.3.1.2: two chroma samples per two pixels
    return length


def _info(ds: FileDataset, layout: Part10Layout) -> InstanceInfo:
    pixel_data = layout.pixel_data
    reference = None
    if pixel_data is not None:
        reference = PixelDataRef(pixel_data.tag, _pixel_data_vr(ds, pixel_data, layout))
    return InstanceInfo(
        sop_instance_uid=str(ds.SOPInstanceUID).strip(),
        sop_class_uid=str(ds.SOPClassUID).strip(),
        study_instance_uid=str(ds.StudyInstanceUID).strip(),
        series_instance_uid=str(ds.SeriesInstanceUID).strip(),
        transfer_syntax_uid=str(layout.transfer_syntax),
        patient_id=_text(ds, "PatientID") or "",
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
        patient_name=_text(ds, "PatientName"),
        patient_birth_date=_text(ds, "PatientBirthDate"),
        patient_sex=_text(ds, "PatientSex"),
        modality=_text(ds, "Modality"),
        study_date=_text(ds, "StudyDate"),
        study_time=_text(ds, "StudyTime"),
        study_description=_text(ds, "StudyDescription"),
        series_description=_text(ds, "SeriesDescription"),
        series_number=_int(ds, "SeriesNumber"),
        instance_number=_int(ds, "InstanceNumber"),
        body_part_examined=_text(ds, "BodyPartExamined"),
        accession_number=_text(ds, "AccessionNumber"),
        number_of_frames=_int(ds, "NumberOfFrames"),
        pixel_data=reference,
    )


def _pixel_data_vr(ds: FileDataset, pixel_data: PixelDataElement, layout: Part10Layout) -> str:
    if pixel_data.vr is not None:
        return pixel_data.vr
    if pixel_data.tag in _FLOAT_BITS:
        return "OF" if pixel_data.tag == 0x7FE00008 else "OD"
    # PS3.5 A.1: in implicit VR, pixel data is OW; OB only when encapsulated.
    return "OB" if layout.transfer_syntax.is_encapsulated else "OW"


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip(" \x00")
    return text or None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None
