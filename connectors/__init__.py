"""Transports to and from outside systems (FHIR REST, MLLP, DICOMweb, DIMSE, file drop)."""
