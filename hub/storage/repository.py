"""ResourceRepository: versioned FHIR resources and their search index, in one SQL session.

The repository never commits: the caller owns the transaction, so a FHIR transaction Bundle,
a case transition and its Provenance land together or not at all.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, event, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, UOWTransaction

from hub.errors import Conflict, Gone, NotFound, PreconditionFailed
from hub.fhir.dates import instant, utc_now
from hub.storage.indexer import index_values
from hub.storage.tables import ResourceRow, ResourceVersionRow, SearchIndexRow


@dataclass(frozen=True)
class StoredResource:
    """One version of a resource as stored: its content carries id and meta."""

    resource_type: str
    resource_id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: dict[str, Any]
    method: str = "GET"

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'


def new_id() -> str:
    return str(uuid.uuid4())


# Versions and index rows are written with one executemany per table when the session
# flushes, not as ORM objects (an ORM object costs ~10x a row: a mapped message writes ~200).
# Each write also adds or changes its ResourceRow through the ORM, so a session holding
# pending rows always has something to flush: a query's autoflush, a savepoint or a commit
# writes them at the right moment.
_PENDING = "hub.pending_rows"


def _pending(session: Session) -> dict[str, list[dict[str, Any]]]:
    pending: dict[str, list[dict[str, Any]]] = session.info.setdefault(
        _PENDING, {"versions": [], "index": []}
    )
    return pending


@event.listens_for(Session, "after_flush")
def _write_pending_rows(session: Session, _flush: UOWTransaction) -> None:
    pending = session.info.get(_PENDING)
    if not pending:
        return
    connection = session.connection()
    if pending["versions"]:
        connection.execute(insert(ResourceVersionRow), pending["versions"])
    if pending["index"]:
        connection.execute(insert(SearchIndexRow), pending["index"])
    session.info.pop(_PENDING)


@event.listens_for(Session, "after_soft_rollback")
def _forget_pending_rows(session: Session, _transaction: object) -> None:
    session.info.pop(_PENDING, None)


class ResourceRepository:
    """Create, read, update, delete and history of FHIR resources in `session`."""

    def __init__(self, session: Session, *, author: str | None = None) -> None:
        self.session = session
        self.author = author
        """Who writes in this unit of work (a token subject); None for the hub itself."""

    # -- reads -------------------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> StoredResource:
        """The current version; NotFound if never stored, Gone if deleted."""
        row = self.session.get(ResourceRow, (resource_type, resource_id))
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known.")
        if row.deleted:
            raise Gone(f"{resource_type}/{resource_id} was deleted (version {row.version_id}).")
        return stored_from_row(row)

    def find(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version, or None if it does not exist or was deleted."""
        row = self.session.get(ResourceRow, (resource_type, resource_id))
        return None if row is None or row.deleted else stored_from_row(row)

    def vread(self, resource_type: str, resource_id: str, version_id: int) -> StoredResource:
        row = self.session.get(ResourceVersionRow, (resource_type, resource_id, version_id))
        if row is None:
            raise NotFound(f"{resource_type}/{resource_id} has no version {version_id}.")
        if row.deleted:
            raise Gone(f"Version {version_id} of {resource_type}/{resource_id} is a deletion.")
        return stored_from_row(row)

    def history(
        self,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since: datetime | None = None,
        count: int = 50,
        offset: int = 0,
        visible: ColumnElement[bool] | None = None,
    ) -> tuple[list[StoredResource], int]:
        """Versions, newest first, of one resource, one type or everything; and their total.

        `visible`, a condition on ResourceRow, keeps the versions of resources it admits.
        """
        query = select(ResourceVersionRow)
        if visible is not None:
            query = query.where(
                tuple_(ResourceVersionRow.res_type, ResourceVersionRow.res_id).in_(
                    select(ResourceRow.res_type, ResourceRow.res_id).where(visible)
                )
            )
        if resource_type:
            query = query.where(ResourceVersionRow.res_type == resource_type)
        if resource_id:
            query = query.where(ResourceVersionRow.res_id == resource_id)
            if self.session.get(ResourceRow, (resource_type, resource_id)) is None:
                raise NotFound(f"{resource_type}/{resource_id} is not known.")
        if since:
            query = query.where(ResourceVersionRow.last_updated >= since)
        total = self.session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = self.session.scalars(
            query.order_by(
                ResourceVersionRow.last_updated.desc(), ResourceVersionRow.version_id.desc()
            )
            .limit(count)
            .offset(offset)
        )
        return [stored_from_row(row) for row in rows], total

    # -- writes ------------------------------------------------------------------------
    def create(
        self, resource_type: str, resource: dict[str, Any], *, resource_id: str | None = None
    ) -> StoredResource:
        """Store `resource` as version 1 under a new id (or `resource_id`)."""
        resource_id = resource_id or new_id()
        row = ResourceRow(res_type=resource_type, res_id=resource_id, written_by=self.author)
        stored = self._write(row, resource, 1, "POST", deleted=False)
        # Not flushed here: the rows of a whole transaction Bundle go out together. A taken
        # id (only possible for a chosen one) fails at the flush as an IntegrityError (409).
        self.session.add(row)
        return stored

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
    ) -> tuple[StoredResource, bool]:
        """Store a new version; create it if the id is new. Returns (stored, created)."""
        row = self.session.get(ResourceRow, (resource_type, resource_id), with_for_update=True)
        if row is None:
            if if_match is not None:
                raise PreconditionFailed(
                    f"If-Match names version {if_match} of {resource_type}/{resource_id}, "
                    "which does not exist."
                )
            return self.create(resource_type, resource, resource_id=resource_id), True
        if if_match is not None and if_match != row.version_id:
            raise PreconditionFailed(
                f"{resource_type}/{resource_id} is at version {row.version_id}, "
                f"not {if_match} (If-Match)."
            )
        current = stored_from_row(row)
        if not row.deleted and _unversioned(current.content) == _unversioned(
            {**resource, "id": resource_id}
        ):
            # As HAPI does: the same content again (a result message resent) is no new version.
            return current, False
        stored = self._write(row, resource, row.version_id + 1, "PUT", deleted=False)
        self._flush(f"{resource_type}/{resource_id} was changed by someone else; retry.")
        return stored, False

    def delete(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """Mark the resource deleted (a new version in its history); None if nothing to do."""
        row = self.session.get(ResourceRow, (resource_type, resource_id), with_for_update=True)
        if row is None or row.deleted:
            return None
        tombstone = {"resourceType": resource_type, "id": resource_id}
        stored = self._write(row, tombstone, row.version_id + 1, "DELETE", deleted=True)
        self._flush(f"{resource_type}/{resource_id} was changed by someone else; retry.")
        return stored

    def _write(
        self,
        row: ResourceRow,
        resource: dict[str, Any],
        version_id: int,
        method: str,
        *,
        deleted: bool,
    ) -> StoredResource:
        """Record a new version of `row`'s resource and make it the current one in `row`."""
        resource_type, resource_id = row.res_type, row.res_id
        if version_id > 1:  # a new resource has no index rows yet
            # First: this statement's autoflush writes (and takes away) the pending rows.
            self.session.execute(
                delete(SearchIndexRow).where(
                    SearchIndexRow.res_type == resource_type,
                    SearchIndexRow.res_id == resource_id,
                )
            )
        now = utc_now()
        content = dict(resource)
        content["id"] = resource_id
        content["meta"] = {
            **(resource.get("meta") or {}),
            "versionId": str(version_id),
            "lastUpdated": instant(now),
        }
        stored = StoredResource(
            resource_type, resource_id, version_id, now, deleted, content, method
        )
        text = json.dumps(content, separators=(",", ":"))
        row.version_id, row.last_updated, row.deleted, row.content = version_id, now, deleted, text
        pending = _pending(self.session)
        pending["versions"].append(
            {
                "res_type": resource_type,
                "res_id": resource_id,
                "version_id": version_id,
                "last_updated": now,
                "deleted": deleted,
                "method": method,
                "written_by": self.author,
                "content": text,
            }
        )
        if not deleted:
            pending["index"] += [
                {
                    "res_type": resource_type,
                    "res_id": resource_id,
                    "param": value.param,
                    "system": value.system,
                    "value": value.value,
                    "low": value.low,
                    "high": value.high,
                }
                for value in index_values(resource_type, content)
            ]
        return stored

    def _flush(self, conflict_message: str) -> None:
        try:
            self.session.flush()
        except IntegrityError as exc:
            raise Conflict(conflict_message) from exc


def stored_from_row(row: ResourceRow | ResourceVersionRow) -> StoredResource:
    """The StoredResource a current or historical row holds."""
    method = row.method if isinstance(row, ResourceVersionRow) else "GET"
    return StoredResource(
        row.res_type,
        row.res_id,
        row.version_id,
        row.last_updated,
        row.deleted,
        json.loads(row.content),
        method,
    )


def _unversioned(content: dict[str, Any]) -> dict[str, Any]:
    """`content` without what each version sets itself (meta.versionId, meta.lastUpdated)."""
    meta = {k: v for k, v in (content.get("meta") or {}).items() if k not in _VERSION_META}
    return {**{k: v for k, v in content.items() if k != "meta"}, "meta": meta}


_VERSION_META = frozenset({"versionId", "lastUpdated"})
