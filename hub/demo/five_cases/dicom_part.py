"""The DICOM side of a SYNTHETIC case: what the outside hospital's PACS pushes.

Two small studies of :func:`dicom.synthetic.make_study` (64 x 64 slices) for the child of the
outside record (PatientID its MRN, name, birth date and sex as the record has them):

* the record's ImagingStudy ``resent_study`` sent again: its StudyInstanceUID, series UIDs,
  numbers and descriptions, accession number, date and time, two instances a series;
* a study only the PACS has, of the case's ``pacs_study`` (one series of two instances).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Final, Literal

from pydicom.dataset import Dataset

from dicom.synthetic import SyntheticPatient, make_study
from hub.demo.five_cases.tables import PacsStudy
from hub.demo.outside.shapes import DICOM_UID, JSON

__all__ = ["OUTSIDE_ISSUER", "dicom_patient", "pacs_only_study", "resent_study", "study_uid"]

OUTSIDE_ISSUER: Final = "LARKFIELD-CHILDRENS"
"""IssuerOfPatientID of the outside PACS (the hub matches on the PatientID)."""
_INSTANCES: Final = 2
_SERIES: Final = 2
_SEX: Final[dict[str, Literal["F", "M", "O"]]] = {"female": "F", "male": "M"}


def dicom_patient(patient: JSON) -> SyntheticPatient:
    """The child of the record's Patient as the PACS knows it: MRN, official name, sex."""
    name = patient["name"][0]
    return SyntheticPatient(
        patient_id=str(patient["identifier"][0]["value"]),
        issuer=OUTSIDE_ISSUER,
        family_name=str(name["family"]),
        given_name=" ".join(name["given"]),
        birth_date=date.fromisoformat(patient["birthDate"]),
        sex=_SEX.get(patient["gender"], "O"),
    )


def study_uid(imaging_study: JSON) -> str:
    """The StudyInstanceUID of an ImagingStudy (its ``urn:dicom:uid`` identifier)."""
    for identifier in imaging_study.get("identifier") or []:
        if identifier.get("system") == DICOM_UID:
            return str(identifier["value"]).removeprefix("urn:oid:")
    raise ValueError("The ImagingStudy has no urn:dicom:uid identifier")


def _age(birth: date, on: date) -> str:
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"


def _dated(datasets: Sequence[Dataset], moment: datetime, child: SyntheticPatient) -> None:
    for ds in datasets:
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = moment.strftime("%Y%m%d")
        ds.StudyTime = ds.ContentTime = moment.strftime("%H%M%S")
        ds.SeriesTime = (moment + timedelta(minutes=4 * int(ds.SeriesNumber))).strftime("%H%M%S")
        ds.TimezoneOffsetFromUTC = moment.strftime("%z")
        ds.PatientAge = _age(child.birth_date, moment.date())
        ds.InstitutionName = "Larkfield Children's Hospital"


def resent_study(
    imaging_study: JSON, child: SyntheticPatient, *, seed: int, accession: str
) -> list[Dataset]:
    """The record's ``imaging_study`` as the PACS pushes it (its first two series)."""
    series = imaging_study["series"][:_SERIES]
    modalities = {s["modality"]["code"] for s in series}
    if len(modalities) != 1 or not modalities <= {"CT", "MR", "PT"}:
        raise ValueError("A re-sent study must be of one modality: CT, MR or PT")
    datasets = make_study(seed, child, modalities.pop(), series=len(series), instances=_INSTANCES)
    for ds in datasets:
        number = int(ds.SeriesNumber)
        ds.StudyInstanceUID = study_uid(imaging_study)
        ds.SeriesInstanceUID = series[number - 1]["uid"]
        ds.SeriesDescription = series[number - 1]["description"]
        ds.StudyDescription = imaging_study["description"]
        ds.AccessionNumber = accession
    _dated(datasets, datetime.fromisoformat(imaging_study["started"]), child)
    return datasets


def pacs_only_study(
    spec: PacsStudy, child: SyntheticPatient, *, seed: int, as_of: date, accession: str
) -> list[Dataset]:
    """A study of ``spec`` that only the PACS has, taken ``spec.days_before_as_of`` before
    ``as_of`` at 11:15 local time (UTC-05:00)."""
    datasets = make_study(seed, child, spec.modality, series=1, instances=_INSTANCES)
    moment = datetime.fromisoformat(
        f"{as_of - timedelta(days=spec.days_before_as_of)}T11:15:00-05:00"
    )
    for ds in datasets:
        ds.StudyDescription = spec.description
        ds.AccessionNumber = accession
    _dated(datasets, moment, child)
    return datasets
