"""People, organizations and encounters of the synthetic outside-EHR record."""

from __future__ import annotations

from typing import Final

from hub.demo.outside.shapes import (
    ALLERGY_CLINICAL,
    ALLERGY_VERIFICATION,
    JSON,
    V3_ACT_CODE,
    ref,
    when,
)
from hub.demo.outside.writer import HISTORY_DAYS, Actors, RecordWriter
from hub.demo.synthetic import (
    NPI,
    RXNORM,
    SUBSCRIBER_RELATIONSHIP,
    V2_0131,
    V2_0203,
    V3_ROLE_CODE,
    coding,
    concept,
)

_PRACTITIONERS: Final = (
    ("Marisol", "Achterberg"),
    ("Tobias", "Quennell"),
    ("Ngozi", "Fairweather"),
    ("Eamon", "Delacroix-Hart"),
)
_GUARDIAN_ROLES: Final = {"mother": ("MTH", "female"), "father": ("FTH", "male")}
_ENCOUNTER_CLASSES: Final = {
    "EMER": "emergency",
    "IMP": "inpatient encounter",
    "AMB": "ambulatory",
}


def _organization(w: RecordWriter, name: str, type_text: str) -> str:
    slug = "".join(ch if ch.isalnum() else "-" for ch in name.lower().replace("'", ""))
    return w.add(
        {
            "resourceType": "Organization",
            "identifier": [w.identifier("organization", slug)],
            "active": True,
            "type": [concept(text=type_text)],
            "name": name,
        },
        w.at(-20),
    )


def _practitioner(w: RecordWriter, index: int, specialty: str) -> str:
    given, family = _PRACTITIONERS[index]
    npi = f"999{w.rng.randint(0, 9_999_999):07d}"  # 999...: never a real US NPI
    return w.add(
        {
            "resourceType": "Practitioner",
            "identifier": [{"system": NPI, "value": npi}],
            "active": True,
            "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}],
            "qualification": [{"code": concept(text=specialty)}],
        },
        w.at(-20),
    )


def actors(w: RecordWriter) -> Actors:
    """Organizations, Practitioners, the Patient, guardian, Coverage and allergies."""
    hospital = _organization(w, "Larkfield Children's Hospital", "Children's hospital")
    lab = _organization(w, "Northgate Molecular Diagnostics", "Reference laboratory")
    insurer = _organization(w, "Evergreen Family Health Plan", "Health insurer")
    oncologist = _practitioner(w, 0, "Pediatric hematology-oncology")
    surgeon = _practitioner(w, 1, w.profile.surgeon)
    radiologist = _practitioner(w, 2, "Pediatric radiology")
    pathologist = _practitioner(w, 3, "Pediatric pathology")
    last_visit = w.at(HISTORY_DAYS - 1, 17)  # demographics confirmed at the last visit
    patient = w.add(
        {
            "resourceType": "Patient",
            "identifier": [
                {
                    "use": "usual",
                    "type": concept(coding(V2_0203, "MR", "Medical record number")),
                    "system": f"{w.source}/mrn",
                    "value": w.mrn,
                    "assigner": ref(hospital),
                }
            ],
            "active": True,
            "name": [{"use": "official", "family": w.family, "given": [w.given]}],
            "telecom": [{"system": "phone", "value": w.phone, "use": "home"}],
            "gender": w.gender,
            "birthDate": w.birth_date.isoformat(),
            "address": [w.address()],
            "generalPractitioner": [ref(oncologist)],
            "managingOrganization": ref(hospital),
        },
        last_visit,
    )
    role, gender = _GUARDIAN_ROLES[w.relationship]
    guardian = w.add(
        {
            "resourceType": "RelatedPerson",
            "active": True,
            "patient": ref(patient),
            "relationship": [
                concept(
                    coding(V3_ROLE_CODE, role, w.relationship),
                    text=f"{w.relationship.capitalize()} (legal guardian)",
                ),
                concept(coding(V2_0131, "N", "Next-of-Kin")),
            ],
            "name": [{"use": "official", "family": w.family, "given": [w.parent_given]}],
            "telecom": [{"system": "phone", "value": w.phone, "use": "mobile"}],
            "gender": gender,
            "address": [w.address()],
        },
        last_visit,
    )
    w.add(
        {
            "resourceType": "Coverage",
            "identifier": [w.identifier("coverage", f"COV{w.mrn}")],
            "status": "active",
            "type": concept(text="Family health plan"),
            "subscriber": ref(guardian),
            "subscriberId": f"SUB{w.mrn[::-1]}",
            "beneficiary": ref(patient),
            "relationship": concept(coding(SUBSCRIBER_RELATIONSHIP, "child", "Child")),
            "period": {"start": w.day0.replace(month=1, day=1).isoformat()},
            "payor": [ref(insurer)],
        },
        w.at(0, 10),
    )
    _allergies(w, patient, oncologist)
    return Actors(hospital, lab, oncologist, surgeon, radiologist, pathologist, patient)


def _allergies(w: RecordWriter, patient: str, oncologist: str) -> None:
    allergies: tuple[tuple[str, str, list[JSON], str, str], ...] = (
        ("allergy", "medication", [coding(RXNORM, "723", "amoxicillin")], "Amoxicillin",
         "Urticaria"),
        ("intolerance", "environment", [], "Acrylate adhesive dressings", "Contact dermatitis"),
    )  # fmt: skip
    for minute, (kind, category, codings, text, manifestation) in enumerate(allergies):
        w.add(
            {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": concept(coding(ALLERGY_CLINICAL, "active", "Active")),
                "verificationStatus": concept(
                    coding(ALLERGY_VERIFICATION, "confirmed", "Confirmed")
                ),
                "type": kind,
                "category": [category],
                "criticality": "low",
                "code": concept(*codings, text=text),
                "patient": ref(patient),
                "recordedDate": when(w.at(0, 11)),
                "recorder": ref(oncologist),
                "reaction": [{"manifestation": [concept(text=manifestation)], "severity": "mild"}],
            },
            w.at(0, 11, minute),
        )


def _encounter(
    w: RecordWriter, a: Actors, first: int, last: int, kind: str, reason: str, *, by: str
) -> str:
    number = len(w.entries)
    resource: JSON = {
        "resourceType": "Encounter",
        "identifier": [w.identifier("encounter", f"V{w.mrn}-{first:03d}-{number}")],
        "status": "finished",
        "class": coding(V3_ACT_CODE, kind, _ENCOUNTER_CLASSES[kind]),
        "type": [concept(text=reason)],
        "subject": ref(a.patient),
        "participant": [{"individual": ref(by)}],
        "period": {
            "start": when(w.at(first, 8)),
            "end": when(w.at(last, 18 if last > first else 13)),
        },
        "reasonCode": [concept(text=reason)],
        "serviceProvider": ref(a.hospital),
    }
    if kind == "IMP":
        resource["hospitalization"] = {"dischargeDisposition": concept(text="Home")}
    reference = w.add(resource, w.at(last, 19))
    w.add_encounter(first, last, reference)
    return reference


def encounters(w: RecordWriter, a: Actors) -> tuple[str, list[str]]:
    """Every Encounter of the record; returns the diagnostic admission and the chemotherapy
    admissions (one per cycle)."""
    p = w.profile
    _encounter(w, a, 0, 0, "EMER", p.history.split(".")[0], by=a.oncologist)
    admission = _encounter(w, a, 1, 8, "IMP", "Diagnostic admission", by=a.oncologist)
    for spec in p.procedures:
        if spec.kind == "operative" and spec.day > 8:
            _encounter(w, a, spec.day - 1, spec.day + 4, "IMP", spec.text, by=a.surgeon)
    cycles = [
        _encounter(w, a, day, day + 2, "IMP", f"Chemotherapy cycle {n}", by=a.oncologist)
        for n, day in enumerate(w.cycle_days, start=1)
    ]
    fever = w.fever_day
    _encounter(w, a, fever, fever + 4, "IMP", "Fever and neutropenia", by=a.oncologist)
    return admission, cycles
