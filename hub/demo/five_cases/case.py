"""One SYNTHETIC case as three outside systems send it, and where they overlap."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final, Literal

from pydicom.dataset import Dataset

from hub.demo.five_cases.dicom_part import dicom_patient, pacs_only_study, resent_study
from hub.demo.five_cases.fhir_part import (
    CBC_PANEL,
    LastDraw,
    entries_of,
    outside_record,
    referral_transaction,
)
from hub.demo.five_cases.hl7_part import LabOrder, LabResult, adt_a04, mdm_t02, oru_r01
from hub.demo.five_cases.tables import CASE_EXTRAS
from hub.demo.outside.cancers import CANCERS, CancerProfile
from hub.demo.outside.shapes import DICOM_UID, JSON, LOCAL_TZ
from hub.demo.synthetic import LOINC, NPI

__all__ = ["Channel", "NearDuplicate", "OutsideCase", "Overlap", "build_case"]

Channel = Literal["referral", "fhir", "hl7", "dicom"]
"""referral: the FHIR transaction that opens the case; fhir: the outside EHR's FHIR server;
hl7: its interface engine (MLLP); dicom: its PACS (C-STORE)."""
DUPLICATED_RESULTS: Final = ("718-7", "6690-2")  # hemoglobin, leukocytes
NEAR_DUPLICATE_RESULT: Final = "777-3"  # platelets
RECOUNT: Final = 17  # 10*3/uL the laboratory's recount adds to the platelet count


@dataclass(frozen=True)
class Overlap:
    """A record two channels both send, that the case's record bundle must hold once.

    Either ``identifier`` (system, value) is shared, or the type, ``code`` (system, code),
    the clinical date ``moment`` (as the FHIR part writes it) and, for an Observation,
    ``value`` (number, UCUM code) are.
    """

    label: str
    resource_type: str
    channels: tuple[Channel, Channel]
    identifier: tuple[str, str] | None = None
    code: tuple[str, str] | None = None
    moment: str | None = None
    value: tuple[float, str] | None = None


@dataclass(frozen=True)
class NearDuplicate:
    """An Observation the FHIR part and the HL7 part both send with the same code and
    clinical date but different values: two results, never to be merged."""

    code: tuple[str, str]
    moment: str
    unit: str
    fhir_value: float
    hl7_value: float


@dataclass(frozen=True)
class OutsideCase:
    """What the outside hospital's systems send the hub about one child.

    ``record`` is the FHIR part (a transaction Bundle of ``PUT Type/id`` entries, to load into
    an outside FHIR server), ``referral`` the transaction that opens the case, ``hl7`` the
    ADT^A04, ORU^R01 and MDM^T02 messages (ER7 bytes, by trigger), ``dicom`` the studies
    (datasets with file meta, by StudyInstanceUID).
    """

    cancer: str
    seed: int
    profile: CancerProfile
    mrn: str
    record: JSON
    referral: JSON
    hl7: dict[str, bytes]
    dicom: dict[str, list[Dataset]]
    overlaps: tuple[Overlap, ...]
    near_duplicate: NearDuplicate
    hl7_only: tuple[str, str]
    """(system, value) of the tumour-marker report, which only the HL7 part sends."""
    pacs_only_study: str
    """StudyInstanceUID of the study only the DICOM part sends."""

    @property
    def patient(self) -> JSON:
        """The child as the outside EHR's record has it."""
        return entries_of(self.record, "Patient")[0]

    @property
    def referral_request(self) -> JSON:
        """The second-opinion ServiceRequest of ``referral``."""
        return entries_of(self.referral, "ServiceRequest")[0]


def _code(resource: JSON) -> tuple[str, str]:
    coding = resource["code"]["coding"][0]
    return str(coding["system"]), str(coding["code"])


def _quantity(observation: JSON) -> tuple[float, str]:
    quantity = observation["valueQuantity"]
    return quantity["value"], str(quantity["code"])


def _lab(observation: JSON, value: float | None = None) -> LabResult:
    """An OBX for ``observation`` (its value, or ``value`` with a flag of its own)."""
    reference = observation["referenceRange"][0]
    low, high = reference["low"]["value"], reference["high"]["value"]
    if value is None:
        value = observation["valueQuantity"]["value"]
        flag = observation["interpretation"][0]["coding"][0]["code"]
    else:
        flag = "L" if value < low else "H" if value > high else "N"
    code = {"coding": [observation["code"]["coding"][0]]}
    return LabResult(code, value, observation["valueQuantity"]["code"], low, high, flag)


def _lab_orders(draw: LastDraw, source: str, mrn: str) -> tuple[LabOrder, LabOrder]:
    """The CBC (two results as recorded, the platelets recounted) and the tumour marker."""
    report, results, marker = draw.report, draw.results, draw.marker
    platelets = results[NEAR_DUPLICATE_RESULT]
    cbc = LabOrder(
        placer=(f"ORD{mrn[-5:]}1", f"{source}/order"),
        filler=(f"LAB{mrn[-5:]}1", f"{source}/lab-accession"),
        code={"coding": [report["code"]["coding"][0]]},
        collected=report["effectiveDateTime"],
        issued=report["issued"],
        section="HM",  # HL7 table 0074: hematology
        results=(
            *(_lab(results[code]) for code in DUPLICATED_RESULTS),
            _lab(platelets, platelets["valueQuantity"]["value"] + RECOUNT),
        ),
    )
    tumour = LabOrder(
        placer=(f"ORD{mrn[-5:]}2", f"{source}/order"),
        filler=(f"LAB{mrn[-5:]}2", f"{source}/lab-accession"),
        code={"coding": [marker["code"]["coding"][0]]},
        collected=marker["effectiveDateTime"],
        issued=marker["issued"],
        section="CH",  # chemistry
        results=(_lab(marker),),
    )
    return cbc, tumour


def _note(record: JSON, profile: CancerProfile) -> tuple[JSON, JSON, str]:
    """The record's note of its first procedure: DocumentReference, author, text."""
    spec = profile.procedures[0]
    procedure = next(
        p
        for p in entries_of(record, "Procedure")
        if p["identifier"][0]["value"].endswith(f"-{spec.label}")
    )
    document = next(
        d
        for d in entries_of(record, "DocumentReference")
        if d["context"].get("related") == [{"reference": f"Procedure/{procedure['id']}"}]
    )
    author_id = document["author"][0]["reference"].split("/")[1]
    author = next(p for p in entries_of(record, "Practitioner") if p["id"] == author_id)
    heading = "OPERATIVE NOTE" if spec.kind == "operative" else "PROCEDURE NOTE"
    return document, author, f"{heading} (SYNTHETIC DATA)\nProcedure: {spec.text}\n{spec.note}\n"


def _npi(practitioner: JSON) -> tuple[str, str]:
    identifier = next(i for i in practitioner["identifier"] if i["system"] == NPI)
    return NPI, str(identifier["value"])


def build_case(cancer: str, *, seed: int, source: str, as_of: date) -> OutsideCase:
    """The case of ``cancer`` (a key of :data:`hub.demo.outside.cancers.CANCERS`); see
    :func:`hub.demo.five_cases.build_case`."""
    profile = CANCERS[cancer]
    extras = CASE_EXTRAS[cancer]
    tag = f"{profile.abbreviation}{seed}"
    record, draw = outside_record(profile, extras, seed, source, as_of)
    referral = referral_transaction(record, profile, extras, seed=seed, source=source, as_of=as_of)
    patient = entries_of(record, "Patient")[0]
    mrn = str(patient["identifier"][0]["value"])
    referral_day = datetime.combine(as_of - timedelta(days=4), time(13, 0), LOCAL_TZ)
    document, author, text = _note(record, profile)
    cbc, tumour = _lab_orders(draw, source, mrn)
    resulted = datetime.fromisoformat(draw.report["issued"]) + timedelta(minutes=5)
    hl7 = {
        "ADT^A04": adt_a04(patient, control_id=f"ADT-{tag}", now=referral_day),
        "ORU^R01": oru_r01(patient, (cbc, tumour), control_id=f"ORU-{tag}", now=resulted),
        "MDM^T02": mdm_t02(
            patient,
            document,
            author,
            text,
            control_id=f"MDM-{tag}",
            now=referral_day + timedelta(minutes=20),
        ),
    }
    child = dicom_patient(patient)
    imaging = next(
        study
        for study in entries_of(record, "ImagingStudy")
        if study["description"]
        == next(s.description for s in profile.imaging if s.label == extras.resent_study)
    )
    accession = next(i["value"] for i in imaging["identifier"] if i["system"] != DICOM_UID)
    resent = resent_study(imaging, child, seed=2 * seed, accession=accession)
    pacs_only = pacs_only_study(
        extras.pacs_study, child, seed=2 * seed + 1, as_of=as_of, accession=f"P{mrn[-5:]}0001"
    )
    oncologist = entries_of(referral, "Practitioner")[0]
    platelets = draw.results[NEAR_DUPLICATE_RESULT]
    overlaps = (
        Overlap("referring oncologist", "Practitioner", ("referral", "fhir"), _npi(oncologist)),
        Overlap("author of the procedure note", "Practitioner", ("hl7", "fhir"), _npi(author)),
        Overlap(
            "procedure note",
            "DocumentReference",
            ("hl7", "fhir"),
            identifier=(document["identifier"][0]["system"], document["identifier"][0]["value"]),
        ),
        Overlap(
            "re-sent imaging study",
            "ImagingStudy",
            ("dicom", "fhir"),
            identifier=(DICOM_UID, f"urn:oid:{resent[0].StudyInstanceUID}"),
        ),
        Overlap(
            "CBC report",
            "DiagnosticReport",
            ("hl7", "fhir"),
            code=(LOINC, CBC_PANEL),
            moment=draw.report["effectiveDateTime"],
        ),
        *(
            Overlap(
                observation["code"]["coding"][0]["display"],
                "Observation",
                ("hl7", "fhir"),
                code=_code(observation),
                moment=observation["effectiveDateTime"],
                value=_quantity(observation),
            )
            for observation in (*(draw.results[c] for c in DUPLICATED_RESULTS), draw.marker)
        ),
    )
    near = NearDuplicate(
        code=_code(platelets),
        moment=platelets["effectiveDateTime"],
        unit=str(platelets["valueQuantity"]["code"]),
        fhir_value=platelets["valueQuantity"]["value"],
        hl7_value=cbc.results[-1].value,
    )
    return OutsideCase(
        cancer=cancer,
        seed=seed,
        profile=profile,
        mrn=mrn,
        record=record,
        referral=referral,
        hl7=hl7,
        dicom={
            str(resent[0].StudyInstanceUID): resent,
            str(pacs_only[0].StudyInstanceUID): pacs_only,
        },
        overlaps=overlaps,
        near_duplicate=near,
        hl7_only=(tumour.filler[1], tumour.filler[0]),
        pacs_only_study=str(pacs_only[0].StudyInstanceUID),
    )
