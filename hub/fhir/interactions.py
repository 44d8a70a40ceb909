"""FhirInteractions: the FHIR RESTful interactions over one unit of work.

It checks the caller's access, validates, applies conditional logic, stores through the
repository, calls the case workflow's hook points and writes the audit trail. It never
commits: the API commits once the whole request succeeded, audit events included.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from sqlalchemy import ColumnElement, or_, select, tuple_
from sqlalchemy.orm import Session, aliased

from hub.errors import (
    Forbidden,
    HubError,
    InvalidRequest,
    Issue,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    UnprocessableResource,
)
from hub.fhir.references import (
    format_problem,
    is_local,
    iter_references,
    references_in,
    unresolved,
)
from hub.fhir.search_parameters import search_parameters, supported_types
from hub.fhir.validation import check_required_codes, validate_resource
from hub.security.access import AUDIT_TYPES, CASE_WORKERS, AccessPolicy
from hub.security.audit import UNAUDITED_READS, audit_event, write_audit_event
from hub.security.principal import Principal
from hub.storage.indexer import split_reference
from hub.storage.repository import ResourceRepository, StoredResource, stored_from_row
from hub.storage.search import SearchPage, SearchQuery, SearchRunner, parse_search
from hub.storage.tables import ResourceRow, SearchIndexRow
from hub.workflow.cases import CaseWorkflow

READ_INTERACTIONS = frozenset(
    {"read", "vread", "search-type", "history-instance", "history-type", "history-system"}
)


class FhirInteractions:
    """create / read / vread / update / delete / search / history on `session`.

    With a `principal`, every interaction is checked against its scopes, roles and cases
    and audited; without one (the hub's own jobs) nothing is checked or audited.
    """

    def __init__(
        self,
        session: Session,
        *,
        principal: Principal | None = None,
        default_count: int = 50,
        max_count: int = 500,
        default_program: str = "oncology",
    ) -> None:
        self.session = session
        self.principal = principal
        self.access = AccessPolicy(principal, session) if principal else None
        self.repository = ResourceRepository(
            session, author=principal.subject if principal else None
        )
        self.searcher = SearchRunner(session)
        self.cases = CaseWorkflow(self.repository, principal, default_program)
        self.default_count = default_count
        self.max_count = max_count
        self._written: list[tuple[str, StoredResource]] = []

    # -- instance and type level -------------------------------------------------------
    def create(
        self,
        resource_type: str,
        resource: Any,
        *,
        if_none_exist: str | None = None,
        where: str | None = None,
        resource_id: str | None = None,
        validated: bool = False,
    ) -> tuple[StoredResource, bool]:
        """Store a new resource; with If-None-Exist return the match instead. (stored, created)

        `resource_id` is for transactions, which assign ids before they write;
        `validated` for resources a Bundle's validation has already checked.
        """
        self._require(resource_type, "c")
        self._validate(resource, resource_type, where, validated)
        if if_none_exist:
            existing = self.conditional_match(resource_type, if_none_exist)
            if existing is not None:
                return existing, False
        self.cases.check_write(resource_type, resource, None)
        stored = self.repository.create(
            resource_type, _without_id(resource), resource_id=resource_id
        )
        self._written.append((where or resource_type, stored))
        self.cases.after_write(stored, None)
        self._audit("create", [stored])
        return stored, True

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: Any,
        *,
        if_match: int | None = None,
        where: str | None = None,
        validated: bool = False,
    ) -> tuple[StoredResource, bool]:
        """Store a new version of `resource_id` (or create it under that id)."""
        self._require(resource_type, "u")
        self._validate(resource, resource_type, where, validated)
        body_id = resource.get("id")
        if body_id != resource_id:
            raise InvalidRequest(
                f"The resource's id '{body_id}' does not match the id in the URL '{resource_id}'."
                if body_id
                else "An update must carry the resource's id.",
                expression=f"{where or resource_type}.id",
            )
        old = self.repository.find(resource_type, resource_id)
        if old is None:
            # No update-as-create: a PUT to an id the caller may not see must answer exactly
            # like a PUT to an id that does not exist, so neither may create.
            raise NotFound(f"{resource_type}/{resource_id} is not known; create with POST.")
        self._require_visible(old)
        self.cases.check_write(resource_type, resource, old)
        stored, created = self.repository.update(
            resource_type, resource_id, resource, if_match=if_match
        )
        self._written.append((where or resource_type, stored))
        self.cases.after_write(stored, old)
        self._audit("create" if created else "update", [stored])
        return stored, created

    def delete(self, resource_type: str, resource_id: str) -> StoredResource | None:
        self._require(resource_type, "d")
        current = self.repository.find(resource_type, resource_id)
        if current is not None:
            self._require_visible(current)
            self.cases.check_delete(current)
        deleted = self.repository.delete(resource_type, resource_id)
        if deleted is not None and current is not None:
            self._audit("delete", [current])
        return deleted

    def read(self, resource_type: str, resource_id: str) -> StoredResource:
        stored = self.fetch(resource_type, resource_id)
        self._audit("read", [stored])
        return stored

    def fetch(self, resource_type: str, resource_id: str) -> StoredResource:
        """The current version, if the caller may read it; not audited (for operations that
        audit what they hand out as a whole)."""
        self._require(resource_type, "r")
        stored = self.repository.read(resource_type, resource_id)
        self._require_visible(stored)
        return stored

    def vread(self, resource_type: str, resource_id: str, version: str) -> StoredResource:
        self._require(resource_type, "r")
        current = self.repository.find(resource_type, resource_id)
        if current is not None:
            self._require_visible(current)
        if not version.isdigit():
            raise NotFound(f"{resource_type}/{resource_id} has no version '{version}'.")
        stored = self.repository.vread(resource_type, resource_id, int(version))
        if current is None:  # deleted since: check the version itself
            self._require_visible(stored)
        self._audit("vread", [stored])
        return stored

    def parse_search(self, resource_type: str, params: list[tuple[str, str]]) -> SearchQuery:
        require_type(resource_type)
        return parse_search(
            resource_type, params, default_count=self.default_count, max_count=self.max_count
        )

    def search(self, query: SearchQuery) -> SearchPage:
        """Run a parsed search, limited to what the caller may see, and audit it."""
        self._require(query.resource_type, "s")
        for include in query.includes:
            self._require(include.target_type or include.source_type, "r")
        visible = self.access.visible if self.access else None
        page = self.searcher.search(query, visible)
        self._audit("search-type", [*page.matches, *page.included], query=query)
        return page

    def history(
        self, resource_type: str | None, resource_id: str | None, **paging: Any
    ) -> tuple[list[StoredResource], int]:
        """Versions of one resource, one type or all types the caller may search."""
        if resource_type is not None:
            self._require(resource_type, "r" if resource_id else "s")
        if resource_type and resource_id:
            current = self.repository.find(resource_type, resource_id)
            if current is not None:
                self._require_visible(current)
        versions, total = self.repository.history(
            resource_type, resource_id, visible=self._history_filter(resource_type), **paging
        )
        interaction = (
            "history-instance"
            if resource_id
            else ("history-type" if resource_type else "history-system")
        )
        self._audit(interaction, versions)
        return versions, total

    def transition(
        self, task_id: str, status: str, business: str | None, reason: str | None
    ) -> StoredResource:
        """Move a case (the $transition operation): for the case workers who may see it."""
        self._require("Task", "u")
        if self.access is not None:
            self.access.require_role(*CASE_WORKERS)
            current = self.repository.find("Task", task_id)
            if current is not None:
                self._require_visible(current)
        stored = self.cases.transition(task_id, status, business, reason)
        self._audit("update", [stored])
        return stored

    def audited_export(
        self,
        interaction: str,
        resources: list[StoredResource],
        patients: list[str] | None = None,
    ) -> None:
        """Audit an operation that hands out `resources` (e.g. the record bundle), about
        `patients` (`Patient/id`) when the caller knows whose data it is."""
        self._audit(interaction, resources, patients=patients)

    def may_read(self, stored: StoredResource) -> bool:
        """May the caller read this resource (scope, role and case)?"""
        if self.access is None:
            return True
        return (
            self.principal is not None
            and self.principal.allows(stored.resource_type, "r")
            and self.access.can_see(stored)
        )

    @staticmethod
    def _validate(resource: Any, resource_type: str, where: str | None, validated: bool) -> None:
        """Validate, unless a Bundle's validation did; its codes are checked either way (the
        Bundle's check covers structure and types, not the codes of each entry)."""
        root = where or resource_type
        if not validated:
            validate_resource(resource, expected_type=resource_type, where=where)
            return
        if resource.get("resourceType") != resource_type:
            raise InvalidRequest(
                f"The entry holds a {resource.get('resourceType')}, not a {resource_type}.",
                expression=f"{root}.resourceType",
            )
        check_required_codes(resource, resource_type, root)

    # -- access and audit ------------------------------------------------------------------
    def _require(self, resource_type: str, interaction: str) -> None:
        require_type(resource_type)
        if resource_type in AUDIT_TYPES and interaction in "cud":
            raise MethodNotAllowed("The audit trail cannot be written or changed through the API.")
        if self.access is not None:
            self.access.require(resource_type, interaction)

    def _require_visible(self, stored: StoredResource) -> None:
        """NotFound, exactly as for an id that does not exist, unless the caller may see it."""
        if self.access is not None and not self.access.can_see(stored):
            raise NotFound(f"{stored.resource_type}/{stored.resource_id} is not known.")

    def _history_filter(self, resource_type: str | None) -> ColumnElement[bool] | None:
        if self.access is None or self.principal is None:
            return None
        if resource_type is not None:
            return self.access.visible(resource_type)
        searchable = [
            t
            for t in supported_types()
            if self.principal.allows(t, "s") and self.access.may_use(t, "s")
        ]
        if not searchable:
            raise Forbidden("The access token allows no search, so no history either.")
        return or_(*[(ResourceRow.res_type == t) & self.access.visible(t) for t in searchable])

    def _audit(
        self,
        interaction: str,
        resources: list[StoredResource],
        *,
        query: SearchQuery | None = None,
        patients: list[str] | None = None,
    ) -> None:
        if self.principal is None:
            return
        if interaction in READ_INTERACTIONS:
            resources = [r for r in resources if r.resource_type not in UNAUDITED_READS]
            searched_patient_data = query is not None and (
                query.resource_type not in UNAUDITED_READS
            )
            if not resources and not searched_patient_data:
                return
        query_text = f"{query.resource_type}?{urlencode(query.params)}" if query else None
        event = audit_event(
            self.principal, interaction, resources, query=query_text, patients=patients
        )
        write_audit_event(self.repository, event)

    def finish(self) -> list[StoredResource]:
        """End of the unit of work: check references, open cases; return the cases opened.

        References are checked here, not per write, so that the entries of a transaction
        may point at each other in any order (like a deferred foreign key).
        """
        written = {stored.reference for _, stored in self._written if not stored.deleted}
        malformed: dict[str, str] = {}
        to_look_up: dict[str, tuple[str, str]] = {}
        holders: list[tuple[str, StoredResource]] = []
        for where, stored in self._written:
            references = references_in(stored.content)
            if references:
                holders.append((where, stored))
            for reference in references:
                if reference in written:  # an entry of this unit of work: well-formed, there
                    continue
                problem = _reference_problem(reference)
                if problem:
                    malformed[reference] = problem
                    continue
                target = split_reference(reference) if is_local(reference) else None
                if target and target[0] in search_parameters():
                    to_look_up[reference] = target
        self._written.clear()
        existing = self._existing(
            {target for reference, target in to_look_up.items() if "/_history/" not in reference}
        )
        missing = {
            reference
            for reference, target in to_look_up.items()
            if not (
                self._version_exists(reference) if "/_history/" in reference else target in existing
            )
        }
        issues: list[Issue] = []
        if malformed or missing:
            # Only now the paths, for the issues (slower to collect than the references).
            for where, stored in holders:
                for path, reference in iter_references(stored.content, where):
                    if reference in malformed:
                        issues.append(Issue(malformed[reference], code="value", expression=(path,)))
                    elif reference in missing:
                        issues.append(unresolved(reference, path))
        if issues:
            raise UnprocessableResource(
                "The resource has references that cannot be used.", issues=issues
            )
        return self.cases.finish()

    def _existing(self, targets: set[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those of `targets` (type, id) that are stored and not deleted: one query."""
        if not targets:
            return set()
        rows = self.session.execute(
            select(ResourceRow.res_type, ResourceRow.res_id).where(
                tuple_(ResourceRow.res_type, ResourceRow.res_id).in_(sorted(targets)),
                ResourceRow.deleted.is_(False),
            )
        )
        return {(row.res_type, row.res_id) for row in rows}

    def _version_exists(self, reference: str) -> bool:
        parts = reference.split("/")
        try:
            self.repository.vread(parts[0], parts[1], int(parts[3]))
        except (HubError, ValueError):
            return False
        return True

    def conditional_matches(self, conditions: list[tuple[str, str]]) -> list[StoredResource | None]:
        """`conditional_match` for each (type, criteria): the `identifier=system|value` ones,
        what a mapped message's entries all carry, in one query rather than one each."""
        results: list[StoredResource | None] = [None] * len(conditions)
        by_identifier: dict[tuple[str, str, str], list[int]] = {}
        for index, (resource_type, criteria) in enumerate(conditions):
            key = _identifier_condition(resource_type, criteria)
            if key is None:
                results[index] = self.conditional_match(resource_type, criteria)
            else:
                by_identifier.setdefault(key, []).append(index)
        if not by_identifier:
            return results
        # An alias: the visibility conditions have subqueries of their own on the index
        # table, which must not correlate to this one.
        index_row = aliased(SearchIndexRow)
        query = (
            select(index_row.res_type, index_row.system, index_row.value, ResourceRow)
            .join(
                ResourceRow,
                (ResourceRow.res_type == index_row.res_type)
                & (ResourceRow.res_id == index_row.res_id),
            )
            .where(
                index_row.param == "identifier",
                tuple_(index_row.res_type, index_row.system, index_row.value).in_(
                    sorted(by_identifier)
                ),
                ResourceRow.deleted.is_(False),
            )
        )
        if self.access is not None:
            types = sorted({key[0] for key in by_identifier})
            query = query.where(
                or_(*[(ResourceRow.res_type == t) & self.access.visible(t) for t in types])
            )
        found: dict[tuple[str, str | None, str | None], dict[str, ResourceRow]] = {}
        for res_type, system, value, row in self.session.execute(query):
            found.setdefault((res_type, system, value), {})[row.res_id] = row
        for key, indexes in by_identifier.items():
            rows = list(found.get(key, {}).values())
            if len(rows) > 1:
                resource_type, criteria = conditions[indexes[0]]
                raise _ambiguous(resource_type, criteria)
            for index in indexes:
                results[index] = stored_from_row(rows[0]) if rows else None
        return results

    def conditional_match(self, resource_type: str, criteria: str) -> StoredResource | None:
        query = self.parse_search(
            resource_type, parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        )
        query.count = 2
        visible = self.access.visible if self.access else None
        matches = self.searcher.search(query, visible, with_total=False).matches
        if len(matches) > 1:
            raise _ambiguous(resource_type, criteria)
        return matches[0] if matches else None


def _ambiguous(resource_type: str, criteria: str) -> PreconditionFailed:
    return PreconditionFailed(
        f"If-None-Exist '{criteria}' matches more than one {resource_type}.",
        expression=f"{resource_type}?{criteria}",
    )


def _identifier_condition(resource_type: str, criteria: str) -> tuple[str, str, str] | None:
    """(type, system, value) if `criteria` is exactly `identifier=system|value`, else None
    (escapes, modifiers, other parameters, and values too long for the index go the long way)."""
    params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    if len(params) != 1 or params[0][0] != "identifier" or "\\" in params[0][1]:
        return None
    system, bar, value = params[0][1].partition("|")
    if not bar or not system or not value or "|" in value or len(value) > 255:
        return None
    if resource_type not in search_parameters():
        return None
    return resource_type, system, value


def _reference_problem(reference: str) -> str | None:
    if reference.startswith("urn:uuid:"):
        return (
            f"'{reference}' names no entry of this transaction; a stored "
            "resource cannot keep a urn:uuid reference."
        )
    return format_problem(reference)


def require_type(resource_type: str) -> None:
    """NotFound unless the API serves `resource_type`."""
    if resource_type not in search_parameters():
        raise NotFound(
            f"The hub does not serve the resource type '{resource_type}'.",
            expression=resource_type,
        )


def _without_id(resource: dict[str, Any]) -> dict[str, Any]:
    # On create the server assigns the id (FHIR R4 §3.1.0.8.1): a client id is ignored.
    return {key: value for key, value in resource.items() if key != "id"}


def parse_etag(etag: str | None) -> int | None:
    """The version number in an If-Match / ifMatch ETag such as W/"3"; None if absent."""
    if etag is None:
        return None
    digits = etag.strip().removeprefix("W/").strip('"')
    if not digits.isdigit():
        raise InvalidRequest(f"'{etag}' is not an ETag such as W/\"3\".", expression="If-Match")
    return int(digits)
