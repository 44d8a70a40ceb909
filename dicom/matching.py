"""How well an outside patient (from a study's header or a C-FIND / QIDO-RS answer) matches
the case's patient, when there is no identifier to go by: a score from 0 to 1.

Each attribute that agrees adds its weight; one that is missing on either side adds
nothing, so an answer lacking a birth date never reaches the threshold. The weights make
the birth date and the family name together necessary: a sibling (same family name and sex,
another birth date) and a namesake born elsewhere the same day both stay below it.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicom._demographics import HubIdentity, _parse_date, _same_given, _same_words, _tokens

WEIGHTS = {"birth_date": 0.5, "family": 0.3, "given": 0.1, "sex": 0.1}
THRESHOLD = 0.8


def match_score(ds: Dataset, identity: HubIdentity) -> float:
    """The weights of the demographics on which `ds` and `identity` agree."""
    components = (str(ds.get("PatientName") or "").split("=")[0].split("^") + ["", ""])[:3]
    family, given = _tokens(components[0]), _tokens(f"{components[1]} {components[2]}")
    agree = {
        "family": _same_words(family, _tokens(identity.family or "")),
        "given": bool(given)
        and bool(identity.given)
        and _same_given(given, _tokens(identity.given or "")),
        "birth_date": _parse_date(str(ds.get("PatientBirthDate") or "")) is not None
        and _parse_date(str(ds.get("PatientBirthDate") or ""))
        == _parse_date(identity.birth_date or ""),
        "sex": bool(identity.sex) and str(ds.get("PatientSex") or "").upper() == identity.sex,
    }
    return round(sum(weight for name, weight in WEIGHTS.items() if agree[name]), 3)
