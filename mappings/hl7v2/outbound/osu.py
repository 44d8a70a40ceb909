"""Case status → OSU^O51 (order status update), the hub as filler telling the referrer.

    MSH PID ORC

OSU^O51 entered the standard in v2.8; IHE/ONC 360X (closed-loop referral) profiles it on
v2.5.1 with this structure, which is what is sent here. hl7apy's v2.5.1 library has no
OSU_O51, so the structure is given to it as a profile built from its own v2.5.1 segment
definitions: the segments are validated as strictly as in any other message. (hl7apy's v2.5.1
tables 0003/0076/0354 lack O51/OSU/OSU_O51: validation warnings, not errors.)

ORC-1/ORC-5 come from Task.status through order_status.yaml; ORC-16 says why: the Task's
statusReason, else the display of its businessStatus (the case's sub-state).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from hl7apy import load_reference

from mappings.hl7v2.outbound.datatypes import ce, dtm, dtm_of_fhir, ei, escape, join
from mappings.hl7v2.outbound.errors import OutboundMappingError
from mappings.hl7v2.outbound.message import VERSION, Header, MessageBuilder
from mappings.hl7v2.outbound.resources import (
    JSON,
    ReferenceResolver,
    filler_identifier,
    placer_identifier,
)
from mappings.hl7v2.outbound.segments import fill_orc, fill_pid
from mappings.hl7v2.outbound.tables import tables

STRUCTURE, MESSAGE_TYPE = "OSU_O51", "OSU^O51"


def osu_o51_profile() -> dict[str, Any]:
    """The hl7apy reference of OSU_O51 (360X on v2.5.1): MSH, PID, ORC 1..n."""

    def segment(name: str, minimum: int, maximum: int) -> tuple[Any, ...]:
        return (name, load_reference(name, "Segment", VERSION), (minimum, maximum), "SEG")

    children = (segment("MSH", 1, 1), segment("PID", 1, 1), segment("ORC", 1, -1))
    return {STRUCTURE: ("sequence", children)}


def referral_status_to_osu_o51(
    task: dict[str, Any],
    referral: dict[str, Any],
    patient: dict[str, Any],
    *,
    sending: tuple[str, str],
    receiving: tuple[str, str],
    control_id: str,
    now: datetime,
    resources: Mapping[str, JSON] | None = None,
    processing_id: str = "P",
) -> bytes:
    """The state of a case (its Task) as an OSU^O51 for the referral's sender.

    ORC-2 is the referral's placer number, ORC-3 the hub's case number, ORC-5 the order status
    of Task.status (order_status.yaml), ORC-9 Task.lastModified (else `now`), ORC-12 the
    referral's requester, ORC-16 the reason. Other parameters as `opinion_to_mdm_t02`.

    Raises OutboundMappingError for a Task status that is never reported (draft,
    entered-in-error) or a referral without a number; OutboundValidationError on a defect.
    """
    status = str(task.get("status") or "")
    codes = tables().order_statuses.get(status)
    if codes is None:
        raise OutboundMappingError(f"Task.status '{status}' is not reported in an OSU^O51.")
    placer = placer_identifier(referral)
    filler = filler_identifier(referral, task)
    if placer is None and filler is None:
        raise OutboundMappingError("The referral has no number to report on (ORC-2/ORC-3).")
    header = Header(sending, receiving, control_id, now, processing_id)
    builder = MessageBuilder(STRUCTURE, MESSAGE_TYPE, header, osu_o51_profile())
    message = builder.message
    fill_pid(message.pid, patient)
    requester = referral.get("requester")
    fill_orc(
        message.orc,
        control=codes.orc_1,
        placer=ei(str(placer["value"]), str(placer.get("system") or "")) if placer else "",
        filler=(
            ei(str(filler["value"]), str(filler.get("system") or ""), sending[0]) if filler else ""
        ),
        status=codes.orc_5,
        transaction=dtm_of_fhir(str(task.get("lastModified") or "")) or dtm(now),
        ordering=ReferenceResolver(referral, resources).person([requester] if requester else []),
        reason=status_reason(task),
    )
    return builder.finish()


def status_reason(task: JSON) -> str:
    """ORC-16 (CE): Task.statusReason, else the businessStatus shown as text ('' if neither)."""
    reason = ce(task.get("statusReason"))
    if reason:
        return reason
    business = task.get("businessStatus") or {}
    text = str(business.get("text") or "") or next(
        (str(c.get("display")) for c in business.get("coding") or [] if c.get("display")), ""
    )
    return join(("", escape(text))) if text else ""
