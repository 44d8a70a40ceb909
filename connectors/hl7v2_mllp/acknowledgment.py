"""What an HL7 v2 acknowledgment says about a delivery: MSA and ERR → DeliveryResult.

The codes are HL7 Table 0008 (acknowledgment code) and Table 0357 (message error
condition code). `retryable` answers one question for the outbox: can sending the same
bytes again help? Table 0008 defines AR as a failure "for reason unrelated to content or
format" (system down, internal error) and leaves the resend to the sender; AE is an error
found while processing, which receivers also report for transient faults (a locked record,
a database outage). Both are therefore retryable unless the ERR segment names a content or
interface error; CR (incompatible version or processing mode) never is. The outbox bounds
the attempts, so a wrongly retried message costs a few attempts, whereas a transient fault
taken for final would strand a message in the dead letters.
"""

from __future__ import annotations

from connectors.base import DeliveryResult
from mappings.hl7v2.tokenizer import Message, Segment

ACCEPTED_CODES = frozenset({"AA", "CA"})
"""Application accept (original mode), commit accept (enhanced mode)."""
FINAL_CODES = frozenset({"CR"})
"""Commit reject: the interaction, version or processing mode do not fit the receiver."""
FINAL_ERROR_CONDITIONS = frozenset(
    {
        "100",  # segment sequence error
        "101",  # required field missing
        "102",  # data type error
        "103",  # table value not found
        "104",  # value too long
        "200",  # unsupported message type
        "201",  # unsupported event code
        "202",  # unsupported processing id
        "203",  # unsupported version id
        "205",  # duplicate key identifier (an add that was already applied)
    }
)
"""Table 0357 conditions that the same bytes will meet again. Not 204 (unknown key: the
patient or order may arrive later), 206 (record locked) or 207 (internal error)."""


def acknowledgment_result(ack: Message, raw: bytes) -> DeliveryResult:
    """The DeliveryResult an acknowledgment (a message with an MSA segment) reports."""
    msa = ack.first("MSA")
    code = msa.value(1).strip().upper() if msa is not None else ""
    condition, text = _error_condition(ack, msa)
    detail = (msa.value(3) if msa is not None else "") or text
    if code in ACCEPTED_CODES:
        return DeliveryResult(accepted=True, code=code, detail=detail, response=raw)
    retryable = code not in FINAL_CODES and condition not in FINAL_ERROR_CONDITIONS
    return DeliveryResult(
        accepted=False, code=code or "unknown", detail=detail, retryable=retryable, response=raw
    )


def _error_condition(ack: Message, msa: Segment | None) -> tuple[str, str]:
    """(Table 0357 code, text) from ERR-3 (v2.5+), ERR-1.4 (v2.4 and before) or MSA-6."""
    for err in ack.all("ERR"):
        code, text = err.value(3, 1), err.value(8) or err.value(3, 2)
        if not code:  # ERR-1 (ELD): segment^sequence^field^code identifying error (CE)
            code, text = err.value(1, 4, 1), text or err.value(1, 4, 2)
        if code or text:
            return code.strip(), text
    if msa is not None:
        return msa.value(6, 1).strip(), msa.value(6, 2)
    return "", ""
