"""The header edit of import reconciliation: the hub's identity in, the outside one kept.

PS3.3 C.12.1.1.9: each coercion adds an Original Attributes Sequence (0400,0561) item
whose Modified Attributes Sequence holds the previous value of every attribute changed;
PS3.3 C.7.1.1: the outside Patient ID goes to Other Patient IDs Sequence (0010,1002).
UIDs are not touched, so the instance stays the same instance.
"""

from __future__ import annotations

import copy
from datetime import datetime

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicom._demographics import HubIdentity

__all__ = ["MODIFYING_SYSTEM", "REASONS", "coerce_identity"]

MODIFYING_SYSTEM = "SECOND-OPINION-HUB"
REASONS = frozenset({"COERCE", "CORRECT"})  # PS3.3 C.12.1.1.9.2, Defined Terms
_UTF8 = "ISO_IR 192"


def coerce_identity(
    ds: Dataset,
    identity: HubIdentity,
    *,
    reason: str,
    when: datetime,
    source: str | None = None,
) -> bool:
    """Give `ds` the hub's identity; return False (and change nothing) if it already has it.

    `source` becomes SourceOfPreviousValues (0400,0564); by default the outside issuer.
    Raises ValueError for a reason other than COERCE or CORRECT.
    """
    if reason not in REASONS:
        raise ValueError(f"reason must be one of {sorted(REASONS)}")
    wanted = {"PatientID": identity.patient_id, "IssuerOfPatientID": identity.issuer}
    if identity.dicom_name is not None:
        wanted["PatientName"] = identity.dicom_name
    if identity.birth_date is not None:
        wanted["PatientBirthDate"] = identity.birth_date
    if identity.sex is not None:
        wanted["PatientSex"] = identity.sex
    changed = {keyword: value for keyword, value in wanted.items() if _text(ds, keyword) != value}
    if not changed:
        return False

    previous = Dataset()
    outside_id, outside_issuer = _text(ds, "PatientID"), _text(ds, "IssuerOfPatientID")
    identifier_changed = "PatientID" in changed or "IssuerOfPatientID" in changed
    if any(not _encodable(ds, value) for value in changed.values()):
        _switch_to_utf8(ds, previous)
    for keyword, value in changed.items():
        _keep_previous(ds, previous, keyword)
        setattr(ds, keyword, value)
    if identifier_changed:
        qualifiers: Sequence | None = None
        if "IssuerOfPatientIDQualifiersSequence" in ds:
            # They qualify the outside issuer, so they follow the outside identifier.
            _keep_previous(ds, previous, "IssuerOfPatientIDQualifiersSequence")
            qualifiers = ds.IssuerOfPatientIDQualifiersSequence
            del ds.IssuerOfPatientIDQualifiersSequence
        if outside_id:
            _add_other_id(ds, previous, outside_id, outside_issuer, qualifiers)

    item = Dataset()
    item.AttributeModificationDateTime = _dicom_datetime(when)
    item.ModifyingSystem = MODIFYING_SYSTEM
    item.SourceOfPreviousValues = outside_issuer if source is None else source
    item.ReasonForTheAttributeModification = reason
    item.ModifiedAttributesSequence = [previous]
    if "OriginalAttributesSequence" not in ds:
        ds.OriginalAttributesSequence = []
    ds.OriginalAttributesSequence.append(item)
    # Retired group lengths would now be wrong; the standard lets a writer drop them.
    for tag in [tag for tag in list(ds.keys()) if tag.element == 0]:
        del ds[tag]
    return True


def _add_other_id(
    ds: Dataset,
    previous: Dataset,
    patient_id: str,
    issuer: str,
    qualifiers: Sequence | None,
) -> None:
    existing = list(ds.get("OtherPatientIDsSequence") or [])
    for other in existing:
        if _text(other, "PatientID") == patient_id and _text(other, "IssuerOfPatientID") == issuer:
            return
    _keep_previous(ds, previous, "OtherPatientIDsSequence")
    other = Dataset()
    other.PatientID = patient_id
    if issuer:
        other.IssuerOfPatientID = issuer
    if qualifiers is not None:
        other.IssuerOfPatientIDQualifiersSequence = qualifiers
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = [*existing, other]


def _keep_previous(ds: Dataset, previous: Dataset, keyword: str) -> None:
    """Record the value `keyword` has now; an attribute that was absent is recorded empty
    (PS3.3 C.12.1.1.9.1: the item lists every attribute the modification touched)."""
    tag = tag_for_keyword(keyword)
    if tag is None or tag in previous:
        return
    if tag in ds:
        previous[tag] = copy.deepcopy(ds[tag])
    else:
        previous.add_new(tag, dictionary_VR(tag), [] if dictionary_VR(tag) == "SQ" else None)


def _switch_to_utf8(ds: Dataset, previous: Dataset) -> None:
    # Decode every text value with the old character set first: pydicom re-encodes what
    # it has decoded, but would write a nested item's undecoded bytes as they were.
    _decode_all(ds)
    _keep_previous(ds, previous, "SpecificCharacterSet")
    ds.SpecificCharacterSet = _UTF8


def _decode_all(ds: Dataset) -> None:
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                _decode_all(item)


def _encodable(ds: Dataset, value: str) -> bool:
    charset = ds.get("SpecificCharacterSet")
    if not charset:
        return value.isascii()  # PS3.5 6.1.2.2: the default repertoire is ISO-IR 6
    for codec in convert_encodings(charset):
        try:
            value.encode(codec)
        except (UnicodeEncodeError, LookupError):
            continue
        return True
    return False


def _dicom_datetime(when: datetime) -> str:
    text = when.strftime("%Y%m%d%H%M%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}"
    if when.utcoffset() is not None:
        text += when.strftime("%z")
    return text


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip(" \x00")
