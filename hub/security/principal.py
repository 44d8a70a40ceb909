"""Who is calling: what the access token says about the caller."""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.security.scopes import SmartScope

ROLES = ("admin", "referrer", "case-manager", "specialist")
CLINICAL_ROLES = frozenset({"referrer", "case-manager", "specialist"})


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    subject: str
    """The token's `sub`: the client id of a system, the user id of a person."""
    client_id: str
    roles: frozenset[str]
    scopes: tuple[SmartScope, ...]
    fhir_user: str | None = None
    """`Practitioner/123` for a specialist: the cases assigned to them are theirs."""
    programs: frozenset[str] = field(default_factory=frozenset)
    """The programs whose cases a case manager works."""
    patient: str | None = None
    """The patient in context, for `patient/` scopes."""
    referrer_kind: str | None = None
    """`clinician` for a referring EHR, `family` for a family's own request."""
    address: str | None = None
    """The network address the request came from (for the audit trail)."""
    name: str | None = None
    """A signed-in person's full name (the token's `name`), as the pages show it."""

    def allows(self, resource_type: str, interaction: str) -> bool:
        """Does any granted scope allow `interaction` (c r u d s) on `resource_type`?"""
        return any(scope.allows(resource_type, interaction) for scope in self.scopes)

    def has_role(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def is_clinical(self) -> bool:
        return bool(self.roles & CLINICAL_ROLES)
