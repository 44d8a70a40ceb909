"""HL7 v2 → FHIR and FHIR → HL7 v2."""
