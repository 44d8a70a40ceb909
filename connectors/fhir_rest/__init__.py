"""FHIR REST transport: SMART Backend Services authentication, pulls and write-backs."""
