"""Schema migrations (Alembic), run by `hub db upgrade`, the demo and the tests."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS = "hub.storage:migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database behind `engine` to `revision` (default: the newest)."""
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
