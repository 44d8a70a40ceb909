"""DICOM metadata → ImagingStudy, import reconciliation, instance storage.

No transport here (that is `connectors/`) and nothing of the hub: files in, files,
datasets and FHIR JSON out.

- `read_instance`: the header of one Part 10 file, validated (`InvalidDicom` with a
  reason otherwise), and its `InstanceInfo`; `dicom_json`: its DICOM JSON model.
- `reconcile_file`: the instance rewritten with the hub's `HubIdentity`, the outside one
  kept; `demographic_differences`: whether a study's demographics disagree with the case.
- `build_imaging_study`: FHIR R4 ImagingStudy JSON of one study's instances.
- `ContentStore`: content-addressed, streamed storage of the files.
"""

from __future__ import annotations

from dicom.errors import DicomError, InvalidDicom, InvalidDigest, ObjectNotFound
from dicom.imaging_study import build_imaging_study
from dicom.instances import (
    ACCEPTED_SOP_CLASSES,
    InstanceInfo,
    PixelDataRef,
    dicom_json,
    read_instance,
)
from dicom.reconcile import HubIdentity, demographic_differences, reconcile_file
from dicom.store import ContentStore, ObjectWriter, StoredObject

__all__ = [
    "ACCEPTED_SOP_CLASSES",
    "ContentStore",
    "DicomError",
    "HubIdentity",
    "InstanceInfo",
    "InvalidDicom",
    "InvalidDigest",
    "ObjectNotFound",
    "ObjectWriter",
    "PixelDataRef",
    "StoredObject",
    "build_imaging_study",
    "demographic_differences",
    "dicom_json",
    "read_instance",
    "reconcile_file",
]
