"""FhirInteractions: the FHIR RESTful interactions over one unit of work.

It validates, applies conditional logic, stores through the repository and calls the case
workflow's hook points. It never commits: the API commits once the whole request succeeded.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy.orm import Session

from hub.errors import (
    HubError,
    InvalidRequest,
    Issue,
    NotFound,
    PreconditionFailed,
    UnprocessableResource,
)
from hub.fhir.references import format_problem, is_local, iter_references, unresolved
from hub.fhir.search_parameters import search_parameters
from hub.fhir.validation import validate_resource
from hub.storage.indexer import split_reference
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.search import SearchQuery, SearchRunner, parse_search
from hub.workflow.cases import HUB_ACTOR, Actor, CaseWorkflow


class FhirInteractions:
    """create / read / vread / update / delete / search / history on `session`."""

    def __init__(
        self,
        session: Session,
        *,
        default_count: int = 50,
        max_count: int = 500,
        actor: Actor = HUB_ACTOR,
    ) -> None:
        self.session = session
        self.repository = ResourceRepository(session)
        self.searcher = SearchRunner(session)
        self.cases = CaseWorkflow(self.repository, actor)
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
    ) -> tuple[StoredResource, bool]:
        """Store a new resource; with If-None-Exist return the match instead. (stored, created)

        `resource_id` is for transactions, which assign ids before they write.
        """
        require_type(resource_type)
        resource = validate_resource(resource, expected_type=resource_type, where=where)
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
        return stored, True

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: Any,
        *,
        if_match: int | None = None,
        where: str | None = None,
    ) -> tuple[StoredResource, bool]:
        """Store a new version of `resource_id` (or create it under that id)."""
        require_type(resource_type)
        resource = validate_resource(resource, expected_type=resource_type, where=where)
        body_id = resource.get("id")
        if body_id != resource_id:
            raise InvalidRequest(
                f"The resource's id '{body_id}' does not match the id in the URL '{resource_id}'."
                if body_id
                else "An update must carry the resource's id.",
                expression=f"{where or resource_type}.id",
            )
        old = self.repository.find(resource_type, resource_id)
        self.cases.check_write(resource_type, resource, old)
        stored, created = self.repository.update(
            resource_type, resource_id, resource, if_match=if_match
        )
        self._written.append((where or resource_type, stored))
        self.cases.after_write(stored, old)
        return stored, created

    def delete(self, resource_type: str, resource_id: str) -> StoredResource | None:
        require_type(resource_type)
        return self.repository.delete(resource_type, resource_id)

    def read(self, resource_type: str, resource_id: str) -> StoredResource:
        require_type(resource_type)
        return self.repository.read(resource_type, resource_id)

    def vread(self, resource_type: str, resource_id: str, version: str) -> StoredResource:
        require_type(resource_type)
        if not version.isdigit():
            raise NotFound(f"{resource_type}/{resource_id} has no version '{version}'.")
        return self.repository.vread(resource_type, resource_id, int(version))

    def parse_search(self, resource_type: str, params: list[tuple[str, str]]) -> SearchQuery:
        return parse_search(
            resource_type, params, default_count=self.default_count, max_count=self.max_count
        )

    def finish(self) -> list[StoredResource]:
        """End of the unit of work: check references, open cases; return the cases opened.

        References are checked here, not per write, so that the entries of a transaction
        may point at each other in any order (like a deferred foreign key).
        """
        issues = [
            issue
            for where, stored in self._written
            for issue in self._reference_issues(stored, where)
        ]
        self._written.clear()
        if issues:
            raise UnprocessableResource(
                "The resource has references that cannot be used.", issues=issues
            )
        return self.cases.finish()

    def _reference_issues(self, stored: StoredResource, where: str) -> list[Issue]:
        issues = []
        for path, reference in iter_references(stored.content, where):
            problem = format_problem(reference)
            if reference.startswith("urn:uuid:"):
                problem = (
                    f"'{reference}' names no entry of this transaction; a stored "
                    "resource cannot keep a urn:uuid reference."
                )
            if problem:
                issues.append(Issue(problem, code="value", expression=(path,)))
                continue
            target = split_reference(reference) if is_local(reference) else None
            if target and target[0] in search_parameters() and not self._exists(reference):
                issues.append(unresolved(reference, path))
        return issues

    def _exists(self, reference: str) -> bool:
        parts = reference.split("/")
        if len(parts) == 4:
            try:
                self.repository.vread(parts[0], parts[1], int(parts[3]))
            except (HubError, ValueError):
                return False
            return True
        return self.repository.find(parts[0], parts[1]) is not None

    def conditional_match(self, resource_type: str, criteria: str) -> StoredResource | None:
        query = self.parse_search(
            resource_type, parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
        )
        query.count = 2
        matches = self.searcher.search(query).matches
        if len(matches) > 1:
            raise PreconditionFailed(
                f"If-None-Exist '{criteria}' matches more than one {resource_type}.",
                expression=f"{resource_type}?{criteria}",
            )
        return matches[0] if matches else None


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
