"""The states of a second-opinion case, as a table: Task.status moves and the sub-states
(Task.businessStatus) each status allows. The case workflow refuses any other move."""

from __future__ import annotations

# Task.status → statuses it may move to (FHIR R4 Task state machine, restricted to ours).
STATUS_MOVES: dict[str, frozenset[str]] = {
    "requested": frozenset({"received", "rejected", "cancelled"}),
    "received": frozenset({"accepted", "rejected", "cancelled", "on-hold"}),
    "accepted": frozenset({"in-progress", "cancelled", "on-hold"}),
    "in-progress": frozenset({"completed", "cancelled", "on-hold"}),
    "on-hold": frozenset({"received", "accepted", "in-progress", "cancelled"}),
    "completed": frozenset(),
    "rejected": frozenset(),
    "cancelled": frozenset(),
}

# Task.status → the businessStatus codes it may carry (None: none required).
BUSINESS_STATUSES: dict[str, frozenset[str | None]] = {
    "requested": frozenset({None}),
    "received": frozenset({"awaiting-records", "records-complete"}),
    "accepted": frozenset({"awaiting-records", "records-complete", "assigned"}),
    "in-progress": frozenset({"assigned", "opinion-drafted", "opinion-delivered"}),
    "on-hold": frozenset(
        {None, "awaiting-records", "records-complete", "assigned", "opinion-drafted"}
    ),
    "completed": frozenset({"opinion-delivered"}),
    "rejected": frozenset({None}),
    "cancelled": frozenset({None}),
}

# Statuses that need a reason (Task.statusReason) when a case enters them.
NEEDS_REASON = frozenset({"rejected", "cancelled", "on-hold"})

BUSINESS_STATUS_DISPLAY = {
    "awaiting-records": "Awaiting records",
    "records-complete": "Records complete",
    "assigned": "Assigned to a specialist",
    "opinion-drafted": "Opinion drafted",
    "opinion-delivered": "Opinion delivered",
}

# What a case becomes when the hub receives a referral.
OPENING_STATUS = "requested"
RECEIVED_STATUS = "received"
RECEIVED_BUSINESS_STATUS = "awaiting-records"


def transition_problem(
    old_status: str,
    old_business: str | None,
    new_status: str,
    new_business: str | None,
    has_reason: bool,
) -> str | None:
    """Why the move is illegal, or None if it is allowed."""
    if new_status not in STATUS_MOVES:
        return f"'{new_status}' is not a status a case can have."
    if new_status != old_status and new_status not in STATUS_MOVES.get(old_status, frozenset()):
        allowed = ", ".join(sorted(STATUS_MOVES.get(old_status, frozenset()))) or "none"
        return (
            f"A case cannot move from '{old_status}' to '{new_status}' "
            f"(allowed from '{old_status}': {allowed})."
        )
    if new_business not in BUSINESS_STATUSES[new_status]:
        allowed_codes = sorted(c or "(none)" for c in BUSINESS_STATUSES[new_status])
        return (
            f"A case in '{new_status}' cannot have businessStatus '{new_business}' "
            f"(allowed: {', '.join(allowed_codes)})."
        )
    if new_status == "completed" and old_business != "opinion-delivered":
        return "A case can be completed only once its opinion was delivered."
    if new_status != old_status and new_status in NEEDS_REASON and not has_reason:
        return f"Moving a case to '{new_status}' needs a statusReason."
    return None
