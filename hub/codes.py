"""Canonical URLs and codes that the hub owns (the matching CodeSystems live in fhir_profiles/)."""

from __future__ import annotations

CANONICAL_BASE = "https://second-opinion-hub.example/fhir"

# ServiceRequest.category that marks a referral for a second opinion.
CASE_CATEGORY_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/case-category"
SECOND_OPINION = "second-opinion"
# ServiceRequest.category of the request to move care after an opinion.
TRANSFER_OF_CARE = "transfer-of-care"

# Task.code of the Task that carries a case through its workflow.
CASE_TASK_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/case-task"
CASE_TASK_CODE = "second-opinion-case"

# Task.businessStatus: the hub's sub-states of a case.
BUSINESS_STATUS_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/case-business-status"

# Identifier systems the demo data and the hub's own records use.
HUB_PATIENT_ID_SYSTEM = f"{CANONICAL_BASE}/sid/patient"
HUB_CASE_ID_SYSTEM = f"{CANONICAL_BASE}/sid/case"

# Provenance.activity for case transitions (HL7 v3 DataOperation).
DATA_OPERATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"

# Task.performerType of a case: the second-opinion program that works it.
PROGRAM_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/program"
PROGRAMS = {
    "oncology": "Solid tumors and oncology",
    "hematology": "Hematology",
    "bmt-cellular-therapy": "Bone marrow transplant and cellular therapy",
    "neuro-oncology": "Neuro-oncology",
    "hemophilia-thrombosis": "Hemophilia and thrombosis",
}

# Composition.section.code of a case's record document (hub/workflow/record_sections.yaml).
RECORD_SECTION_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/record-section"
