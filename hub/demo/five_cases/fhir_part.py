"""The FHIR side of a SYNTHETIC case: the outside EHR's record and the referral.

The record is :func:`hub.demo.outside_record.build_outside_record` of the cancer, sized to its
fixed part and three clinic visits (the last one the day before ``as_of``, with a CBC and a
metabolic panel), plus two Observations it lacks: the tumour marker drawn with the last CBC
and the clinical stage group.  The referral is :func:`hub.demo.synthetic.build_referral` made
to fit the cancer (codes, questions, identifier), sent with the child and the referring
oncologist as one transaction of conditional creates.
"""

from __future__ import annotations

import copy
import random
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Final

from hub.demo.five_cases.tables import CaseExtras
from hub.demo.outside.cancers import CancerProfile
from hub.demo.outside.shapes import (
    JSON,
    SYNTHETIC_TAG,
    interpretation,
    loinc,
    observation_category,
    quantity,
    ref,
)
from hub.demo.outside.visits import Analyte
from hub.demo.outside_record import build_outside_record, minimum_resources
from hub.demo.synthetic import build_referral, coding, concept

__all__ = [
    "VISIT_ENTRIES",
    "LastDraw",
    "entries_of",
    "outside_record",
    "referral_transaction",
]

VISIT_ENTRIES: Final = 65
"""Entries of three clinic visits (days 0, 349 and 699): CBC at each, CMP at the first and last."""
STAGE_GROUP: Final = ("21908-9", "Stage group.clinical Cancer")
CBC_PANEL: Final = "58410-2"
_UUID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://five-cases.example/referral")


@dataclass(frozen=True)
class LastDraw:
    """The last blood draw of the record: its CBC report, the CBC's Observations by LOINC
    code and the tumour-marker Observation added to it."""

    report: JSON
    results: dict[str, JSON]
    marker: JSON


def entries_of(bundle: JSON, resource_type: str) -> list[JSON]:
    """The resources of ``resource_type`` in ``bundle``, in order."""
    return [
        entry["resource"]
        for entry in bundle.get("entry", [])
        if entry["resource"].get("resourceType") == resource_type
    ]


def _by_reference(bundle: JSON) -> dict[str, JSON]:
    return {
        f"{entry['resource']['resourceType']}/{entry['resource']['id']}": entry["resource"]
        for entry in bundle.get("entry", [])
    }


def _put(resource: JSON) -> JSON:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"resource": resource, "request": {"method": "PUT", "url": url}}


def _marker_value(marker: Analyte, rng: random.Random) -> float:
    raw = max(rng.gauss(marker.base, marker.spread), 10.0**-marker.decimals)
    return round(raw, marker.decimals) if marker.decimals else round(raw)


def outside_record(
    profile: CancerProfile, extras: CaseExtras, seed: int, source: str, as_of: date
) -> tuple[JSON, LastDraw]:
    """The outside EHR's record of the case (a transaction Bundle of ``PUT Type/id``, as
    :func:`build_outside_record` makes it) and its last blood draw."""
    size = minimum_resources(profile.key) + VISIT_ENTRIES
    record = build_outside_record(
        resources=size, cancer=profile.key, seed=seed, source=source, as_of=as_of
    )
    resources = _by_reference(record)
    reports = [
        report
        for report in entries_of(record, "DiagnosticReport")
        if report["code"]["coding"][0]["code"] == CBC_PANEL
    ]
    report = max(reports, key=lambda r: str(r["effectiveDateTime"]))
    results: dict[str, JSON] = {}
    for member in report["result"]:
        observation = resources[member["reference"]]
        results[observation["code"]["coding"][0]["code"]] = observation
    tag = f"{profile.abbreviation}{seed}"
    rng = random.Random(f"five-cases|{profile.key}|{seed}")
    marker = _marker(extras.marker, next(iter(results.values())), f"obs-{tag}-marker", rng)
    record["entry"].append(_put(marker))
    record["entry"].append(_put(_stage(profile, record, f"obs-{tag}-stage")))
    return record, LastDraw(report, results, marker)


def _marker(marker: Analyte, drawn_with: JSON, resource_id: str, rng: random.Random) -> JSON:
    """The tumour marker, drawn, resulted and written like the CBC result ``drawn_with``."""
    value = _marker_value(marker, rng)
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "meta": copy.deepcopy(drawn_with["meta"]),
        "status": "final",
        "category": observation_category("laboratory", "Laboratory"),
        "code": loinc(marker.loinc, marker.display),
        "subject": copy.deepcopy(drawn_with["subject"]),
        "effectiveDateTime": drawn_with["effectiveDateTime"],
        "issued": drawn_with["issued"],
        "performer": copy.deepcopy(drawn_with.get("performer", [])),
        "valueQuantity": quantity(value, marker.unit),
        "interpretation": interpretation(value, marker.low, marker.high),
        "referenceRange": [
            {
                "low": quantity(marker.low, marker.unit),
                "high": quantity(marker.high, marker.unit),
                "text": "Pediatric reference range",
            }
        ],
    }


def _stage(profile: CancerProfile, record: JSON, resource_id: str) -> JSON:
    """The clinical stage group of the primary cancer (its Condition has the stage as text
    only), as of the day the diagnosis was recorded."""
    condition = next(
        c
        for c in entries_of(record, "Condition")
        if any(coding["code"] == profile.icd10.code for coding in c["code"]["coding"])
    )
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "meta": copy.deepcopy(condition["meta"]),
        "status": "final",
        "code": loinc(*STAGE_GROUP),
        "subject": copy.deepcopy(condition["subject"]),
        "focus": [ref(f"Condition/{condition['id']}")],
        "effectiveDateTime": condition["recordedDate"],
        "performer": [copy.deepcopy(condition["asserter"])],
        "valueCodeableConcept": concept(text=profile.stage),
    }


def _full_url(source: str, tag: str, label: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, f'{source}|{tag}|{label}')}"


def _identifier_query(identifier: JSON) -> str:
    return f"identifier={identifier['system']}|{identifier['value']}"


def referral_transaction(
    record: JSON,
    profile: CancerProfile,
    extras: CaseExtras,
    *,
    seed: int,
    source: str,
    as_of: date,
) -> JSON:
    """What the outside EHR POSTs to open the case: a transaction of conditional creates of
    the child (name, birth date, sex, address and MRN as in the record), the referring
    oncologist (the child's general practitioner in the record) and the second-opinion
    ServiceRequest (:func:`build_referral` with the cancer's codes and questions)."""
    outside = entries_of(record, "Patient")[0]
    tag = f"{profile.abbreviation}{seed}"
    patient: JSON = {
        "resourceType": "Patient",
        "meta": {"tag": [dict(SYNTHETIC_TAG)]},
        "identifier": [
            {k: v for k, v in identifier.items() if k != "assigner"}
            for identifier in outside["identifier"]
        ],
        **{k: copy.deepcopy(outside[k]) for k in ("name", "telecom", "gender", "birthDate")},
        "address": copy.deepcopy(outside["address"]),
    }
    oncologist_id = outside["generalPractitioner"][0]["reference"].split("/")[1]
    oncologist = next(p for p in entries_of(record, "Practitioner") if p["id"] == oncologist_id)
    requester: JSON = {
        "resourceType": "Practitioner",
        "meta": {"tag": [dict(SYNTHETIC_TAG)]},
        **{k: copy.deepcopy(oncologist[k]) for k in ("identifier", "active", "name")},
    }
    patient_url = _full_url(source, tag, "Patient")
    requester_url = _full_url(source, tag, "Practitioner")
    referral = build_referral(patient_url, requester_url, seed, as_of=as_of)
    mrn = patient["identifier"][0]["value"]
    referral["identifier"] = [{"system": f"{source}/referral", "value": f"REF{mrn}"}]
    referral["priority"] = extras.priority
    codings = [
        coding(code.system, code.code, code.display)
        for code in (profile.icd10, profile.snomed, profile.morphology)
        if code is not None
    ]
    referral["reasonCode"] = [concept(*codings, text=profile.text)]
    if extras.questions:
        when = referral["authoredOn"]
        referral["note"] = [
            {"authorString": author, "time": when, "text": text}
            for author, text in extras.questions
        ]
    entries = [
        (patient_url, patient),
        (requester_url, requester),
        (_full_url(source, tag, "ServiceRequest"), referral),
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": url,
                "resource": resource,
                "request": {
                    "method": "POST",
                    "url": resource["resourceType"],
                    "ifNoneExist": _identifier_query(resource["identifier"][0]),
                },
            }
            for url, resource in entries
        ],
    }
