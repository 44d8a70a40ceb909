"""SMART App Launch scopes, v2 (`system/Observation.rs`) and v1 (`user/*.read`).

A scope names a context (patient, user, system), a resource type or `*`, and the
interactions it allows: c create, r read (read, vread, history), u update, d delete,
s search.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INTERACTIONS = "cruds"
_SCOPE = re.compile(r"^(patient|user|system)/([A-Z][A-Za-z]+|\*)\.([a-z*]+)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


@dataclass(frozen=True)
class SmartScope:
    context: str
    resource_type: str
    interactions: str

    def allows(self, resource_type: str, interaction: str) -> bool:
        return self.resource_type in ("*", resource_type) and interaction in self.interactions

    def __str__(self) -> str:
        return f"{self.context}/{self.resource_type}.{self.interactions}"


def parse_scope(text: str) -> SmartScope | None:
    """The SmartScope `text` names, or None for a scope that is not a resource scope."""
    match = _SCOPE.match(text)
    if not match:
        return None
    context, resource_type, permissions = match.groups()
    if permissions in _V1:
        return SmartScope(context, resource_type, _V1[permissions])
    # v2 letters must come in the order c r u d s, each at most once.
    if not permissions or any(p not in INTERACTIONS for p in permissions):
        return None
    positions = [INTERACTIONS.index(p) for p in permissions]
    if positions != sorted(set(positions)):
        return None
    return SmartScope(context, resource_type, permissions)


def parse_scopes(text: str) -> tuple[SmartScope, ...]:
    """Every resource scope in a space-separated scope string (others are ignored)."""
    return tuple(s for s in (parse_scope(part) for part in text.split()) if s is not None)


def narrow(requested: str, allowed: str) -> str:
    """The requested scopes that the allowed scopes cover (what a token may be granted)."""
    allowed_scopes = parse_scopes(allowed)
    granted = []
    for part in requested.split():
        wanted = parse_scope(part)
        if wanted is not None and all(
            any(
                a.context == wanted.context and a.allows(wanted.resource_type, letter)
                for a in allowed_scopes
            )
            for letter in wanted.interactions
        ):
            granted.append(part)
    return " ".join(granted)
