"""What the hub accepts over HL7 v2, checked before the ACK: a table, not code paths."""

from __future__ import annotations

from mappings.hl7v2.ack import ErrorLocation
from mappings.hl7v2.tokenizer import Message

# Message type^trigger → segments it must hold to be processed at all.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "ADT^A01": ("PID",),
    "ADT^A04": ("PID",),
    "ADT^A08": ("PID",),
    "ADT^A40": ("PID", "MRG"),
    "ORU^R01": ("PID", "OBR"),
    "MDM^T02": ("PID", "TXA"),
    "REF^I12": ("PID",),
    "OMG^O19": ("PID", "ORC"),
    "ORM^O01": ("PID", "ORC"),
}
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")
# (segment, field) that must not be empty: MSH-9 type, MSH-10 control id, MSH-12 version,
# PID-3 the patient's identifiers (without them nothing can be attached to a child).
REQUIRED_FIELDS = (("MSH", 9), ("MSH", 10), ("MSH", 12), ("PID", 3))


def rejection(message: Message) -> tuple[str, ErrorLocation] | None:
    """("AR" or "AE", where and why) when the message cannot be processed; else None."""
    if message.version not in VERSIONS:
        return "AR", ErrorLocation(
            "203", f"HL7 version '{message.version}' is not supported (2.3 to 2.8).", "MSH", 1, 12
        )
    type_name = message.type_name
    if type_name not in SUPPORTED:
        return "AR", ErrorLocation(
            "200", f"Message type {type_name or '(none)'} is not supported.", "MSH", 1, 9
        )
    for segment, field in REQUIRED_FIELDS:
        found = message.first(segment)
        if found is not None and not found.field(field).strip():
            return "AE", ErrorLocation("101", f"{segment}-{field} is required.", segment, 1, field)
    for segment in SUPPORTED[type_name]:
        if message.first(segment) is None:
            return "AE", ErrorLocation("100", f"{type_name} needs a {segment} segment.", segment, 1)
    return None
