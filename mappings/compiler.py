"""Compile datatype and segment tables into Python functions, once, at load time.

Reading a CWE, or the fields of an OBX, is the engine's hottest path: a loop over the
table's rules, each asking its rule what to do, costs more than the work itself. This
writes, per datatype and per segment rule set, the straight-line function that loop would
execute (which parts exist, which are read directly, where each value goes), so that
nothing is decided per message that the table already decided. The generated code does
exactly what the interpreter does (`context.datatype_loop`, `context.rule_set_loop`), which
stays as the reference; a test maps every sample both ways and compares.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mappings.tables import APPEND, Datatype, Rule, RuleSet

__all__ = ["DatatypeReader", "RuleSetApplier", "compile_datatype", "compile_rule_set"]

DatatypeReader = Callable[[Any, list[str], tuple[str, ...], "tuple[int, ...] | None"], Any]
RuleSetApplier = Callable[[Any, Any, dict[str, Any], Any], None]


def compile_datatype(datatype: Datatype, helpers: dict[str, Any]) -> DatatypeReader:
    """The function reading one composite value as `datatype` (see `context.datatype_loop`).

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


def _assign_lines(rule: Rule, index: int, target: str = "result") -> list[str]:
    """Code putting `value` at the rule's path in `target`, setting `written`."""
    path = rule.path
    assert path is not None
    generic = f"written = assign({target}, P{index}, value, {rule.fallback!r}, {rule.join!r})"
    if path.merge:
        if target == "result":
            return ["if isinstance(value, dict):", f"    {generic}", "else:", "    scalar = value"]
        return [generic]
    if rule.fallback or rule.join is not None:
        return [generic]
    done = ["written = True"] if target != "result" else []
    if path.single is not None:
        return [f"{target}[{path.single!r}] = value", *done]
    if path.indexed is not None:
        name, position, key = path.indexed
        return [
            f"items = {target}.get({name!r})",
            "if items is None:",
            f"    items = {target}[{name!r}] = []",
            f"while len(items) <= {position}:",
            "    items.append({})",
            f"items[{position}][{key!r}] = value",
            *done,
        ]
    if len(path.steps) == 1 and path.steps[0][1] == APPEND:
        name = path.steps[0][0]
        return [
            f"items = {target}.get({name!r})",
            "if items is None:",
            f"    {target}[{name!r}] = [value]",
            "elif value not in items:",
            "    items.append(value)",
            *done,
        ]
    return [generic]


def compile_rule_set(rule_set: RuleSet, helpers: dict[str, Any]) -> RuleSetApplier:
    """The function applying one segment's rules to a target (see `context.rule_set_loop`).

    Rules with one value, no switch, no `otherwise` and nothing remembered per message are
    written out; the others call the interpreter's `field` (`helpers`: `field`, `value_of`,
    `assign`, `present`, `loop`, `Location`, `MissingRequiredField`).
    """
    namespace: dict[str, Any] = dict(helpers)
    namespace["RULE_SET"] = rule_set
    lines = [
        "def apply(ctx, node, target, record):",
        "    segment = node.segment",
        "    fields = segment.raw_fields",
        "    if fields is None:",
        "        return loop(ctx, RULE_SET, node, target, record)",
        "    count = len(fields)",
        "    separator = ctx.repetition_separator",
        "    rest = ctx.rest",
    ]
    for index, rule in enumerate(rule_set.rules):
        namespace[f"R{index}"] = rule
        namespace[f"P{index}"] = rule.path
        number = rule.number
        fetch = f"    raw = fields[{number}] if {number} < count else ''"
        if not _inline(rule):
            if rule.quick:
                lines.extend(
                    [fetch, "    if raw:", f"        field(ctx, R{index}, node, target, record)"]
                )
            else:
                lines.append(f"    field(ctx, R{index}, node, target, record)")
            continue
        lines.extend(_inline_lines(rule, index, namespace, fetch))
    lines.append("    return None")
    source = "\n".join(lines)
    exec(compile(source, f"<rules {rule_set.table} {rule_set.name}>", "exec"), namespace)  # noqa: S102
    applier: RuleSetApplier = namespace["apply"]
    return applier


def _inline(rule: Rule) -> bool:
    return (
        rule.simple
        and rule.switch is None
        and rule.otherwise is None
        and rule.path is not None
        and not rule.compose
        and not (rule.required and rule.always)
    )


def _inline_lines(rule: Rule, index: int, namespace: dict[str, Any], fetch: str) -> list[str]:
    number = rule.number
    namespace[f"PT{index}"] = rule.report_path
    namespace[f"REQ{index}"] = rule.required
    namespace[f"REP{index}"] = (
        f"{rule.report_path} holds one value: repetitions after the first are not mapped"
    )
    missing = (
        f"raise MissingRequiredField(REQ{index}, Location(node.name, node.sequence, {number}))"
    )
    read = [
        f"ctx.field = {number}",
        "ctx.component = ctx.subcomponent = ctx.repetition = None",
        f"ctx.path_text = PT{index}",
        "if separator in raw:",
        "    raw = raw.split(separator, 1)[0]",
        "    ctx.repetition = 2",
        f"    ctx.note_not_mapped(REP{index})",
        "    ctx.repetition = None",
    ]
    if rule.direct is not None:
        namespace[f"D{index}"] = rule.direct
        read.append(
            f"value = D{index}(raw, ctx) if raw else value_of(ctx, R{index}, raw, rest, None)"
        )
    else:
        read.append(f"value = value_of(ctx, R{index}, raw, rest, None)")
    read.extend(["written = False", "if value is not None:"])
    read.extend(f"    {line}" for line in _assign_lines(rule, index, "target"))
    read.extend(
        [
            "if written:",
            "    mapped = record.mapped",
            f"    if {number} in mapped:",
            f"        mapped[{number}].append(PT{index})",
            "    else:",
            f"        mapped[{number}] = [PT{index}]",
        ]
    )
    if rule.required:
        read.extend(["else:", f"    {missing}"])
    # the interpreter checks `fallback` before looking at the field, then empty fields
    lines = [fetch]
    if rule.fallback:
        lines.append(f"    if not present(target, P{index}):")
        inner = "        "
    else:
        inner = "    "
    guard = "if raw:" if not rule.always else "if True:"
    lines.append(f"{inner}{guard}")
    lines.extend(f"{inner}    {line}" for line in read)
    if rule.required and not rule.always:
        lines.extend([f"{inner}else:", f"{inner}    {missing}"])
    return lines
