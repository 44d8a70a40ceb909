"""Synthetic DICOM instances of fictional children, for tests, golden cases and benchmarks.

Nothing here comes from a real patient or a copied file: every attribute and every pixel is
computed from a seed, so the same seed gives byte-identical datasets and the same UIDs, and
different seeds, series or instances never share a UID.

- `make_patient(seed)`: a fictional child (PatientID with its issuer, name, birth date, sex).
- `make_study(seed, patient, modality, ...)`: one study of CT, MR, PT (small 64 x 64 slices)
  or SM (a VL Whole Slide Microscopy pyramid of 32 x 32 RGB tiles, TILED_FULL), each
  dataset with its file meta, in Explicit VR Little Endian, Deflated Explicit VR Little
  Endian or RLE Lossless (the transfer syntaxes pydicom writes without native codecs).
- `write_study(folder, datasets)`: one Part 10 file per instance.
- `make_dicomdir(folder, datasets)`: a patient-CD layout (PS3.10 File-set with a DICOMDIR).
"""

from __future__ import annotations

import copy
import random
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    RLELossless,
    VLWholeSlideMicroscopyImageStorage,
    generate_uid,
)

__all__ = [
    "SUPPORTED_TRANSFER_SYNTAXES",
    "Modality",
    "SyntheticPatient",
    "make_dicomdir",
    "make_patient",
    "make_study",
    "write_study",
]

Modality = Literal["CT", "MR", "PT", "SM"]
SUPPORTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
)
ISSUER = "SYNTHETIC-CHILDRENS-HOSPITAL"
_UID_NAMESPACE = "second-opinion-hub/dicom/synthetic/v1"
_SLICE_SIZE = 64
_TILE_SIZE = 32
_WSI_BASE_SPACING_MM = 0.00025  # 0.25 µm per pixel, a 40x scan
_GIVEN = {"F": ("Mia", "Lena", "Ava", "Noor", "Ines"), "M": ("Leo", "Finn", "Omar", "Jonas")}
_FAMILY = ("Testchild", "Sample", "Fictus", "Placeholder", "Synthetica")


@dataclass(frozen=True)
class SyntheticPatient:
    """A fictional child as the outside hospital knows it (PS3.3 C.7.1.1 Patient Module)."""

    patient_id: str
    issuer: str
    family_name: str
    given_name: str
    birth_date: date
    sex: Literal["F", "M", "O"]

    @property
    def dicom_name(self) -> str:
        """PatientName in its PN form, family^given."""
        return f"{self.family_name}^{self.given_name}"


@dataclass(frozen=True)
class _SeriesProfile:
    description: str
    attributes: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class _ModalityProfile:
    sop_class: UID
    study_description: str
    body_part: str
    pixel_spacing_mm: float
    slice_thickness_mm: float
    bits_stored: int
    intensities: tuple[int, int, int]  # background, body, lesion (stored values)
    series: tuple[_SeriesProfile, ...]


# What a paediatric oncology second opinion typically receives: brain MR for a tumour of the
# posterior fossa, staging CT, FDG PET for lymphoma, and the biopsy slides.
_PROFILES: dict[str, _ModalityProfile] = {
    "CT": _ModalityProfile(
        CTImageStorage,
        "CT chest abdomen pelvis with contrast",
        "CHEST",
        6.25,
        5.0,
        12,
        (0, 1024 + 40, 1024 + 70),  # stored = HU + 1024 (RescaleIntercept -1024)
        (
            _SeriesProfile("Axial 5 mm soft tissue", (("ConvolutionKernel", "STANDARD"),)),
            _SeriesProfile("Axial 5 mm lung", (("ConvolutionKernel", "LUNG"),)),
            _SeriesProfile("Axial 5 mm bone", (("ConvolutionKernel", "BONE"),)),
        ),
    ),
    "MR": _ModalityProfile(
        MRImageStorage,
        "MR brain with and without contrast",
        "HEAD",
        3.5,
        5.0,
        12,
        (0, 600, 1400),
        (
            _SeriesProfile(
                "T1 axial post contrast",
                (("ScanningSequence", "SE"), ("RepetitionTime", 500.0), ("EchoTime", 12.0)),
            ),
            _SeriesProfile(
                "T2 axial",
                (("ScanningSequence", "SE"), ("RepetitionTime", 4000.0), ("EchoTime", 100.0)),
            ),
            _SeriesProfile(
                "FLAIR axial",
                (("ScanningSequence", ["SE", "IR"]), ("RepetitionTime", 9000.0)),
            ),
        ),
    ),
    "PT": _ModalityProfile(
        PositronEmissionTomographyImageStorage,
        "PET FDG whole body lymphoma staging",
        "WHOLEBODY",
        8.0,
        8.0,
        16,
        (0, 400, 6000),
        (_SeriesProfile("PET AC"), _SeriesProfile("PET NAC")),
    ),
    "SM": _ModalityProfile(
        VLWholeSlideMicroscopyImageStorage,
        "Tumour biopsy whole slide images",
        "BRAIN",
        _WSI_BASE_SPACING_MM,
        0.004,
        8,
        (0, 0, 0),
        (_SeriesProfile("H&E"), _SeriesProfile("Ki-67 IHC"), _SeriesProfile("GFAP IHC")),
    ),
}


def make_patient(seed: int, *, issuer: str = ISSUER) -> SyntheticPatient:
    """A fictional child (aged 2 to 14 in 2024) drawn deterministically from `seed`."""
    rng = random.Random(f"patient:{seed}")
    sex: Literal["F", "M"] = rng.choice(("F", "M"))
    return SyntheticPatient(
        patient_id=f"SYN{seed:06d}",
        issuer=issuer,
        family_name=rng.choice(_FAMILY),
        given_name=rng.choice(_GIVEN[sex]),
        birth_date=date(2010, 1, 1) + timedelta(days=rng.randrange(12 * 365)),
        sex=sex,
    )


def make_study(
    seed: int,
    patient: SyntheticPatient,
    modality: Modality,
    series: int = 2,
    instances: int = 3,
    transfer_syntax: UID = ExplicitVRLittleEndian,
) -> list[Dataset]:
    """One study of `series` series, each of `instances` instances, with file meta.

    For CT, MR and PT an instance is a 64 x 64 16-bit slice; for SM a series is one slide
    and its instances are the levels of its pyramid, the largest first (32 x 32 RGB tiles,
    4**(instances - 1 - level) of them per level).

    Raises ValueError for an unknown modality or transfer syntax, or counts below one.
    """
    if modality not in _PROFILES:
        raise ValueError(f"unsupported modality {modality!r}")
    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"unsupported transfer syntax {transfer_syntax}")
    if series < 1 or instances < 1:
        raise ValueError("a study needs at least one series of one instance")
    profile = _PROFILES[modality]
    rng = random.Random(f"study:{seed}:{patient.patient_id}:{modality}")
    study_date = date(2024, 1, 1) + timedelta(days=rng.randrange(365))
    key = (seed, patient.issuer, patient.patient_id, modality)
    study = Dataset()
    study.SpecificCharacterSet = "ISO_IR 100"
    study.PatientName = patient.dicom_name
    study.PatientID = patient.patient_id
    study.IssuerOfPatientID = patient.issuer
    study.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    study.PatientSex = patient.sex
    study.PatientAge = f"{_age_years(patient.birth_date, study_date):03d}Y"
    study.StudyInstanceUID = _uid(*key, "study")
    study.StudyDate = study_date.strftime("%Y%m%d")
    study.StudyTime = f"{rng.randrange(7, 18):02d}{rng.randrange(60):02d}00"
    study.StudyID = "1"
    study.AccessionNumber = f"SYN{rng.randrange(10**7):07d}"
    study.ReferringPhysicianName = ""
    study.StudyDescription = profile.study_description
    study.InstitutionName = "Synthetic Children's Hospital"
    study.Manufacturer = "Second Opinion Hub"
    study.ManufacturerModelName = "dicom.synthetic"
    study.DeviceSerialNumber = "0"
    study.SoftwareVersions = "1"
    study.FrameOfReferenceUID = _uid(*key, "frame-of-reference")
    study.BodyPartExamined = profile.body_part
    datasets: list[Dataset] = []
    for series_index in range(series):
        series_profile = profile.series[series_index % len(profile.series)]
        header = copy.deepcopy(study)
        header.Modality = modality
        header.SeriesInstanceUID = _uid(*key, "series", series_index)
        header.SeriesNumber = series_index + 1
        header.SeriesDescription = series_profile.description
        header.SeriesDate = study.StudyDate
        header.SeriesTime = study.StudyTime
        for keyword, value in series_profile.attributes:
            setattr(header, keyword, value)
        for index in range(instances):
            if modality == "SM":
                ds = _wsi_level(header, profile, index, instances, seed, series_index)
            else:
                ds = _slice(header, profile, index, instances, seed)
            ds.SOPClassUID = profile.sop_class
            ds.SOPInstanceUID = _uid(header.SeriesInstanceUID, "instance", index)
            ds.InstanceNumber = index + 1
            ds.ContentDate = study.StudyDate
            ds.ContentTime = study.StudyTime
            datasets.append(_with_file_meta(ds, transfer_syntax))
    return datasets


def write_study(folder: Path, datasets: Sequence[Dataset]) -> list[Path]:
    """Write each dataset as a Part 10 file, `folder/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`.

    Returns the paths in the order of `datasets`.
    """
    paths: list[Path] = []
    for ds in datasets:
        path = folder / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def make_dicomdir(
    folder: Path, datasets: Sequence[Dataset], file_set_id: str = "SYNTHETIC"
) -> Path:
    """Write `datasets` as a patient CD would hold them: a File-set (PS3.10 §8) in `folder`,
    PATIENT/STUDY/SERIES/IMAGE records in its DICOMDIR, files named by the File-set's
    8-character rules. Returns the DICOMDIR's path."""
    file_set = FileSet()
    file_set.ID = file_set_id
    for ds in datasets:
        file_set.add(ds)
    file_set.write(folder)
    return folder / "DICOMDIR"


def _uid(*parts: object) -> UID:
    # One joined source with a separator: generate_uid concatenates its sources bare, so
    # ("1", "23") and ("12", "3") would otherwise hash alike.
    return generate_uid(entropy_srcs=["\x1f".join(map(str, (_UID_NAMESPACE, *parts)))])


def _age_years(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _with_file_meta(ds: Dataset, transfer_syntax: UID) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "SOH_SYNTH_1"
    ds.file_meta = meta
    if transfer_syntax == RLELossless:
        # Lossless, so the instance stays the same one (PS3.5 8.2): keep its UID.
        ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
    else:
        meta.TransferSyntaxUID = transfer_syntax  # deflate happens when the file is written
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _slice(
    header: Dataset, profile: _ModalityProfile, index: int, count: int, seed: int
) -> Dataset:
    ds = copy.deepcopy(header)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    if ds.Modality != "PT":  # PET says it with PatientOrientationCodeSequence instead
        ds.PatientPosition = "HFS"
    ds.PositionReferenceIndicator = ""
    spacing, thickness = profile.pixel_spacing_mm, profile.slice_thickness_mm
    z = index * thickness - (count - 1) * thickness / 2
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = thickness
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-_SLICE_SIZE * spacing / 2, -_SLICE_SIZE * spacing / 2, z]
    ds.SliceLocation = z
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = _SLICE_SIZE
    ds.BitsAllocated = 16
    ds.BitsStored = profile.bits_stored
    ds.HighBit = profile.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = _phantom(profile.intensities, index, count, seed)
    if ds.Modality == "CT":
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 400
    elif ds.Modality == "MR":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.SequenceVariant = "SK"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 3
        ds.ImagedNucleus = "1H"
        ds.EchoTime = ds.get("EchoTime", 90.0)
    else:
        _pet_attributes(ds, index, count)
    return ds


def _pet_attributes(ds: Dataset, index: int, count: int) -> None:
    # PS3.3 C.8.9.1 PET Series, C.8.9.2 PET Isotope, C.8.9.4 PET Image
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.CorrectedImage = ["ATTN", "DECY"] if ds.SeriesNumber == 1 else ["DECY"]
    ds.DecayCorrection = "START"
    ds.CollimatorType = "NONE"
    ds.NumberOfSlices = count
    ds.ImageIndex = index + 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1.5
    ds.FrameReferenceTime = 0
    ds.ActualFrameDuration = 180000
    ds.DecayFactor = 1.0
    ds.AcquisitionDate, ds.AcquisitionTime = ds.StudyDate, ds.StudyTime
    ds.RadiopharmaceuticalInformationSequence = [
        _item(
            Radiopharmaceutical="Fludeoxyglucose F18",
            RadiopharmaceuticalStartTime=ds.StudyTime,
            RadionuclideTotalDose=1.1e8,
            RadionuclideHalfLife=6586.2,
            RadionuclidePositronFraction=0.967,
            RadionuclideCodeSequence=[_code("77004003", "SCT", "^18^Fluorine")],
            RadiopharmaceuticalCodeSequence=[_code("35321007", "SCT", "Fluorodeoxyglucose F^18^")],
        )
    ]
    ds.PatientOrientationCodeSequence = [_code("102538003", "SCT", "recumbent")]
    ds.PatientGantryRelationshipCodeSequence = []


def _phantom(intensities: tuple[int, int, int], index: int, count: int, seed: int) -> bytes:
    """An elliptic body with a round lesion whose radius peaks on the middle slice."""
    background, body, lesion = intensities
    size = _SLICE_SIZE
    centre = (size - 1) / 2
    lesion_y, lesion_x = centre - size * 0.1, centre + size * 0.12
    middle = (count - 1) / 2
    lesion_radius = size * 0.12 * (1 - (abs(index - middle) / (count + 1)))
    pixels = array("H")
    for y in range(size):
        for x in range(size):
            if ((y - centre) / (size * 0.42)) ** 2 + ((x - centre) / (size * 0.36)) ** 2 > 1:
                pixels.append(background)
            elif (y - lesion_y) ** 2 + (x - lesion_x) ** 2 <= lesion_radius**2:
                pixels.append(lesion + (x * 7 + y * 13 + seed) % 23)
            else:
                pixels.append(body + (x * 5 + y * 11 + index * 3 + seed) % 17)
    if sys.byteorder == "big":
        pixels.byteswap()  # DICOM's native pixel data is little endian here
    return pixels.tobytes()


def _wsi_level(
    header: Dataset,
    profile: _ModalityProfile,
    level: int,
    levels: int,
    seed: int,
    slide: int,
) -> Dataset:
    """One level of a slide's pyramid (PS3.3 A.32.8 VL Whole Slide Microscopy Image IOD)."""
    tiles_across = 2 ** (levels - 1 - level)
    total = _TILE_SIZE * tiles_across
    spacing = profile.pixel_spacing_mm * 2**level
    ds = copy.deepcopy(header)
    ds.ImageType = (
        ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
        if level == 0
        else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    )
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.PyramidUID = _uid(header.SeriesInstanceUID, "pyramid")
    ds.AcquisitionDateTime = f"{header.StudyDate}{header.StudyTime}"
    ds.AcquisitionContextSequence = []
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.LossyImageCompression = "00"
    ds.ImagedVolumeWidth = total * spacing
    ds.ImagedVolumeHeight = total * spacing
    ds.ImagedVolumeDepth = 4.0  # µm, unlike width and height in mm (PS3.3 C.8.12.4.1)
    ds.TotalPixelMatrixColumns = ds.TotalPixelMatrixRows = total
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.TotalPixelMatrixOriginSequence = [
        _item(XOffsetInSlideCoordinateSystem=20.0, YOffsetInSlideCoordinateSystem=40.0)
    ]
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.DimensionOrganizationType = "TILED_FULL"
    organization = _uid(header.SeriesInstanceUID, "dimensions")
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=organization)]
    ds.DimensionIndexSequence = [
        _item(
            DimensionOrganizationUID=organization,
            DimensionIndexPointer=0x0048021E,  # Column Position In Total Image Pixel Matrix
            FunctionalGroupPointer=0x0048021A,  # Plane Position (Slide) Sequence
        ),
        _item(
            DimensionOrganizationUID=organization,
            DimensionIndexPointer=0x0048021F,  # Row Position In Total Image Pixel Matrix
            FunctionalGroupPointer=0x0048021A,
        ),
    ]
    ds.SharedFunctionalGroupsSequence = [
        _item(
            PixelMeasuresSequence=[
                _item(PixelSpacing=[spacing, spacing], SliceThickness=profile.slice_thickness_mm)
            ],
            WholeSlideMicroscopyImageFrameTypeSequence=[_item(FrameType=ds.ImageType)],
            OpticalPathIdentificationSequence=[_item(OpticalPathIdentifier="1")],
        )
    ]
    ds.NumberOfOpticalPaths = 1
    ds.OpticalPathSequence = [
        _item(
            OpticalPathIdentifier="1",
            IlluminationTypeCodeSequence=[_code("111744", "DCM", "Brightfield illumination")],
            IlluminationColorCodeSequence=[_code("414298005", "SCT", "Full Spectrum")],
            ICCProfile=_srgb_icc_profile(),
        )
    ]
    container = f"SYN-{seed}-{slide + 1}"
    ds.ContainerIdentifier = container
    ds.IssuerOfTheContainerIdentifierSequence = []
    ds.ContainerTypeCodeSequence = [_code("433466003", "SCT", "Microscope slide")]
    ds.SpecimenDescriptionSequence = [
        _item(
            SpecimenIdentifier=container,
            SpecimenUID=_uid(header.SeriesInstanceUID, "specimen"),
            IssuerOfTheSpecimenIdentifierSequence=[],
            SpecimenPreparationSequence=[],
        )
    ]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = ds.Columns = _TILE_SIZE
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = tiles_across**2
    ds.PixelData = _slide_tiles(total, slide, seed)
    return ds


def _slide_tiles(total: int, slide: int, seed: int) -> bytes:
    """The frames of a total x total RGB level in TILED_FULL order (row by row of tiles).

    The tissue is drawn in slide coordinates (0..1), so every level shows the same tissue
    at its own resolution: pink stroma, darker nuclei on a grid, white glass around it."""
    rng = random.Random(f"slide:{seed}:{slide}")
    stain = (rng.randrange(200, 240), rng.randrange(120, 170), rng.randrange(160, 210))
    nucleus = (rng.randrange(60, 110), rng.randrange(40, 80), rng.randrange(120, 170))
    image = bytearray()
    for y in range(total):
        v = (y + 0.5) / total
        for x in range(total):
            u = (x + 0.5) / total
            if (u - 0.5) ** 2 / 0.16 + (v - 0.5) ** 2 / 0.12 > 1:
                image += b"\xf0\xf0\xf0"
            elif (u * 24 % 1 - 0.5) ** 2 + (v * 24 % 1 - 0.5) ** 2 < 0.06:
                image += bytes(nucleus)
            else:
                image += bytes(stain)
    row_bytes = total * 3
    frames = bytearray()
    for tile_row in range(total // _TILE_SIZE):
        for tile_column in range(total // _TILE_SIZE):
            for line in range(_TILE_SIZE):
                start = (tile_row * _TILE_SIZE + line) * row_bytes + tile_column * _TILE_SIZE * 3
                frames += image[start : start + _TILE_SIZE * 3]
    return bytes(frames)


def _srgb_icc_profile() -> bytes:
    """A minimal ICC v2 RGB display profile with sRGB's primaries (D50-adapted) and a 2.2
    gamma: colour WSI needs an ICC profile in its optical path (PS3.3 C.8.12.5)."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    text = b"sRGB-like (synthetic)\0"
    description = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    gamma = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(2.2 * 256)) + b"\0\0"
    tags = [
        (b"desc", description),
        (b"cprt", b"text\0\0\0\0No copyright, synthetic\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", gamma),
        (b"gTRC", gamma),
        (b"bTRC", gamma),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = bytearray(struct.pack(">I", len(tags))), bytearray()
    for signature, body in tags:
        padded = body + bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += padded
    size = 128 + len(table) + len(data)
    header = (
        struct.pack(">I", size)
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + bytes(48)
    )
    return bytes(header) + bytes(table) + bytes(data)
