"""FHIRPath invariants (ElementDefinition.constraint), compiled once.

fhirpathpy interprets an expression in some 40 to 70 µs, whatever its size: too slow to run
on every resource of a large bundle. Most invariants are a few `path.exists()` /
`path.empty()` tests joined by `or` (or by `and`); those are evaluated here on the plain
JSON instead, in about a microsecond. Anything else goes to fhirpathpy with the R4 model
(which it needs to read a choice element such as `value` as valueQuantity, valueString...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.models import models

# (the node the invariant is on, the resource holding it) → does the invariant hold?
# Raises when the content cannot be evaluated (elements not of their FHIR types).
Check = Callable[[Any, dict[str, Any]], bool]

_R4_MODEL = models["r4"]
_TERM = re.compile(r"^([A-Za-z][A-Za-z0-9]*(?:\.[A-Za-z][A-Za-z0-9]*)*)\.(exists|empty)\(\)$")


@dataclass(frozen=True)
class Invariant:
    """One constraint: its key (e.g. `con-4`), severity, text and compiled expression."""

    key: str
    severity: str
    human: str
    expression: str
    check: Check
    fast: bool
    """Evaluated on the plain JSON (True) or by fhirpathpy (False)."""


def compile_invariant(
    key: str, severity: str, human: str, expression: str, context: str
) -> Invariant:
    """An Invariant on the element at `context` (an element path such as
    `Composition.section`, or a resource type)."""
    fast = _fast_check(expression)
    if fast is not None:
        return Invariant(key, severity, human, expression, fast, True)
    return Invariant(key, severity, human, expression, _fhirpath_check(expression, context), False)


def _fast_check(expression: str) -> Check | None:
    """A plain-JSON check for `a.b.exists() or c.empty() ...` (all `or`, or all `and`)."""
    text = " ".join(expression.split())
    if " or " in text and " and " in text:
        return None  # mixed: precedence matters; fhirpathpy's to evaluate
    joiner, combine = (" and ", all) if " and " in text else (" or ", any)
    tests = []
    for part in text.split(joiner):
        term = _TERM.match(part)
        if term is None:
            return None
        tests.append((tuple(term.group(1).split(".")), term.group(2) == "exists"))

    def check(node: Any, _resource: dict[str, Any]) -> bool:
        return bool(combine(_present(node, steps) == wanted for steps, wanted in tests))

    return check


def _present(node: Any, steps: tuple[str, ...]) -> bool:
    """Does the FHIRPath `steps` select anything under `node` (FHIRPath `exists()`)?"""
    current = [node]
    for step in steps:
        found: list[Any] = []
        for item in current:
            if not isinstance(item, dict):
                continue
            value = item.get(step)
            values = [value] if value is not None else _choice_values(item, step)
            for each in values:
                if isinstance(each, list):
                    found.extend(v for v in each if v is not None)
                elif each is not None:
                    found.append(each)
        if not found:
            return False
        current = found
    return True


def _choice_values(item: dict[str, Any], name: str) -> list[Any]:
    """The values of the choice element `name[x]` (valueQuantity, valueString...)."""
    size = len(name)
    return [
        value
        for key, value in item.items()
        if len(key) > size and key.startswith(name) and key[size].isupper()
    ]


def _fhirpath_check(expression: str, context: str) -> Check:
    compiled = fhirpathpy.compile(expression, _R4_MODEL)
    on_resource = "." not in context
    type_path = context.replace("[x]", "")

    def check(node: Any, resource: dict[str, Any]) -> bool:
        target = node if on_resource else _node(node, type_path)
        result = compiled(target, {"resource": resource, "rootResource": resource})
        # An invariant holds only when it evaluates to true (an empty result does not).
        return bool(result == [True])

    return check


def _node(data: Any, type_path: str) -> Any:
    """`data` as fhirpathpy's typed node for the element at `type_path`, so that the R4
    model reads its choice elements."""
    create: Callable[[Any, str], Any] = ResourceNode.create_node
    return create(data, type_path)
