"""FHIR R4 ImagingStudy from the stored instances of one study.

Deterministic: series ordered by SeriesNumber then UID, instances by InstanceNumber then
UID (numbers absent last, UIDs compared component by component), so the same instances
always give the same JSON. Modality and body site codings come from `dicom/tables/`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo
from typing import Any, TypeVar

from pydicom.uid import UID

from dicom._tables import body_site, is_acquisition_modality, modality
from dicom.instances import InstanceInfo

__all__ = ["build_imaging_study"]

_SOP_CLASS_SYSTEM = "urn:ietf:rfc:3986"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_T = TypeVar("_T")
_OTHER_MODALITY = "OT"  # PS3.3 C.7.3.1.1.1: series.modality is required in FHIR


def build_imaging_study(
    instances: Sequence[InstanceInfo],
    *,
    patient_reference: str,
    based_on: str | None,
    endpoint_reference: str | None,
    study_identifier_system: str = "urn:dicom:uid",
    time_zone: tzinfo | None = None,
) -> dict[str, Any]:
    """The ImagingStudy (FHIR R4 JSON) of `instances`, all of one study.

    `patient_reference` becomes subject, `based_on` (a ServiceRequest) basedOn,
    `endpoint_reference` (the hub's DICOMweb Endpoint) endpoint. `started` is the
    StudyDate, with the StudyTime only when `time_zone` says where it was taken (FHIR
    requires a zone with a time). An instance listed twice counts once.

    Raises ValueError when `instances` is empty or spans more than one study.
    """
    if not instances:
        raise ValueError("an ImagingStudy needs at least one instance")
    study_uids = {info.study_instance_uid for info in instances}
    if len(study_uids) != 1:
        raise ValueError("the instances belong to more than one study")
    series = _series_in_order(instances)
    ordered = [info for members in series for info in members]

    study: dict[str, Any] = {"resourceType": "ImagingStudy"}
    study["identifier"] = [
        {"system": study_identifier_system, "value": f"urn:oid:{ordered[0].study_instance_uid}"}
    ]
    accession = _first(info.accession_number for info in ordered)
    if accession:
        study["identifier"].append(
            {
                "type": {"coding": [{"system": _V2_0203, "code": "ACSN"}]},
                "value": accession,
            }
        )
    study["status"] = "available"
    modalities = _unique(_series_modality(members) for members in series)
    acquisition = [code for code in modalities if is_acquisition_modality(code)]
    if acquisition:
        study["modality"] = [modality(code).coding() for code in acquisition]
    study["subject"] = {"reference": patient_reference}
    started = _started(ordered, time_zone)
    if started:
        study["started"] = started
    if based_on:
        study["basedOn"] = [{"reference": based_on}]
    if endpoint_reference:
        study["endpoint"] = [{"reference": endpoint_reference}]
    study["numberOfSeries"] = len(series)
    study["numberOfInstances"] = len(ordered)
    description = _first(info.study_description for info in ordered)
    if description:
        study["description"] = description
    study["series"] = [_series(members) for members in series]
    return study


def _series_in_order(instances: Sequence[InstanceInfo]) -> list[list[InstanceInfo]]:
    by_series: dict[str, dict[str, InstanceInfo]] = {}
    for info in instances:
        by_series.setdefault(info.series_instance_uid, {}).setdefault(info.sop_instance_uid, info)
    groups = [sorted(members.values(), key=_instance_key) for members in by_series.values()]
    return sorted(
        groups,
        key=lambda members: (
            _number_key(_first(info.series_number for info in members)),
            _uid_key(members[0].series_instance_uid),
        ),
    )


def _instance_key(info: InstanceInfo) -> tuple[tuple[int, int], tuple[tuple[int, ...], str]]:
    return _number_key(info.instance_number), _uid_key(info.sop_instance_uid)


def _series(members: list[InstanceInfo]) -> dict[str, Any]:
    first = members[0]
    series: dict[str, Any] = {"uid": first.series_instance_uid}
    number = _first(info.series_number for info in members)
    if number is not None and number >= 0:
        series["number"] = number
    series["modality"] = modality(_series_modality(members) or _OTHER_MODALITY).coding()
    description = _first(info.series_description for info in members)
    if description:
        series["description"] = description
    series["numberOfInstances"] = len(members)
    body_part = _first(info.body_part_examined for info in members)
    site = body_site(body_part) if body_part else None
    if site is not None:
        series["bodySite"] = site.coding()
    series["instance"] = [_instance(info) for info in members]
    return series


def _instance(info: InstanceInfo) -> dict[str, Any]:
    sop_class: dict[str, str] = {
        "system": _SOP_CLASS_SYSTEM,
        "code": f"urn:oid:{info.sop_class_uid}",
    }
    name = UID(info.sop_class_uid).name
    if name != info.sop_class_uid:
        sop_class["display"] = name
    instance: dict[str, Any] = {"uid": info.sop_instance_uid, "sopClass": sop_class}
    if info.instance_number is not None and info.instance_number >= 0:
        instance["number"] = info.instance_number
    return instance


def _series_modality(members: list[InstanceInfo]) -> str | None:
    value = _first(info.modality for info in members)
    return value.upper() if value else None


def _started(ordered: list[InstanceInfo], time_zone: tzinfo | None) -> str | None:
    study_date = _first(info.study_date for info in ordered)
    if not study_date or len(study_date) != 8 or not study_date.isdigit():
        return None
    day = f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}"
    study_time = _first(info.study_time for info in ordered)
    if time_zone is None or not study_time:
        return day
    clock = _parse_time(study_time)
    if clock is None:
        return day
    hour, minute, second, micro = clock
    try:
        year, month, day_of_month = int(study_date[:4]), int(study_date[4:6]), int(study_date[6:])
        moment = datetime(year, month, day_of_month, hour, minute, second, micro, time_zone)
    except ValueError:
        return day
    return moment.isoformat(timespec="milliseconds" if micro else "seconds")


def _parse_time(text: str) -> tuple[int, int, int, int] | None:
    """DICOM TM (PS3.5 6.2): HH, HHMM, HHMMSS or HHMMSS.FFFFFF (and the old HH:MM:SS)."""
    whole, _, fraction = text.replace(":", "").partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    hour, minute, second = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((fraction + "000000")[:6]) if fraction else 0
    if hour > 23 or minute > 59 or second > 59:
        return None
    return hour, minute, second, micro


def _first(values: Iterable[_T | None]) -> _T | None:
    for value in values:
        if value is not None and value != "":
            return value
    return None


def _unique(values: Iterable[str | None]) -> list[str]:
    seen: list[str] = []
    for value in values:
        if value is not None and value not in seen:
            seen.append(value)
    return seen


def _number_key(number: int | None) -> tuple[int, int]:
    return (0, number) if number is not None else (1, 0)


def _uid_key(uid: str) -> tuple[tuple[int, ...], str]:
    return tuple(int(part) if part.isdigit() else -1 for part in uid.split(".")), uid
