"""Diagnosis and treatment in the synthetic outside-EHR record: imaging, reports, documents,
conditions, procedures, chemotherapy and the care plan."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from hub.demo.outside.cancers import RADIOTHERAPY, SNOMED, ChemoDrug, Code, ImagingSpec
from hub.demo.outside.shapes import (
    DICOM_DCM,
    DICOM_UID,
    JSON,
    instant,
    loinc,
    observation_category,
    pdf,
    quantity,
    ref,
    when,
)
from hub.demo.outside.writer import Actors, RecordWriter
from hub.demo.synthetic import (
    CONDITION_CATEGORY,
    CONDITION_CLINICAL,
    CONDITION_VERIFICATION,
    ICD10CM,
    LOINC,
    RXNORM,
    V2_0074,
    V2_0203,
    coding,
    concept,
)

_MODALITIES: Final = {
    "MR": "Magnetic Resonance",
    "CT": "Computed Tomography",
    "PT": "Positron emission tomography",
    "NM": "Nuclear Medicine",
    "DX": "Digital Radiography",
}
_DISCHARGE_TEXT: Final = """\
DISCHARGE SUMMARY (SYNTHETIC DATA)
Admitted with fever 38.9 C and an absolute neutrophil count of 0.2 x 10^3/uL on day 10 of
chemotherapy cycle 1. Blood cultures negative. Treated with cefepime for five days; afebrile
for 48 hours with count recovery before discharge home.
"""


def document(
    w: RecordWriter,
    a: Actors,
    kind: tuple[str, str],
    title: str,
    text: str,
    moment: datetime,
    *,
    author: str,
    related: str | None = None,
    as_pdf: bool = False,
) -> str:
    """A DocumentReference (LOINC type ``kind``) whose attachment is the URL of a Binary
    holding ``text``, as a small PDF or as plain text."""
    data = pdf(title, text) if as_pdf else text.encode("utf-8")
    content_type = "application/pdf" if as_pdf else "text/plain; charset=utf-8"
    binary = w.add(
        {
            "resourceType": "Binary",
            "contentType": content_type,
            "securityContext": ref(a.patient),
            "data": base64.b64encode(data).decode("ascii"),
        },
        moment + timedelta(minutes=30),
    )
    context: JSON = {"period": {"start": when(moment)}}
    encounter = w.encounter_on((moment.date() - w.day0).days)
    if encounter:
        context["encounter"] = [ref(encounter)]
    if related:
        context["related"] = [ref(related)]
    return w.add(
        {
            "resourceType": "DocumentReference",
            "identifier": [w.identifier("document", f"D{w.mrn}-{len(w.entries)}")],
            "status": "current",
            "docStatus": "final",
            "type": concept(coding(LOINC, *kind), text=title),
            "subject": ref(a.patient),
            "date": instant(moment),
            "author": [ref(author)],
            "custodian": ref(a.hospital),
            "description": title,
            "content": [
                {
                    "attachment": {
                        "contentType": content_type,
                        "language": "en",
                        "url": binary,
                        "size": len(data),
                        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),
                        "title": title,
                        "creation": when(moment),
                    }
                }
            ],
            "context": context,
        },
        moment + timedelta(minutes=31),
    )


def imaging(w: RecordWriter, a: Actors, spec: ImagingSpec) -> None:
    """An ImagingStudy with its radiology DiagnosticReport and report document."""
    started = w.at(spec.day, 10, 30)
    series = [
        {
            "uid": w.uid(spec.label, number),
            "number": number,
            "modality": coding(DICOM_DCM, modality, _MODALITIES[modality]),
            "description": description,
            "numberOfInstances": instances,
            "started": when(started + timedelta(minutes=4 * number)),
        }
        for number, (modality, description, instances) in enumerate(spec.series, start=1)
    ]
    modalities = sorted({modality for modality, _, _ in spec.series})
    encounter = w.encounter_on(spec.day)
    context = {"encounter": ref(encounter)} if encounter else {}
    accession = f"A{w.mrn[-5:]}{spec.day:04d}"
    study = w.add(
        {
            "resourceType": "ImagingStudy",
            "identifier": [
                {"system": DICOM_UID, "value": f"urn:oid:{w.uid(spec.label)}"},
                {
                    "type": concept(coding(V2_0203, "ACSN", "Accession ID")),
                    **w.identifier("accession", accession),
                },
            ],
            "status": "available",
            "modality": [coding(DICOM_DCM, code, _MODALITIES[code]) for code in modalities],
            "subject": ref(a.patient),
            **context,
            "started": when(started),
            "referrer": ref(a.oncologist),
            "interpreter": [ref(a.radiologist)],
            "numberOfSeries": len(series),
            "numberOfInstances": sum(instances for _, _, instances in spec.series),
            "procedureCode": [concept(text=spec.description)],
            "description": spec.description,
            "series": series,
        },
        started + timedelta(hours=1),
    )
    issued = started + timedelta(hours=5)
    report = w.add(
        {
            "resourceType": "DiagnosticReport",
            "identifier": [w.identifier("diagnostic-report", accession)],
            "status": "final",
            "category": [concept(coding(V2_0074, "RAD", "Radiology"))],
            "code": concept(
                coding(LOINC, "18748-4", "Diagnostic imaging study"), text=spec.description
            ),
            "subject": ref(a.patient),
            **context,
            "effectiveDateTime": when(started),
            "issued": instant(issued),
            "performer": [ref(a.hospital)],
            "resultsInterpreter": [ref(a.radiologist)],
            "imagingStudy": [ref(study)],
            "conclusion": spec.conclusion,
        },
        issued,
    )
    text = (
        f"RADIOLOGY REPORT (SYNTHETIC DATA)\nExam: {spec.description}\n"
        f"Accession: {accession}\nImpression: {spec.conclusion}\n"
    )
    title = f"Radiology report: {spec.description}"
    kind = ("18748-4", "Diagnostic imaging study")
    document(w, a, kind, title, text, issued, author=a.radiologist, related=report)


def pathology(w: RecordWriter, a: Actors) -> str:
    issued = w.at(w.pathology_day, 15)
    return w.add(
        {
            "resourceType": "DiagnosticReport",
            "identifier": [w.identifier("diagnostic-report", f"SP{w.mrn[-6:]}")],
            "status": "final",
            "category": [concept(coding(V2_0074, "SP", "Surgical Pathology"))],
            "code": loinc("11526-1", "Pathology study"),
            "subject": ref(a.patient),
            "effectiveDateTime": when(w.at(w.profile.procedures[0].day, 10)),
            "issued": instant(issued),
            "performer": [ref(a.hospital)],
            "resultsInterpreter": [ref(a.pathologist)],
            "conclusion": w.profile.pathology,
        },
        issued,
    )


def molecular(w: RecordWriter, a: Actors) -> str:
    """A genetics DiagnosticReport whose results are one variant Observation per finding."""
    collected = when(w.at(w.profile.procedures[0].day, 10))
    issued = w.at(w.pathology_day + 14, 14)
    results = []
    for finding in w.profile.molecular:
        answer = ("LA9633-4", "Present") if finding.present else ("LA9634-2", "Absent")
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "category": observation_category("laboratory", "Laboratory"),
            "code": loinc("69548-6", "Genetic variant assessment"),
            "subject": ref(a.patient),
            "effectiveDateTime": collected,
            "issued": instant(issued),
            "performer": [ref(a.lab)],
            "valueCodeableConcept": concept(coding(LOINC, *answer), text=answer[1]),
            "note": [{"text": finding.text}],
            "component": [
                {
                    "code": loinc("48018-6", "Gene studied [ID]"),
                    "valueCodeableConcept": concept(text=finding.gene),
                }
            ],
        }
        results.append(w.add(observation, issued))
    return w.add(
        {
            "resourceType": "DiagnosticReport",
            "identifier": [w.identifier("diagnostic-report", f"MOL{w.mrn[-6:]}")],
            "status": "final",
            "category": [concept(coding(V2_0074, "GE", "Genetics"))],
            "code": loinc("81247-9", "Master HL7 genetic variant reporting panel"),
            "subject": ref(a.patient),
            "effectiveDateTime": collected,
            "issued": instant(issued),
            "performer": [ref(a.lab)],
            "result": [ref(url) for url in results],
            "conclusion": "; ".join(finding.text for finding in w.profile.molecular),
        },
        issued,
    )


def _codings(*codes: Code | None) -> list[JSON]:
    return [coding(c.system, c.code, c.display) for c in codes if c is not None]


def _status(system: str, code: str) -> JSON:
    return concept(coding(system, code, code.capitalize()))


def conditions(w: RecordWriter, a: Actors, admission: str, evidence: Sequence[str]) -> str:
    """The cancer (stage and history as text, no extensions) and four comorbidities;
    returns the cancer's Condition."""
    p = w.profile
    primary = w.add(
        {
            "resourceType": "Condition",
            "clinicalStatus": _status(CONDITION_CLINICAL, p.clinical_status),
            "verificationStatus": _status(CONDITION_VERIFICATION, "confirmed"),
            "category": [
                concept(coding(CONDITION_CATEGORY, "problem-list-item", "Problem List Item"))
            ],
            "code": concept(*_codings(p.icd10, p.snomed, p.morphology), text=p.text),
            "bodySite": [concept(text=p.body_site)],
            "subject": ref(a.patient),
            "encounter": ref(admission),
            "onsetDateTime": w.date_of(0),
            "recordedDate": w.date_of(w.pathology_day),
            "recorder": ref(a.oncologist),
            "asserter": ref(a.oncologist),
            "stage": [{"summary": concept(text=p.stage)}],
            "evidence": [{"detail": [ref(url) for url in evidence]}],
            "note": [{"text": p.history}],
        },
        w.at(w.pathology_day + 14, 16),
    )
    own_code, own_text = p.comorbidity
    comorbidities = (
        (Code(SNOMED, "409089005", "Febrile neutropenia"),
         "Febrile neutropenia after chemotherapy cycle 1", w.fever_day, w.fever_day + 4),
        (Code(ICD10CM, "D64.81", "Anemia due to antineoplastic chemotherapy"),
         "Anemia due to chemotherapy", w.cycle_days[1], None),
        (Code(ICD10CM, "R11.2", "Nausea with vomiting, unspecified"),
         "Chemotherapy-induced nausea and vomiting", w.cycle_days[0], w.cycle_days[-1] + 5),
        (own_code, own_text, 0, None),
    )  # fmt: skip
    for code, text, onset, abatement in comorbidities:
        resource: JSON = {
            "resourceType": "Condition",
            "clinicalStatus": _status(
                CONDITION_CLINICAL, "active" if abatement is None else "resolved"
            ),
            "verificationStatus": _status(CONDITION_VERIFICATION, "confirmed"),
            "category": [
                concept(coding(CONDITION_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis"))
            ],
            "code": concept(*_codings(code), text=text),
            "subject": ref(a.patient),
            "onsetDateTime": when(w.at(onset, 12)),
            "recorder": ref(a.oncologist),
        }
        encounter = w.encounter_on(onset)
        if encounter:
            resource["encounter"] = ref(encounter)
        if abatement is not None:
            resource["abatementDateTime"] = when(w.at(abatement, 12))
        w.add(resource, w.at(onset if abatement is None else abatement, 17))
    return primary


def procedures(w: RecordWriter, a: Actors, condition: str) -> None:
    """Each Procedure of the profile; one with a note also gets an operative or procedure
    note (a PDF)."""
    for spec in w.profile.procedures:
        performer = a.oncologist if spec.kind == "radiation" else a.surgeon
        resource: JSON = {
            "resourceType": "Procedure",
            "identifier": [w.identifier("procedure", f"P{w.mrn}-{spec.label}")],
            "status": "completed",
            "code": concept(*_codings(spec.snomed), text=spec.text),
            "subject": ref(a.patient),
            "performer": [{"actor": ref(performer)}],
            "reasonReference": [ref(condition)],
            "bodySite": [concept(text=spec.body_site)],
        }
        if spec.kind == "radiation":
            resource["category"] = concept(coding(*RADIOTHERAPY))
        encounter = w.encounter_on(spec.day)
        if encounter:
            resource["encounter"] = ref(encounter)
        if spec.end_day is None:
            resource["performedDateTime"] = when(w.at(spec.day, 8, 15))
            done = w.at(spec.day, 14)
        else:
            resource["performedPeriod"] = {
                "start": when(w.at(spec.day, 8)),
                "end": when(w.at(spec.end_day, 16)),
            }
            done = w.at(spec.end_day, 17)
        procedure = w.add(resource, done)
        if spec.note:
            operative = spec.kind == "operative"
            kind = ("11504-8", "Surgical operation note")
            if not operative:
                kind = ("28570-0", "Procedure note")
            heading = "OPERATIVE NOTE" if operative else "PROCEDURE NOTE"
            text = f"{heading} (SYNTHETIC DATA)\nProcedure: {spec.text}\n{spec.note}\n"
            document(
                w, a, kind, spec.text, text, done, author=a.surgeon, related=procedure, as_pdf=True
            )


def _dose(w: RecordWriter, drug: ChemoDrug) -> tuple[float, str]:
    """The dose of ``drug`` for the child's size at day 0, and how it was worked out."""
    height, weight = w.height_cm(0), w.weight_kg(0)
    bsa = round((height * weight / 3600) ** 0.5, 2)  # Mosteller
    if drug.basis == "m2":
        amount, how = drug.dose * bsa, f"{drug.dose:g} {drug.unit}/m2 x BSA {bsa} m2"
    elif drug.basis == "kg":
        amount, how = drug.dose * weight, f"{drug.dose:g} {drug.unit}/kg x {weight:.1f} kg"
    else:
        amount, how = drug.dose, "fixed dose"
    if drug.max_dose is not None and amount > drug.max_dose:
        amount, how = drug.max_dose, f"{how}, capped at {drug.max_dose:g} {drug.unit}"
    return (round(amount) if amount >= 100 else round(amount, 1)), how


def chemotherapy(
    w: RecordWriter, a: Actors, condition: str, cycle_encounters: Sequence[str], contained: bool
) -> list[str]:
    """A MedicationRequest and its MedicationAdministration per drug per cycle; returns the
    requests.  With ``contained``, the first request carries its Medication contained."""
    requests: list[str] = []
    cycles = zip(w.cycle_days, w.profile.cycles, cycle_encounters, strict=True)
    for number, (day, agents, encounter) in enumerate(cycles, start=1):
        for agent in agents:
            drug = w.profile.drug(agent)
            amount, how = _dose(w, drug)
            rxnorm = [coding(RXNORM, drug.rxnorm, drug.name)] if drug.rxnorm else []
            text = f"{amount:g} {drug.unit} ({how}), {drug.route.lower()}, {drug.how}"
            request: JSON = {
                "resourceType": "MedicationRequest",
                "status": "completed",
                "intent": "order",
                "medicationCodeableConcept": concept(*rxnorm, text=drug.name),
                "subject": ref(a.patient),
                "encounter": ref(encounter),
                "authoredOn": when(w.at(day - 1, 16)),
                "requester": ref(a.oncologist),
                "reasonReference": [ref(condition)],
                "dosageInstruction": [
                    {
                        "text": f"{text}; cycle {number}",
                        "route": concept(text=drug.route),
                        "doseAndRate": [{"doseQuantity": quantity(amount, drug.unit)}],
                    }
                ],
            }
            if contained and not requests:
                medication = request.pop("medicationCodeableConcept")
                request["contained"] = [
                    {"resourceType": "Medication", "id": "med1", "code": medication}
                ]
                request["medicationReference"] = {"reference": "#med1"}
            requests.append(w.add(request, w.at(day - 1, 16, 30)))
            given = w.at(day, 10)
            w.add(
                {
                    "resourceType": "MedicationAdministration",
                    "status": "completed",
                    "medicationCodeableConcept": concept(*rxnorm, text=drug.name),
                    "subject": ref(a.patient),
                    "context": ref(encounter),
                    "effectivePeriod": {
                        "start": when(given),
                        "end": when(given + timedelta(hours=1)),
                    },
                    "performer": [{"actor": ref(a.oncologist)}],
                    "request": ref(requests[-1]),
                    "dosage": {
                        "text": text,
                        "route": concept(text=drug.route),
                        "dose": quantity(amount, drug.unit),
                    },
                },
                given + timedelta(hours=2),
            )
    return requests


def care_plan(
    w: RecordWriter,
    a: Actors,
    condition: str,
    evidence: Sequence[str],
    requests: Sequence[str],
) -> None:
    """The CarePlan (its activities are the chemotherapy orders), the treatment plan note
    and the discharge summary of the admission for fever and neutropenia."""
    p = w.profile
    created = w.at(p.first_cycle_day - 2, 14)
    w.add(
        {
            "resourceType": "CarePlan",
            "identifier": [w.identifier("care-plan", f"CP{w.mrn}")],
            "status": "active",
            "intent": "plan",
            "category": [concept(text="Oncology treatment plan")],
            "title": f"Treatment plan: {p.text}",
            "description": p.plan,
            "subject": ref(a.patient),
            "period": {"start": w.date_of(p.first_cycle_day)},
            "created": when(created),
            "author": ref(a.oncologist),
            "contributor": [ref(a.oncologist), ref(a.surgeon)],
            "addresses": [ref(condition)],
            "supportingInfo": [ref(url) for url in evidence],
            "activity": [{"reference": ref(url)} for url in requests],
        },
        created,
    )
    text = f"TREATMENT PLAN (SYNTHETIC DATA)\nDiagnosis: {p.text}\nStage: {p.stage}\n{p.plan}\n"
    kind = ("18776-5", "Plan of care note")
    document(w, a, kind, "Treatment plan", text, created, author=a.oncologist, as_pdf=True)
    discharged = w.at(w.fever_day + 4, 13)
    title = "Discharge summary: fever and neutropenia"
    kind = ("18842-5", "Discharge summary")
    document(w, a, kind, title, _DISCHARGE_TEXT, discharged, author=a.oncologist)
