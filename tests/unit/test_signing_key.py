"""The built-in signing key file, made by whichever of several starting replicas comes first."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from hub.security.keys import signing_key


def _kid_of(path: Path, start: Any, answers: Any) -> None:
    start.wait()
    answers.put(signing_key(path)["kid"])


def test_replicas_starting_together_all_use_the_one_key_written(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "hub-signing-key.json"
    context = multiprocessing.get_context("spawn")
    start, answers = context.Event(), context.Queue()
    replicas = [context.Process(target=_kid_of, args=(path, start, answers)) for _ in range(4)]
    for replica in replicas:
        replica.start()
    start.set()
    kids = [answers.get(timeout=120) for _ in replicas]
    for replica in replicas:
        replica.join(30)
    assert len(set(kids)) == 1
    assert signing_key.__wrapped__(path)["kid"] == kids[0]  # the file holds that key
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no draft left behind
    assert path.stat().st_mode & 0o777 == 0o600
