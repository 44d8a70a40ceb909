"""The hub's profiles applied by hub.profiles: a complete case record validates clean, and
each kind of defect gives its own issue, at the FHIRPath of the element, naming the profile."""

from __future__ import annotations

import copy
import json
from typing import Any

import fhirpathpy
import pytest
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hub import codes
from hub.cli import app
from hub.demo.outside_record import build_outside_record, dangling_reference
from hub.errors import Issue
from hub.fhir.json_types import _fields
from hub.profiles import (
    canonical,
    is_valid,
    outcome,
    profiles_for,
    validate_bundle,
    validate_content,
    validate_resource_profiles,
)
from hub.profiles.bundle_index import BundleIndex, references_of
from hub.profiles.loader import PROFILES_DIR, definitions

BASE = "https://referrer.example/fhir"
LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
THO = "http://terminology.hl7.org/CodeSystem"
COMPOSITION_URL = "urn:uuid:0b8f3c1e-4d2a-4a57-9a51-3c2f0e7d9b10"


def concept(system: str, code: str, text: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text:
        found["text"] = text
    return found


def ref(reference: str) -> dict[str, str]:
    return {"reference": reference}


def section(code: str, title: str, *refs: str) -> dict[str, Any]:
    return {
        "title": title,
        "code": concept(codes.RECORD_SECTION_SYSTEM, code),
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{title}</div>',
        },
        "entry": [ref(r) for r in refs],
    }


def records() -> list[dict[str, Any]]:
    """One child's case: a resource for each of the hub's profiles, and those they name."""
    patient, doctor, cancer = ref("Patient/p1"), ref("Practitioner/dr1"), ref("Condition/c1")
    return [
        {"resourceType": "Patient", "id": "p1", "name": [{"family": "Testchild"}],
         "gender": "female", "birthDate": "2017-03-04"},
        {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Oncologist"}]},
        {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
         "category": [concept(codes.CASE_CATEGORY_SYSTEM, codes.SECOND_OPINION)],
         "subject": patient, "requester": doctor, "authoredOn": "2026-10-01",
         "reasonReference": [cancer], "note": [{"text": "Is proton therapy an option?"}]},
        {"resourceType": "Condition", "id": "c1",
         "clinicalStatus": concept(f"{THO}/condition-clinical", "active"),
         "verificationStatus": concept(f"{THO}/condition-ver-status", "confirmed"),
         "category": [concept(f"{THO}/condition-category", "problem-list-item")],
         "code": concept("http://hl7.org/fhir/sid/icd-10-cm", "C71.6", "Medulloblastoma"),
         "subject": patient, "onsetDateTime": "2025-01-10",
         "stage": [{"summary": {"text": "M0"}, "assessment": [ref("Observation/stage1")]}]},
        {"resourceType": "Observation", "id": "stage1", "status": "final",
         "code": concept(LOINC, "21908-9"), "subject": patient, "focus": [cancer],
         "effectiveDateTime": "2025-01-20", "valueCodeableConcept": {"text": "Chang M0"}},
        {"resourceType": "Observation", "id": "afp1", "status": "final",
         "category": [concept(f"{THO}/observation-category", "laboratory")],
         "code": concept(LOINC, "1834-1"), "subject": patient,
         "effectiveDateTime": "2025-01-12",
         "valueQuantity": {"value": 3.1, "unit": "ng/mL", "system": "http://unitsofmeasure.org",
                           "code": "ng/mL"}},
        {"resourceType": "DiagnosticReport", "id": "gen1", "status": "final",
         "category": [concept(f"{THO}/v2-0074", "GE")], "code": concept(LOINC, "51969-4"),
         "subject": patient, "effectiveDateTime": "2025-01-25",
         "conclusion": "WNT-activated (CTNNB1 mutation)."},
        {"resourceType": "MedicationRequest", "id": "mr1", "status": "completed",
         "intent": "order", "medicationCodeableConcept": {"text": "cisplatin"},
         "subject": patient, "requester": doctor, "authoredOn": "2025-03-01",
         "reasonReference": [cancer]},
        {"resourceType": "MedicationAdministration", "id": "ma1", "status": "completed",
         "medicationCodeableConcept": {"text": "cisplatin"}, "subject": patient,
         "effectiveDateTime": "2025-03-02", "reasonReference": [cancer],
         "request": ref("MedicationRequest/mr1"),
         "dosage": {"dose": {"value": 75, "unit": "mg"}}},
        {"resourceType": "Procedure", "id": "surg1", "status": "completed",
         "category": concept(SCT, "387713003"), "code": {"text": "Gross total resection"},
         "subject": patient, "performedDateTime": "2025-01-15", "reasonReference": [cancer]},
        {"resourceType": "Procedure", "id": "rt1", "status": "completed",
         "category": concept(SCT, "108290001"), "code": concept(SCT, "1217123003"),
         "subject": patient, "reasonReference": [cancer],
         "performedPeriod": {"start": "2025-02-01", "end": "2025-03-10"}},
        {"resourceType": "DiagnosticReport", "id": "op1", "status": "final",
         "code": concept(canonical.REPORT_TYPE_SYSTEM, canonical.SECOND_OPINION_REPORT_CODE),
         "subject": patient, "basedOn": [ref("ServiceRequest/sr1")], "performer": [doctor],
         "conclusion": "Proton therapy would not have changed the plan."},
        {"resourceType": "Provenance", "id": "prov1",
         "target": [ref("Condition/c1/_history/1")], "recorded": "2025-01-20T10:00:00Z",
         "agent": [{"who": doctor}]},
    ]  # fmt: skip


def record_bundle() -> dict[str, Any]:
    """A valid case record: a `document` Bundle, its Composition first."""
    entries = []
    for resource in records():
        resource["meta"] = {"versionId": "1"}
        full_url = f"{BASE}/{resource['resourceType']}/{resource['id']}"
        entries.append({"fullUrl": full_url, "resource": resource})
    composition = {
        "resourceType": "Composition",
        "id": "record-1",
        "status": "final",
        "type": concept(LOINC, "60591-5", "Second-opinion record"),
        "subject": ref("Patient/p1"),
        "date": "2026-11-23T10:00:00Z",
        "author": [{"display": "Second-opinion hub"}],
        "title": "Second-opinion record",
        "section": [
            section("referral", "Referral", "ServiceRequest/sr1", "DiagnosticReport/op1"),
            section("patient", "Patient", "Patient/p1"),
            section("diagnosis", "Diagnosis", "Condition/c1", "Observation/stage1"),
            section("molecular", "Molecular", "DiagnosticReport/gen1"),
            section("laboratory", "Laboratory", "Observation/afp1"),
            {
                "title": "Treatment history",
                "code": concept(codes.RECORD_SECTION_SYSTEM, "treatment-history"),
                "section": [
                    section("chemotherapy", "Chemotherapy", "MedicationRequest/mr1",
                            "MedicationAdministration/ma1"),
                    section("radiation", "Radiation", "Procedure/rt1"),
                    section("surgery", "Surgery", "Procedure/surg1"),
                ],
            },
            section("care-team", "Care team", "Practitioner/dr1"),
            section("other", "Other", "Provenance/prov1"),
        ],
    }  # fmt: skip
    return {
        "resourceType": "Bundle",
        "id": "record-1",
        "identifier": {"system": f"{BASE}/record-bundle", "value": "record-1"},
        "type": "document",
        "timestamp": "2026-11-23T10:00:00Z",
        "entry": [{"fullUrl": COMPOSITION_URL, "resource": composition}, *entries],
    }


def entry_of(bundle: dict[str, Any], resource_type: str, resource_id: str) -> tuple[int, Any]:
    for index, entry in enumerate(bundle["entry"]):
        resource = entry["resource"]
        if (resource["resourceType"], resource.get("id")) == (resource_type, resource_id):
            return index, resource
    raise KeyError(f"{resource_type}/{resource_id}")


def profile_ids(urls: list[str]) -> set[str]:
    return {url.rsplit("/", 1)[-1] for url in urls}


def only_issue(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, [(i.expression, i.diagnostics) for i in issues]
    return issues[0]


# -- a complete record -------------------------------------------------------------------------


def test_a_complete_case_record_is_valid():
    assert validate_bundle(record_bundle()) == []


def test_every_resource_of_the_record_is_held_to_its_profile():
    bundle = record_bundle()
    index = BundleIndex(bundle["entry"])
    held = {
        f"{e.resource['resourceType']}/{e.resource['id']}": profile_ids(
            profiles_for(e.resource, index.resolver(e))
        )
        for e in index.entries
    }
    assert held["ServiceRequest/sr1"] == {"second-opinion-referral"}
    assert held["DiagnosticReport/op1"] == {"second-opinion-report"}
    assert held["Condition/c1"] == {"primary-cancer-condition"}
    assert held["Observation/stage1"] == {"cancer-stage-group"}
    assert held["Observation/afp1"] == {"tumor-marker-test"}
    assert held["DiagnosticReport/gen1"] == {"genomics-report"}
    assert held["MedicationRequest/mr1"] == {"cancer-related-medication-request"}
    assert held["MedicationAdministration/ma1"] == {"cancer-related-medication-administration"}
    assert held["Procedure/surg1"] == {"cancer-related-surgical-procedure"}
    assert held["Procedure/rt1"] == {"radiotherapy-course-summary"}
    assert held["Patient/p1"] == held["Provenance/prov1"] == set()
    assert profile_ids(profiles_for(bundle)) == {"record-bundle"}


def test_the_outcome_of_a_clean_validation_is_one_information_issue():
    result = outcome(validate_bundle(record_bundle()))
    assert result["resourceType"] == "OperationOutcome"
    assert [i["severity"] for i in result["issue"]] == ["information"]


# -- each defect, its own issue ----------------------------------------------------------------


def test_a_missing_required_element():
    bundle = record_bundle()
    index, referral = entry_of(bundle, "ServiceRequest", "sr1")
    del referral["requester"]
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "required"
    assert issue.expression == (f"Bundle.entry[{index}].resource.requester",)
    assert "second-opinion-referral" in issue.diagnostics
    assert "ServiceRequest.requester" in issue.diagnostics


def test_a_wrong_fixed_code():
    bundle = record_bundle()
    index, course = entry_of(bundle, "Procedure", "rt1")
    course["code"] = concept(SCT, "33195004")  # external beam: one technique, not the course
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "value"
    assert issue.expression == (f"Bundle.entry[{index}].resource.code.coding[0]",)
    assert "radiotherapy-course-summary" in issue.diagnostics
    assert "1217123003" in issue.diagnostics and "33195004" in issue.diagnostics


def test_a_missing_fixed_category_slice():
    bundle = record_bundle()
    index, referral = entry_of(bundle, "ServiceRequest", "sr1")
    referral["category"].append(concept(SCT, "103696004"))  # patient referral to specialist
    referral["category"][0] = concept(codes.CASE_CATEGORY_SYSTEM, "another-kind")
    # Without the second-opinion category it is no longer a referral the profile applies to…
    assert "second-opinion-referral" not in profile_ids(profiles_for(referral))
    # …unless it claims the profile: then the category it lacks is the defect.
    referral["meta"]["profile"] = [canonical.SECOND_OPINION_REFERRAL]
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "value"
    assert issue.expression == (f"Bundle.entry[{index}].resource.category",)
    assert "slice secondOpinion" in issue.diagnostics and "found 0" in issue.diagnostics


def test_a_broken_invariant():
    bundle = record_bundle()
    index, opinion = entry_of(bundle, "DiagnosticReport", "op1")
    del opinion["conclusion"]
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "invariant"
    assert issue.expression == (f"Bundle.entry[{index}].resource",)
    assert "sop-1" in issue.diagnostics and "second-opinion-report" in issue.diagnostics


def test_a_broken_invariant_on_a_nested_element():
    bundle = record_bundle()
    sections = bundle["entry"][0]["resource"]["section"]
    sections[1]["emptyReason"] = concept(f"{THO}/list-empty-reason", "unavailable")
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "invariant"
    assert issue.expression == ("Bundle.entry[0].resource.section[1]",)
    assert "cmp-2" in issue.diagnostics and "record-composition" in issue.diagnostics


def test_an_invariant_evaluated_by_fhirpath():
    bundle = record_bundle()
    index, cancer = entry_of(bundle, "Condition", "c1")
    cancer["abatementDateTime"] = "2026-01-01"  # abated, yet still active
    issue = only_issue(validate_bundle(bundle))
    assert (issue.code, issue.severity) == ("invariant", "error")
    assert issue.expression == (f"Bundle.entry[{index}].resource",)
    assert "con-4" in issue.diagnostics


def test_a_dangling_reference():
    bundle = record_bundle()
    index, marker = entry_of(bundle, "Observation", "afp1")
    marker["performer"] = [ref("Practitioner/gone")]
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "not-found"
    assert issue.expression == (f"Bundle.entry[{index}].resource.performer[0].reference",)
    assert "Practitioner/gone" in issue.diagnostics


def test_a_code_outside_a_required_binding():
    bundle = record_bundle()
    index, report = entry_of(bundle, "DiagnosticReport", "gen1")
    report["code"] = concept(LOINC, "11526-1")  # pathology study: not a genomics report code
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "code-invalid"
    assert issue.expression == (f"Bundle.entry[{index}].resource.code.coding[0]",)
    assert "genomics-report-type" in issue.diagnostics and "11526-1" in issue.diagnostics


def test_a_primitive_code_outside_a_required_binding():
    bundle = record_bundle()
    index, referral = entry_of(bundle, "ServiceRequest", "sr1")
    referral["intent"] = "proposal"
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "code-invalid"
    assert issue.expression == (f"Bundle.entry[{index}].resource.intent",)
    assert "referral-intent" in issue.diagnostics


def test_too_many_repeats():
    bundle = record_bundle()
    index, referral = entry_of(bundle, "ServiceRequest", "sr1")
    referral["category"].append(concept(codes.CASE_CATEGORY_SYSTEM, codes.SECOND_OPINION))
    issue = only_issue(validate_bundle(bundle))
    assert issue.expression == (f"Bundle.entry[{index}].resource.category",)
    assert "include 1..1" in issue.diagnostics and "found 2" in issue.diagnostics


def test_an_element_the_profile_forbids():
    bundle = record_bundle()
    index, stage = entry_of(bundle, "Observation", "stage1")
    stage["referenceRange"] = [{"text": "n/a"}]
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "structure"
    assert issue.expression == (f"Bundle.entry[{index}].resource.referenceRange",)
    assert "at most 0" in issue.diagnostics


def test_a_choice_of_a_type_the_profile_does_not_allow():
    bundle = record_bundle()
    index, course = entry_of(bundle, "Procedure", "rt1")
    course["performedDateTime"] = course.pop("performedPeriod")["start"]
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "structure"
    assert issue.expression == (f"Bundle.entry[{index}].resource.performedDateTime",)
    assert "Period" in issue.diagnostics


def test_a_reference_to_the_wrong_type_of_resource():
    bundle = record_bundle()
    index, cancer = entry_of(bundle, "Condition", "c1")
    cancer["subject"] = ref("Practitioner/dr1")
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "invalid"
    assert issue.expression == (f"Bundle.entry[{index}].resource.subject.reference",)
    assert "must refer to Patient" in issue.diagnostics


def test_a_urn_reference_is_typed_by_the_entry_it_resolves_to():
    bundle = record_bundle()
    index, cancer = entry_of(bundle, "Condition", "c1")
    bundle["entry"][2]["fullUrl"] = "urn:uuid:5a0b7c9e-1111-4d2a-8b3c-9e0f1a2b3c4d"  # the doctor
    cancer["subject"] = ref(bundle["entry"][2]["fullUrl"])
    issues = validate_bundle(bundle)
    wrong_type = [i for i in issues if i.expression[0].startswith(f"Bundle.entry[{index}]")]
    assert "is a Practitioner" in only_issue(wrong_type).diagnostics


def test_the_base_r4_validation_of_entries_is_kept():
    bundle = record_bundle()
    index, patient = entry_of(bundle, "Patient", "p1")
    patient["birthDate"] = 20170304
    issue = only_issue(validate_bundle(bundle))
    assert issue.expression == (f"Bundle.entry[{index}].resource.birthDate",)
    # Stored resources passed it when written: base="none" leaves it out.
    assert validate_bundle(bundle, base="none") == []


def test_several_defects_give_one_issue_each():
    bundle = record_bundle()
    _, referral = entry_of(bundle, "ServiceRequest", "sr1")
    _, report = entry_of(bundle, "DiagnosticReport", "gen1")
    _, marker = entry_of(bundle, "Observation", "afp1")
    del referral["requester"]
    report["code"] = concept(LOINC, "11526-1")
    marker["performer"] = [ref("Practitioner/gone")]
    bundle["timestamp"] = None
    del bundle["timestamp"]
    issues = validate_bundle(bundle)
    assert sorted(i.code for i in issues) == ["code-invalid", "not-found", "required", "required"]
    assert len({i.expression for i in issues}) == 4


# -- the record bundle itself ------------------------------------------------------------------


def test_a_record_bundle_needs_its_composition_first_and_every_fullurl():
    bundle = record_bundle()
    bundle["entry"].append(bundle["entry"].pop(0))
    del bundle["entry"][3]["fullUrl"]
    issues = validate_bundle(bundle)
    assert {(i.code, i.expression) for i in issues if i.code == "invariant"} == {
        ("invariant", ("Bundle",)),
        ("invariant", ("Bundle.entry[3]",)),
    }
    assert any("rb-1" in i.diagnostics for i in issues)
    assert any("rb-2" in i.diagnostics for i in issues)


def test_a_document_entry_may_not_carry_a_request():
    bundle = record_bundle()
    bundle["entry"][4]["request"] = {"method": "POST", "url": "Condition"}
    issue = only_issue(validate_bundle(bundle))
    assert issue.expression == ("Bundle.entry[4].request",)
    assert "record-bundle" in issue.diagnostics


def test_duplicate_fullurls():
    bundle = record_bundle()
    bundle["entry"][5]["fullUrl"] = bundle["entry"][4]["fullUrl"]
    issues = [i for i in validate_bundle(bundle) if i.code == "duplicate"]
    assert only_issue(issues).expression == ("Bundle.entry[5].fullUrl",)


# -- references --------------------------------------------------------------------------------


def test_a_versioned_reference_resolves_only_to_that_version():
    bundle = record_bundle()
    index, provenance = entry_of(bundle, "Provenance", "prov1")
    assert validate_bundle(bundle) == []
    provenance["target"] = [ref("Condition/c1/_history/2")]
    issue = only_issue(validate_bundle(bundle))
    assert issue.code == "not-found"
    assert issue.expression == (f"Bundle.entry[{index}].resource.target[0].reference",)


@pytest.mark.parametrize(
    "reference",
    [f"{BASE}/Condition/c1", "Condition/c1", f"{BASE}/Condition/c1/_history/1", COMPOSITION_URL],
)
def test_forms_of_reference_that_resolve(reference):
    bundle = record_bundle()
    _, provenance = entry_of(bundle, "Provenance", "prov1")
    provenance["target"] = [ref(reference)]
    assert validate_bundle(bundle) == []


@pytest.mark.parametrize(
    "reference", ["http://elsewhere.example/fhir/Condition/c1", "urn:uuid:" + "0" * 36, "#nope"]
)
def test_forms_of_reference_that_do_not(reference):
    bundle = record_bundle()
    _, provenance = entry_of(bundle, "Provenance", "prov1")
    provenance["target"] = [ref(reference)]
    assert only_issue(validate_bundle(bundle)).code == "not-found"


def test_a_relative_reference_is_read_against_the_referring_entrys_base():
    bundle = record_bundle()
    index, provenance = entry_of(bundle, "Provenance", "prov1")
    bundle["entry"][index]["fullUrl"] = f"http://other.example/fhir/Provenance/{provenance['id']}"
    issues = validate_bundle(bundle)
    assert {i.code for i in issues} == {"not-found"}
    assert sorted(
        i.expression[0].removeprefix(f"Bundle.entry[{index}].resource.") for i in issues
    ) == [
        "agent[0].who.reference",
        "target[0].reference",
    ]


def test_contained_references_resolve_in_their_resource():
    bundle = record_bundle()
    index, request = entry_of(bundle, "MedicationRequest", "mr1")
    request["contained"] = [
        {"resourceType": "Medication", "id": "med1", "code": {"text": "cisplatin"}},
        {"resourceType": "Provenance", "id": "pv", "target": [ref("#med1")],
         "recorded": "2025-03-01T10:00:00Z", "agent": [{"who": ref("Practitioner/dr1")}]},
    ]  # fmt: skip
    del request["medicationCodeableConcept"]
    request["medicationReference"] = ref("#med1")
    assert validate_bundle(bundle) == []
    request["contained"][1]["agent"][0]["who"] = ref("Practitioner/gone")
    request["medicationReference"] = ref("#med2")
    issues = validate_bundle(bundle)
    assert sorted(i.expression for i in issues) == [
        (f"Bundle.entry[{index}].resource.contained[1].agent[0].who.reference",),
        (f"Bundle.entry[{index}].resource.medicationReference.reference",),
    ]


def test_a_reference_held_in_an_element_named_reference_is_followed():
    care_plan = {
        "resourceType": "CarePlan",
        "activity": [{"reference": ref("MedicationRequest/mr9")}],
        "subject": ref("Patient/p1"),
    }
    assert sorted(references_of(care_plan)) == ["MedicationRequest/mr9", "Patient/p1"]


def test_an_outside_record_with_dangling_references():
    outside = build_outside_record(resources=160, dangling=2)
    issues = [i for i in validate_bundle(outside, base="json") if i.code == "not-found"]
    assert len(issues) == 2
    assert all(dangling_reference() in i.diagnostics for i in issues)
    assert all(i.expression[0].endswith(".performer[0].reference") for i in issues)


# -- which profiles apply ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "code", "held"),
    [
        ("http://hl7.org/fhir/sid/icd-10-cm", "C71.6", True),
        ("http://hl7.org/fhir/sid/icd-10-cm", "D43.1", True),
        ("http://hl7.org/fhir/sid/icd-10-cm", "C79.31", False),  # secondary: a metastasis
        ("http://hl7.org/fhir/sid/icd-10-cm", "D50.9", False),  # iron deficiency anaemia
        ("http://terminology.hl7.org/CodeSystem/icd-o-3", "9470/3", True),
        ("http://terminology.hl7.org/CodeSystem/icd-o-3", "9470/6", False),
        (SCT, "443333004", True),
        (SCT, "38341003", False),  # hypertension
    ],
)
def test_a_condition_is_a_primary_cancer_by_its_code(system, code, held):
    condition = {"resourceType": "Condition", "code": concept(system, code)}
    assert (canonical.PRIMARY_CANCER_CONDITION in profiles_for(condition)) is held


def test_claimed_profiles_count_ours_and_the_mcode_ones_ours_build_on():
    claims = [
        canonical.TUMOR_MARKER_TEST,
        "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-cancer-stage-group|3.0.0",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-lab",
        canonical.PRIMARY_CANCER_CONDITION,  # a Condition profile: not for an Observation
    ]
    observation = {"resourceType": "Observation", "meta": {"profile": claims}}
    assert profiles_for(observation) == [canonical.TUMOR_MARKER_TEST, canonical.CANCER_STAGE_GROUP]
    plain = {"resourceType": "ServiceRequest", "meta": {"profile": [f"{BASE}/x"]}}
    assert profiles_for(plain) == []


def test_cancer_related_by_a_reference_needs_the_bundle():
    request = records()[7]
    assert profiles_for(request) == []  # reasonReference alone: what it names is unknown
    cancer = records()[3]
    assert profiles_for(request, lambda r: cancer if r == "Condition/c1" else None) == [
        canonical.CANCER_RELATED_MEDICATION_REQUEST
    ]
    request["reasonCode"] = [concept("http://hl7.org/fhir/sid/icd-10-cm", "C71.6")]
    assert profiles_for(request) == [canonical.CANCER_RELATED_MEDICATION_REQUEST]


def test_a_surgery_for_no_cancer_is_not_held_to_the_cancer_profile():
    appendectomy = {
        "resourceType": "Procedure",
        "category": concept(SCT, "387713003"),
        "reasonCode": [concept("http://hl7.org/fhir/sid/icd-10-cm", "K35.80")],  # appendicitis
    }
    assert profiles_for(appendectomy) == []


def test_validate_resource_profiles_prefixes_its_paths():
    cancer = records()[3]
    del cancer["subject"]
    alone = only_issue(validate_resource_profiles(cancer, ""))
    assert alone.expression == ("Condition.subject",)
    nested = only_issue(validate_resource_profiles(cancer, "Bundle.entry[7].resource"))
    assert nested.expression == ("Bundle.entry[7].resource.subject",)


def test_validate_content_takes_a_single_resource_and_asked_for_profiles():
    patient = records()[0]
    assert validate_content(patient) == []
    issues = validate_content(patient, profiles=[canonical.PRIMARY_CANCER_CONDITION, f"{BASE}/x"])
    assert sorted(i.code for i in issues) == ["invalid", "not-supported"]


# -- robustness --------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
ELEMENTS = st.sampled_from(
    ["subject", "code", "category", "reasonReference", "status", "valueQuantity", "performedPeriod",
     "section", "conclusion", "basedOn", "requester", "focus", "meta", "contained", "stage"]
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(position=st.integers(0, 13), element=ELEMENTS, value=JSON_VALUES)
def test_odd_content_gives_issues_never_an_exception(position, element, value):
    bundle = record_bundle()
    bundle["entry"][position]["resource"][element] = value
    issues = validate_bundle(bundle)
    assert all(isinstance(i, Issue) and i.diagnostics for i in issues)
    assert "exception" not in {i.code for i in issues}


@pytest.mark.parametrize("content", [None, "Bundle", [], {"resourceType": "Bundle", "entry": 7}])
def test_what_is_no_bundle_gives_issues(content):
    assert validate_bundle(content)
    assert not is_valid(validate_bundle(content))


# -- the definitions ---------------------------------------------------------------------------


def test_every_profile_loads_and_is_picked_by_a_rule_or_by_the_bundle():
    known = definitions()
    assert len(known.profiles) == len(list((PROFILES_DIR / "StructureDefinition").glob("*.json")))
    from hub.profiles.applicability import applicability

    picked = {rule.profile for rules in applicability().by_type.values() for rule in rules}
    assert set(known.profiles) - picked == {canonical.RECORD_COMPOSITION}


def _steps_exist(resource_type: str, path: str) -> bool:
    kind = resource_type
    for step in path.split(".")[1:]:
        fields = _fields(kind)
        if step.endswith("[x]"):
            matches = [n for n in fields if n.startswith(step[:-3]) and n[len(step) - 3].isupper()]
            if not matches:
                return False
            kind = fields[matches[0]][1]
        elif step not in fields:
            return False
        else:
            kind = fields[step][1]
    return True


def test_every_element_of_every_profile_exists_in_r4():
    for profile_file in sorted((PROFILES_DIR / "StructureDefinition").glob("*.json")):
        definition = json.loads(profile_file.read_text(encoding="utf-8"))
        for element in definition["differential"]["element"]:
            assert _steps_exist(definition["type"], element["path"]), (profile_file.name, element)


def test_codes_the_profiles_fix_from_our_code_systems_exist():
    known = definitions()
    for profile_file in sorted((PROFILES_DIR / "StructureDefinition").glob("*.json")):
        for element in json.loads(profile_file.read_text())["differential"]["element"]:
            for coding in (element.get("patternCodeableConcept") or {}).get("coding", []):
                if coding["system"] in known.code_systems:
                    assert coding["code"] in known.code_systems[coding["system"]], coding


def _fhirpathpy_holds(invariant, node, resource, context):
    compiled = fhirpathpy.compile(invariant.expression, models["r4"])
    target = node if "." not in context else ResourceNode.create_node(node, context)
    return compiled(target, {"resource": resource}) == [True]


def test_invariants_read_on_plain_json_agree_with_fhirpathpy():
    bundle = record_bundle()
    samples: list[dict[str, Any]] = [copy.deepcopy(e["resource"]) for e in bundle["entry"]]
    for resource in list(samples):
        for element in ("reasonCode", "reasonReference", "conclusion", "valueQuantity",
                        "valueCodeableConcept", "dataAbsentReason"):  # fmt: skip
            variant = copy.deepcopy(resource)
            if element in variant:
                del variant[element]
            else:
                variant[element] = {"text": "x"}
            samples.append(variant)
    checked = 0
    for profile in definitions().profiles.values():
        for invariant in profile.invariants:
            if not invariant.fast:
                continue
            for resource in samples:
                if resource["resourceType"] == profile.type:
                    expected = _fhirpathpy_holds(invariant, resource, resource, profile.type)
                    assert invariant.check(resource, resource) == expected, (
                        invariant.key,
                        resource,
                    )
                    checked += 1
    assert checked > 20


# -- the command -------------------------------------------------------------------------------


def test_the_validate_command(tmp_path):
    runner = CliRunner()
    good = tmp_path / "good.json"
    good.write_text(json.dumps(record_bundle()))
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("information  -  Valid")

    broken = record_bundle()
    del broken["entry"][3]["resource"]["requester"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert result.output.startswith("error  Bundle.entry[3].resource.requester  Profile ")

    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert runner.invoke(app, ["validate", str(garbage)]).exit_code == 2
    assert runner.invoke(app, ["validate", str(tmp_path / "missing.json")]).exit_code == 2
