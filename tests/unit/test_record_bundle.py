"""The record document of a case: sections, duplicates merged, references resolving,
deterministic output (hub.workflow.record_document / record_dedup / record_sections)."""

from __future__ import annotations

import copy
import json
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from hub import codes
from hub.demo.outside_record import build_outside_record
from hub.fhir.references import references_in
from hub.storage.repository import StoredResource
from hub.workflow.record_dedup import deduplicate
from hub.workflow.record_document import record_document
from hub.workflow.record_sections import record_sections

BASE = "http://hub.test/fhir"
LOINC = "http://loinc.org"
JSON = dict[str, Any]


def stored(resource: JSON, version: int = 1, day: int = 1) -> StoredResource:
    content = copy.deepcopy(resource)
    content.setdefault("meta", {})["versionId"] = str(version)
    return StoredResource(
        content["resourceType"], content["id"], version, datetime(2026, 11, day), False, content
    )


def referral_for(patient: str) -> StoredResource:
    return stored(
        {
            "resourceType": "ServiceRequest",
            "id": "referral-1",
            "status": "active",
            "intent": "order",
            "category": [
                {"coding": [{"system": codes.CASE_CATEGORY_SYSTEM, "code": codes.SECOND_OPINION}]}
            ],
            "subject": {"reference": f"Patient/{patient}"},
        },
        day=20,
    )


def document_of(resources: list[JSON], **kwargs: Any) -> JSON:
    members = {(r["resourceType"], r["id"]): stored(r) for r in resources}
    patient = next(r["id"] for r in resources if r["resourceType"] == "Patient")
    referral = referral_for(patient)
    members[("ServiceRequest", referral.resource_id)] = referral
    return record_document(members, referral, None, BASE, **kwargs)


def outside(resources: int = 250, cancer: str = "medulloblastoma") -> list[JSON]:
    bundle = build_outside_record(resources=resources, cancer=cancer)
    return [entry["resource"] for entry in bundle["entry"]]


def entries_by_ref(document: JSON) -> dict[str, JSON]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in document["entry"][1:]
    }


def section_entries(section: JSON) -> dict[str, list[str]]:
    found = {
        section["code"]["coding"][0]["code"]: [e["reference"] for e in section.get("entry", [])]
    }
    for sub in section.get("section", []):
        found.update(section_entries(sub))
    return found


def sections_of(document: JSON) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for section in document["entry"][0]["resource"]["section"]:
        found.update(section_entries(section))
    return found


def observation(ident: str, value: float, when: str, **extra: Any) -> JSON:
    return {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": "718-7", "display": "Hemoglobin"}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": when,
        "valueQuantity": {
            "value": value,
            "unit": "g/dL",
            "system": "http://unitsofmeasure.org",
            "code": "g/dL",
        },
        **extra,
    }


PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Testchild"}]}


# -- shape -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cancer", ["medulloblastoma", "b-all-relapsed", "neuroblastoma", "osteosarcoma"]
)
def test_every_record_is_an_entry_of_one_section_and_every_reference_resolves(cancer):
    document = document_of(outside(cancer=cancer))
    Bundle.model_validate(document)
    assert document["type"] == "document"
    composition = document["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert composition["subject"] == {
        "reference": "Patient/" + composition["subject"]["reference"].split("/")[1]
    }
    records = entries_by_ref(document)
    placed = [ref for refs in sections_of(document).values() for ref in refs]
    assert sorted(placed) == sorted(r for r in records if not r.startswith("Provenance/"))
    full_urls = [e["fullUrl"] for e in document["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    for resource in [composition, *records.values()]:
        for reference in references_in(resource):
            assert reference.startswith("#") or reference in records, reference


def test_sections_follow_the_table_and_a_report_keeps_its_results():
    document = document_of(outside())
    sections = sections_of(document)
    records = entries_by_ref(document)
    table = [leaf.code for s in record_sections() for leaf in s.leaves()]
    assert [code for code in sections if code not in ("treatment-history",)] == table
    assert sections["referral"] == ["ServiceRequest/referral-1"]
    assert [records[r]["code"]["text"] for r in sections["radiation"]] == [
        "Craniospinal irradiation 23.4 Gy with posterior fossa boost to 54 Gy"
    ]
    assert all(records[r]["resourceType"] == "Procedure" for r in sections["surgery"])
    assert {records[r]["resourceType"] for r in sections["chemotherapy"]} == {
        "MedicationRequest",
        "MedicationAdministration",
    }
    for section, refs in sections.items():
        for ref in refs:
            if records[ref]["resourceType"] == "DiagnosticReport":
                for result in records[ref].get("result", []):
                    assert result["reference"] in refs, (section, ref)
    empty = next(
        s
        for s in document["entry"][0]["resource"]["section"]
        if s["code"]["coding"][0]["code"] == "other"
    )
    assert "entry" not in empty and empty["emptyReason"]["coding"][0]["code"] == "unavailable"


def test_the_section_code_system_lists_the_table():
    path = Path(__file__).parents[2] / "fhir_profiles/CodeSystem/record-section.json"
    system = json.loads(path.read_text())
    assert system["url"] == codes.RECORD_SECTION_SYSTEM

    def listed(concepts: list[JSON]) -> list[str]:
        return [c["code"] for concept in concepts for c in [concept, *concept.get("concept", [])]]

    def tabled(sections: Any) -> list[str]:
        return [c for s in sections for c in [s.code, *tabled(s.sections)]]

    assert listed(system["concept"]) == tabled(record_sections())


def test_the_same_records_give_the_same_bytes_in_any_order():
    resources = outside()
    first = document_of(resources)
    shuffled = list(resources)
    random.Random(3).shuffle(shuffled)
    assert json.dumps(document_of(shuffled)) == json.dumps(first)
    changed = copy.deepcopy(resources)
    changed[-1]["status"] = "amended"
    members = {(r["resourceType"], r["id"]): stored(r) for r in changed}
    members[changed[-1]["resourceType"], changed[-1]["id"]] = stored(changed[-1], version=2)
    patient = next(r["id"] for r in changed if r["resourceType"] == "Patient")
    referral = referral_for(patient)
    members[("ServiceRequest", referral.resource_id)] = referral
    assert record_document(members, referral, None, BASE)["id"] != first["id"]


def test_profiles_are_stamped_on_the_records_they_apply_to():
    def cancer_profile(resource: JSON) -> list[str]:
        return ["urn:test:condition"] if resource["resourceType"] == "Condition" else []

    document = document_of(outside(), profiles_for=cancer_profile)
    for resource in entries_by_ref(document).values():
        profiles = resource.get("meta", {}).get("profile", [])
        assert ("urn:test:condition" in profiles) == (resource["resourceType"] == "Condition")


# -- duplicates ------------------------------------------------------------------------------
def test_a_shared_identifier_merges_and_references_follow_the_survivor():
    shared = {"system": "urn:lab", "value": "A-1"}
    from_fhir = observation("obs-fhir", 9.1, "2026-03-02T10:30:00Z", identifier=[shared])
    from_hl7 = observation(
        "obs-hl7",
        9.1,
        "2026-03-02T10:30:00Z",
        identifier=[shared, {"system": "urn:v2-filler", "value": "F-7"}],
        note=[{"text": "from the v2 feed, with a note"}],
    )
    report = {
        "resourceType": "DiagnosticReport",
        "id": "cbc",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "58410-2"}]},
        "subject": {"reference": "Patient/p1"},
        "result": [{"reference": "Observation/obs-fhir"}, {"reference": "Observation/obs-hl7"}],
    }
    provenance = {
        "resourceType": "Provenance",
        "id": "prov-fhir",
        "recorded": "2026-03-03T00:00:00Z",
        "agent": [{"who": {"display": "FHIR connector"}}],
        "target": [{"reference": "Observation/obs-fhir"}],
    }
    document = document_of([PATIENT, from_fhir, from_hl7, report, provenance])
    records = entries_by_ref(document)
    # The longer (more complete) one survives, holding both sources' identifiers.
    assert "Observation/obs-fhir" not in records
    survivor = records["Observation/obs-hl7"]
    assert {(i["system"], i["value"]) for i in survivor["identifier"]} == {
        ("urn:lab", "A-1"),
        ("urn:v2-filler", "F-7"),
    }
    assert records["DiagnosticReport/cbc"]["result"] == [{"reference": "Observation/obs-hl7"}]
    assert records["Provenance/prov-fhir"]["target"] == [{"reference": "Observation/obs-hl7"}]


def test_same_code_instant_and_value_merge_across_time_zones_a_different_value_does_not():
    resources = {
        "Observation/a": observation("a", 9.1, "2026-03-02T10:30:00-05:00"),
        "Observation/b": observation("b", 9.1, "2026-03-02T15:30:00Z", status="preliminary"),
        "Observation/c": observation("c", 9.4, "2026-03-02T15:30:00Z"),
        "Observation/d": observation("d", 9.1, "2026-03-02"),
    }
    result = deduplicate(resources)
    assert result.merged_into == {"Observation/b": "Observation/a"}
    assert sorted(result.resources) == ["Observation/a", "Observation/c", "Observation/d"]


def test_the_most_final_duplicate_survives():
    preliminary = observation("a", 9.1, "2026-03-02T10:30:00Z", status="preliminary")
    preliminary["note"] = [{"text": "a long preliminary note that makes this one bigger"}]
    final = observation("b", 9.1, "2026-03-02T10:30:00Z")
    result = deduplicate({"Observation/a": preliminary, "Observation/b": final})
    assert result.merged_into == {"Observation/a": "Observation/b"}


def test_conditions_merge_on_code_and_onset_day():
    def condition(ident: str, onset: str) -> JSON:
        return {
            "resourceType": "Condition",
            "id": ident,
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C71.6"}]},
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": onset,
        }

    result = deduplicate(
        {
            "Condition/x": condition("x", "2025-01-10"),
            "Condition/y": condition("y", "2025-01-10"),
            "Condition/z": condition("z", "2025-02-10"),
        }
    )
    assert result.merged_into == {"Condition/y": "Condition/x"}


def test_patients_and_provenances_are_never_merged():
    twin = {**PATIENT, "id": "p2"}
    identifier = [{"system": "urn:mrn", "value": "1"}]
    result = deduplicate(
        {
            "Patient/p1": {**PATIENT, "identifier": identifier},
            "Patient/p2": {**twin, "identifier": identifier},
        }
    )
    assert result.merged_into == {}


# -- references and provenance ---------------------------------------------------------------
def test_a_reference_to_a_record_outside_the_bundle_is_shown_as_text():
    lab = observation(
        "o1", 9.1, "2026-03-02T10:30:00Z", performer=[{"reference": "Practitioner/gone"}]
    )
    document = document_of([PATIENT, lab])
    performer = entries_by_ref(document)["Observation/o1"]["performer"]
    assert performer == [{"display": "Practitioner/gone (not in this record)"}]


def test_provenance_of_an_earlier_version_is_left_out():
    lab = observation("o1", 9.1, "2026-03-02T10:30:00Z")
    older = {
        "resourceType": "Provenance",
        "id": "v1",
        "recorded": "2026-03-03T00:00:00Z",
        "agent": [{"who": {"display": "hub"}}],
        "target": [{"reference": "Observation/o1/_history/7"}, {"reference": "Patient/p1"}],
    }
    current = {**older, "id": "v2", "target": [{"reference": "Observation/o1/_history/1"}]}
    records = entries_by_ref(document_of([PATIENT, lab, older, current]))
    assert "Provenance/v1" not in records
    assert records["Provenance/v2"]["target"] == [{"reference": "Observation/o1/_history/1"}]
