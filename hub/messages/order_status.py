"""OSU^O51 order status updates for cases opened by HL7 v2 referrals (REF^I12, OMG^O19,
ORM^O01): which message a referral came from, and the OSU^O51 telling its sender of a case's
new state (built by `mappings.hl7v2.outbound.referral_status_to_osu_o51`).

The link from a case to its sender is the one the map-hl7 job already writes: the Provenance
of what a message produced names the message's log id (entity.what.identifier). The log row
has the sender (MSH-3/MSH-4) and the raw MSH the answer is addressed from.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from hub.messages.mapping_job import MESSAGE_ID_SYSTEM
from hub.storage.indexer import split_reference
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.search import Criterion, SearchQuery, SearchRunner
from hub.storage.tables import MessageRow, ResourceVersionRow
from mappings.hl7v2.ack import new_control_id
from mappings.hl7v2.outbound import referral_status_to_osu_o51
from mappings.hl7v2.tokenizer import parse_message

JSON = dict[str, Any]


def referral_of(task: StoredResource) -> str | None:
    """The id of the ServiceRequest a case Task is about (Task.focus), if it is one."""
    focus = split_reference(str((task.content.get("focus") or {}).get("reference") or ""))
    return focus[1] if focus is not None and focus[0] == "ServiceRequest" else None


def state_changed(task: StoredResource, old: StoredResource) -> bool:
    """Whether what an OSU^O51 reports (ORC-5 from the status, ORC-16 from the reason or the
    sub-state) differs between the two versions."""

    def state(content: JSON) -> tuple[Any, ...]:
        return (
            content.get("status"),
            content.get("businessStatus"),
            content.get("statusReason"),
        )

    return state(task.content) != state(old.content)


def referral_origin(session: Session, referral_id: str) -> MessageRow | None:
    """The inbound message that created ServiceRequest/`referral_id`; None if it came another
    way (the FHIR API).

    A message counts only if its own log row lists the referral among what it produced and the
    referral's first version was written by the hub itself (no API caller): a Provenance posted
    through the API cannot route status updates, and a referral first sent over FHIR stays a
    FHIR case even when an HL7 v2 message names it again later.
    """
    reference = f"ServiceRequest/{referral_id}"
    query = SearchQuery("Provenance", criteria=[Criterion("target", None, (reference,))], count=100)
    message_ids = sorted(
        {
            int(identifier["value"])
            for provenance in SearchRunner(session).search(query).matches
            for identifier in _source_identifiers(provenance.content)
        }
    )
    if not message_ids:
        return None
    first = session.get(ResourceVersionRow, ("ServiceRequest", referral_id, 1))
    if first is None or first.written_by is not None:
        return None
    for message_id in message_ids:
        row = session.get(MessageRow, message_id)
        if row is not None and row.direction == "in" and reference in _produced(row):
            return row
    return None


def status_update(session: Session, origin: MessageRow, task: StoredResource) -> bytes:
    """The OSU^O51 of case `task` for the sender of `origin`, addressed back from the
    application and facility that message was sent to (its MSH-5/MSH-6).

    Raises OutboundMappingError when the case cannot be reported (e.g. the referral has no
    number), OutboundValidationError on a defect of the mapping.
    """
    repository = ResourceRepository(session)
    referral_id = referral_of(task) or ""
    referral = _content(repository, f"ServiceRequest/{referral_id}")
    patient = _content(repository, str((referral.get("subject") or {}).get("reference") or ""))
    requester = str((referral.get("requester") or {}).get("reference") or "")
    resources = {requester: _content(repository, requester)} if requester else {}
    return referral_status_to_osu_o51(
        task.content,
        referral,
        patient,
        resources={k: v for k, v in resources.items() if v},
        **reply_header(origin),
    )


def reply_header(origin: MessageRow) -> dict[str, Any]:
    """The MSH of a message sent back to the sender of `origin`: from whom it addressed, to
    its sender, a new control id, now, its processing id (the builders' keywords)."""
    msh = parse_message(origin.raw).msh
    return {
        "sending": (msh.value(5), msh.value(6)),
        "receiving": (origin.sending_application or "", origin.sending_facility or ""),
        "control_id": new_control_id(),
        "now": datetime.now(UTC),
        "processing_id": msh.value(11) or "P",
    }


def _source_identifiers(provenance: JSON) -> list[JSON]:
    identifiers = []
    for entity in provenance.get("entity") or []:
        identifier = (entity.get("what") or {}).get("identifier") or {}
        if (
            entity.get("role") == "source"
            and identifier.get("system") == MESSAGE_ID_SYSTEM
            and str(identifier.get("value") or "").isdigit()
        ):
            identifiers.append(identifier)
    return identifiers


def _produced(row: MessageRow) -> list[str]:
    try:
        produced = json.loads(row.produced or "[]")
    except ValueError:
        return []
    return [str(reference) for reference in produced] if isinstance(produced, list) else []


def _content(repository: ResourceRepository, reference: str) -> JSON:
    target = split_reference(reference)
    found = repository.find(*target) if target is not None else None
    return found.content if found is not None else {}
