"""Evaluation of rules against one message: the per-message `Context` and the rule walker.

A rule reads a field (or a component of a datatype), converts it by its type (a primitive
function or a composite `Datatype` table), a code table, a named function, and puts the
result at its FHIR path. The Context knows where in the message it is, so that every
function can note a default or a value it could not map at the exact HL7 location.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mappings.errors import Location, MissingRequiredField
from mappings.hl7v2.tokenizer import Message, unescape
from mappings.report import ConversionReport, SegmentRecord
from mappings.structure import SegmentNode
from mappings.tables import (
    KIND_DATATYPE,
    KIND_PRIMITIVE,
    KIND_TEXT,
    REPEAT_EACH,
    REPEAT_JOIN,
    Datatype,
    Primitive,
    Rule,
    RuleSet,
    Tables,
    assign,
    present,
)

__all__ = [
    "Context",
    "apply_rule_set",
    "datatype_loop",
    "display_of",
    "field_of",
    "first_value",
    "note_parts",
    "rule_set_loop",
    "value_of",
]

JSON = dict[str, Any]
ReferenceMaker = Callable[[str, JSON], "JSON | None"]


class Context:
    """Where the engine is in the message, and the services functions may call."""

    __slots__ = (
        "tables",
        "terminology",
        "message",
        "report",
        "escape",
        "repetition_separator",
        "component_separator",
        "subcomponent_separator",
        "delimiters",
        "facility",
        "application",
        "utc_offset",
        "offset_source",
        "control_id",
        "node",
        "record",
        "field",
        "repetition",
        "component",
        "subcomponent",
        "parts",
        "local_kind",
        "path_text",
        "make_reference",
        "cache",
        "rest",
    )

    def __init__(
        self,
        tables: Tables,
        message: Message,
        report: ConversionReport,
        facility: str,
        utc_offset: str,
        offset_source: str,
        make_reference: ReferenceMaker,
    ) -> None:
        self.tables = tables
        self.terminology = tables.terminology
        self.message = message
        self.report = report
        delimiters = message.delimiters
        self.delimiters = delimiters
        self.escape = delimiters.escape
        self.repetition_separator = delimiters.repetition
        self.component_separator = delimiters.component
        self.subcomponent_separator = delimiters.subcomponent
        self.facility = facility
        self.application = message.msh.value(3)
        self.utc_offset = utc_offset
        self.offset_source = offset_source
        self.control_id = message.control_id
        self.node: SegmentNode | None = None
        self.record: SegmentRecord | None = None
        self.field: int | None = None
        self.repetition: int | None = None
        self.component: int | None = None
        self.subcomponent: int | None = None
        self.parts: list[str] = []
        self.local_kind = "code"
        self.path_text = ""
        self.make_reference = make_reference
        self.cache: dict[tuple[str, ...], Any] = {}
        self.rest = (delimiters.component, delimiters.subcomponent)

    # -- services for functions ------------------------------------------------------------
    def text(self, raw: str) -> str:
        """Unescape a raw (escaped) value."""
        return unescape(raw, self.delimiters) if self.escape in raw else raw

    def part(self, number: int) -> str:
        """Component (or subcomponent) `number` of the composite being read, unescaped."""
        parts = self.parts
        if number > len(parts):
            return ""
        raw = parts[number - 1]
        return unescape(raw, self.delimiters) if self.escape in raw else raw

    def raw_part(self, number: int) -> str:
        parts = self.parts
        return parts[number - 1] if number <= len(parts) else ""

    def location(self, component: int | None = None) -> Location:
        """The HL7 location being read (or one of its components)."""
        node = self.node
        assert node is not None
        return Location(node.name, node.sequence, *self._position(component))

    def _position(self, component: int | None) -> tuple[int | None, ...]:
        if component is None:
            return (self.field, self.component, self.subcomponent, self.repetition)
        if self.component is None:
            return (self.field, component, None, self.repetition)
        return (self.field, self.component, component, self.repetition)

    def note_default(self, value: Any, reason: str, path: str | None = None) -> None:
        """Record that `path` (the current rule's by default) got `value` by default."""
        if self.record is not None:
            self.record.notes.append(
                (self._position(None), "defaulted", path or self.path_text, value, reason)
            )

    def note_not_mapped(self, reason: str, component: int | None = None) -> None:
        """Record that the value at the current location (or one of its components) was
        not mapped, and why."""
        if self.record is not None:
            self.record.notes.append((self._position(component), "not-mapped", None, None, reason))

    def evaluate(self, type_name: str, raw: str) -> Any:
        """Read a raw field repetition as datatype `type_name` (e.g. units as CWE)."""
        datatype = self.tables.datatypes[type_name]
        rest = (self.component_separator, self.subcomponent_separator)
        return _read(self, datatype, raw, rest, None)


def display_of(resource: JSON) -> str | None:
    """A short human label for a Reference.display: a person's name or an org's name."""
    names = resource.get("name")
    if isinstance(names, str):
        return names
    if isinstance(names, list) and names:
        name = names[0]
        words = [*name.get("prefix", []), *name.get("given", [])]
        if name.get("family"):
            words.append(name["family"])
        text = " ".join(words)
        return text or name.get("text")
    return None


def _empty(value: Any) -> bool:
    return value is None or (not value and not isinstance(value, (bool, int, float)))


def _fill(template: Any, value: Any) -> Any:
    if template == "$":
        return value
    if isinstance(template, dict):
        return {key: _fill(item, value) for key, item in template.items()}
    if isinstance(template, list):
        return [_fill(item, value) for item in template]
    return template


def _read(
    ctx: Context,
    kind: Datatype | Primitive | None,
    raw: str,
    rest: tuple[str, ...],
    fields: tuple[int, ...] | None,
) -> Any:
    """Read `raw` (escaped) as `kind`; `rest` are the delimiters still to split on."""
    if kind is None:
        return ctx.text(raw).strip() or None
    if isinstance(kind, Primitive):
        if not kind.text and rest and rest[0] in raw:
            raw, _, tail = raw.partition(rest[0])
            if tail.strip(rest[0]):
                ctx.note_not_mapped(f"only the first part is read as {kind.name}", component=2)
        return kind.function(raw, ctx)
    parts = raw.split(rest[0]) if rest else [raw]
    return _datatype(ctx, kind, parts, rest[1:], fields)


def _datatype(
    ctx: Context,
    datatype: Datatype,
    parts: list[str],
    rest: tuple[str, ...],
    fields: tuple[int, ...] | None,
) -> Any:
    """Apply a datatype table to the parts of one composite value: its compiled reader
    (mappings/compiler.py), or this interpreter's loop where none was compiled."""
    read = datatype.read
    if read is not None:
        return read(ctx, parts, rest, fields)
    return datatype_loop(ctx, datatype, parts, rest, fields)


def datatype_loop(
    ctx: Context,
    datatype: Datatype,
    parts: list[str],
    rest: tuple[str, ...],
    fields: tuple[int, ...] | None,
) -> Any:
    """The reference interpreter of a datatype table (the compiled readers do the same)."""
    saved = (ctx.parts, ctx.field, ctx.component, ctx.subcomponent)
    ctx.parts = parts
    composed = fields is not None
    at_component = not composed and ctx.component is None
    result: JSON = {}
    scalar: Any = None
    count = len(parts)
    limits = datatype.limits
    if count < len(limits):
        late = datatype.late[count]
        rules = datatype.rules[: limits[count]]
        if late:
            rules = rules + late
    else:
        rules = datatype.rules
    for rule in rules:
        number = rule.number
        raw = parts[number - 1] if number <= count else ""
        if not raw:
            if not rule.always:
                continue
            present = rule.always_if
            if present is not None and (present > count or not parts[present - 1]):
                continue
        if composed:
            assert fields is not None
            ctx.field = fields[number - 1] if number <= len(fields) else ctx.field
            ctx.component = None
        elif at_component:
            ctx.component = number
        else:
            ctx.subcomponent = number
        direct = rule.direct
        value = (
            direct(raw, ctx) if direct is not None and raw else _value(ctx, rule, raw, rest, None)
        )
        if value is None:
            continue
        assert rule.path is not None
        if rule.path.merge and not isinstance(value, dict):
            scalar = value
        else:
            assign(result, rule.path, value, rule.fallback, rule.join)
    ctx.component, ctx.subcomponent = saved[2], saved[3]
    if count >= datatype.first_noted:
        note_parts(ctx, datatype, parts, composed)
    ctx.parts, ctx.field = saved[0], saved[1]
    if scalar is not None:
        return scalar
    for function, params in datatype.finalize:
        result = function(result, ctx, params)
        if result is None:
            return None
    for key in datatype.require:
        if key not in result:
            return None
    return result or None


def note_parts(ctx: Context, datatype: Datatype, parts: list[str], composed: bool) -> None:
    """Report the parts present that the datatype table does not map."""
    if composed:
        return
    known = datatype.known
    for number in range(1, len(parts) + 1):
        if parts[number - 1] and (number not in known or number in datatype.ignored):
            reason = datatype.ignored.get(number) or (
                f"{datatype.name}.{number} is not in {datatype.name}.yaml"
            )
            ctx.note_not_mapped(reason, component=number)


def _value(
    ctx: Context, rule: Rule, raw: Any, rest: tuple[str, ...], fields: tuple[int, ...] | None
) -> Any:
    """One value through the rule's pipeline: component, type, table, function, shape.
    Returns None rather than an empty value."""
    if rule.component is not None and rest:
        pieces = raw.split(rest[0])
        raw = pieces[rule.component - 1] if len(pieces) >= rule.component else ""
        rest = rest[1:]
    value: Any
    if fields is not None:  # composed fields: a datatype over them, or the function's input
        kind = rule.type
        if isinstance(kind, Datatype):
            value = _datatype(ctx, kind, raw, rest, fields)
            if value is None:
                return None
        else:
            value = raw
    elif not raw:
        value = ""
    else:
        local = rule.local
        if local is not None:
            saved_kind = ctx.local_kind
            ctx.local_kind = local
        # inlined `_read`, dispatched on the kind the loader worked out (Rule.kind_code)
        code = rule.kind_code
        kind = rule.type
        if code == KIND_TEXT:
            value = kind.function(raw, ctx)  # type: ignore[union-attr]
        elif code == KIND_PRIMITIVE:
            first = rest[0] if rest else None
            if first is not None and first in raw:
                raw, _, tail = raw.partition(first)
                if tail.strip(first):
                    ctx.note_not_mapped(
                        f"only the first part is read as {kind.name}",  # type: ignore[union-attr]
                        component=2,
                    )
            value = kind.function(raw, ctx)  # type: ignore[union-attr]
        elif code == KIND_DATATYPE:
            value = _datatype(
                ctx,
                kind,  # type: ignore[arg-type]
                raw.split(rest[0]) if rest else [raw],
                rest[1:],
                None,
            )
        else:
            value = ctx.text(raw).strip() or None
        if local is not None:
            ctx.local_kind = saved_kind
        if value is None:
            return None
    if rule.table is not None:
        value = _table(ctx, rule, value)
        if value is None:
            return None
    if rule.function is not None:
        value = rule.function(value, ctx, rule.params)
        if value is None or _empty(value):
            return None
    elif value == "":
        return None
    if rule.set is not None and isinstance(value, dict):
        for key, constant in rule.set.items():  # constants are shared, never modified
            if key not in value:
                value[key] = constant
    if rule.wrap is not None:
        value = _fill(rule.wrap, value)
    if rule.reference is not None and isinstance(value, dict):
        value = ctx.make_reference(rule.reference, value)
    return value


value_of = _value  # the rule pipeline, for the compiled readers and appliers


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def first_value(ctx: Context, node: SegmentNode, number: int, component: int = 1) -> str:
    """SEG-number.component of the first repetition, unescaped (conditions, switches)."""
    raw = node.segment.field(number)
    if not raw:
        return ""
    raw = raw.split(ctx.repetition_separator, 1)[0]
    pieces = raw.split(ctx.component_separator)
    if component > len(pieces):
        return ""
    return ctx.text(pieces[component - 1].split(ctx.subcomponent_separator, 1)[0])


def _table(ctx: Context, rule: Rule, value: Any) -> Any:
    table = rule.table
    assert table is not None
    if isinstance(value, dict):  # a CodeableConcept: add the table's coding to it
        for coding in list(value.get("coding", [])):
            system = coding.get("system")
            code = coding.get("code")
            local = not system or ctx.terminology.senders.is_local(system)
            if not code or (system != table.source and not local):
                continue
            found = table.lookup(code)
            if found is None:
                continue
            if local:
                coding["system"] = table.source
                for target in ctx.terminology.concept_maps.translate(table.source, code):
                    if target not in value["coding"]:
                        value["coding"].append(dict(target))
            if table.target == table.source and found[1] and "display" not in coding:
                coding["display"] = found[1]
            if table.target and table.target != table.source:
                target = {"system": table.target, "code": found[0]}
                if found[1]:
                    target["display"] = found[1]
                if target not in value["coding"]:
                    value["coding"].append(target)
            return value
        return value
    code = str(value)
    found = table.lookup(code)
    if found is None:
        if table.unmapped == "default" and table.default is not None:
            ctx.note_default(table.default, f"code not in table {table.id} ({table.title})")
            found = table.lookup(table.default) or (table.default, None)
        elif table.unmapped == "source" and rule.table_as != "code":
            coding = {"system": table.source, "code": code}
            return coding if rule.table_as == "coding" else {"coding": [coding]}
        elif table.unmapped == "silent":
            return None
        else:
            ctx.note_not_mapped(f"code not in table {table.id} ({table.title})")
            return None
    code, display = found
    if rule.table_as == "code" or not table.target:
        return code
    coding = {"system": table.target, "code": code}
    if display:
        coding["display"] = display
    return coding if rule.table_as == "coding" else {"coding": [coding]}


def apply_rule_set(ctx: Context, rule_set: RuleSet, node: SegmentNode, resource: JSON) -> None:
    """Apply one segment's rules to a resource (or to a new element of it, `into`)."""
    record = ctx.report.record(node.index)
    record.consumers.append(rule_set.table)
    record.rule_sets.append(rule_set)
    ctx.node, ctx.record = node, record
    target = resource if rule_set.into is None else {}
    if rule_set.apply is not None:
        rule_set.apply(ctx, node, target, record)
    else:
        rule_set_loop(ctx, rule_set, node, target, record)
    if rule_set.into is not None and target:
        if all(key in target for key in rule_set.require):
            assign(resource, rule_set.into, target)
        else:
            ctx.field, ctx.component, ctx.subcomponent, ctx.repetition = None, None, None, None
            ctx.note_not_mapped(
                f"{node.name} lacks {', '.join(rule_set.require)} for {rule_set.into_text}"
            )


def rule_set_loop(
    ctx: Context, rule_set: RuleSet, node: SegmentNode, target: JSON, record: SegmentRecord
) -> None:
    """The reference interpreter of a segment's rules (the compiled appliers do the same)."""
    segment = node.segment
    fields = segment.raw_fields
    if fields is None:  # MSH
        fields = ["MSH", *(segment.field(n) for n in range(1, segment.field_count + 1))]
    count = len(fields)
    for rule in rule_set.rules:
        if rule.quick:
            number = rule.number
            if number >= count or not fields[number]:
                continue
        _field(ctx, rule, node, target, record)


def _field(
    ctx: Context, rule: Rule, node: SegmentNode, target: JSON, record: SegmentRecord
) -> None:
    segment = node.segment
    number = rule.number
    if rule.switch is not None:
        selector = first_value(ctx, node, rule.switch)
        chosen = rule.cases.get(selector.upper()) or rule.default
        if chosen is None:
            if segment.field(number):
                record.ignored[number] = (
                    f"no rule for {node.name}-{number} when {node.name}-{rule.switch} "
                    f"is '{selector}'"
                )
            return
        rule = chosen
    path = rule.path
    if path is None:  # an `ignore` or `used` entry: the report reads those
        if rule.ignore:
            record.ignored[number] = rule.ignore
        return
    if rule.fallback and present(target, path):
        return
    raw = segment.field(number)
    if not raw:
        if rule.required:
            raise MissingRequiredField(rule.required, Location(node.name, node.sequence, number))
        if not rule.always:
            return
    ctx.field = number
    ctx.component = ctx.subcomponent = ctx.repetition = None
    ctx.path_text = rule.report_path
    written = False
    if rule.simple:  # one value, no composed fields, nothing remembered: the common case
        separator = ctx.repetition_separator
        if separator in raw:
            raw = raw.split(separator, 1)[0]
            ctx.repetition = 2
            ctx.note_not_mapped(
                f"{rule.report_path} holds one value: repetitions after the first are not mapped"
            )
            ctx.repetition = None
        value = _value(ctx, rule, raw, ctx.rest, None)
        if value is not None:
            written = assign(target, path, value, rule.fallback, rule.join)
    else:
        if rule.compose:
            raw = "\x00".join(segment.field(f) for f in (number, *rule.compose))
        values = (
            _memo_values(ctx, rule, node, raw, record)
            if rule.reference is not None
            else _values(ctx, rule, node, raw)
        )
        for value in values:
            if rule.repeat == REPEAT_EACH and isinstance(value, list):
                for item in value:
                    written = assign(target, path, item, rule.fallback, rule.join) or written
            else:
                written = assign(target, path, value, rule.fallback, rule.join) or written
    if written:
        mapped = record.mapped
        if number in mapped:
            mapped[number].append(rule.report_path)
        else:
            mapped[number] = [rule.report_path]
        for other in rule.compose:
            if segment.field(other):
                mapped.setdefault(other, []).append(rule.report_path)
    elif rule.otherwise is not None and raw:
        _field(ctx, rule.otherwise, node, target, record)
        if number in record.mapped:
            ctx.field, ctx.component, ctx.subcomponent = number, None, None
            ctx.note_default(
                None,
                f"{node.name}-{number} could not be read as {rule.type_name}; "
                f"kept as {rule.otherwise.report_path}",
                rule.otherwise.report_path,
            )
    elif rule.required:
        raise MissingRequiredField(rule.required, Location(node.name, node.sequence, number))


def _memo_values(
    ctx: Context, rule: Rule, node: SegmentNode, raw: str, record: SegmentRecord
) -> list[Any]:
    """The values of a field that makes a referenced resource (XCN → Practitioner), read
    once per message and distinct value: the same OBX-16 over fifteen results is read
    once. The notes of the first reading are repeated at every place the value occurs."""
    key = ("field", str(id(rule)), raw)
    found = ctx.cache.get(key)
    if found is not None:
        values, notes = found
        for position, status, path, note_value, reason in notes:
            where = (ctx.field, position[1], position[2], ctx.repetition)
            record.notes.append((where, status, path, note_value, reason))
        return [_copy(value) for value in values]
    start = len(record.notes)
    values = _values(ctx, rule, node, raw)
    ctx.cache[key] = ([_copy(value) for value in values], record.notes[start:])
    return values


def _values(ctx: Context, rule: Rule, node: SegmentNode, raw: str) -> list[Any]:
    number = rule.number
    rest = ctx.rest
    separator = ctx.repetition_separator
    values: list[Any] = []
    if rule.compose:
        fields = (number, *rule.compose)
        segment = node.segment
        parts = [segment.field(f).split(separator, 1)[0] for f in fields]
        value = _value(ctx, rule, parts, rest, fields)
        if value is not None:
            values.append(value)
    elif rule.repeat:
        for index, repetition in enumerate(raw.split(separator)):
            if not repetition and not rule.always:
                continue
            ctx.repetition = index + 1
            ctx.component = ctx.subcomponent = None
            value = _value(ctx, rule, repetition, rest, None)
            if value is not None:
                values.append(value)
        ctx.repetition = None
        if rule.repeat == REPEAT_JOIN and values:
            values = ["\n".join(str(v) for v in values)]
    else:
        if separator in raw:
            raw = raw.split(separator, 1)[0]
            ctx.repetition = 2
            ctx.note_not_mapped(
                f"{rule.report_path} holds one value: repetitions after the first are not mapped"
            )
            ctx.repetition = None
        value = _value(ctx, rule, raw, rest, None)
        if value is not None:
            values.append(value)
    return values


field_of = _field  # one rule on one segment, for the compiled appliers
