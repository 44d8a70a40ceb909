"""The second-opinion integration hub: FHIR store, REST API and case workflow."""
