"""DICOM in the hub: transfers in, attachment to cases, the hub's own DICOMweb."""
