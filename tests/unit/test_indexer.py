"""hub.storage.indexer: the search-index rows extracted from a resource."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from hub.fhir.dates import EARLIEST, LATEST
from hub.fhir.search_parameters import SearchParameter
from hub.storage import indexer
from hub.storage.indexer import (
    ANY_REFERENCE,
    IndexValue,
    index_values,
    normalise_text,
    split_reference,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


def rows(resource: dict[str, Any], param: str) -> set[IndexValue]:
    """The index rows of `resource` (typed by its resourceType) for one parameter."""
    return {row for row in index_values(resource["resourceType"], resource) if row.param == param}


def pairs(resource: dict[str, Any], param: str) -> set[tuple[str | None, str | None]]:
    """(system, value): a token's system and code, or a reference's target type and id."""
    return {(row.system, row.value) for row in rows(resource, param)}


def strings(resource: dict[str, Any], param: str) -> set[str | None]:
    return {row.value for row in rows(resource, param)}


def dates(resource: dict[str, Any], param: str) -> set[tuple[datetime | None, datetime | None]]:
    return {(row.low, row.high) for row in rows(resource, param)}


def observation(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **elements}


# -- tokens ----------------------------------------------------------------------------


def test_token_from_identifier_keeps_system_and_value() -> None:
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:oid:1.2.3", "value": "A-1"},
            {"value": "no-system"},
            {"system": "urn:oid:1.2.3"},  # no value: nothing to find it by
        ],
    }
    assert pairs(patient, "identifier") == {("urn:oid:1.2.3", "A-1"), (None, "no-system")}


def test_token_from_codeable_concept_indexes_every_coding() -> None:
    resource = observation(
        code={
            "coding": [
                {"system": LOINC, "code": "8867-4", "display": "Heart rate"},
                {"system": SNOMED, "code": "364075005"},
                {"code": "local"},
            ],
            "text": "Heart rate",
        }
    )
    assert pairs(resource, "code") == {(LOINC, "8867-4"), (SNOMED, "364075005"), (None, "local")}


def test_token_from_list_of_codeable_concepts() -> None:
    resource = observation(
        category=[
            {"coding": [{"system": "cat", "code": "vital-signs"}]},
            {"coding": [{"system": "cat", "code": "laboratory"}]},
        ]
    )
    assert pairs(resource, "category") == {("cat", "vital-signs"), ("cat", "laboratory")}


def test_codeable_concept_with_text_only_gives_no_token() -> None:
    assert pairs(observation(code={"text": "Heart rate"}), "code") == set()


def test_token_from_coding() -> None:
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
    }
    assert pairs(event, "type") == {("http://dicom.nema.org/resources/ontology/DCM", "110110")}


def test_token_from_code_string() -> None:
    assert pairs(observation(), "status") == {(None, "final")}
    assert pairs({"resourceType": "Patient", "gender": "female"}, "gender") == {(None, "female")}


def test_token_from_boolean_is_lower_case(monkeypatch: pytest.MonkeyPatch) -> None:
    active = SearchParameter("active", "token", "Patient.active")
    monkeypatch.setattr(indexer, "search_parameters", lambda: {"Patient": {"active": active}})
    assert pairs({"resourceType": "Patient", "active": True}, "active") == {(None, "true")}
    assert pairs({"resourceType": "Patient", "active": False}, "active") == {(None, "false")}


def test_repeated_values_are_indexed_once() -> None:
    identifier = {"system": "s", "value": "v"}
    patient = {"resourceType": "Patient", "identifier": [identifier, dict(identifier)]}
    values = [row for row in index_values("Patient", patient) if row.param == "identifier"]
    assert values == [IndexValue("identifier", system="s", value="v")]


# -- strings ---------------------------------------------------------------------------


def test_strings_from_human_name_are_each_part_normalised() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [
            {"text": "Anna  Maria Müller", "family": "Müller", "given": ["Anna", "MARIA"]},
            {"family": "Smith"},
        ],
    }
    assert strings(patient, "name") == {"anna maria müller", "müller", "anna", "maria", "smith"}
    assert strings(patient, "family") == {"müller", "smith"}
    assert strings(patient, "given") == {"anna", "maria"}


def test_string_from_plain_string() -> None:
    assert strings({"resourceType": "Organization", "name": " Kinder  Klinik "}, "name") == {
        "kinder klinik"
    }


def test_normalise_text_folds_case_collapses_space_and_truncates() -> None:
    assert normalise_text("  Straße\tVON  Goethe ") == "strasse von goethe"
    assert len(normalise_text("x" * 300)) == 255


# -- references ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "target"),
    [
        ("Patient/p1", ("Patient", "p1")),
        ("Patient/p1/_history/3", ("Patient", "p1")),
        ("https://other.example/fhir/Patient/p1", ("Patient", "p1")),
        ("https://other.example/fhir/Patient/p1/_history/2", ("Patient", "p1")),
        ("#contained", None),
        ("urn:uuid:0b7a0f7c-1a1b-4c5d-8e9f-000000000001", None),
        ("urn:oid:1.2.3.4", None),
        ("Patient", None),
        ("Patient/", None),
        ("patient/p1", None),
    ],
)
def test_split_reference(reference: str, target: tuple[str, str] | None) -> None:
    assert split_reference(reference) == target


def test_reference_parameters_index_target_type_and_id() -> None:
    resource = observation(
        subject={"reference": "https://other.example/fhir/Patient/p1/_history/2"},
        basedOn=[{"reference": "ServiceRequest/sr1"}, {"reference": "CarePlan/cp1"}],
    )
    assert pairs(resource, "subject") == {("Patient", "p1")}
    assert pairs(resource, "patient") == {("Patient", "p1")}
    assert pairs(resource, "based-on") == {("ServiceRequest", "sr1"), ("CarePlan", "cp1")}


def test_reference_parameter_with_target_types_skips_other_types() -> None:
    resource = observation(subject={"reference": "Group/g1"})
    assert pairs(resource, "subject") == {("Group", "g1")}
    assert pairs(resource, "patient") == set()


def test_reference_without_a_reference_string_is_not_indexed() -> None:
    resource = observation(subject={"identifier": {"system": "s", "value": "v"}, "display": "X"})
    assert pairs(resource, "subject") == set()
    assert pairs(resource, ANY_REFERENCE) == set()


def test_every_reference_is_indexed_as_any_reference() -> None:
    resource = observation(
        subject={"reference": "Patient/p1"},
        performer=[{"reference": "Practitioner/dr1"}],
        hasMember=[{"reference": "Observation/o2/_history/1"}],
        note=[{"authorReference": {"reference": "RelatedPerson/rp1"}, "text": "n"}],
        extension=[{"url": "http://x", "valueReference": {"reference": "Organization/org1"}}],
    )
    assert pairs(resource, ANY_REFERENCE) == {
        ("Patient", "p1"),
        ("Practitioner", "dr1"),
        ("Observation", "o2"),
        ("RelatedPerson", "rp1"),
        ("Organization", "org1"),
    }


def test_contained_and_urn_references_are_not_indexed() -> None:
    resource = observation(
        contained=[
            {
                "resourceType": "Patient",
                "id": "c1",
                "link": [{"other": {"reference": "Patient/inside"}, "type": "seealso"}],
            }
        ],
        subject={"reference": "#c1"},
        basedOn=[{"reference": "urn:uuid:0b7a0f7c-1a1b-4c5d-8e9f-000000000001"}],
        performer=[{"reference": "urn:oid:1.2.3"}],
    )
    assert pairs(resource, "subject") == set()
    assert pairs(resource, "based-on") == set()
    assert pairs(resource, ANY_REFERENCE) == set()


# -- dates -----------------------------------------------------------------------------


def test_date_from_date_time_is_its_range_in_utc() -> None:
    resource = observation(effectiveDateTime="2024-03-05T10:30:00+01:00")
    assert dates(resource, "date") == {
        (datetime(2024, 3, 5, 9, 30), datetime(2024, 3, 5, 9, 30, 1))
    }


def test_date_from_imprecise_date() -> None:
    patient = {"resourceType": "Patient", "birthDate": "2017-03"}
    assert dates(patient, "birthdate") == {(datetime(2017, 3, 1), datetime(2017, 4, 1))}


def test_date_from_instant() -> None:
    resource = observation(effectiveInstant="2024-03-05T10:30:00.250Z")
    assert dates(resource, "date") == {
        (datetime(2024, 3, 5, 10, 30, 0, 250000), datetime(2024, 3, 5, 10, 30, 0, 250001))
    }


@pytest.mark.parametrize(
    ("period", "low", "high"),
    [
        (
            {"start": "2024-02-20", "end": "2024-03-10"},
            datetime(2024, 2, 20),
            datetime(2024, 3, 11),
        ),
        ({"start": "2024-02"}, datetime(2024, 2, 1), LATEST),
        ({"end": "2024-03-10T12:00:00Z"}, EARLIEST, datetime(2024, 3, 10, 12, 0, 1)),
        ({"start": "2024-01-01", "end": "9999-12-31"}, datetime(2024, 1, 1), LATEST),
    ],
    ids=["closed", "open-end", "open-start", "far-future-end"],
)
def test_date_from_period(period: dict[str, str], low: datetime, high: datetime) -> None:
    assert dates(observation(effectivePeriod=period), "date") == {(low, high)}


def test_choice_types_that_are_not_dates_are_not_indexed() -> None:
    resource = observation(effectiveTiming={"event": ["2024-03-05"]})
    assert dates(resource, "date") == set()
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "onsetString": "in childhood",
        "recordedDate": "2020-02-02",
    }
    assert dates(condition, "onset-date") == set()
    assert dates(condition, "recorded-date") == {(datetime(2020, 2, 2), datetime(2020, 2, 3))}


def test_absent_elements_give_no_rows() -> None:
    assert index_values("Patient", {"resourceType": "Patient"}) == []
