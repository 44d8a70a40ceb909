"""Shared fixtures: the hub's API on SQLite and on the PostgreSQL server on loopback.

Storage and API tests take the `fhir` fixture and so run once per backend. PostgreSQL is
real: scripts/ensure_postgres.sh (run by the test command) starts it where it is not
running. A PostgreSQL that cannot be reached fails those tests; it never skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete
from sqlalchemy.engine import make_url

from hub.app import create_app
from hub.settings import Settings
from hub.storage.db import make_engine
from hub.storage.migrate import upgrade
from hub.storage.tables import Base
from tests.backends import BACKENDS
from tests.fhir_client import token

pytest_plugins = ["tests.orthanc_peer", "tests.fhir_server_peer"]

POSTGRES_URL = os.environ.get(
    "HUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A new, empty database on the loopback PostgreSQL, dropped after the session."""
    name = f"hub_test_{uuid.uuid4().hex[:12]}"
    admin = _libpq(POSTGRES_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def new_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], str]]:
    """Makes another migrated database of a backend ("sqlite" or "postgresql"), all its
    own, and returns its URL: for module-scoped fixtures whose data must outlive the
    per-test emptying of `database_url`'s. The PostgreSQL ones are dropped at the end."""
    admin = _libpq(POSTGRES_URL)
    created: list[str] = []

    def make(backend: str) -> str:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'hub.db'}"
        else:
            name = f"hub_test_{uuid.uuid4().hex[:12]}"
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{name}"')
            created.append(name)
            url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        return url

    yield make
    if created:
        with psycopg.connect(admin, autocommit=True) as connection:
            for name in created:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Engine]]:
    engines: dict[str, Engine] = {}
    yield engines
    for engine in engines.values():
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    migrated_engines: dict[str, Engine],
) -> Iterator[str]:
    """The URL of a migrated, emptied database of each backend in turn."""
    backend = request.param
    if backend not in migrated_engines:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'hub.db'}"
        else:
            url = request.getfixturevalue("postgres_database")
        migrated_engines[backend] = make_engine(url)
        upgrade(migrated_engines[backend])
    engine = migrated_engines[backend]
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    yield engine.url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in authorization server's key for the whole test session."""
    return tmp_path_factory.mktemp("keys") / "hub-signing-key.json"


@pytest.fixture
def settings(database_url: str, signing_key_file: Path, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        dicom_store_dir=tmp_path / "dicom",
        max_request_bytes=256 * 1024,
        signing_key_file=signing_key_file,
        public_url="http://testserver",
        embedded_worker=False,
    )


@pytest.fixture
def anonymous(settings: Settings) -> Iterator[TestClient]:
    """The hub's API with no token; server errors come back as responses."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        test_client.headers["Content-Type"] = "application/fhir+json"
        yield test_client


@pytest.fixture
def client(anonymous: TestClient, settings: Settings) -> TestClient:
    """The API as a referring EHR that is also its program's case manager: it may write
    every clinical type and see all it wrote (the storage and API tests' caller)."""
    anonymous.headers["Authorization"] = f"Bearer {token(settings)}"
    return anonymous
