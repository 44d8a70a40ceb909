"""Segment fillers shared by the outbound messages: each writes one hl7apy segment from FHIR
values already read (see `opinion`, `resources`). Field numbers are HL7 v2.5.1's."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mappings.hl7v2.outbound.datatypes import (
    Person,
    cx,
    dtm_of_fhir,
    escape,
    join,
    ndl,
    ppn,
    xcn,
    xpn,
)
from mappings.hl7v2.outbound.errors import OutboundMappingError
from mappings.hl7v2.outbound.message import set_field
from mappings.hl7v2.outbound.opinion import Opinion
from mappings.hl7v2.outbound.resources import JSON, patient_names, sendable_identifiers
from mappings.hl7v2.outbound.tables import tables

PATIENT_CLASS_NOT_APPLICABLE = "N"  # PV1-2, HL7 table 0004
# ED (OBX-5) of a PDF: type of data, data subtype, encoding (HL7 tables 0191, 0291, 0299),
# given as MIME type and subtype as the v2.5.1 implementation guides do.
PDF_TYPE, PDF_SUBTYPE, BASE64 = "application", "pdf", "Base64"
TEXT_SUB_ID, PDF_SUB_ID = "1", "2"  # OBX-4 of the opinion text lines and of its PDF


def fill_evn(evn: Any, event: str, recorded: str, occurred: str = "") -> None:
    """EVN-1 event type (kept for backward compatibility), EVN-2 recorded, EVN-6 occurred."""
    set_field(evn, "EVN_1", event)
    set_field(evn, "EVN_2", recorded)
    set_field(evn, "EVN_6", occurred)


def fill_pid(pid: Any, patient: JSON) -> None:
    """PID-1, PID-3 identifiers (CX with assigning authority), PID-5, PID-7, PID-8."""
    t = tables()
    identifiers = [
        cx(i) for i in sendable_identifiers(patient) if t.authority(str(i.get("system") or "")).send
    ]
    if not identifiers:
        raise OutboundMappingError("Patient has no identifier that may be sent (PID-3).")
    names = [xpn(name) for name in patient_names(patient)]
    set_field(pid, "PID_1", "1")
    set_field(pid, "PID_3", identifiers)
    # PID-5 is required: a patient without a name gets name type U (unspecified, table 0200).
    set_field(pid, "PID_5", [n for n in names if n] or ["^^^^^^U"])
    set_field(pid, "PID_7", dtm_of_fhir(str(patient.get("birthDate") or ""))[:8])
    set_field(pid, "PID_8", t.administrative_sex.get(str(patient.get("gender") or ""), ""))


def fill_pv1(pv1: Any) -> None:
    """PV1-2 patient class N (not applicable): an opinion belongs to no visit."""
    set_field(pv1, "PV1_1", "1")
    set_field(pv1, "PV1_2", PATIENT_CLASS_NOT_APPLICABLE)


def fill_txa(txa: Any, opinion: Opinion, *, multipart: bool) -> None:
    """TXA: type, presentation, dates, specialist, numbers, completion and availability."""
    specialist = xcn(opinion.specialist) if not opinion.specialist.is_empty else ""
    set_field(txa, "TXA_1", "1")
    set_field(txa, "TXA_2", escape(opinion.document_type))
    # TXA-3, table 0191: TX (machine readable text), multipart when a PDF comes along.
    set_field(txa, "TXA_3", "multipart" if multipart else "TX")
    set_field(txa, "TXA_4", opinion.effective or opinion.issued)
    set_field(txa, "TXA_5", specialist)
    set_field(txa, "TXA_6", opinion.issued)
    set_field(txa, "TXA_9", specialist)  # originator: the specialist wrote the opinion
    set_field(txa, "TXA_12", opinion.document_number)
    set_field(txa, "TXA_14", opinion.placer_number)
    set_field(txa, "TXA_15", opinion.filler_number)
    set_field(txa, "TXA_17", opinion.status.txa_17)
    set_field(txa, "TXA_18", opinion.confidentiality)
    set_field(txa, "TXA_19", opinion.status.txa_19)
    if specialist and opinion.status.txa_17 in tables().authenticated:
        set_field(txa, "TXA_22", ppn(opinion.specialist, opinion.issued))


@dataclass(frozen=True)
class Observation:
    """One OBX: value type (table 0125), identifier (CE), sub-id and ER7 value."""

    value_type: str
    identifier: str
    sub_id: str
    value: str


def opinion_observations(
    opinion: Opinion, hold: Callable[[str], str] = lambda value: value
) -> list[Observation]:
    """The OBX values of an opinion: text lines (TX), coded conclusions (CE), the PDF (ED).

    `hold` receives the PDF's base64 and returns what goes in its place while the message
    is validated (see `MessageBuilder.hold`).
    """
    local = tables().local_codes["conclusion_code"]
    conclusion_id = join((escape(local.code), escape(local.text), "L"))
    out = [
        Observation("TX", opinion.report_code, TEXT_SUB_ID, escape(line)) for line in opinion.lines
    ]
    out += [
        Observation("CE", conclusion_id, str(number), code)
        for number, code in enumerate(opinion.conclusion_codes, start=1)
    ]
    if opinion.pdf is not None:
        data = base64.b64encode(opinion.pdf).decode("ascii")
        value = join(("", PDF_TYPE, PDF_SUBTYPE, BASE64, hold(data)))
        out.append(Observation("ED", opinion.report_code, PDF_SUB_ID, value))
    return out


def fill_obx(obx: Any, set_id: int, observation: Observation, opinion: Opinion) -> None:
    """OBX-1..5, OBX-11 result status (table 0085), OBX-14 time of the observation."""
    set_field(obx, "OBX_1", str(set_id))
    set_field(obx, "OBX_2", observation.value_type)
    set_field(obx, "OBX_3", observation.identifier)
    set_field(obx, "OBX_4", observation.sub_id)
    set_field(obx, "OBX_5", observation.value)
    set_field(obx, "OBX_11", opinion.status.obx_11)
    set_field(obx, "OBX_14", opinion.effective)


def fill_observations(
    opinion: Opinion, new_obx: Callable[[], Any], hold: Callable[[str], str]
) -> None:
    """Every OBX of `opinion`, each in the segment `new_obx()` adds to the message."""
    for set_id, observation in enumerate(opinion_observations(opinion, hold), start=1):
        fill_obx(new_obx(), set_id, observation, opinion)


def fill_orc(
    orc: Any,
    *,
    control: str,
    placer: str,
    filler: str,
    status: str,
    transaction: str,
    ordering: Person,
    reason: str = "",
) -> None:
    """ORC-1 control (table 0119), ORC-2/3 numbers, ORC-5 status (table 0038), ORC-9, 12, 16."""
    set_field(orc, "ORC_1", control)
    set_field(orc, "ORC_2", placer)
    set_field(orc, "ORC_3", filler)
    set_field(orc, "ORC_5", status)
    set_field(orc, "ORC_9", transaction)
    set_field(orc, "ORC_12", xcn(ordering) if not ordering.is_empty else "")
    set_field(orc, "ORC_16", reason)


def fill_obr(obr: Any, opinion: Opinion) -> None:
    """OBR-2/3 numbers, OBR-4 service, OBR-7 time, 16 orderer, 22, 25 status, 32 interpreter."""
    set_field(obr, "OBR_1", "1")
    set_field(obr, "OBR_2", opinion.placer_number)
    set_field(obr, "OBR_3", opinion.filler_number or opinion.document_number)
    set_field(obr, "OBR_4", opinion.service)
    set_field(obr, "OBR_7", opinion.effective or opinion.issued)
    set_field(obr, "OBR_16", xcn(opinion.requester) if not opinion.requester.is_empty else "")
    set_field(obr, "OBR_22", opinion.issued)
    set_field(obr, "OBR_25", opinion.status.obr_25)
    set_field(obr, "OBR_32", ndl(opinion.specialist) if not opinion.specialist.is_empty else "")
