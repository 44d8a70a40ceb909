"""INSERT ... ON CONFLICT for the database the session is on (SQLite or PostgreSQL, which
spell it the same way but through their own SQLAlchemy dialects)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_on(session: Session, table: Any) -> Any:
    """An insert into `table` (a mapped class) with `.on_conflict_do_nothing/_update`."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
