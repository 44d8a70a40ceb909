"""Who may do what to which resource: scopes, roles, and the per-case rules.

Two checks for every interaction:
1. type level (403): a granted SMART scope allows it, and one of the caller's roles may use
   it on that type (ROLE_PERMISSIONS);
2. row level (404, so that ids cannot be probed): the resource belongs to a case the caller
   may see — a specialist's assigned cases, a case manager's program, a referrer's own
   referrals — or the caller wrote it.
"""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import ColumnElement, and_, exists, false, or_, select, true
from sqlalchemy.orm import Session, aliased

from hub import codes
from hub.errors import Forbidden
from hub.fhir.search_parameters import supported_types
from hub.security.principal import Principal
from hub.storage.indexer import ANY_REFERENCE
from hub.storage.repository import StoredResource
from hub.storage.tables import ResourceRow, SearchIndexRow

# Directory entries: not patient data, readable by every clinical role.
# Endpoint: where the hub's own services are (its DICOMweb, for ImagingStudy.endpoint).
# Medication and Location: what a drug is and where a place is, pulled with the records
# that reference them.
DIRECTORY_TYPES = frozenset({"Practitioner", "Organization", "Endpoint", "Medication", "Location"})
# The audit trail: read by admins only, written only by the hub itself.
AUDIT_TYPES = frozenset({"AuditEvent"})
CLINICAL_TYPES = frozenset(supported_types()) - DIRECTORY_TYPES - AUDIT_TYPES

# role → resource types → interactions (c r u d s) the role may use at all.
ROLE_PERMISSIONS: dict[str, dict[frozenset[str], str]] = {
    "admin": {AUDIT_TYPES: "rs", DIRECTORY_TYPES: "cruds"},
    "referrer": {CLINICAL_TYPES: "crus", DIRECTORY_TYPES: "crus"},
    "case-manager": {CLINICAL_TYPES: "cruds", DIRECTORY_TYPES: "crus"},
    "specialist": {CLINICAL_TYPES: "crus", DIRECTORY_TYPES: "rs"},
}

# The roles that may move a case between states, and that see whole patient records.
CASE_WORKERS = ("case-manager", "specialist")


def program_coding(program: str) -> dict[str, str]:
    return {"system": codes.PROGRAM_SYSTEM, "code": program}


class AccessPolicy:
    """The access rules for one caller, within one unit of work."""

    def __init__(self, principal: Principal, session: Session) -> None:
        self.principal = principal
        self.session = session

    # -- type level ----------------------------------------------------------------------
    def require(self, resource_type: str, interaction: str) -> None:
        """Forbidden unless a scope and a role allow `interaction` on `resource_type`."""
        if not self.principal.allows(resource_type, interaction):
            raise Forbidden(
                f"The access token has no scope that allows '{interaction}' on "
                f"{resource_type} (e.g. system/{resource_type}.{interaction})."
            )
        if not self.may_use(resource_type, interaction):
            raise Forbidden(
                f"The role(s) {', '.join(sorted(self.principal.roles)) or '(none)'} may not "
                f"use '{interaction}' on {resource_type}."
            )

    def require_role(self, *roles: str) -> None:
        if not self.principal.has_role(*roles):
            raise Forbidden(f"This needs one of the roles {', '.join(roles)}.")

    def may_use(self, resource_type: str, interaction: str) -> bool:
        """Does one of the caller's roles allow `interaction` on `resource_type`?"""
        return any(
            resource_type in types and interaction in letters
            for role in self.principal.roles
            for types, letters in ROLE_PERMISSIONS.get(role, {}).items()
        )

    # -- row level -----------------------------------------------------------------------
    def can_see(self, stored: StoredResource) -> bool:
        """May the caller see this (current) resource? Checked in SQL, like search."""
        statement = select(ResourceRow.res_id).where(
            ResourceRow.res_type == stored.resource_type,
            ResourceRow.res_id == stored.resource_id,
            self.visible(stored.resource_type),
        )
        return self.session.scalar(statement) is not None

    def visible(self, resource_type: str) -> ColumnElement[bool]:
        """A condition on ResourceRow: the rows of `resource_type` the caller may see."""
        principal = self.principal
        if resource_type in AUDIT_TYPES:
            return true() if principal.has_role("admin") else false()
        if resource_type in DIRECTORY_TYPES and (
            principal.is_clinical or principal.has_role("admin")
        ):
            return true()
        if not principal.is_clinical:
            return false()
        conditions: list[ColumnElement[bool]] = [ResourceRow.written_by == principal.subject]
        if self._case_tasks:
            conditions.append(_is(resource_type, "Task", self._case_tasks))
            conditions.append(_is(resource_type, "ServiceRequest", self._referrals))
            conditions.append(_refers_to("Task", self._case_tasks))
            conditions.append(_refers_to("ServiceRequest", self._referrals))
        patients = self._patients
        if patients:
            conditions.append(_is(resource_type, "Patient", patients))
            conditions.append(_refers_to("Patient", patients))
            if resource_type == "Binary":
                conditions.append(_binary_of(patients))
        visible = or_(*conditions)
        if principal.patient:  # patient/ scopes: that patient's compartment only
            own = principal.patient.removeprefix("Patient/")
            visible = and_(
                visible, or_(_is(resource_type, "Patient", {own}), _refers_to("Patient", {own}))
            )
        return visible

    def sees_record_of(self, patient_id: str) -> bool:
        """Does the caller see every resource that refers to Patient/`patient_id` (a case
        worker on one of the patient's cases)? What `visible` says of each, in one test."""
        own = self.principal.patient
        return patient_id in self._patients and (own is None or own == f"Patient/{patient_id}")

    @cached_property
    def _case_task_rows(self) -> list[tuple[str, str | None, str | None]]:
        """(Task id, focus ServiceRequest id, patient id) of every case the caller may work."""
        task = aliased(ResourceRow)
        chosen: list[ColumnElement[bool]] = []
        principal = self.principal
        if principal.has_role("case-manager") and principal.programs:
            chosen.append(
                exists().where(
                    _owned_by_task(task),
                    SearchIndexRow.param == "performer",
                    SearchIndexRow.system == codes.PROGRAM_SYSTEM,
                    SearchIndexRow.value.in_(principal.programs),
                )
            )
        if principal.has_role("specialist") and principal.fhir_user:
            owner_type, _, owner_id = principal.fhir_user.partition("/")
            chosen.append(
                exists().where(
                    _owned_by_task(task),
                    SearchIndexRow.param == "owner",
                    SearchIndexRow.system == owner_type,
                    SearchIndexRow.value == owner_id,
                )
            )
        if principal.has_role("referrer"):
            referral = aliased(ResourceRow)
            chosen.append(
                exists().where(
                    _owned_by_task(task),
                    SearchIndexRow.param == "focus",
                    SearchIndexRow.system == "ServiceRequest",
                    referral.res_type == "ServiceRequest",
                    referral.res_id == SearchIndexRow.value,
                    referral.written_by == principal.subject,
                )
            )
        if not chosen:
            return []
        task_ids = select(task.res_id).where(
            task.res_type == "Task", task.deleted == false(), _is_case(task), or_(*chosen)
        )
        targets: dict[str, dict[str, str]] = {}
        for task_id, param, value in self.session.execute(
            select(SearchIndexRow.res_id, SearchIndexRow.param, SearchIndexRow.value).where(
                SearchIndexRow.res_type == "Task",
                SearchIndexRow.res_id.in_(task_ids),
                SearchIndexRow.param.in_(("focus", "patient", "code")),
            )
        ):
            targets.setdefault(task_id, {})[param] = str(value)
        return [
            (task_id, found.get("focus"), found.get("patient"))
            for task_id, found in sorted(targets.items())
        ]

    @property
    def _case_tasks(self) -> set[str]:
        return {task_id for task_id, _, _ in self._case_task_rows}

    @property
    def _referrals(self) -> set[str]:
        return {focus for _, focus, _ in self._case_task_rows if focus}

    @property
    def _patients(self) -> set[str]:
        # A referrer sees its cases and what it sent, not the records others hold.
        if not self.principal.has_role(*CASE_WORKERS):
            return set()
        return {patient for _, _, patient in self._case_task_rows if patient}


def _is(resource_type: str, wanted: str, ids: set[str]) -> ColumnElement[bool]:
    return ResourceRow.res_id.in_(ids) if resource_type == wanted and ids else false()


def _refers_to(target_type: str, ids: set[str]) -> ColumnElement[bool]:
    """The resource holds a reference to one of `target_type`/`ids`."""
    if not ids:
        return false()
    return exists().where(
        SearchIndexRow.res_type == ResourceRow.res_type,
        SearchIndexRow.res_id == ResourceRow.res_id,
        SearchIndexRow.param == ANY_REFERENCE,
        SearchIndexRow.system == target_type,
        SearchIndexRow.value.in_(ids),
    )


def _binary_of(patients: set[str]) -> ColumnElement[bool]:
    """A Binary referenced by a resource that refers to one of `patients`."""
    holder = aliased(SearchIndexRow)
    about = aliased(SearchIndexRow)
    return exists().where(
        holder.param == ANY_REFERENCE,
        holder.system == "Binary",
        holder.value == ResourceRow.res_id,
        about.res_type == holder.res_type,
        about.res_id == holder.res_id,
        about.param == ANY_REFERENCE,
        about.system == "Patient",
        about.value.in_(patients),
    )


def _owned_by_task(task: type[ResourceRow]) -> ColumnElement[bool]:
    return and_(SearchIndexRow.res_type == "Task", SearchIndexRow.res_id == task.res_id)


def _is_case(task: type[ResourceRow]) -> ColumnElement[bool]:
    return exists().where(
        _owned_by_task(task),
        SearchIndexRow.param == "code",
        SearchIndexRow.system == codes.CASE_TASK_SYSTEM,
        SearchIndexRow.value == codes.CASE_TASK_CODE,
    )
