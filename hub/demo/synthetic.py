"""Generator of SYNTHETIC pediatric oncology records for demos and tests.

Nothing here is real patient data: names, places, identifiers, dates, lab values and note texts
are invented by this module from small hand-written tables and a seeded random generator.

The public API:

* :func:`build_patient_records` - a FHIR R4 transaction Bundle with what an outside EHR would
  hold for a 9-year-old with medulloblastoma (demographics, guardian, coverage, diagnosis,
  labs, pathology, imaging, surgery, radiation, chemotherapy and notes).  Every entry is a
  conditional create (``ifNoneExist`` on the resource's identifier), so loading the bundle twice
  creates nothing new.
* :func:`build_referral` - the ServiceRequest a referring EHR would POST to ask for a second
  opinion.
* :func:`referral_identifier` - the (system, value) of that referral's business identifier.

Output is deterministic for a given ``seed`` and ``as_of`` date.
"""

from __future__ import annotations

import base64
import copy
import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final

from hub import codes

__all__ = [
    "DEFAULT_AS_OF",
    "DEFAULT_SEED",
    "build_patient_records",
    "build_referral",
    "referral_identifier",
]

JSON = dict[str, Any]

DEFAULT_SEED: Final = 7
DEFAULT_AS_OF: Final = date(2026, 11, 1)

# --------------------------------------------------------------------------------------------
# Code systems (only standard codes we are sure of; anything else is carried as text).
# --------------------------------------------------------------------------------------------
OUTSIDE_EHR: Final = "https://outside-ehr.example"
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
RXNORM: Final = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM: Final = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED: Final = "http://snomed.info/sct"
NPI: Final = "http://hl7.org/fhir/sid/us-npi"
_THO: Final = "http://terminology.hl7.org/CodeSystem"
V2_0074: Final = f"{_THO}/v2-0074"
V2_0131: Final = f"{_THO}/v2-0131"
V2_0203: Final = f"{_THO}/v2-0203"
V3_ROLE_CODE: Final = f"{_THO}/v3-RoleCode"
V3_INTERPRETATION: Final = f"{_THO}/v3-ObservationInterpretation"
V3_ACT_REASON: Final = f"{_THO}/v3-ActReason"
OBSERVATION_CATEGORY: Final = f"{_THO}/observation-category"
CONDITION_CLINICAL: Final = f"{_THO}/condition-clinical"
CONDITION_VERIFICATION: Final = f"{_THO}/condition-ver-status"
CONDITION_CATEGORY: Final = f"{_THO}/condition-category"
SUBSCRIBER_RELATIONSHIP: Final = f"{_THO}/subscriber-relationship"

REFERRAL_ID_SYSTEM: Final = f"{OUTSIDE_EHR}/referral"

# Namespace for the deterministic urn:uuid fullUrls.
_UUID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, f"{codes.CANONICAL_BASE}/demo/synthetic")

# Every resource is tagged as test data (HL7 v3 ActReason HTEST).
_SYNTHETIC_TAG: Final = {"system": V3_ACT_REASON, "code": "HTEST", "display": "test health data"}

# --------------------------------------------------------------------------------------------
# Invented people and places.
# --------------------------------------------------------------------------------------------
_CHILD_NAMES: Final = {
    "male": ("Milo", "Theo", "Jonah", "Ezra", "Rafael", "Soren"),
    "female": ("Nora", "Ivy", "Maya", "Lena", "Clara", "Wren"),
}
_PARENT_NAMES: Final = {
    "mother": ("Elena", "Priya", "Hannah", "Sofia", "Amara"),
    "father": ("Daniel", "Tomas", "Arjun", "Marcus", "Kofi"),
}
_FAMILY_NAMES: Final = ("Brightwater", "Halloway", "Quillon", "Marchby", "Ostrander", "Fenwick")
_STREETS: Final = ("Maple Hollow Lane", "Heron Point Road", "Quarry Hill Drive", "Old Mill Court")
_HOSPITALS: Final = (
    "Riverbend Children's Hospital",
    "Cedar Hollow Children's Medical Center",
    "Stonebridge Children's Hospital",
)
_INSURERS: Final = ("Northwind Family Health Plan", "Bluepine Mutual Health")
# (given, family, NPI) - NPIs start with 9, so they can never be real US NPIs.
_ONCOLOGISTS: Final = (
    ("Adaeze", "Whitlock", "9990001012"),
    ("Henrik", "Castellane", "9990001020"),
    ("Lucia", "Brannigan", "9990001038"),
)

# Guardian relationship -> (v3 RoleCode, display, FHIR gender).
_GUARDIAN_ROLES: Final = {
    "mother": ("MTH", "mother", "female"),
    "father": ("FTH", "father", "male"),
}

# --------------------------------------------------------------------------------------------
# Timeline: days after symptom onset (onset is ~5 months before ``as_of``).
# --------------------------------------------------------------------------------------------
_ONSET_DAYS_BEFORE_AS_OF: Final = 152
_DAY_PRE_OP_MRI: Final = 12
_DAY_SURGERY: Final = 14
_DAY_POST_OP_MRI: Final = 15
_DAY_PATHOLOGY: Final = 21
_DAY_RADIATION_START: Final = 40
_DAY_RADIATION_END: Final = 81
_DAY_TREATMENT_PLAN: Final = 145
_DAY_REFERRAL: Final = 148

_BSA_M2: Final = 1.05  # body surface area used for chemotherapy dosing


@dataclass(frozen=True)
class _Analyte:
    """A CBC analyte: LOINC code, UCUM unit, pediatric reference range, typical draw values."""

    key: str
    loinc: str
    display: str
    unit: str
    low: float
    high: float
    decimals: int
    typical: tuple[float, ...]  # one value per entry of _CBC_DRAWS


@dataclass(frozen=True)
class _Drug:
    """A chemotherapy agent with its RxNorm ingredient code and per-m2 dose."""

    rxnorm: str
    name: str
    mg_per_m2: float
    max_mg: float | None
    how: str


# (day after onset, description) of each blood draw: baseline, nadir, recovery, deeper nadir.
_CBC_DRAWS: Final = (
    (86, "before maintenance cycle 1"),
    (100, "cycle 1 day 13 (expected nadir)"),
    (114, "before maintenance cycle 2"),
    (128, "cycle 2 day 13 (expected nadir)"),
)

_ANALYTES: Final = (
    _Analyte(
        "wbc",
        "6690-2",
        "Leukocytes [#/volume] in Blood by Automated count",
        "10*3/uL",
        4.5,
        13.5,
        1,
        (5.2, 1.8, 5.6, 1.1),
    ),
    _Analyte(
        "hgb",
        "718-7",
        "Hemoglobin [Mass/volume] in Blood",
        "g/dL",
        11.5,
        15.5,
        1,
        (12.0, 9.9, 10.8, 8.7),
    ),
    _Analyte(
        "plt",
        "777-3",
        "Platelets [#/volume] in Blood by Automated count",
        "10*3/uL",
        150,
        450,
        0,
        (176, 64, 188, 36),
    ),
    _Analyte(
        "anc",
        "751-8",
        "Neutrophils [#/volume] in Blood by Automated count",
        "10*3/uL",
        1.5,
        8.0,
        2,
        (2.9, 0.42, 3.1, 0.21),
    ),
)

_DRUGS: Final = {
    "vincristine": _Drug("11202", "vincristine", 1.5, 2.0, "IV push, day 1"),
    "cisplatin": _Drug("2555", "cisplatin", 75.0, None, "IV over 6 hours with hyperhydration"),
    "cyclophosphamide": _Drug("3002", "cyclophosphamide", 1000.0, None, "IV over 1 hour, mesna"),
}

# (cycle number, day after onset, agents) of the maintenance chemotherapy given so far.
_CYCLES: Final = (
    (1, 88, ("cisplatin", "vincristine")),
    (2, 116, ("cyclophosphamide", "vincristine")),
    (3, 144, ("cisplatin", "vincristine")),
)

_SUBGROUP: Final = "WNT-activated"
_CONDITION_TEXT: Final = f"Medulloblastoma, {_SUBGROUP}, classic histology"

# --------------------------------------------------------------------------------------------
# Note texts (written for this module).
# --------------------------------------------------------------------------------------------
_PATHOLOGY_TEXT: Final = """\
SURGICAL PATHOLOGY REPORT (SYNTHETIC DEMO DATA)
Specimen: posterior fossa mass, resection.
Histology: embryonal tumour of the cerebellum, sheets of small round blue cells with scant
cytoplasm; classic morphology, no anaplasia, no nodularity.
Immunohistochemistry: synaptophysin positive; nuclear beta-catenin positive.
Molecular: CTNNB1 exon 3 mutation, monosomy 6; MYC/MYCN not amplified; TP53 wild-type.
Diagnosis: Medulloblastoma, WNT-activated, classic histology (CNS WHO grade 4).
"""

_OPERATIVE_NOTE: Final = """\
OPERATIVE NOTE (SYNTHETIC DEMO DATA)
Procedure: suboccipital craniotomy and resection of posterior fossa tumour.
Findings: soft grey tumour filling the fourth ventricle, arising from the inferior vermis.
Gross total resection achieved under microscope; floor of the fourth ventricle preserved.
Estimated blood loss 150 mL. No complications. Extubated, to PICU in stable condition.
"""

_TREATMENT_PLAN_NOTE: Final = """\
TREATMENT PLAN (SYNTHETIC DEMO DATA)
Diagnosis: medulloblastoma, WNT-activated, gross total resection, M0, standard risk.
Completed: craniospinal irradiation 23.4 Gy with tumour bed boost to 54 Gy.
Current: maintenance chemotherapy, cycle 3 of 9 (cisplatin/vincristine alternating with
cyclophosphamide/vincristine). Audiology before each cisplatin cycle.
Family asks for an outside second opinion on the remaining therapy.
"""


# --------------------------------------------------------------------------------------------
# Small helpers for repeated FHIR shapes.
# --------------------------------------------------------------------------------------------
def coding(system: str, code: str, display: str | None = None) -> JSON:
    found: JSON = {"system": system, "code": code}
    if display is not None:
        found["display"] = display
    return found


def concept(*codings: JSON, text: str | None = None) -> JSON:
    found: JSON = {}
    if codings:
        found["coding"] = list(codings)
    if text is not None:
        found["text"] = text
    return found


def _ref(full_url: str, display: str | None = None) -> JSON:
    reference: JSON = {"reference": full_url}
    if display is not None:
        reference["display"] = display
    return reference


def _quantity(value: float, unit: str) -> JSON:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _identifier(kind: str, value: str) -> JSON:
    return {"system": f"{OUTSIDE_EHR}/{kind}", "value": value}


def _attachment(text: str, title: str, created: date) -> JSON:
    return {
        "contentType": "text/plain",
        "language": "en",
        "data": base64.b64encode(text.encode("utf-8")).decode("ascii"),
        "title": title,
        "creation": created.isoformat(),
    }


def _datetime(day: date, hhmm: str = "09:00") -> str:
    """A FHIR dateTime/instant at local time ``hhmm`` (fixed UTC-05:00 offset)."""
    return f"{day.isoformat()}T{hhmm}:00-05:00"


def _interpretation(value: float, low: float, high: float) -> JSON:
    if value < low:
        code, display = "L", "Low"
    elif value > high:
        code, display = "H", "High"
    else:
        code, display = "N", "Normal"
    return concept(coding(V3_INTERPRETATION, code, display))


def _v2_0074(code: str, display: str) -> JSON:
    return concept(coding(V2_0074, code, display))


def _loinc(code: str, display: str) -> JSON:
    return concept(coding(LOINC, code, display), text=display)


def _years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February maps to 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


def _uuid_url(seed: int, label: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, f'{seed}|{label}')}"


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower().replace("'", "")).strip("-")


# --------------------------------------------------------------------------------------------
# Bundle assembly.
# --------------------------------------------------------------------------------------------
class _RecordBuilder:
    """Builds the transaction Bundle for one synthetic patient."""

    def __init__(self, seed: int, as_of: date) -> None:
        self.seed = seed
        self.as_of = as_of
        self.rng = random.Random(seed)
        self.entries: list[JSON] = []
        self.onset = as_of - timedelta(days=_ONSET_DAYS_BEFORE_AS_OF)
        self.mrn = f"{self.rng.randint(1_000_000, 9_999_999)}"
        self.gender = self.rng.choice(("male", "female"))
        self.given = self.rng.choice(_CHILD_NAMES[self.gender])
        self.family = self.rng.choice(_FAMILY_NAMES)
        self.relationship = self.rng.choice(("mother", "father"))
        self.parent_given = self.rng.choice(_PARENT_NAMES[self.relationship])
        self.phone = f"+1-503-555-01{self.rng.randint(0, 99):02d}"  # 555-01xx: fictional
        self.address = {
            "use": "home",
            "line": [f"{self.rng.randint(10, 980)} {self.rng.choice(_STREETS)}"],
            "city": "Riverbend",
            "state": "OR",
            "postalCode": f"97{self.rng.randint(0, 999):03d}",
            "country": "US",
        }
        anniversary = _years_before(as_of, 9)
        self.birth_date = anniversary - timedelta(days=self.rng.randint(1, 330))

    # -- generic ---------------------------------------------------------------------------
    def day(self, offset: int) -> date:
        return self.onset + timedelta(days=offset)

    def local_id(self, label: str) -> str:
        """A per-patient identifier value, e.g. ``4821937-cbc-2-718-7``."""
        return f"{self.mrn}-{label}"

    def add(self, resource: JSON) -> str:
        """Append ``resource`` as a conditional-create entry; return its urn:uuid fullUrl."""
        first = resource["identifier"][0]
        full_url = _uuid_url(self.seed, f"{first['system']}|{first['value']}")
        resource.setdefault("meta", {"tag": [dict(_SYNTHETIC_TAG)]})
        self.entries.append(
            {
                "fullUrl": full_url,
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": resource["resourceType"],
                    "ifNoneExist": f"identifier={first['system']}|{first['value']}",
                },
            }
        )
        return full_url

    # -- actors ----------------------------------------------------------------------------
    def organization(self, name: str, type_text: str) -> str:
        return self.add(
            {
                "resourceType": "Organization",
                "identifier": [_identifier("organization", _slug(name))],
                "active": True,
                "type": [concept(text=type_text)],
                "name": name,
            }
        )

    def practitioner(self) -> str:
        given, family, npi = self.rng.choice(_ONCOLOGISTS)
        return self.add(
            {
                "resourceType": "Practitioner",
                "identifier": [{"system": NPI, "value": npi}],
                "active": True,
                "name": [
                    {"use": "official", "family": family, "given": [given], "prefix": ["Dr."]}
                ],
                "qualification": [{"code": concept(text="Pediatric hematology-oncology")}],
            }
        )

    def patient(self, hospital: str, oncologist: str) -> str:
        return self.add(
            {
                "resourceType": "Patient",
                "identifier": [
                    {"system": codes.HUB_PATIENT_ID_SYSTEM, "value": f"SYN-{self.mrn}"},
                    {
                        "use": "usual",
                        "type": concept(coding(V2_0203, "MR", "Medical record number")),
                        "system": f"{OUTSIDE_EHR}/mrn",
                        "value": self.mrn,
                        "assigner": _ref(hospital),
                    },
                ],
                "active": True,
                "name": [{"use": "official", "family": self.family, "given": [self.given]}],
                "telecom": [{"system": "phone", "value": self.phone, "use": "home"}],
                "gender": self.gender,
                "birthDate": self.birth_date.isoformat(),
                "address": [copy.deepcopy(self.address)],
                "generalPractitioner": [_ref(oncologist)],
                "managingOrganization": _ref(hospital),
            }
        )

    def guardian(self, patient: str) -> str:
        role_code, role_display, gender = _GUARDIAN_ROLES[self.relationship]
        return self.add(
            {
                "resourceType": "RelatedPerson",
                "identifier": [_identifier("related-person", self.local_id("guardian"))],
                "active": True,
                "patient": _ref(patient),
                "relationship": [
                    concept(
                        coding(V3_ROLE_CODE, role_code, role_display),
                        text=f"{role_display.capitalize()} (legal guardian)",
                    ),
                    concept(coding(V2_0131, "N", "Next-of-Kin")),
                ],
                "name": [{"use": "official", "family": self.family, "given": [self.parent_given]}],
                "telecom": [{"system": "phone", "value": self.phone, "use": "mobile"}],
                "gender": gender,
                "address": [copy.deepcopy(self.address)],
            }
        )

    def coverage(self, patient: str, guardian: str, insurer: str) -> str:
        return self.add(
            {
                "resourceType": "Coverage",
                "identifier": [_identifier("coverage", self.local_id("coverage"))],
                "status": "active",
                "type": concept(text="Family health plan"),
                "subscriber": _ref(guardian),
                "subscriberId": f"SUB{self.mrn[::-1]}",
                "beneficiary": _ref(patient),
                "relationship": concept(coding(SUBSCRIBER_RELATIONSHIP, "child", "Child")),
                "period": {"start": self.onset.replace(month=1, day=1).isoformat()},
                "payor": [_ref(insurer)],
            }
        )

    # -- clinical --------------------------------------------------------------------------
    def condition(self, patient: str, oncologist: str, pathology: str) -> str:
        return self.add(
            {
                "resourceType": "Condition",
                "identifier": [_identifier("condition", self.local_id("medulloblastoma"))],
                "clinicalStatus": concept(coding(CONDITION_CLINICAL, "active", "Active")),
                "verificationStatus": concept(
                    coding(CONDITION_VERIFICATION, "confirmed", "Confirmed")
                ),
                "category": [
                    concept(coding(CONDITION_CATEGORY, "problem-list-item", "Problem List Item"))
                ],
                "severity": concept(text="Standard risk (gross total resection, M0)"),
                "code": concept(
                    coding(ICD10CM, "C71.6", "Malignant neoplasm of cerebellum"),
                    text=_CONDITION_TEXT,
                ),
                "bodySite": [concept(text="Cerebellum (inferior vermis, fourth ventricle)")],
                "subject": _ref(patient),
                "onsetDateTime": self.day(0).isoformat(),
                "recordedDate": self.day(_DAY_PATHOLOGY).isoformat(),
                "recorder": _ref(oncologist),
                "evidence": [{"detail": [_ref(pathology)]}],
            }
        )

    def report(
        self,
        label: str,
        category: JSON,
        code: JSON,
        patient: str,
        performer: str,
        day: date,
        **extra: Any,
    ) -> str:
        """A final DiagnosticReport; ``extra`` adds result/conclusion/presentedForm/..."""
        return self.add(
            {
                "resourceType": "DiagnosticReport",
                "identifier": [_identifier("diagnostic-report", self.local_id(label))],
                "status": "final",
                "category": [category],
                "code": code,
                "subject": _ref(patient),
                "effectiveDateTime": _datetime(day),
                "issued": _datetime(day, "16:30"),
                "performer": [_ref(performer)],
                **extra,
            }
        )

    def lab_panels(self, patient: str, lab: str) -> list[str]:
        """One CBC DiagnosticReport (with its Observations) per entry of ``_CBC_DRAWS``."""
        reports = []
        for draw_no, (offset, description) in enumerate(_CBC_DRAWS, start=1):
            drawn = self.day(offset)
            results = [self.observation(patient, analyte, draw_no, drawn) for analyte in _ANALYTES]
            reports.append(
                self.report(
                    f"cbc-{draw_no}",
                    _v2_0074("LAB", "Laboratory"),
                    _loinc("58410-2", "CBC panel - Blood by Automated count"),
                    patient,
                    lab,
                    drawn,
                    result=[_ref(url) for url in results],
                    conclusion=f"CBC {description}.",
                )
            )
        return reports

    def observation(self, patient: str, analyte: _Analyte, draw_no: int, drawn: date) -> str:
        jitter = self.rng.uniform(0.93, 1.07)
        value = round(analyte.typical[draw_no - 1] * jitter, analyte.decimals)
        if analyte.decimals == 0:
            value = int(value)
        return self.add(
            {
                "resourceType": "Observation",
                "identifier": [
                    _identifier("observation", self.local_id(f"cbc-{draw_no}-{analyte.loinc}"))
                ],
                "status": "final",
                "category": [concept(coding(OBSERVATION_CATEGORY, "laboratory", "Laboratory"))],
                "code": _loinc(analyte.loinc, analyte.display),
                "subject": _ref(patient),
                "effectiveDateTime": _datetime(drawn, "07:45"),
                "valueQuantity": _quantity(value, analyte.unit),
                "interpretation": [_interpretation(value, analyte.low, analyte.high)],
                "referenceRange": [
                    {
                        "low": _quantity(analyte.low, analyte.unit),
                        "high": _quantity(analyte.high, analyte.unit),
                        "text": "Pediatric reference range, age 6-12 years",
                    }
                ],
            }
        )

    def imaging(self, patient: str, hospital: str) -> list[str]:
        studies = (
            (
                "mri-brain-pre-op",
                _DAY_PRE_OP_MRI,
                "MRI brain and whole spine with and without contrast, pre-operative",
                "4.1 x 3.6 x 3.8 cm heterogeneously enhancing posterior fossa mass centred in "
                "the fourth ventricle with obstructive hydrocephalus. No leptomeningeal "
                "enhancement of brain or spine.",
            ),
            (
                "mri-brain-post-op",
                _DAY_POST_OP_MRI,
                "MRI brain with and without contrast, post-operative (within 48 hours)",
                "Post-surgical changes of suboccipital craniotomy. No residual enhancing "
                "tumour in the posterior fossa. Hydrocephalus improving.",
            ),
        )
        return [
            self.report(
                label,
                _v2_0074("RAD", "Radiology"),
                concept(coding(LOINC, "18748-4", "Diagnostic imaging study"), text=study_text),
                patient,
                hospital,
                self.day(offset),
                conclusion=conclusion,
            )
            for label, offset, study_text, conclusion in studies
        ]

    def pathology(self, patient: str, hospital: str) -> str:
        day = self.day(_DAY_PATHOLOGY)
        return self.report(
            "pathology",
            _v2_0074("SP", "Surgical Pathology"),
            _loinc("11526-1", "Pathology study"),
            patient,
            hospital,
            day,
            conclusion=(
                "Medulloblastoma, WNT-activated (CTNNB1 mutation, monosomy 6), classic "
                "histology, CNS WHO grade 4. MYC/MYCN not amplified; TP53 wild-type."
            ),
            presentedForm=[_attachment(_PATHOLOGY_TEXT, "Surgical pathology report", day)],
        )

    def procedure(
        self,
        label: str,
        code_text: str,
        patient: str,
        condition: str,
        *codings: JSON,
        **extra: Any,
    ) -> str:
        """A completed Procedure; ``extra`` adds performed[x]/bodySite/outcome/..."""
        return self.add(
            {
                "resourceType": "Procedure",
                "identifier": [_identifier("procedure", self.local_id(label))],
                "status": "completed",
                "code": concept(*codings, text=code_text),
                "subject": _ref(patient),
                "reasonReference": [_ref(condition)],
                **extra,
            }
        )

    def procedures(self, patient: str, condition: str, oncologist: str) -> None:
        self.procedure(
            "resection",
            "Suboccipital craniotomy and gross total resection of posterior fossa tumour",
            patient,
            condition,
            performedDateTime=_datetime(self.day(_DAY_SURGERY), "08:15"),
            bodySite=[concept(text="Posterior fossa")],
            outcome=concept(text="Gross total resection"),
        )
        self.procedure(
            "craniospinal-rt",
            "Craniospinal irradiation 23.4 Gy in 13 fractions with tumour bed boost to 54 Gy "
            "(30 fractions total)",
            patient,
            condition,
            coding(SNOMED, "1217123003", "Radiotherapy course of treatment"),
            category=concept(coding(SNOMED, "108290001", "Radiation oncology AND/OR radiotherapy")),
            performedPeriod={
                "start": self.day(_DAY_RADIATION_START).isoformat(),
                "end": self.day(_DAY_RADIATION_END).isoformat(),
            },
            performer=[{"actor": _ref(oncologist)}],
            bodySite=[concept(text="Craniospinal axis")],
        )

    def chemotherapy(self, patient: str, condition: str, oncologist: str) -> None:
        for cycle, offset, agents in _CYCLES:
            given = self.day(offset)
            for agent in agents:
                drug = _DRUGS[agent]
                dose = drug.mg_per_m2 * _BSA_M2
                if drug.max_mg is not None:
                    dose = min(dose, drug.max_mg)
                dose = round(dose, 1)
                medication = concept(coding(RXNORM, drug.rxnorm, drug.name), text=drug.name)
                label = f"cycle-{cycle}-{drug.name}"
                request = self.add(
                    {
                        "resourceType": "MedicationRequest",
                        "identifier": [_identifier("medication-request", self.local_id(label))],
                        "status": "completed",
                        "intent": "order",
                        "medicationCodeableConcept": medication,
                        "subject": _ref(patient),
                        "authoredOn": (given - timedelta(days=1)).isoformat(),
                        "requester": _ref(oncologist),
                        "reasonReference": [_ref(condition)],
                        "dosageInstruction": [
                            {
                                "text": f"{drug.mg_per_m2:g} mg/m2 (BSA {_BSA_M2} m2) = "
                                f"{dose:g} mg, {drug.how}; maintenance cycle {cycle}",
                                "doseAndRate": [{"doseQuantity": _quantity(dose, "mg")}],
                            }
                        ],
                    }
                )
                self.add(
                    {
                        "resourceType": "MedicationAdministration",
                        "identifier": [
                            _identifier("medication-administration", self.local_id(label))
                        ],
                        "status": "completed",
                        "medicationCodeableConcept": medication,
                        "subject": _ref(patient),
                        "effectiveDateTime": _datetime(given, "10:00"),
                        "performer": [{"actor": _ref(oncologist)}],
                        "request": _ref(request),
                        "dosage": {
                            "route": concept(text="Intravenous"),
                            "dose": _quantity(dose, "mg"),
                        },
                    }
                )

    def document(
        self, label: str, title: str, text: str, day: date, patient: str, author: str, org: str
    ) -> str:
        return self.add(
            {
                "resourceType": "DocumentReference",
                "identifier": [_identifier("document-reference", self.local_id(label))],
                "status": "current",
                "docStatus": "final",
                "type": concept(text=title),
                "subject": _ref(patient),
                "date": _datetime(day, "17:00"),
                "author": [_ref(author)],
                "custodian": _ref(org),
                "description": title,
                "content": [{"attachment": _attachment(text, title, day)}],
            }
        )

    # -- whole bundle ----------------------------------------------------------------------
    def build(self) -> JSON:
        hospital = self.organization(self.rng.choice(_HOSPITALS), "Children's hospital")
        insurer = self.organization(self.rng.choice(_INSURERS), "Health insurer")
        oncologist = self.practitioner()
        patient = self.patient(hospital, oncologist)
        guardian = self.guardian(patient)
        self.coverage(patient, guardian, insurer)
        pathology = self.pathology(patient, hospital)
        condition = self.condition(patient, oncologist, pathology)
        self.imaging(patient, hospital)
        self.lab_panels(patient, hospital)
        self.procedures(patient, condition, oncologist)
        self.chemotherapy(patient, condition, oncologist)
        docs = (
            ("operative-note", "Operative note", _OPERATIVE_NOTE, _DAY_SURGERY),
            ("treatment-plan", "Current treatment plan", _TREATMENT_PLAN_NOTE, _DAY_TREATMENT_PLAN),
        )
        for label, title, text, offset in docs:
            self.document(label, title, text, self.day(offset), patient, oncologist, hospital)
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "meta": {"tag": [dict(_SYNTHETIC_TAG)]},
            "entry": self.entries,
        }


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------
def build_patient_records(seed: int = DEFAULT_SEED, *, as_of: date = DEFAULT_AS_OF) -> JSON:
    """Return a FHIR R4 transaction Bundle of synthetic outside-EHR records for one child.

    The child is 9 years old on ``as_of`` and has a WNT-activated medulloblastoma diagnosed
    about five months earlier, treated with resection, craniospinal irradiation and maintenance
    chemotherapy.  All dates are before ``as_of``.  Each entry has a deterministic
    ``urn:uuid:`` fullUrl and a conditional create request
    (``ifNoneExist: identifier=<system>|<value>``); references between entries use the fullUrls.
    The same ``seed`` and ``as_of`` always give the same Bundle.
    """
    return _RecordBuilder(seed, as_of).build()


def referral_identifier(seed: int = DEFAULT_SEED) -> tuple[str, str]:
    """Return the (system, value) business identifier of the referral built for ``seed``."""
    token = uuid.uuid5(_UUID_NAMESPACE, f"{seed}|referral").hex[:10].upper()
    return REFERRAL_ID_SYSTEM, f"REF-{token}"


def build_referral(
    patient_reference: str,
    requester_reference: str,
    seed: int = DEFAULT_SEED,
    *,
    as_of: date = DEFAULT_AS_OF,
) -> JSON:
    """Return the second-opinion ServiceRequest a referring EHR would POST.

    ``patient_reference`` and ``requester_reference`` are used verbatim as Reference.reference
    values (e.g. ``Patient/123`` or a ``urn:uuid:`` fullUrl).  The identifier from
    :func:`referral_identifier` lets the referrer use a conditional create.  The three ``note``
    entries carry the family's and referrer's questions for the experts.
    """
    system, value = referral_identifier(seed)
    authored = as_of - timedelta(days=_ONSET_DAYS_BEFORE_AS_OF - _DAY_REFERRAL)
    questions = (
        (
            "Parent/guardian",
            "Would proton therapy have spared more hearing and growth than the "
            "photon craniospinal irradiation already given, and does that change follow-up?",
        ),
        (
            "Referring oncologist",
            "Given the WNT-activated subgroup, is it reasonable to reduce "
            "the remaining cisplatin exposure or shorten maintenance to limit ototoxicity?",
        ),
        (
            "Parent/guardian",
            "Are there open clinical trials for WNT medulloblastoma that our "
            "child could still join at this point in treatment?",
        ),
    )
    return {
        "resourceType": "ServiceRequest",
        "meta": {"tag": [dict(_SYNTHETIC_TAG)]},
        "identifier": [{"system": system, "value": value}],
        "status": "active",
        "intent": "order",
        "category": [concept(coding(codes.CASE_CATEGORY_SYSTEM, codes.SECOND_OPINION))],
        "priority": "routine",
        "code": concept(text="Second opinion review: pediatric oncology"),
        "subject": _ref(patient_reference),
        "authoredOn": _datetime(authored, "14:20"),
        "requester": _ref(requester_reference),
        "reasonCode": [
            concept(text=f"{_CONDITION_TEXT}; family requests expert review of the adjuvant plan")
        ],
        "note": [
            {"authorString": author, "time": _datetime(authored, "14:20"), "text": text}
            for author, text in questions
        ],
    }
