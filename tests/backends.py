"""The database backends the storage and API tests run on (the `database_url` fixture).

Most tests that touch the database run on both: SQLite and the PostgreSQL on loopback.
`sqlite_only` is for the few that take the API fixtures but exercise nothing of the
database (a command that never opens it, a refusal made before any SQL): they run once.
"""

from __future__ import annotations

import pytest

BACKENDS = ["sqlite", "postgresql"]

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
"""Run a test that asks for `database_url` (or `settings`, `client`, ...) on SQLite only."""
