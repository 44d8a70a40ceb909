"""dicom.matching: the score of an outside patient against the case's, without identifiers."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicom.matching import THRESHOLD, match_score
from dicom.reconcile import HubIdentity

CASE = HubIdentity("p-1", "HUB", family="Müller", given="Lena", birth_date="20150304", sex="F")


def outside(name: str, birth: str = "", sex: str = "") -> Dataset:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    return ds


@pytest.mark.parametrize(
    ("name", "birth", "sex", "score"),
    [
        ("MULLER^LENA", "20150304", "F", 1.0),  # accents and case are no difference
        ("Müller^L", "20150304", "F", 1.0),  # an initial
        ("Müller^Lena^Marie", "20150304", "", 0.9),  # sex unknown at the source
        ("Müller^Jonas", "20120101", "M", 0.3),  # a sibling
        ("Müller^Lena", "20150305", "F", 0.5),  # a namesake born the next day
        ("Schmidt^Lena", "20150304", "F", 0.7),  # another family, same birthday
        ("Müller^Lena", "", "F", 0.5),  # no birth date at the source: never enough
    ],
)
def test_score(name: str, birth: str, sex: str, score: float) -> None:
    assert match_score(outside(name, birth, sex), CASE) == score


def test_only_birth_date_and_family_name_together_reach_the_threshold() -> None:
    assert match_score(outside("Müller", "20150304"), CASE) >= THRESHOLD
    assert match_score(outside("^Lena", "20150304", "F"), CASE) < THRESHOLD
