"""HL7v2 ↔ FHIR mappings and terminology maps: declarative tables plus the engine."""
