"""Second opinion → ORU^R01 (unsolicited observation result), HL7 v2.5.1 §7.3.1.

    MSH PID ORC OBR {OBX}

For receivers that file results against the order: ORC/OBR carry the referral's placer number
and the hub's filler number, OBR-4 the service ("Second opinion"), the OBX the opinion.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mappings.hl7v2.outbound.message import Header, MessageBuilder
from mappings.hl7v2.outbound.opinion import read_opinion
from mappings.hl7v2.outbound.resources import JSON
from mappings.hl7v2.outbound.segments import fill_obr, fill_observations, fill_orc, fill_pid

STRUCTURE, MESSAGE_TYPE = "ORU_R01", "ORU^R01"
RESULTS = "RE"  # ORC-1, table 0119: observations to follow


def opinion_to_oru_r01(
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
    """The second opinion `report` as an ORU^R01 message (parameters as `opinion_to_mdm_t02`).

    Without a referral, OBR-3 carries the report's own number and OBR-2 stays empty.
    Raises OutboundMappingError / OutboundValidationError as `opinion_to_mdm_t02` does.
    """
    header = Header(sending, receiving, control_id, now, processing_id)
    opinion = read_opinion(
        report, referral, pdf, sending_application=sending[0], resources=resources
    )
    builder = MessageBuilder(STRUCTURE, MESSAGE_TYPE, header)
    result = builder.message.add_group("ORU_R01_PATIENT_RESULT")
    fill_pid(result.add_group("ORU_R01_PATIENT").pid, patient)
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    fill_orc(
        order.orc,
        control=RESULTS,
        placer=opinion.placer_number,
        filler=opinion.filler_number or opinion.document_number,
        status=opinion.status.orc_5,
        transaction=opinion.issued,
        ordering=opinion.requester,
    )
    fill_obr(order.obr, opinion)

    def new_obx() -> Any:
        return order.add_group("ORU_R01_OBSERVATION").obx

    fill_observations(opinion, new_obx, builder.hold)
    return builder.finish()
