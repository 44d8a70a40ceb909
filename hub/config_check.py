"""Validation of the hub's configuration files with the line of each problem: hub.yaml (for
`hub config check`), and the routing table and checklist (for hospital IT's configuration
page, also on a pasted candidate that is never saved).

Lines come from YAML's node marks (`yaml.compose`): the line of the key a problem is about,
or of the nearest enclosing key or list item the file does have (a missing key is reported
where its mapping starts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from hub.settings import Settings, secrets_in
from hub.workflow.checklist import Checklist
from hub.workflow.routing import RoutingTable

TableKind = Literal["routing", "checklist"]
TABLE_KINDS: dict[TableKind, str] = {
    "routing": "Routing table (routing.yaml)",
    "checklist": "Records checklist (checklist.yaml)",
}


@dataclass(frozen=True)
class ConfigProblem:
    """One problem of a configuration file: where (file, 1-based line; None when the file
    could not be read at all) and what."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.file}: {self.message}"
        return f"{self.file}:{self.line}: {self.message}"


def check_config_file(path: Path) -> list[str]:
    """Problems in the YAML file at `path`, each as `file:line: message`; [] if valid."""
    return [str(problem) for problem in config_problems(path)]


def config_problems(path: Path) -> list[ConfigProblem]:
    """Problems of the settings file (its `hub:` section) at `path`; [] if valid."""
    name = str(path)
    text = _read(path)
    if isinstance(text, ConfigProblem):
        return [text]
    parsed = _parse(text, name)
    if isinstance(parsed, ConfigProblem):
        return [parsed]
    root, document = parsed
    hub_line = _line_of(root, ("hub",)) or 1
    section = (document if isinstance(document, dict) else {}).get("hub") or {}
    if not isinstance(section, dict):
        return [ConfigProblem(name, hub_line, "'hub' must be a mapping")]
    secrets = secrets_in(section)
    if secrets:
        return [
            ConfigProblem(name, _line_of(root, ("hub", key)) or hub_line, f"hub.{key}: {problem}")
            for key, problem in secrets.items()
        ]
    return _validation_problems(Settings, section, root, ("hub",), name, hub_line)


def table_problems(kind: TableKind, text: str, file: str) -> list[ConfigProblem]:
    """Problems of a routing table or checklist given as YAML `text` (named `file` in the
    problems); [] if the hub would load it. Read as the hub reads it
    (hub.workflow.routing.load_routing, hub.workflow.checklist.load_checklist)."""
    parsed = _parse(text, file)
    if isinstance(parsed, ConfigProblem):
        return [parsed]
    root, document = parsed
    if document is None:
        document = {}
    if not isinstance(document, dict):
        return [ConfigProblem(file, 1, f"the {kind} file must be a mapping with a '{kind}' key")]
    if kind == "routing":
        return _validation_problems(
            RoutingTable, document.get("routing") or {}, root, ("routing",), file, 1
        )
    return _validation_problems(Checklist, document, root, (), file, 1)


def table_file_problems(kind: TableKind, path: Path) -> list[ConfigProblem]:
    """`table_problems` of the file at `path`, read now (not the copy the hub loaded)."""
    text = _read(path)
    if isinstance(text, ConfigProblem):
        return [text]
    return table_problems(kind, text, str(path))


# -- internals ---------------------------------------------------------------------------
def _read(path: Path) -> str | ConfigProblem:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        return ConfigProblem(str(path), None, f"cannot be read: {exc.strerror}")
    except UnicodeDecodeError:
        return ConfigProblem(str(path), None, "cannot be read: it is not UTF-8 text")


def _parse(text: str, file: str) -> tuple[yaml.Node | None, Any] | ConfigProblem:
    """The node tree (for lines) and the document, or the syntax error with its line."""
    try:
        return yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 0
        return ConfigProblem(file, line, f"not valid YAML: {getattr(exc, 'problem', exc)}")


def _validation_problems(
    model: type[BaseModel],
    data: Any,
    root: yaml.Node | None,
    prefix: tuple[str, ...],
    file: str,
    fallback_line: int,
) -> list[ConfigProblem]:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = (*prefix, *error["loc"])
            where = ".".join(str(step) for step in path)
            line = _line_of(root, path) or fallback_line
            problems.append(ConfigProblem(file, line, f"{where}: {error['msg']}"))
        return sorted(problems, key=lambda problem: problem.line or 0)
    return []


def _line_of(root: yaml.Node | None, path: Sequence[str | int]) -> int | None:
    """The line of the deepest key or list item along `path` that the file has."""
    if root is None:
        return None
    node: yaml.Node = root
    line: int | None = None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            found = next((pair for pair in node.value if str(pair[0].value) == str(step)), None)
            if found is None:
                return line if line is not None else node.start_mark.line + 1
            key, node = found
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int):
            if not 0 <= step < len(node.value):
                return line
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line
