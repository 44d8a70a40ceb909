"""Second opinion → MDM^T02 (original document notification and content), HL7 v2.5.1 §9.6.2.

    MSH EVN PID PV1 TXA {OBX}

TXA describes the document (type, specialist, numbers, completion status); the OBX carry its
content: the conclusion as TX lines, the coded conclusions as CE, the PDF as ED.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mappings.hl7v2.outbound.datatypes import dtm
from mappings.hl7v2.outbound.message import Header, MessageBuilder
from mappings.hl7v2.outbound.opinion import read_opinion
from mappings.hl7v2.outbound.resources import JSON
from mappings.hl7v2.outbound.segments import (
    fill_evn,
    fill_observations,
    fill_pid,
    fill_pv1,
    fill_txa,
)

STRUCTURE, MESSAGE_TYPE, EVENT = "MDM_T02", "MDM^T02", "T02"


def opinion_to_mdm_t02(
    report: dict[str, Any],
    patient: dict[str, Any],
    *,
    referral: dict[str, Any] | None,
    pdf: bytes | None,
    sending: tuple[str, str],
    receiving: tuple[str, str],
    control_id: str,
    now: datetime,
    resources: Mapping[str, JSON] | None = None,
    processing_id: str = "P",
) -> bytes:
    """The second opinion `report` (a FHIR DiagnosticReport) as an MDM^T02 message.

    `referral` is the ServiceRequest the report is based on (its numbers go in TXA-14/15);
    `pdf` the rendered opinion (else a PDF in report.presentedForm is used, if any);
    `sending`/`receiving` the (application, facility) of MSH-3/4 and MSH-5/6; `control_id`
    becomes MSH-10; `now` MSH-7 and EVN-2. `resources` resolves the performer's reference
    (e.g. {"Practitioner/p-7": {...}}); contained resources are found without it.

    Returns the message as UTF-8 bytes, CR after each segment, validated by hl7apy (STRICT)
    and the hub's tokenizer. Raises OutboundMappingError when the report cannot be sent
    (status, nothing to send, no patient identifier) and OutboundValidationError on a defect.
    """
    header = Header(sending, receiving, control_id, now, processing_id)
    opinion = read_opinion(
        report, referral, pdf, sending_application=sending[0], resources=resources
    )
    builder = MessageBuilder(STRUCTURE, MESSAGE_TYPE, header)
    message = builder.message
    fill_evn(message.evn, EVENT, dtm(now), opinion.issued)
    fill_pid(message.pid, patient)
    fill_pv1(message.pv1)
    fill_txa(message.txa, opinion, multipart=opinion.pdf is not None and bool(opinion.lines))

    def new_obx() -> Any:
        return message.add_group("MDM_T02_OBXNTE_SUPPGRP").obx

    fill_observations(opinion, new_obx, builder.hold)
    return builder.finish()
