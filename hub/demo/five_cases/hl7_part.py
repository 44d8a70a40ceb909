"""The HL7 v2 side of a SYNTHETIC case: what the outside hospital's interface engine sends.

Three v2.5.1 messages about the child of the outside record (same MRN, its assigning
authority the record's MRN system as a URI), built with the hub's own outbound builder
(:mod:`mappings.hl7v2.outbound`: hl7apy at STRICT validation, re-parsed before use):

* ADT^A04: the child registered as an outpatient;
* ORU^R01: the laboratory's results of the record's last blood draw, with times in UTC as
  this laboratory sends them: a CBC order and a tumour-marker order;
* MDM^T02: the note of the record's first procedure, as text lines, with the record's
  document number (TXA-12) and its author.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from hub.demo.outside.shapes import JSON
from mappings.hl7v2.outbound.datatypes import (
    Person,
    ce,
    dtm,
    dtm_of_fhir,
    ei,
    escape,
    join,
    xcn,
)
from mappings.hl7v2.outbound.message import Header, MessageBuilder, set_field
from mappings.hl7v2.outbound.segments import fill_evn, fill_pid

__all__ = [
    "HL7_RECEIVER",
    "LabOrder",
    "LabResult",
    "adt_a04",
    "in_utc",
    "mdm_t02",
    "number",
    "oru_r01",
]

HL7_RECEIVER: Final = ("SECOND_OPINION_HUB", "HUB")
ADT_SENDER: Final = ("LARKFIELD_ADT", "LARKFIELD")
LAB_SENDER: Final = ("LARKFIELD_LAB", "LARKFIELD")
DOCUMENT_SENDER: Final = ("LARKFIELD_DOC", "LARKFIELD")
# Document type (LOINC) → HL7 table 0270, as fhir_profiles/ConceptMap/v2-0270-to-loinc maps it.
_DOCUMENT_TYPES: Final = {"11504-8": "OP", "28570-0": "PN"}
_LINE_WIDTH: Final = 90  # hl7apy types OBX-5 as ST: at most 199 characters a line


@dataclass(frozen=True)
class LabResult:
    """One OBX: LOINC concept, numeric value, UCUM unit, reference range, flag."""

    code: JSON
    value: float
    unit: str
    low: float
    high: float
    flag: str


@dataclass(frozen=True)
class LabOrder:
    """One OBR and its results: numbers, LOINC concept, collection and report times (FHIR
    dateTime / instant), diagnostic service section (HL7 table 0074)."""

    placer: tuple[str, str]
    """(value, Identifier.system) of the placer number."""
    filler: tuple[str, str]
    code: JSON
    collected: str
    issued: str
    section: str
    results: tuple[LabResult, ...]


def number(value: float) -> str:
    """A numeric value written as the FHIR record's JSON has it (``12.6``, ``260``, ``4.0``),
    so that the hub reads back the same number."""
    return str(value)


def in_utc(value: str) -> str:
    """A FHIR dateTime or instant with a time as DTM in UTC (``...+0000``)."""
    moment = datetime.fromisoformat(value)
    return dtm(moment.astimezone(UTC))


def _header(sender: tuple[str, str], control_id: str, now: datetime) -> Header:
    return Header(sender, HL7_RECEIVER, control_id, now)


def _address(patient: JSON) -> str:
    address: JSON = (patient.get("address") or [{}])[0]
    lines = [escape(str(line)) for line in address.get("line") or []]
    return join(
        (
            lines[0] if lines else "",
            "",
            escape(str(address.get("city") or "")),
            escape(str(address.get("state") or "")),
            escape(str(address.get("postalCode") or "")),
            escape(str(address.get("country") or "")),
            "H",  # XAD-7, HL7 table 0190: home
        )
    )


def adt_a04(patient: JSON, *, control_id: str, now: datetime) -> bytes:
    """ADT^A04 (register a patient): EVN, PID (MRN, name, birth date, sex, address), PV1
    as an outpatient."""
    builder = MessageBuilder("ADT_A01", "ADT^A04", _header(ADT_SENDER, control_id, now))
    message = builder.message
    fill_evn(message.evn, "A04", dtm(now))
    fill_pid(message.pid, patient)
    set_field(message.pid, "PID_11", _address(patient))
    set_field(message.pv1, "PV1_1", "1")
    set_field(message.pv1, "PV1_2", "O")  # HL7 table 0004: outpatient
    return builder.finish()


def oru_r01(patient: JSON, orders: Sequence[LabOrder], *, control_id: str, now: datetime) -> bytes:
    """ORU^R01: one ORDER_OBSERVATION per order, one OBX (NM) per result; OBR-7 and OBX-14
    the collection time and OBR-22 the report time, in UTC."""
    builder = MessageBuilder("ORU_R01", "ORU^R01", _header(LAB_SENDER, control_id, now))
    result = builder.message.add_group("ORU_R01_PATIENT_RESULT")
    fill_pid(result.add_group("ORU_R01_PATIENT").pid, patient)
    for set_id, order in enumerate(orders, start=1):
        group = result.add_group("ORU_R01_ORDER_OBSERVATION")
        obr = group.obr
        collected = in_utc(order.collected)
        set_field(obr, "OBR_1", str(set_id))
        set_field(obr, "OBR_2", ei(*order.placer))
        set_field(obr, "OBR_3", ei(*order.filler))
        set_field(obr, "OBR_4", ce(order.code))
        set_field(obr, "OBR_7", collected)
        set_field(obr, "OBR_22", in_utc(order.issued))
        set_field(obr, "OBR_24", order.section)
        set_field(obr, "OBR_25", "F")  # HL7 table 0123: final
        for obx_id, lab in enumerate(order.results, start=1):
            _fill_result(group.add_group("ORU_R01_OBSERVATION").obx, obx_id, lab, collected)
    return builder.finish()


def _fill_result(obx: Any, set_id: int, lab: LabResult, collected: str) -> None:
    set_field(obx, "OBX_1", str(set_id))
    set_field(obx, "OBX_2", "NM")
    set_field(obx, "OBX_3", ce(lab.code))
    set_field(obx, "OBX_5", number(lab.value))
    set_field(obx, "OBX_6", join((escape(lab.unit), "", "UCUM")))
    set_field(obx, "OBX_7", f"{number(lab.low)}-{number(lab.high)}")
    set_field(obx, "OBX_8", lab.flag)
    set_field(obx, "OBX_11", "F")  # HL7 table 0085: final
    set_field(obx, "OBX_14", collected)


def _person(practitioner: JSON) -> Person:
    return Person(
        identifier=(practitioner.get("identifier") or [{}])[0],
        name=(practitioner.get("name") or [{}])[0],
    )


def mdm_t02(
    patient: JSON,
    document: JSON,
    author: JSON,
    text: str,
    *,
    control_id: str,
    now: datetime,
) -> bytes:
    """MDM^T02 of ``document`` (a DocumentReference of the record, LOINC type 11504-8 or
    28570-0): TXA-2 its type, TXA-4 and TXA-6 its dates, TXA-5/9 ``author`` (a
    Practitioner), TXA-12 its identifier; ``text`` as TX lines of at most 90 characters."""
    builder = MessageBuilder("MDM_T02", "MDM^T02", _header(DOCUMENT_SENDER, control_id, now))
    message = builder.message
    fill_evn(message.evn, "T02", dtm(now))
    fill_pid(message.pid, patient)
    set_field(message.pv1, "PV1_1", "1")
    set_field(message.pv1, "PV1_2", "O")
    kind = document["type"]["coding"][0]
    code = _DOCUMENT_TYPES[kind["code"]]
    writer = xcn(_person(author))
    identifier = document["identifier"][0]
    txa = message.txa
    set_field(txa, "TXA_1", "1")
    set_field(txa, "TXA_2", code)  # IS in v2.5.1: the code of HL7 table 0270 only
    set_field(txa, "TXA_3", "TX")  # HL7 table 0191: machine readable text
    set_field(txa, "TXA_4", dtm_of_fhir(document["context"]["period"]["start"]))
    set_field(txa, "TXA_5", writer)
    set_field(txa, "TXA_6", dtm_of_fhir(document["date"]))
    set_field(txa, "TXA_9", writer)
    set_field(txa, "TXA_12", ei(identifier["value"], identifier["system"]))
    set_field(txa, "TXA_17", "AU")  # HL7 table 0271: authenticated
    set_field(txa, "TXA_19", "AV")  # HL7 table 0273: available for patient care
    lines = [
        wrapped
        for paragraph in text.strip().splitlines()
        for wrapped in textwrap.wrap(paragraph, _LINE_WIDTH) or [""]
    ]
    content_code = ce({"coding": [kind]})
    for set_id, line in enumerate(lines, start=1):
        obx = message.add_group("MDM_T02_OBXNTE_SUPPGRP").obx
        set_field(obx, "OBX_1", str(set_id))
        set_field(obx, "OBX_2", "TX")
        set_field(obx, "OBX_3", content_code)
        set_field(obx, "OBX_5", escape(line))
        set_field(obx, "OBX_11", "F")
    return builder.finish()
