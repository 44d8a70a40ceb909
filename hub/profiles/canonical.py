"""Canonical URLs of the hub's profiles (fhir_profiles/StructureDefinition/) and the codes
they fix, for the code that builds resources meant to conform to them."""

from __future__ import annotations

from typing import Final

from hub import codes

PROFILE_BASE: Final = f"{codes.CANONICAL_BASE}/StructureDefinition"
VALUE_SET_BASE: Final = f"{codes.CANONICAL_BASE}/ValueSet"


def profile_url(profile_id: str) -> str:
    """The canonical URL of the hub's profile `profile_id`."""
    return f"{PROFILE_BASE}/{profile_id}"


SECOND_OPINION_REFERRAL: Final = profile_url("second-opinion-referral")
SECOND_OPINION_REPORT: Final = profile_url("second-opinion-report")
RECORD_BUNDLE: Final = profile_url("record-bundle")
RECORD_COMPOSITION: Final = profile_url("record-composition")
PRIMARY_CANCER_CONDITION: Final = profile_url("primary-cancer-condition")
CANCER_STAGE_GROUP: Final = profile_url("cancer-stage-group")
TUMOR_MARKER_TEST: Final = profile_url("tumor-marker-test")
CANCER_RELATED_MEDICATION_REQUEST: Final = profile_url("cancer-related-medication-request")
CANCER_RELATED_MEDICATION_ADMINISTRATION: Final = profile_url(
    "cancer-related-medication-administration"
)
CANCER_RELATED_SURGICAL_PROCEDURE: Final = profile_url("cancer-related-surgical-procedure")
RADIOTHERAPY_COURSE_SUMMARY: Final = profile_url("radiotherapy-course-summary")
GENOMICS_REPORT: Final = profile_url("genomics-report")

# DiagnosticReport.code of an opinion (fhir_profiles/CodeSystem/report-type.json).
REPORT_TYPE_SYSTEM: Final = f"{codes.CANONICAL_BASE}/CodeSystem/report-type"
SECOND_OPINION_REPORT_CODE: Final = "second-opinion"

# Composition.type of a case record (LOINC "Patient summary Document").
RECORD_DOCUMENT_TYPE: Final = {"system": "http://loinc.org", "code": "60591-5"}
