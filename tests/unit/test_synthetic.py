"""Unit tests for the synthetic pediatric oncology data generator (no network, no DB)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hub import codes
from hub.demo.synthetic import (
    DEFAULT_AS_OF,
    build_patient_records,
    build_referral,
    referral_identifier,
)

AS_OF = date(2026, 11, 1)


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return build_patient_records(7, as_of=AS_OF)


def _resources(bundle: dict[str, Any], resource_type: str) -> list[dict[str, Any]]:
    return [
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type
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


def _age_on(birth: date, on: date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def test_default_as_of_is_the_documented_date() -> None:
    assert DEFAULT_AS_OF == AS_OF


def test_bundle_is_transaction_and_validates(bundle: dict[str, Any]) -> None:
    assert bundle["type"] == "transaction"
    get_fhir_model_class("Bundle").model_validate(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_bundle_has_expected_resource_types(bundle: dict[str, Any]) -> None:
    types = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert types >= {
        "Patient",
        "RelatedPerson",
        "Coverage",
        "Organization",
        "Practitioner",
        "Condition",
        "Observation",
        "DiagnosticReport",
        "Procedure",
        "MedicationRequest",
        "MedicationAdministration",
        "DocumentReference",
    }
    rxnorm = {
        c["code"]
        for r in _resources(bundle, "MedicationAdministration")
        for c in r["medicationCodeableConcept"]["coding"]
    }
    assert rxnorm == {"11202", "2555", "3002"}


def test_entries_are_conditional_creates_with_unique_urn_uuids(bundle: dict[str, Any]) -> None:
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(full_urls) == len(set(full_urls))
    conditions = set()
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
        request = entry["request"]
        resource = entry["resource"]
        assert request["method"] == "POST"
        assert request["url"] == resource["resourceType"]
        first = resource["identifier"][0]
        assert request["ifNoneExist"] == f"identifier={first['system']}|{first['value']}"
        conditions.add((request["url"], request["ifNoneExist"]))
    assert len(conditions) == len(bundle["entry"])


def test_urn_uuid_references_resolve(bundle: dict[str, Any]) -> None:
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    refs = list(_references([e["resource"] for e in bundle["entry"]]))
    assert refs
    for ref in refs:
        assert ref.startswith("urn:uuid:")
        assert ref in full_urls


def test_patient_is_nine_on_as_of(bundle: dict[str, Any]) -> None:
    (patient,) = _resources(bundle, "Patient")
    assert _age_on(date.fromisoformat(patient["birthDate"]), AS_OF) == 9
    systems = {i["system"] for i in patient["identifier"]}
    assert codes.HUB_PATIENT_ID_SYSTEM in systems


@pytest.mark.parametrize("as_of", [date(2026, 11, 1), date(2024, 2, 29), date(2030, 1, 1)])
def test_patient_age_for_other_reference_dates(as_of: date) -> None:
    for seed in range(5):
        (patient,) = _resources(build_patient_records(seed, as_of=as_of), "Patient")
        assert _age_on(date.fromisoformat(patient["birthDate"]), as_of) == 9


def test_all_clinical_dates_before_as_of(bundle: dict[str, Any]) -> None:
    keys = (
        "effectiveDateTime",
        "performedDateTime",
        "onsetDateTime",
        "recordedDate",
        "authoredOn",
        "date",
        "issued",
    )
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for key in keys:
            if key in resource:
                assert date.fromisoformat(resource[key][:10]) < AS_OF, (key, resource)
        if "performedPeriod" in resource:
            assert date.fromisoformat(resource["performedPeriod"]["end"]) < AS_OF


def test_same_seed_is_deterministic() -> None:
    assert build_patient_records(7, as_of=AS_OF) == build_patient_records(7, as_of=AS_OF)
    assert build_referral("Patient/1", "Practitioner/2", 7) == build_referral(
        "Patient/1", "Practitioner/2", 7
    )


def test_different_seed_differs() -> None:
    (a,) = _resources(build_patient_records(7, as_of=AS_OF), "Patient")
    (b,) = _resources(build_patient_records(8, as_of=AS_OF), "Patient")
    assert (a["name"], a["identifier"]) != (b["name"], b["identifier"])
    assert referral_identifier(7) != referral_identifier(8)


def test_lab_interpretations_match_reference_ranges(bundle: dict[str, Any]) -> None:
    observations = _resources(bundle, "Observation")
    assert len(observations) == 16
    flags = set()
    for obs in observations:
        value = obs["valueQuantity"]["value"]
        (ref_range,) = obs["referenceRange"]
        low, high = ref_range["low"]["value"], ref_range["high"]["value"]
        expected = "L" if value < low else "H" if value > high else "N"
        (interpretation,) = obs["interpretation"]
        assert interpretation["coding"][0]["code"] == expected
        assert obs["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        flags.add(expected)
    assert {"L", "N"} <= flags  # post-chemo nadirs and recovered counts


def test_cbc_reports_group_observations(bundle: dict[str, Any]) -> None:
    obs_urls = {
        e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    }
    cbc = [
        r
        for r in _resources(bundle, "DiagnosticReport")
        if r["code"]["coding"][0]["code"] == "58410-2"
    ]
    assert len(cbc) == 4
    grouped = {ref["reference"] for r in cbc for ref in r["result"]}
    assert grouped == obs_urls


def test_attachments_decode_to_text(bundle: dict[str, Any]) -> None:
    attachments = [
        c["attachment"] for r in _resources(bundle, "DocumentReference") for c in r["content"]
    ]
    attachments += [
        a for r in _resources(bundle, "DiagnosticReport") for a in r.get("presentedForm", [])
    ]
    assert len(attachments) == 3
    for attachment in attachments:
        assert attachment["contentType"] == "text/plain"
        text = base64.b64decode(attachment["data"]).decode("utf-8")
        assert "SYNTHETIC" in text


def test_referral() -> None:
    referral = build_referral("Patient/p1", "Practitioner/d1", 7, as_of=AS_OF)
    get_fhir_model_class("ServiceRequest").model_validate(referral)
    assert referral["status"] == "active"
    assert referral["intent"] == "order"
    assert referral["subject"] == {"reference": "Patient/p1"}
    assert referral["requester"] == {"reference": "Practitioner/d1"}
    codings = [c for cat in referral["category"] for c in cat["coding"]]
    assert {"system": codes.CASE_CATEGORY_SYSTEM, "code": codes.SECOND_OPINION} in codings
    system, value = referral_identifier(7)
    assert referral["identifier"] == [{"system": system, "value": value}]
    assert len(referral["note"]) == 3
    assert all(note["text"].endswith("?") for note in referral["note"])
    assert date.fromisoformat(referral["authoredOn"][:10]) < AS_OF
