"""DICOM metadata → ImagingStudy, import reconciliation, instance storage."""
