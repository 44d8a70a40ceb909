"""Validation of hub.yaml with the line of each problem, for `hub config check`."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from hub.settings import Settings, secrets_in


def check_config_file(path: Path) -> list[str]:
    """Problems in the YAML file at `path`, each as `file:line: message`; [] if valid."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [f"{path}: cannot be read: {exc.strerror}"]
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        return [f"{path}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}"]
    lines = _key_lines(root)
    section = (yaml.safe_load(text) or {}).get("hub") or {}
    if not isinstance(section, dict):
        return [f"{path}:{lines.get('hub', 1)}: 'hub' must be a mapping"]
    secrets = secrets_in(section)
    if secrets:
        return [
            f"{path}:{lines.get(key, lines.get('hub', 1))}: hub.{key}: {problem}"
            for key, problem in secrets.items()
        ]
    try:
        Settings.model_validate(section)
    except ValidationError as exc:
        return [
            f"{path}:{lines.get(str(error['loc'][0]), lines.get('hub', 1))}: "
            f"hub.{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        ]
    return []


def _key_lines(root: yaml.Node | None) -> dict[str, int]:
    """Line of each top-level key and of each key of the `hub` section."""
    lines: dict[str, int] = {}
    if not isinstance(root, yaml.MappingNode):
        return lines
    for key, value in root.value:
        lines[str(key.value)] = key.start_mark.line + 1
        if key.value == "hub" and isinstance(value, yaml.MappingNode):
            for inner_key, _ in value.value:
                lines[str(inner_key.value)] = inner_key.start_mark.line + 1
    return lines
