"""Unit tests for the synthetic outside-EHR record (hub.demo.outside_record): no network."""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hub.demo.outside_record import (
    CANCERS,
    DEFAULT_SOURCE,
    build_outside_record,
    counts,
    dangling_reference,
    minimum_resources,
    patient_id,
)
from hub.demo.synthetic import ICD10CM, LOINC, UCUM
from hub.fhir.validation import validate_resource

AS_OF = date(2026, 11, 1)
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
LAB_PANELS = {"58410-2", "24323-8"}

JSON = dict[str, Any]


@pytest.fixture(scope="module", params=sorted(CANCERS))
def record(request: pytest.FixtureRequest) -> JSON:
    return build_outside_record(resources=300, cancer=request.param, as_of=AS_OF)


@pytest.fixture(scope="module")
def big() -> JSON:
    return build_outside_record(resources=2000, as_of=AS_OF)


def _resources(bundle: JSON, resource_type: str | None = None) -> list[JSON]:
    return [
        e["resource"]
        for e in bundle["entry"]
        if resource_type is None or e["resource"]["resourceType"] == resource_type
    ]


def _references(node: Any) -> Iterator[str]:
    """Every Reference.reference string anywhere inside ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _by_reference(bundle: JSON) -> dict[str, JSON]:
    return {f"{r['resourceType']}/{r['id']}": r for r in _resources(bundle)}


def _age_on(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _codes(concept: JSON) -> set[str]:
    return {c["code"] for c in concept.get("coding", [])}


# -- structure and validity --------------------------------------------------------------------
def test_every_entry_validates_against_the_r4_models(record: JSON) -> None:
    get_fhir_model_class("Bundle").model_validate(record)
    for resource in _resources(record):
        # fhir.resources R4B models, JSON types, id length and required code bindings.
        validate_resource(resource, expected_type=resource["resourceType"])


def test_entries_are_puts_with_unique_server_style_ids(record: JSON) -> None:
    assert record["resourceType"] == "Bundle"
    assert record["type"] == "transaction"
    assert len(record["entry"]) == 300
    seen = set()
    for entry in record["entry"]:
        resource = entry["resource"]
        assert "fullUrl" not in entry
        assert FHIR_ID.fullmatch(resource["id"])
        url = f"{resource['resourceType']}/{resource['id']}"
        assert entry["request"] == {"method": "PUT", "url": url}
        assert url not in seen
        seen.add(url)


def test_every_reference_resolves_inside_the_bundle(record: JSON) -> None:
    known = _by_reference(record)
    references = list(_references(_resources(record)))
    assert len(references) > 300
    for reference in references:
        assert not reference.startswith("urn:uuid:")
        assert reference in known, reference


def test_has_every_expected_resource_type(record: JSON) -> None:
    found = counts(record)
    assert set(found) == {
        "Patient",
        "RelatedPerson",
        "Practitioner",
        "Organization",
        "Coverage",
        "AllergyIntolerance",
        "Encounter",
        "Condition",
        "Observation",
        "DiagnosticReport",
        "DocumentReference",
        "Binary",
        "ImagingStudy",
        "Procedure",
        "MedicationRequest",
        "MedicationAdministration",
        "CarePlan",
    }
    assert found["Patient"] == 1
    assert found["Practitioner"] >= 3 and found["Organization"] >= 2
    assert found["Binary"] == found["DocumentReference"]
    assert sum(found.values()) == 300


@pytest.mark.parametrize("cancer", sorted(CANCERS))
def test_fixed_part_is_between_60_and_150_resources(cancer: str) -> None:
    assert 60 <= minimum_resources(cancer) <= 150


@pytest.mark.parametrize("cancer", sorted(CANCERS))
@pytest.mark.parametrize("extra", [0, 1, 2, 5, 13, 14, 15, 777])
def test_count_is_exact(cancer: str, extra: int) -> None:
    size = minimum_resources(cancer) + extra
    assert len(build_outside_record(resources=size, cancer=cancer)["entry"]) == size


def test_five_thousand_resources(big: JSON) -> None:
    bundle = build_outside_record(resources=5000, cancer="osteosarcoma", as_of=AS_OF)
    assert len(bundle["entry"]) == 5000
    assert len({e["request"]["url"] for e in bundle["entry"]}) == 5000
    assert counts(bundle)["Observation"] > 4000


def test_same_arguments_give_the_same_bundle() -> None:
    first = build_outside_record(resources=600, cancer="neuroblastoma", seed=11, as_of=AS_OF)
    again = build_outside_record(resources=600, cancer="neuroblastoma", seed=11, as_of=AS_OF)
    assert first == again
    other = build_outside_record(resources=600, cancer="neuroblastoma", seed=12, as_of=AS_OF)
    assert other != first
    assert patient_id(other) != patient_id(first)


def test_ids_differ_between_cancers_and_seeds() -> None:
    urls = [
        {e["request"]["url"] for e in build_outside_record(resources=200, cancer=c)["entry"]}
        for c in CANCERS
    ]
    urls.append({e["request"]["url"] for e in build_outside_record(resources=200, seed=8)["entry"]})
    assert sum(len(u) for u in urls) == len(set().union(*urls))


# -- the child -------------------------------------------------------------------------------
def test_medulloblastoma_patient_is_a_child(big: JSON) -> None:
    (patient,) = _resources(big, "Patient")
    age = _age_on(date.fromisoformat(patient["birthDate"]), AS_OF)
    assert 2 <= age <= 17
    assert CANCERS["medulloblastoma"].age_range[0] <= age <= CANCERS["medulloblastoma"].age_range[1]
    assert patient_id(big) == patient["id"]
    (mrn,) = patient["identifier"]
    assert mrn["system"] == f"{DEFAULT_SOURCE}/mrn"
    assert _codes(mrn["type"]) == {"MR"}
    assert patient["gender"] in ("male", "female")
    assert patient["name"][0]["family"] and patient["address"] and patient["telecom"]


def test_every_cancer_gives_a_child_aged_2_to_17(record: JSON) -> None:
    (patient,) = _resources(record, "Patient")
    assert 2 <= _age_on(date.fromisoformat(patient["birthDate"]), AS_OF) <= 17
    (guardian,) = _resources(record, "RelatedPerson")
    assert guardian["patient"]["reference"] == f"Patient/{patient['id']}"


def test_source_names_the_identifier_systems() -> None:
    bundle = build_outside_record(resources=150, source="https://ehr.elsewhere.example")
    (patient,) = _resources(bundle, "Patient")
    assert patient["identifier"][0]["system"] == "https://ehr.elsewhere.example/mrn"
    assert {r["meta"]["source"] for r in _resources(bundle)} == {"https://ehr.elsewhere.example"}


# -- clinical content --------------------------------------------------------------------------
def test_primary_condition_carries_the_cancer_codes(record: JSON) -> None:
    conditions = _resources(record, "Condition")
    cancers = [
        c for c in conditions if c["category"][0]["coding"][0]["code"] == "problem-list-item"
    ]
    (cancer,) = cancers
    profile = next(p for p in CANCERS.values() if p.text == cancer["code"]["text"])
    systems = {c["system"]: c["code"] for c in cancer["code"]["coding"]}
    assert systems[ICD10CM] == profile.icd10.code
    assert cancer["stage"][0]["summary"]["text"] == profile.stage
    assert cancer["note"][0]["text"] and "extension" not in cancer
    assert len(conditions) >= 4
    assert any("409089005" in _codes(c["code"]) for c in conditions)  # febrile neutropenia


def test_labs_carry_ucum_units_ranges_and_interpretations(big: JSON) -> None:
    labs = [
        o
        for o in _resources(big, "Observation")
        if o["category"][0]["coding"][0]["code"] == "laboratory" and "valueQuantity" in o
    ]
    assert len(labs) > 500
    for lab in labs:
        value = lab["valueQuantity"]
        assert value["system"] == UCUM and value["code"]
        assert lab["code"]["coding"][0]["system"] == LOINC
        (reference_range,) = lab["referenceRange"]
        assert reference_range["low"]["code"] == value["code"]
        (interpretation,) = lab["interpretation"]
        assert _codes(interpretation) <= {"H", "L", "N"}
    assert {code for lab in labs for code in _codes(lab["interpretation"][0])} == {"H", "L", "N"}
    assert {lab["valueQuantity"]["code"] for lab in labs} >= {"10*3/uL", "g/dL", "mmol/L"}
    assert len({lab["effectiveDateTime"][:10] for lab in labs}) > 50


def test_vital_signs(big: JSON) -> None:
    vitals = [
        o
        for o in _resources(big, "Observation")
        if o["category"][0]["coding"][0]["code"] == "vital-signs"
    ]
    by_code = Counter(v["code"]["coding"][0]["code"] for v in vitals)
    assert set(by_code) >= {"8867-4", "8310-5", "29463-7", "8302-2", "85354-9"}
    for vital in vitals:
        if vital["code"]["coding"][0]["code"] == "85354-9":
            assert "valueQuantity" not in vital
            parts = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in vital["component"]}
            assert set(parts) == {"8480-6", "8462-4"}
            assert parts["8480-6"]["code"] == "mm[Hg]"
            assert parts["8480-6"]["value"] > parts["8462-4"]["value"]
        else:
            assert vital["valueQuantity"]["system"] == UCUM


def test_diagnostic_reports(record: JSON) -> None:
    known = _by_reference(record)
    reports = _resources(record, "DiagnosticReport")
    categories = Counter(r["category"][0]["coding"][0]["code"] for r in reports)
    assert categories["SP"] == 1 and categories["GE"] == 1 and categories["RAD"] >= 3
    assert categories["LAB"] >= 5
    for report in reports:
        if report["code"]["coding"][0]["code"] in LAB_PANELS:
            assert report["result"]
        for result in report.get("result", []):
            assert known[result["reference"]]["resourceType"] == "Observation"
        if report["category"][0]["coding"][0]["code"] in ("SP", "RAD", "GE"):
            assert report["conclusion"]
        if report["category"][0]["coding"][0]["code"] == "RAD":
            (study,) = report["imagingStudy"]
            assert known[study["reference"]]["resourceType"] == "ImagingStudy"


def test_imaging_studies(record: JSON) -> None:
    studies = _resources(record, "ImagingStudy")
    assert studies
    for study in studies:
        uid = next(i["value"] for i in study["identifier"] if i["system"] == "urn:dicom:uid")
        assert re.fullmatch(r"urn:oid:2\.25\.[1-9][0-9]*", uid) and len(uid) <= 72
        assert study["numberOfSeries"] == len(study["series"])
        assert study["numberOfInstances"] == sum(s["numberOfInstances"] for s in study["series"])
        for series in study["series"]:
            assert series["modality"]["code"] in {"MR", "CT", "PT", "NM", "DX"}
            assert re.fullmatch(r"2\.25\.[1-9][0-9]*", series["uid"])


def test_all_cancers_together_cover_mr_ct_and_pet() -> None:
    modalities = {
        series["modality"]["code"]
        for cancer in CANCERS
        for study in _resources(build_outside_record(resources=150, cancer=cancer), "ImagingStudy")
        for series in study["series"]
    }
    assert modalities >= {"MR", "CT", "PT"}


def test_documents_point_to_their_binaries(record: JSON) -> None:
    known = _by_reference(record)
    documents = _resources(record, "DocumentReference")
    kinds = {code for d in documents for code in _codes(d["type"])}
    assert kinds >= {"18748-4", "18776-5", "18842-5"}
    assert kinds & {"11504-8", "28570-0"}  # an operative or procedure note
    content_types = set()
    for document in documents:
        (content,) = document["content"]
        attachment = content["attachment"]
        binary = known[attachment["url"]]
        assert binary["resourceType"] == "Binary"
        data = base64.b64decode(binary["data"])
        assert attachment["size"] == len(data)
        assert attachment["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
        assert binary["contentType"] == attachment["contentType"]
        content_types.add(attachment["contentType"])
        if attachment["contentType"] == "application/pdf":
            assert data.startswith(b"%PDF-1.4\n") and data.endswith(b"%%EOF\n")
            startxref = int(data.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
            assert data[startxref:].startswith(b"xref\n")
        else:
            assert b"SYNTHETIC" in data
    assert content_types == {"application/pdf", "text/plain; charset=utf-8"}


def test_chemotherapy_orders_and_administrations(record: JSON) -> None:
    known = _by_reference(record)
    requests = _resources(record, "MedicationRequest")
    administrations = _resources(record, "MedicationAdministration")
    assert requests and len(requests) == len(administrations)
    for administration in administrations:
        request = known[administration["request"]["reference"]]
        assert request["resourceType"] == "MedicationRequest"
        assert administration["dosage"]["dose"]["system"] == UCUM
        assert administration["effectivePeriod"]["start"] > request["authoredOn"]
    (plan,) = _resources(record, "CarePlan")
    assert {a["reference"]["reference"] for a in plan["activity"]} == {
        f"MedicationRequest/{r['id']}" for r in requests
    }


def test_procedures_include_a_biopsy_or_resection_and_a_central_line(record: JSON) -> None:
    texts = " ".join(p["code"]["text"].lower() for p in _resources(record, "Procedure"))
    assert "venous" in texts
    assert any(word in texts for word in ("biopsy", "resection"))


# -- time ------------------------------------------------------------------------------------
def test_last_updated_spreads_over_the_two_years_before_as_of(big: JSON) -> None:
    start = datetime.combine(AS_OF - timedelta(days=730), datetime.min.time(), UTC)
    end = datetime.combine(AS_OF, datetime.min.time(), UTC)
    stamps = [
        datetime.strptime(r["meta"]["lastUpdated"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        for r in _resources(big)
    ]
    assert all(start <= s < end for s in stamps)
    recent = sum(s >= end - timedelta(days=70) for s in stamps)
    assert 0.05 * len(stamps) < recent < 0.2 * len(stamps)  # about 70/700 of the record
    assert min(stamps) < start + timedelta(days=30) and max(stamps) > end - timedelta(days=2)


# -- options and errors ------------------------------------------------------------------------
def test_dangling_references_name_one_missing_practitioner() -> None:
    bundle = build_outside_record(resources=400, cancer="hodgkin-lymphoma", dangling=7)
    known = _by_reference(bundle)
    missing = dangling_reference(cancer="hodgkin-lymphoma")
    assert missing.startswith("Practitioner/") and missing not in known
    holders = []
    for resource in _resources(bundle):
        unresolved = {r for r in _references(resource) if r not in known}
        if unresolved:
            assert unresolved == {missing}
            holders.append(resource)
    assert len(holders) == 7
    assert {h["resourceType"] for h in holders} == {"Observation"}
    assert len(bundle["entry"]) == 400
    for holder in holders:
        validate_resource(holder)


def test_contained_medication() -> None:
    bundle = build_outside_record(resources=200, cancer="b-all-relapsed", with_contained=True)
    requests = _resources(bundle, "MedicationRequest")
    first = requests[0]
    assert first["medicationReference"] == {"reference": "#med1"}
    assert "medicationCodeableConcept" not in first
    (medication,) = first["contained"]
    assert medication["resourceType"] == "Medication" and medication["id"] == "med1"
    validate_resource(first)
    assert all("contained" not in r for r in requests[1:])


def test_errors() -> None:
    with pytest.raises(ValueError, match="Unknown cancer"):
        build_outside_record(cancer="glioma")
    with pytest.raises(ValueError, match="at least"):
        build_outside_record(resources=minimum_resources() - 1)
    with pytest.raises(ValueError, match="dangling"):
        build_outside_record(resources=minimum_resources() + 3, dangling=4)
    with pytest.raises(ValueError, match="dangling"):
        build_outside_record(dangling=-1)
    with pytest.raises(ValueError, match="no Patient"):
        patient_id({"resourceType": "Bundle", "entry": []})


@pytest.mark.parametrize("cancer", sorted(CANCERS))
def test_cancer_profiles_are_consistent(cancer: str) -> None:
    profile = CANCERS[cancer]
    assert profile.key == cancer
    assert profile.icd10.system == ICD10CM
    assert 2 <= profile.age_range[0] <= profile.age_range[1] <= 17
    for agents in profile.cycles:
        for agent in agents:
            profile.drug(agent)  # every drug of a cycle is described
    assert profile.imaging and profile.procedures and profile.molecular
