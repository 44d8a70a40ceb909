"""The log output and the correlation id (no database)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from hub.logs import accepted_correlation_id, configure_logging, correlated, correlation_id
from hub.messages.retention import start_pruning
from hub.settings import Settings


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize(
    ("offered", "kept"),
    [
        ("probe-42", True),
        ("3f2c9a7e-1b4d-4c1e-9f0a-7d1e2b3c4d5e", True),
        ("Ottoline Quenneville", False),  # a space: not an id, and maybe a name
        ("abc\n2026-11-23 INFO forged line", False),
        ("x" * 65, False),
        ("", False),
        (None, False),
    ],
)
def test_a_callers_request_id_is_kept_only_if_it_is_a_plain_token(
    offered: str | None, kept: bool
) -> None:
    chosen = accepted_correlation_id(offered)
    assert (chosen == offered) is kept
    if not kept:
        assert len(chosen) == 32 and chosen.isalnum()


def test_json_lines_carry_the_bound_id_and_the_extra_ids(restored_logging: None) -> None:
    buffer = io.StringIO()
    configure_logging("info", "json", stream=buffer)
    log = logging.getLogger("hub.test")
    with correlated("c-1"):
        log.info("mapping message %d done", 7, extra={"message_id": 7})
    log.info("outside")
    log.debug("not at info level")
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["correlation_id"] == "c-1" and first["message_id"] == 7
    assert first["message"] == "mapping message 7 done"
    assert (first["level"], first["logger"]) == ("INFO", "hub.test")
    assert first["timestamp"].endswith("+00:00")
    assert second["correlation_id"] is None
    assert correlation_id.get() is None


def test_text_lines_show_the_id_or_a_dash(restored_logging: None) -> None:
    buffer = io.StringIO()
    configure_logging("warning", "text", stream=buffer)
    configure_logging("warning", "text", stream=buffer)  # again: still one line per event
    log = logging.getLogger("hub.test")
    with correlated("c-2"):
        log.warning("one")
    log.warning("two")
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert "WARNING hub.test [c-2] one" in lines[0]
    assert "[-] two" in lines[1]


def test_the_periodic_prune_runs_only_with_a_retention_policy(tmp_path) -> None:
    async def started(days: int | None) -> bool:
        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/hub.db", message_retention_days=days
        )
        task = start_pruning(settings, sessions=None)  # type: ignore[arg-type]
        if task is None:
            return False
        task.cancel()
        return True

    assert asyncio.run(started(None)) is False
    assert asyncio.run(started(30)) is True
