"""The case workflow's outward hook point: `case_moved`, called inside the transaction that
moves a case Task to a new state (Task.status, businessStatus or statusReason).

Listeners belong to a deployment, not to the process: they travel in the SQLAlchemy session's
`info`, put there by whoever makes the sessions (the runtime for the API's sessions, a job
handler for its job's session). So the workflow reads no configuration, and two hubs in one
process (as in the tests) never hear each other. A listener writes in the session it is given:
a rollback undoes the move and whatever the listener queued, together.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol

from sqlalchemy.orm import Session

from hub.storage.repository import StoredResource

LISTENERS = "hub.workflow.case_listeners"


class CaseListener(Protocol):
    """Told of each move of a case, in the mover's transaction."""

    def case_moved(self, session: Session, task: StoredResource, old: StoredResource) -> None:
        """`task` is the new version of the case Task, `old` the one it replaced."""


def add_case_listener(info: MutableMapping[str, Any], name: str, listener: CaseListener) -> None:
    """Register `listener` under `name` (replacing one of that name) in a session's or a
    sessionmaker's `info`."""
    # A copy, never an update in place: a sessionmaker hands every session a shallow copy of
    # its info, so the inner mapping is shared by all of them.
    listeners = dict(info.get(LISTENERS) or {})
    listeners[name] = listener
    info[LISTENERS] = listeners


def case_moved(session: Session, task: StoredResource, old: StoredResource) -> None:
    """Tell the session's listeners that case `task` moved from `old`."""
    listeners: dict[str, CaseListener] = session.info.get(LISTENERS) or {}
    for listener in listeners.values():
        listener.case_moved(session, task, old)
