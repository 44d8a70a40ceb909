"""demographic_differences: tolerant where people are inconsistent, strict where it matters."""

from __future__ import annotations

import warnings

import pytest
from pydicom.dataset import Dataset

from dicom.reconcile import HubIdentity, demographic_differences

CASE = HubIdentity(
    "HUB-0042", "SECOND-OPINION-HUB", family="Müller", given="Łukas", birth_date="20150304", sex="M"
)


def _study(name: str | None = None, birth: str | None = None, sex: str | None = None) -> Dataset:
    ds = Dataset()
    # Some values are malformed on purpose (a lower-case sex, a date with letters).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if name is not None:
            ds.PatientName = name
        if birth is not None:
            ds.PatientBirthDate = birth
        if sex is not None:
            ds.PatientSex = sex
    return ds


CASES: list[tuple[str, Dataset, HubIdentity, list[str]]] = [
    ("identical", _study("Müller^Łukas", "20150304", "M"), CASE, []),
    ("case and accents", _study("MULLER^LUKAS", "20150304", "M"), CASE, []),
    ("lower case", _study("müller^łukas", "20150304", "m"), CASE, []),
    ("components swapped", _study("Lukas^Muller", "20150304", "M"), CASE, []),
    ("all in the family component", _study("MULLER LUKAS"), CASE, []),
    ("a middle name the case lacks", _study("Muller^Lukas^Jan"), CASE, []),
    ("an initial", _study("Muller^L"), CASE, []),
    ("prefix and suffix ignored", _study("Muller^Lukas^^Dr^Jr"), CASE, []),
    ("ideographic group ignored", _study("Muller^Lukas=ミュラー^ルーカス"), CASE, []),
    (
        "one part of a double family name",
        _study("García^Ana"),
        HubIdentity("H", "I", family="García López", given="Ana"),
        [],
    ),
    (
        "hyphen or space",
        _study("Smith-Jones^Ann"),
        HubIdentity("H", "I", family="Smith Jones", given="Ann"),
        [],
    ),
    ("no name in the study", _study(None, "20150304", "M"), CASE, []),
    ("empty name in the study", _study("", "20150304", "M"), CASE, []),
    ("no name in the case", _study("Other^Child"), HubIdentity("H", "I"), []),
    ("nothing on either side", _study(), HubIdentity("H", "I"), []),
    ("no birth date in the study", _study("Muller^Lukas", None, "M"), CASE, []),
    ("no sex in the study", _study("Muller^Lukas", "20150304", ""), CASE, []),
    (
        "another family name",
        _study("Schmidt^Lukas", "20150304", "M"),
        CASE,
        ["family name differs: study 'Schmidt', case 'Müller'"],
    ),
    (
        "another given name",
        _study("Muller^Jonas", "20150304", "M"),
        CASE,
        ["given name differs: study 'Jonas', case 'Łukas'"],
    ),
    (
        "another birth date",
        _study("Muller^Lukas", "20150403", "M"),
        CASE,
        ["birth date differs: study 2015-04-03, case 2015-03-04"],
    ),
    (
        "a birth date that is not a date",
        _study("Muller^Lukas", "2015XX04", "M"),
        CASE,
        ["birth date differs: study '2015XX04' (not a date), case 2015-03-04"],
    ),
    (
        "another sex",
        _study("Muller^Lukas", "20150304", "F"),
        CASE,
        ["sex differs: study F, case M"],
    ),
    (
        "another child altogether",
        _study("Schmidt^Mia", "20170101", "F"),
        CASE,
        [
            "family name differs: study 'Schmidt', case 'Müller'",
            "given name differs: study 'Mia', case 'Łukas'",
            "birth date differs: study 2017-01-01, case 2015-03-04",
            "sex differs: study F, case M",
        ],
    ),
]


@pytest.mark.parametrize(
    ("study", "identity", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_demographic_differences(
    study: Dataset, identity: HubIdentity, expected: list[str]
) -> None:
    assert demographic_differences(study, identity) == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"patient_id": "", "issuer": "I"},
        {"patient_id": "P", "issuer": " "},
        {"patient_id": "P", "issuer": "I", "birth_date": "2015-13-01"},
        {"patient_id": "P", "issuer": "I", "birth_date": "15"},
        {"patient_id": "P", "issuer": "I", "sex": "X"},
        {"patient_id": "P", "issuer": "I", "family": "Doe^John"},
        {"patient_id": "P\\Q", "issuer": "I"},
    ],
)
def test_a_malformed_identity_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        HubIdentity(**fields)


def test_dicom_name_of_an_identity() -> None:
    assert CASE.dicom_name == "Müller^Łukas"
    assert HubIdentity("P", "I", family="Doe").dicom_name == "Doe"
    assert HubIdentity("P", "I", given="Jane").dicom_name == "^Jane"
    assert HubIdentity("P", "I").dicom_name is None
