"""The audit trail: an AuditEvent (FHIR R4, after the IHE BALP pattern) for every create,
read, search, export and delivery of patient data, in the same transaction as the action.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from hub import codes
from hub.fhir.dates import instant, utc_now
from hub.fhir.references import references_in
from hub.security.principal import Principal
from hub.storage.indexer import split_reference
from hub.storage.repository import ResourceRepository, StoredResource

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
CLIENT_ID_SYSTEM = f"{codes.CANONICAL_BASE}/sid/client"

# restful-interaction code → AuditEvent.action (C R U D E).
ACTIONS = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "search-type": "E",
    "update": "U",
    "delete": "D",
    "transaction": "E",
    "batch": "E",
    "operation": "E",
}
# AuditEvent.outcome: 0 success, 4 minor failure (the caller's), 8 serious failure (ours).
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"
# Not patient data: their reads are not audited (writes still are).
UNAUDITED_READS = frozenset({"Practitioner", "Organization", "AuditEvent"})


def audit_event(
    principal: Principal,
    interaction: str,
    resources: Iterable[StoredResource],
    *,
    outcome: str = SUCCESS,
    description: str | None = None,
    query: str | None = None,
    what: Iterable[str] = (),
    patients: Iterable[str] | None = None,
) -> dict[str, Any]:
    """An AuditEvent: `principal` did `interaction` on `resources` (and the `what` refs).

    `patients` (`Patient/id`) whose data it was, when the caller knows; else they are
    found in the resources' references."""
    entities: list[dict[str, Any]] = []
    seen: set[str] = set()
    for reference in [*(r.reference for r in resources), *what]:
        if reference not in seen:
            seen.add(reference)
            entities.append(_entity(reference))
    if patients is None:
        patients = {p for stored in resources for p in _patients_of(stored)}
    entities.extend(_patient_entity(p) for p in sorted(set(patients) - seen))
    if query is not None:
        entities.append(
            {
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "query": base64.b64encode(query.encode("utf-8")).decode("ascii"),
            }
        )
    who: dict[str, Any] = {
        "identifier": {"system": CLIENT_ID_SYSTEM, "value": principal.subject},
        "display": principal.subject,
    }
    if principal.fhir_user:
        who["reference"] = principal.fhir_user
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if principal.address:
        agent["network"] = {"address": principal.address, "type": "2"}
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": RESTFUL_INTERACTION, "code": interaction}],
        "action": ACTIONS.get(interaction, "E"),
        "recorded": instant(utc_now()),
        "outcome": outcome,
        "agent": [agent],
        "source": {
            "site": "second-opinion-hub",
            "observer": {"display": "Second-opinion hub"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if description:
        event["outcomeDesc"] = description
    if entities:
        event["entity"] = entities
    return event


def write_audit_event(repository: ResourceRepository, event: dict[str, Any]) -> StoredResource:
    """Store an AuditEvent (by the hub itself: the API never writes or changes one)."""
    return repository.create("AuditEvent", event)


def _entity(reference: str) -> dict[str, Any]:
    if reference.startswith("Patient/"):
        return _patient_entity(reference)
    return {
        "what": {"reference": reference},
        "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
    }


def _patient_entity(reference: str) -> dict[str, Any]:
    return {
        "what": {"reference": reference},
        "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
        "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
    }


def _patients_of(stored: StoredResource) -> set[str]:
    found = set()
    for reference in references_in(stored.content):
        target = split_reference(reference)
        if target and target[0] == "Patient":
            found.add(f"Patient/{target[1]}")
    return found
