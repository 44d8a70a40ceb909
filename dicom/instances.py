"""Reading and validating one DICOM instance, header only, and its DICOM JSON model.

`inspect_instance` is the gate every imported file passes (DIMSE, DICOMweb, CD, file
drop): it refuses, with a reason hospital IT can act on, anything the hub would store and
later fail to serve or attach to a patient, and says what the hub indexes of it, from one
walk of the file that decodes only those few elements. `read_instance` makes the same
checks and also returns the header as a pydicom dataset. Neither reads the pixel data
into memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
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
    "inspect_instance",
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
# The top-level elements the checks and InstanceInfo read, and the character set of their
# text: all that `inspect_instance` decodes.
_DIRECTORY_RECORDS = 0x00041220
_SPECIFIC_CHARACTER_SET = 0x00080005
_Values = dict[str, Any]
_INDEXED_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "Modality",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "BodyPartExamined",
    "AccessionNumber",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "SamplesPerPixel",
    "PhotometricInterpretation",
)
# tag -> (keyword, the VR the data dictionary gives it)
_KEPT: dict[int, tuple[str, str]] = {
    tag: (keyword, dictionary_VR(tag))
    for keyword in _INDEXED_KEYWORDS
    if (tag := tag_for_keyword(keyword)) is not None
}
_INDEXED_TAGS = frozenset(_KEPT) | {_DIRECTORY_RECORDS}
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


def inspect_instance(path: Path, *, deflated_limit: int = DEFLATED_LIMIT) -> InstanceInfo:
    """Check the Part 10 file at `path` is an instance we accept; what the hub indexes of it.

    One walk over the element headers (the pixel data located and its length checked,
    never read) that keeps the values of the few elements InstanceInfo and the checks
    need; nothing else is decoded. A deflated dataset is inflated in memory, refused above
    `deflated_limit` bytes.

    Raises InvalidDicom(reason) for: an empty or non-DICOM file, a missing or unknown
    transfer syntax, a DICOMDIR, a file ending early, a missing or malformed UID, a SOP
    class that is not a storage SOP class, no PatientID, pixel data that does not match
    its transfer syntax or is shorter than Rows*Columns*... says. OSError is not caught.
    """
    return _checked(_layout(path, deflated_limit))


def read_instance(
    path: Path, *, defer_size: int = DEFER_SIZE, deflated_limit: int = DEFLATED_LIMIT
) -> tuple[Dataset, InstanceInfo]:
    """`inspect_instance`, and the header (up to the pixel data) read by pydicom.

    Values over `defer_size` bytes stay in the file until accessed, so the file must stay
    where it is while the dataset is used (`dicom_json` reads none of them but a long
    sequence). Raises InvalidDicom as `inspect_instance` does, and when pydicom cannot
    parse the header.
    """
    layout = _layout(path, deflated_limit)
    info = _checked(layout)
    return read_header(path, layout, defer_size=defer_size), info


def _layout(path: Path, deflated_limit: int) -> Part10Layout:
    layout = scan(path, deflated_limit=deflated_limit, keep=_INDEXED_TAGS)
    if (
        layout.media_storage_sop_class == MediaStorageDirectoryStorage
        or _DIRECTORY_RECORDS in layout.elements
    ):
        raise _dicomdir()
    return layout


def _checked(layout: Part10Layout) -> InstanceInfo:
    values = _decoded(layout)
    _check_uids(values, layout)
    _check_patient(values)
    _check_pixel_data(values, layout)
    return _info(values, layout)


def _decoded(layout: Part10Layout) -> _Values:
    """The kept elements' values by keyword, decoded as pydicom decodes them in a header
    (text in the file's Specific Character Set (0008,0005)).

    A single value in plain ASCII (no backslash, no ISO 2022 escape) reads the same in
    every character set DICOM allows, so it is taken as is; pydicom decodes the others."""
    elements = layout.elements
    little = layout.inflated is not None or layout.transfer_syntax.is_little_endian
    values: _Values = {}
    encoding: str | list[str] | None = None
    try:
        for tag, (written_vr, value, offset) in elements.items():
            if tag == _DIRECTORY_RECORDS:
                continue
            keyword, vr = _KEPT[tag]
            if value is not None and (written_vr or vr) == vr:
                if vr == "US" and len(value) == 2:
                    values[keyword] = int.from_bytes(value, "little" if little else "big")
                    continue
                if vr != "US" and value.isascii() and b"\\" not in value and b"\x1b" not in value:
                    values[keyword] = value.decode("ascii")
                    continue
            if encoding is None:
                encoding = _encoding(layout, little)
            raw = _raw(tag, written_vr, value, offset, little)
            values[keyword] = convert_raw_data_element(raw, encoding=encoding).value
    except (LookupError, ValueError, TypeError, NotImplementedError) as exc:
        # The exception's text may quote values from the file: keep only its kind.
        raise InvalidDicom(f"unreadable header ({type(exc).__name__})") from exc
    return values


def _encoding(layout: Part10Layout, little: bool) -> str | list[str]:
    charset = layout.elements.get(_SPECIFIC_CHARACTER_SET)
    if charset is None:
        return default_encoding
    raw = _raw(_SPECIFIC_CHARACTER_SET, *charset, little)
    encodings: str | list[str] = convert_encodings(convert_raw_data_element(raw).value)
    return encodings


def _raw(
    tag: int, vr: str | None, value: bytes | None, offset: int, little: bool
) -> RawDataElement:
    length = len(value) if value is not None else 0
    return RawDataElement(BaseTag(tag), vr, length, value, offset, vr is None, little)


def _dicomdir() -> InvalidDicom:
    return InvalidDicom(
        "this is a DICOMDIR (the index of a CD or USB medium), not an instance: "
        "import the folder or medium that holds it"
    )


def _check_uids(values: _Values, layout: Part10Layout) -> None:
    for keyword, tag in _REQUIRED_UIDS:
        value = _text(values, keyword)
        if value is None:
            raise InvalidDicom(f"missing {keyword} {tag}")
        if len(value) > 64 or not _UID.fullmatch(value):
            raise InvalidDicom(f"{keyword} {tag} is not a valid UID")
    sop_class = UID(_uid(values, "SOPClassUID"))
    if layout.media_storage_sop_instance not in (None, _uid(values, "SOPInstanceUID")):
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


def _check_patient(values: _Values) -> None:
    if _text(values, "PatientID") is None:
        raise InvalidDicom(
            "missing PatientID (0010,0020): the instance cannot be matched to a patient"
        )


def _check_pixel_data(values: _Values, layout: Part10Layout) -> None:
    pixel_data = layout.pixel_data
    syntax = layout.transfer_syntax
    if pixel_data is None:
        # JPIP: the pixels are referenced by URL (0028,7FE0), not carried.
        if _int(values, "Rows") and _int(values, "Columns") and syntax not in _JPIP:
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
    expected = _expected_native_length(values, pixel_data)
    if pixel_data.length < expected:
        raise InvalidDicom(
            "truncated: pixel data shorter than "
            "Rows*Columns*SamplesPerPixel*NumberOfFrames*BitsAllocated/8 "
            f"({expected} bytes expected, {pixel_data.length} found)"
        )


def _expected_native_length(values: _Values, pixel_data: PixelDataElement) -> int:
    """PS3.5 8.1.1: native pixel data is Rows*Columns*Samples*Frames*BitsAllocated bits."""
    image: dict[str, int] = {}
    for keyword, tag in _IMAGE_TAGS.items():
        value = _int(values, keyword)
        if value is None and keyword == "BitsAllocated":
            value = _FLOAT_BITS.get(pixel_data.tag)
        if value is None or value < 1:
            raise InvalidDicom(f"pixel data without a valid {keyword} {tag}")
        image[keyword] = value
    samples = _int(values, "SamplesPerPixel") or 1
    frames = _int(values, "NumberOfFrames") or 1
    bits = image["Rows"] * image["Columns"] * samples * frames * image["BitsAllocated"]
    length = (bits + 7) // 8
    if _text(values, "PhotometricInterpretation") == "YBR_FULL_422":
        length = length // 3 * 2  # PS3.3 C.7.6.3.1.2: two chroma samples per two pixels
    return length


def _info(values: _Values, layout: Part10Layout) -> InstanceInfo:
    pixel_data = layout.pixel_data
    reference = None
    if pixel_data is not None:
        reference = PixelDataRef(pixel_data.tag, _pixel_data_vr(pixel_data, layout))
    return InstanceInfo(
        sop_instance_uid=_uid(values, "SOPInstanceUID"),
        sop_class_uid=_uid(values, "SOPClassUID"),
        study_instance_uid=_uid(values, "StudyInstanceUID"),
        series_instance_uid=_uid(values, "SeriesInstanceUID"),
        transfer_syntax_uid=str(layout.transfer_syntax),
        patient_id=_text(values, "PatientID") or "",
        issuer_of_patient_id=_text(values, "IssuerOfPatientID"),
        patient_name=_text(values, "PatientName"),
        patient_birth_date=_text(values, "PatientBirthDate"),
        patient_sex=_text(values, "PatientSex"),
        modality=_text(values, "Modality"),
        study_date=_text(values, "StudyDate"),
        study_time=_text(values, "StudyTime"),
        study_description=_text(values, "StudyDescription"),
        series_description=_text(values, "SeriesDescription"),
        series_number=_int(values, "SeriesNumber"),
        instance_number=_int(values, "InstanceNumber"),
        body_part_examined=_text(values, "BodyPartExamined"),
        accession_number=_text(values, "AccessionNumber"),
        number_of_frames=_int(values, "NumberOfFrames"),
        pixel_data=reference,
    )


def _pixel_data_vr(pixel_data: PixelDataElement, layout: Part10Layout) -> str:
    if pixel_data.vr is not None:
        return pixel_data.vr
    if pixel_data.tag in _FLOAT_BITS:
        return "OF" if pixel_data.tag == 0x7FE00008 else "OD"
    # PS3.5 A.1: in implicit VR, pixel data is OW; OB only when encapsulated.
    return "OB" if layout.transfer_syntax.is_encapsulated else "OW"


def _uid(values: _Values, keyword: str) -> str:
    return _text(values, keyword) or ""


def _text(values: _Values, keyword: str) -> str | None:
    value = values.get(keyword)
    if value is None:
        return None
    text = str(value).strip(" \x00")
    return text or None


def _int(values: _Values, keyword: str) -> int | None:
    value = values.get(keyword)
    if isinstance(value, MultiValue | list | tuple):
        value = value[0] if value else None
    try:
        return int(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None
