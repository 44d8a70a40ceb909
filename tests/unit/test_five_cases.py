"""Unit tests of the five synthetic cases (hub.demo.five_cases): no network. The HL7 v2
messages are mapped by the hub's own mapping engine and the DICOM studies read by its own
instance reader, so the intended overlaps are checked as the hub will see them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse
from pydicom import dcmwrite

from dicom.imaging_study import build_imaging_study
from dicom.instances import read_instance
from dicom.reconcile import HubIdentity, demographic_differences
from hub.demo.five_cases import FIVE_CANCERS, OutsideCase, Overlap, build_case
from hub.demo.outside.cancers import CANCERS
from hub.fhir.validation import validate_resource
from mappings.engine import map_message
from mappings.hl7v2.tokenizer import parse_message
from tests.five_patients import (
    has_code,
    matches,
    moment,
    near_duplicates,
    resources_of,
    unresolved_references,
)

JSON = dict[str, Any]


@pytest.fixture(scope="module")
def cases() -> dict[str, OutsideCase]:
    return {cancer: build_case(cancer) for cancer in FIVE_CANCERS}


@pytest.fixture(scope="module", params=FIVE_CANCERS)
def case(request: pytest.FixtureRequest, cases: dict[str, OutsideCase]) -> OutsideCase:
    return cases[request.param]


def hl7_resources(case: OutsideCase) -> list[JSON]:
    """What the hub's mapping makes of the case's HL7 v2 messages."""
    return [
        entry["resource"]
        for message in case.hl7.values()
        for entry in map_message(parse_message(message)).bundle["entry"]
    ]


def dicom_bytes(case: OutsideCase) -> list[bytes]:
    out = []
    for datasets in case.dicom.values():
        for ds in datasets:
            buffer = io.BytesIO()
            dcmwrite(buffer, ds, enforce_file_format=True)
            out.append(buffer.getvalue())
    return out


def imaging_studies(case: OutsideCase, folder: Path) -> list[JSON]:
    """The ImagingStudy the hub builds of each DICOM study (as its importer reads them)."""
    studies = []
    for uid, datasets in case.dicom.items():
        infos = []
        for ds in datasets:
            path = folder / uid / f"{ds.SOPInstanceUID}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            dcmwrite(path, ds, enforce_file_format=True)
            infos.append(read_instance(path)[1])
        studies.append(
            build_imaging_study(
                infos, patient_reference="Patient/p", based_on=None, endpoint_reference=None
            )
        )
    return studies


def test_the_same_seed_gives_the_same_case_byte_for_byte(case: OutsideCase) -> None:
    again = build_case(case.cancer)
    assert again.record == case.record
    assert again.referral == case.referral
    assert again.hl7 == case.hl7
    assert dicom_bytes(again) == dicom_bytes(case)
    assert (again.overlaps, again.near_duplicate) == (case.overlaps, case.near_duplicate)


def test_another_seed_gives_another_child() -> None:
    one, other = build_case("osteosarcoma", seed=7), build_case("osteosarcoma", seed=8)
    assert one.mrn != other.mrn
    assert one.hl7["ORU^R01"] != other.hl7["ORU^R01"]
    assert not set(one.dicom) & set(other.dicom)


def test_the_five_cancers_are_five_distinct_children(cases: dict[str, OutsideCase]) -> None:
    assert set(FIVE_CANCERS) <= set(CANCERS)
    found = list(cases.values())
    assert len({c.mrn for c in found}) == 5
    assert len({c.profile.icd10.code for c in found}) == 5
    assert len({uid for c in found for uid in c.dicom}) == 10
    assert len({m for c in found for m in c.hl7.values()}) == 15
    referrals = [c.referral_request["identifier"][0]["value"] for c in found]
    assert len(set(referrals)) == 5
    for c in found:
        reason = c.referral_request["reasonCode"][0]
        assert has_code({"code": reason}, c.profile.icd10.system, c.profile.icd10.code)


def test_unknown_cancers_are_refused() -> None:
    with pytest.raises(ValueError, match="Unknown cancer"):
        build_case("retinoblastoma")


def test_the_fhir_part_is_valid_fhir_and_self_contained(case: OutsideCase) -> None:
    for resource in resources_of(case.record):
        validate_resource(resource, expected_type=resource["resourceType"])
    for resource in resources_of(case.referral):
        validate_resource(resource, expected_type=resource["resourceType"])
    assert unresolved_references(case.record) == []
    loinc = {
        r["code"]["coding"][0]["code"]
        for r in resources_of(case.record)
        if r["resourceType"] == "Observation"
    }
    assert {"21908-9", case.overlaps[-1].code[1]} <= loinc  # stage group, tumour marker


def test_the_referral_opens_a_case_for_the_records_child(case: OutsideCase) -> None:
    entries = case.referral["entry"]
    assert [e["request"]["method"] for e in entries] == ["POST"] * 3
    assert all(e["request"]["ifNoneExist"].startswith("identifier=") for e in entries)
    patient = entries[0]["resource"]
    assert patient["identifier"][0]["value"] == case.mrn
    assert patient["birthDate"] == case.patient["birthDate"]
    referral = case.referral_request
    assert referral["subject"]["reference"] == entries[0]["fullUrl"]
    assert referral["requester"]["reference"] == entries[1]["fullUrl"]
    assert len(referral["note"]) >= 2


def test_the_hl7_messages_parse_with_hl7apy_and_name_the_same_child(case: OutsideCase) -> None:
    assert list(case.hl7) == ["ADT^A04", "ORU^R01", "MDM^T02"]
    for trigger, raw in case.hl7.items():
        message = hl7apy_parse(
            raw.decode("utf-8").rstrip("\r"),
            validation_level=VALIDATION_LEVEL.STRICT,
            force_validation=True,
        )
        assert message.msh.msh_9.msh_9_1.value + "^" + message.msh.msh_9.msh_9_2.value == trigger
        assert message.msh.msh_12.value == "2.5.1"
    patients = [r for r in hl7_resources(case) if r["resourceType"] == "Patient"]
    record_mrn = case.patient["identifier"][0]
    assert all(
        p["identifier"][0]["system"] == record_mrn["system"]
        and p["identifier"][0]["value"] == case.mrn
        and p["birthDate"] == case.patient["birthDate"]
        for p in patients
    )
    assert len(patients) == 3


def test_the_dicom_studies_are_valid_for_the_same_child(case: OutsideCase, tmp_path) -> None:
    name = case.patient["name"][0]
    identity = HubIdentity(
        patient_id="hub-1",
        issuer="SECOND-OPINION-HUB",
        family=name["family"],
        given=" ".join(name["given"]),
        birth_date=case.patient["birthDate"].replace("-", ""),
        sex={"female": "F", "male": "M"}[case.patient["gender"]],
    )
    for uid, datasets in case.dicom.items():
        for ds in datasets:
            path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
            dcmwrite(path, ds, enforce_file_format=True)
            header, info = read_instance(path)  # the hub's own check of an instance
            assert (header.PatientID, info.study_instance_uid) == (case.mrn, uid)
            assert demographic_differences(header, identity) == []
    assert case.pacs_only_study in case.dicom


def _copies(overlap: Overlap, channel: str, case: OutsideCase, folder: Path) -> list[JSON]:
    by_channel = {
        "fhir": lambda: resources_of(case.record),
        "referral": lambda: resources_of(case.referral),
        "hl7": lambda: hl7_resources(case),
        "dicom": lambda: imaging_studies(case, folder),
    }
    return [r for r in by_channel[channel]() if matches(r, overlap)]


def test_each_overlap_is_sent_once_by_each_of_its_channels(
    case: OutsideCase, tmp_path: Path
) -> None:
    assert {o.resource_type for o in case.overlaps} == {
        "Practitioner",
        "DocumentReference",
        "ImagingStudy",
        "DiagnosticReport",
        "Observation",
    }
    for overlap in case.overlaps:
        for channel in overlap.channels:
            found = _copies(overlap, channel, case, tmp_path / channel)
            assert len(found) == 1, (overlap.label, channel, len(found))


def test_overlapping_results_share_code_instant_value_and_unit(case: OutsideCase) -> None:
    """Times differ in writing (the record's local time, the laboratory's UTC) but not as
    instants; values and UCUM units are the same."""
    mapped = hl7_resources(case)
    for overlap in case.overlaps:
        if overlap.resource_type != "Observation":
            continue
        (fhir,) = [r for r in resources_of(case.record) if matches(r, overlap)]
        (hl7,) = [r for r in mapped if matches(r, overlap)]
        assert fhir["effectiveDateTime"] != hl7["effectiveDateTime"]
        assert moment(fhir["effectiveDateTime"]) == moment(hl7["effectiveDateTime"])
        assert fhir["valueQuantity"] == hl7["valueQuantity"]


def test_the_near_duplicate_differs_only_in_value(case: OutsideCase) -> None:
    near = case.near_duplicate
    (fhir,) = near_duplicates(resources_of(case.record), case)
    (hl7,) = near_duplicates(hl7_resources(case), case)
    assert moment(fhir["effectiveDateTime"]) == moment(hl7["effectiveDateTime"])
    assert fhir["valueQuantity"]["code"] == hl7["valueQuantity"]["code"] == near.unit
    assert (fhir["valueQuantity"]["value"], hl7["valueQuantity"]["value"]) == (
        near.fhir_value,
        near.hl7_value,
    )
    assert near.fhir_value != near.hl7_value
