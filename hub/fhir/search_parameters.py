"""The table of supported resource types and search parameters (search_parameters.yaml)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models as fhirpath_models

ParamType = Literal["token", "string", "reference", "date"]
_TABLE = Path(__file__).with_name("search_parameters.yaml")
_FHIRPATH_MODEL = fhirpath_models["r4"]


@dataclass(frozen=True)
class SearchParameter:
    """One search parameter of one resource type."""

    name: str
    type: ParamType
    expression: str
    targets: tuple[str, ...] = ()

    def evaluate(self, resource: dict[str, Any]) -> list[Any]:
        """The values of this parameter's expression in `resource`."""
        return list(_compiled(self.expression)(resource))


Extractor = Callable[[dict[str, Any]], Iterator[Any]]
# `Type.element.element`, each step optionally `.ofType(T)`: what nearly every parameter is.
_STEP = re.compile(r"([a-z][A-Za-z0-9]*)(?:\.ofType\(([A-Za-z]+)\))?")


@cache
def _compiled(expression: str) -> Extractor:
    """A dict walker for plain paths (the index runs them on every write, and fhirpathpy's
    interpreter costs ~70 µs a call); fhirpathpy for anything else."""
    branches = [_plain_path(branch.strip()) for branch in expression.split("|")]
    if all(branch is not None for branch in branches):
        steps = [branch for branch in branches if branch is not None]
        return lambda resource: (v for branch in steps for v in _walk([resource], branch))
    fhirpath = compile_fhirpath(expression, _FHIRPATH_MODEL)
    return lambda resource: iter(fhirpath(resource, {}))


def _plain_path(expression: str) -> tuple[tuple[str, ...], ...] | None:
    """The JSON keys to try at each step of `Type.a.b`, or None if it is not that simple.

    A choice element (`Observation.effective`) is each of its typed keys (effectiveDateTime,
    effectivePeriod, ...) as the FHIR R4 model lists them, or the one `.ofType()` names.
    """
    type_name, _, rest = expression.partition(".")
    if not type_name[:1].isupper() or not rest:
        return None
    model = _FHIRPATH_MODEL
    steps: list[tuple[str, ...]] = []
    context = type_name
    while rest:
        match = _STEP.match(rest)
        if match is None or (match.end() < len(rest) and rest[match.end()] != "."):
            return None
        name, of_type = match.groups()
        rest = rest[match.end() + 1 :]
        path = f"{context}.{name}"
        path = model["pathsDefinedElsewhere"].get(path, path)
        choices = model["choiceTypePaths"].get(path)
        if choices:
            if rest:
                return None  # a step below a choice depends on the type found: fhirpathpy
            wanted = [of_type[0].upper() + of_type[1:]] if of_type else choices
            steps.append(tuple(name + choice for choice in wanted if choice in choices))
        elif of_type:
            return None
        else:
            steps.append((name,))
        element_type = model["path2Type"].get(path)
        context = (
            element_type
            if element_type
            and element_type[0].isupper()
            and (element_type not in ("BackboneElement", "Element"))
            else path
        )
    return tuple(steps)


def _walk(nodes: list[Any], steps: tuple[tuple[str, ...], ...]) -> Iterator[Any]:
    for keys in steps:
        found: list[Any] = []
        for node in nodes:
            if not isinstance(node, dict):
                continue
            for key in keys:
                value = node.get(key)
                if isinstance(value, list):
                    found.extend(v for v in value if v is not None)
                elif value is not None:
                    found.append(value)
        nodes = found
    yield from nodes


@cache
def search_parameters() -> dict[str, dict[str, SearchParameter]]:
    """Resource type → parameter name → SearchParameter, for every type the API serves."""
    table = yaml.safe_load(_TABLE.read_text(encoding="utf-8"))
    result: dict[str, dict[str, SearchParameter]] = {}
    for resource_type, params in table.items():
        result[resource_type] = {
            name: SearchParameter(name, spec[0], spec[1], tuple(spec[2]) if len(spec) > 2 else ())
            for name, spec in (params or {}).items()
        }
    return result


def supported_types() -> list[str]:
    return sorted(search_parameters())
