"""Compile a datatype table into one Python function, once, when the tables are loaded.

Reading a CWE or an XCN is the engine's hottest path: a loop over the table's rules, each
asking its rule what to do, costs more than the work itself. This writes, per datatype,
the straight-line function that loop would execute (which components exist, which are read
directly, where each value goes), so that nothing is decided per message that the table
already decided. The generated code does exactly what `context._datatype_loop` does (the
interpreter it replaces, kept as the reference and used by tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mappings.tables import APPEND, Datatype, Rule

__all__ = ["DatatypeReader", "compile_datatype"]

DatatypeReader = Callable[[Any, list[str], tuple[str, ...], "tuple[int, ...] | None"], Any]


def compile_datatype(datatype: Datatype, helpers: dict[str, Any]) -> DatatypeReader:
    """The function reading one composite value as `datatype` (see `_datatype_loop`).

    `helpers` are the engine's `_value` (the full rule pipeline), `assign` and `note_parts`.
    """
    namespace: dict[str, Any] = dict(helpers)
    namespace["DATATYPE"] = datatype
    lines = [
        "def read(ctx, parts, rest, fields):",
        "    saved_parts = ctx.parts",
        "    saved_field = ctx.field",
        "    saved_component = ctx.component",
        "    saved_subcomponent = ctx.subcomponent",
        "    ctx.parts = parts",
        "    composed = fields is not None",
        "    at_component = not composed and saved_component is None",
        "    result = {}",
        "    scalar = None",
        "    count = len(parts)",
    ]
    for index, rule in enumerate(datatype.rules):
        lines.extend(_rule_lines(rule, index, namespace))
    lines.extend(
        [
            "    ctx.component = saved_component",
            "    ctx.subcomponent = saved_subcomponent",
            f"    if count >= {datatype.first_noted}:",
            "        note_parts(ctx, DATATYPE, parts, composed)",
            "    ctx.parts = saved_parts",
            "    ctx.field = saved_field",
            "    if scalar is not None:",
            "        return scalar",
        ]
    )
    for index, (function, params) in enumerate(datatype.finalize):
        namespace[f"F{index}"], namespace[f"FP{index}"] = function, params
        lines.extend(
            [
                f"    result = F{index}(result, ctx, FP{index})",
                "    if result is None:",
                "        return None",
            ]
        )
    for key in datatype.require:
        lines.extend([f"    if {key!r} not in result:", "        return None"])
    lines.append("    return result or None")
    source = "\n".join(lines)
    exec(compile(source, f"<datatype {datatype.name}>", "exec"), namespace)  # noqa: S102
    reader: DatatypeReader = namespace["read"]
    return reader


def _rule_lines(rule: Rule, index: int, namespace: dict[str, Any]) -> list[str]:
    number = rule.number
    namespace[f"R{index}"] = rule
    namespace[f"P{index}"] = rule.path
    lines = [f"    raw = parts[{number - 1}] if count >= {number} else ''"]
    if not rule.always:
        lines.append("    if raw:")
    elif rule.always_if is not None:
        wanted = rule.always_if
        lines.append(f"    if raw or (count >= {wanted} and parts[{wanted - 1}]):")
    else:
        lines.append("    if True:")
    body = [
        "if composed:",
        f"    ctx.field = fields[{number - 1}] if {number} <= len(fields) else ctx.field",
        "    ctx.component = None",
        "elif at_component:",
        f"    ctx.component = {number}",
        "else:",
        f"    ctx.subcomponent = {number}",
    ]
    if rule.direct is not None:
        namespace[f"D{index}"] = rule.direct
        body.append(
            f"value = D{index}(raw, ctx) if raw else value_of(ctx, R{index}, raw, rest, None)"
        )
    else:
        body.append(f"value = value_of(ctx, R{index}, raw, rest, None)")
    body.append("if value is not None:")
    body.extend(f"    {line}" for line in _assign_lines(rule, index))
    lines.extend(f"        {line}" for line in body)
    return lines


def _assign_lines(rule: Rule, index: int) -> list[str]:
    path = rule.path
    assert path is not None
    generic = f"assign(result, P{index}, value, {rule.fallback!r}, {rule.join!r})"
    if path.merge:
        return ["if isinstance(value, dict):", f"    {generic}", "else:", "    scalar = value"]
    if rule.fallback or rule.join is not None:
        return [generic]
    if path.single is not None:
        return [f"result[{path.single!r}] = value"]
    if path.indexed is not None:
        name, position, key = path.indexed
        return [
            f"items = result.get({name!r})",
            "if items is None:",
            f"    items = result[{name!r}] = []",
            f"while len(items) <= {position}:",
            "    items.append({})",
            f"items[{position}][{key!r}] = value",
        ]
    if len(path.steps) == 1 and path.steps[0][1] == APPEND:
        name = path.steps[0][0]
        return [
            f"items = result.get({name!r})",
            "if items is None:",
            f"    result[{name!r}] = [value]",
            "elif value not in items:",
            "    items.append(value)",
        ]
    return [generic]
