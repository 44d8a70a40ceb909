"""The hub's identity of a case's patient, and whether an outside study's demographics
agree with it (IHE Import Reconciliation: a study that disagrees is held, not attached).

Names are compared the way a person would: case, accents and punctuation do not count,
nor which PN component (Family^Given^Middle) a sender put a name in; a value one side
lacks is not a disagreement.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from pydicom.dataset import Dataset

__all__ = ["HubIdentity", "demographic_differences"]

_SEXES = frozenset({"F", "M", "O"})
# Letters NFKD does not take apart into a base letter and a mark.
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ł": "l", "đ": "d", "ð": "d", "ı": "i"})
_NOT_NAME = re.compile(r"[^\w]+|_")


@dataclass(frozen=True)
class HubIdentity:
    """The patient as the hub knows it: the identifier it assigns and the demographics
    of the case. `birth_date` is YYYYMMDD, `sex` F, M or O (PS3.3 C.7.1.1).

    Raises ValueError for an empty identifier or issuer, a malformed date or sex.
    """

    patient_id: str
    issuer: str
    family: str | None = None
    given: str | None = None
    birth_date: str | None = None
    sex: str | None = None

    def __post_init__(self) -> None:
        if not self.patient_id.strip() or not self.issuer.strip():
            raise ValueError("a hub identity needs a patient id and its issuer")
        for text in (self.patient_id, self.issuer, self.family or "", self.given or ""):
            if "\\" in text or "^" in text or "=" in text:
                raise ValueError("identity values cannot hold DICOM delimiters (\\ ^ =)")
        if self.birth_date is not None and _parse_date(self.birth_date) is None:
            raise ValueError("birth_date must be YYYYMMDD")
        if self.sex is not None and self.sex not in _SEXES:
            raise ValueError("sex must be F, M or O")

    @property
    def dicom_name(self) -> str | None:
        """PatientName in its PN form (Family^Given), None when the hub has no name."""
        if not self.family and not self.given:
            return None
        return f"{self.family or ''}^{self.given}" if self.given else f"{self.family}"


def demographic_differences(ds: Dataset, identity: HubIdentity) -> list[str]:
    """One readable line per disagreement between `ds` and the hub's identity; [] if none.

    The lines quote both values: they are for the case manager who resolves the hold,
    never for a log.
    """
    differences = _name_differences(ds, identity)
    study_text = _value(ds, "PatientBirthDate")
    study_birth = _parse_date(study_text)
    case_birth = _parse_date(identity.birth_date or "")
    if study_text and case_birth and study_birth != case_birth:
        shown = study_birth.isoformat() if study_birth else f"{study_text!r} (not a date)"
        differences.append(f"birth date differs: study {shown}, case {case_birth.isoformat()}")
    study_sex = _value(ds, "PatientSex").upper()
    case_sex = (identity.sex or "").upper()
    if study_sex and case_sex and study_sex != case_sex:
        differences.append(f"sex differs: study {study_sex}, case {case_sex}")
    return differences


def _name_differences(ds: Dataset, identity: HubIdentity) -> list[str]:
    alphabetic = _value(ds, "PatientName").split("=")[0]
    components = (alphabetic.split("^") + [""] * 3)[:3]
    study_family = _tokens(components[0])
    study_given = _tokens(f"{components[1]} {components[2]}")
    case_family = _tokens(identity.family or "")
    case_given = _tokens(identity.given or "")
    study_all, case_all = study_family + study_given, case_family + case_given
    if not study_all or not case_all:
        return []
    # Order tolerant: the same words, whichever component a sender put them in.
    if set(study_all) == set(case_all):
        return []
    if _same_words(study_family, case_given) and _same_words(study_given, case_family):
        return []  # family and given swapped
    lines: list[str] = []
    if study_family and case_family and not _same_words(study_family, case_family):
        lines.append(
            f"family name differs: study {components[0].strip()!r}, case {identity.family!r}"
        )
    if study_given and case_given and not _same_given(study_given, case_given):
        given = " ".join(part for part in components[1:] if part).strip()
        lines.append(f"given name differs: study {given!r}, case {identity.given!r}")
    return lines


def _same_words(left: tuple[str, ...], right: tuple[str, ...]) -> bool:
    # A double family name recorded with one of its parts is the same family name.
    return bool(left) and bool(right) and (set(left) <= set(right) or set(right) <= set(left))


def _same_given(left: tuple[str, ...], right: tuple[str, ...]) -> bool:
    if _same_words(left, right) or left[0] == right[0]:
        return True
    first, other = sorted((left[0], right[0]), key=len)
    return len(first) == 1 and other.startswith(first)  # an initial


def _tokens(text: str) -> tuple[str, ...]:
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_FOLD))
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return tuple(word for word in _NOT_NAME.split(bare) if word)


def _parse_date(text: str) -> date | None:
    digits = text.strip().replace("-", "").replace(".", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip(" \x00")
