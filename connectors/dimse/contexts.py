"""Which SOP classes and transfer syntaxes the hub speaks over DIMSE: data, not logic.

The Storage SCP accepts every storage SOP class pynetdicom knows, plus VL Whole Slide
Microscopy (named explicitly, as pathology is why the hub exists), each in every common
transfer syntax: instances are written as received, never decoded, so no codec is needed
to accept a compressed one. C-GET must fit its storage contexts into the 128 presentation
contexts an association may propose (PS3.8 §9.3.2.2), so it offers the common classes.
"""

from __future__ import annotations

from pydicom import uid
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts

VL_WHOLE_SLIDE_MICROSCOPY: str = (
    uid.VLWholeSlideMicroscopyImageStorage
)  # 1.2.840.10008.5.1.4.1.1.77.1.6
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"

# Uncompressed first: a peer that picks the first it supports then sends without
# transcoding whatever it holds uncompressed.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    HTJ2K,
    RLELossless,
)

VERIFICATION_TRANSFER_SYNTAXES: tuple[str, ...] = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)

COMMON_STORAGE_SOP_CLASSES: tuple[str, ...] = (
    uid.CTImageStorage,
    uid.EnhancedCTImageStorage,
    uid.LegacyConvertedEnhancedCTImageStorage,
    uid.MRImageStorage,
    uid.EnhancedMRImageStorage,
    uid.EnhancedMRColorImageStorage,
    uid.LegacyConvertedEnhancedMRImageStorage,
    uid.MRSpectroscopyStorage,
    uid.PositronEmissionTomographyImageStorage,
    uid.EnhancedPETImageStorage,
    uid.LegacyConvertedEnhancedPETImageStorage,
    uid.NuclearMedicineImageStorage,
    uid.ComputedRadiographyImageStorage,
    uid.DigitalXRayImageStorageForPresentation,
    uid.DigitalXRayImageStorageForProcessing,
    uid.DigitalMammographyXRayImageStorageForPresentation,
    uid.UltrasoundImageStorage,
    uid.UltrasoundMultiFrameImageStorage,
    uid.XRayAngiographicImageStorage,
    uid.XRayRadiofluoroscopicImageStorage,
    uid.SecondaryCaptureImageStorage,
    uid.MultiFrameSingleBitSecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
    VL_WHOLE_SLIDE_MICROSCOPY,
    uid.VLMicroscopicImageStorage,
    uid.VLSlideCoordinatesMicroscopicImageStorage,
    uid.VLPhotographicImageStorage,
    uid.MicroscopyBulkSimpleAnnotationsStorage,
    uid.SegmentationStorage,
    uid.ParametricMapStorage,
    uid.SpatialRegistrationStorage,
    uid.DeformableSpatialRegistrationStorage,
    uid.RTImageStorage,
    uid.RTDoseStorage,
    uid.RTStructureSetStorage,
    uid.RTPlanStorage,
    uid.RTIonPlanStorage,
    uid.BasicTextSRStorage,
    uid.EnhancedSRStorage,
    uid.ComprehensiveSRStorage,
    uid.Comprehensive3DSRStorage,
    uid.KeyObjectSelectionDocumentStorage,
    uid.EncapsulatedPDFStorage,
    uid.GrayscaleSoftcopyPresentationStateStorage,
    uid.RawDataStorage,
)


def all_storage_sop_classes() -> tuple[str, ...]:
    """Every storage SOP class the Storage SCP accepts, VL Whole Slide Microscopy first."""
    known = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    rest = [uid for uid in dict.fromkeys(known) if uid != VL_WHOLE_SLIDE_MICROSCOPY]
    return (VL_WHOLE_SLIDE_MICROSCOPY, *rest)
