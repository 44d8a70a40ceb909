"""The engine: one tokenized HL7 v2 message → a FHIR R4 transaction Bundle and a report.

    result = map_message(parse_message(raw))
    result.bundle   # {"resourceType": "Bundle", "type": "transaction", "entry": [...]}
    result.report   # ConversionReport: every segment and field, mapped or why not

How it goes, all of it driven by the tables (`messages/<TYPE_TRIGGER>.yaml` first):

1. MSH-9 picks the message table; its structure places each segment in its group.
2. Each line of the table (a `Spec`) makes one resource per matching segment, applying the
   resource table's rules for that segment and for the related ones (`also`: the NTEs of
   an OBX, the ORC of an OBR), or adds to a resource made earlier (`into`).
3. Each resource gets its business identifier (from the message, or derived from its
   parent's: an OBX's set id within its OBR's filler number), a deterministic urn:uuid
   fullUrl (uuid5 of the control id, the type and that identifier), and a conditional
   request: `POST` with `ifNoneExist`, or a conditional `PUT` for updates (A08, A40).
   Two resources with the same identifier become one entry.
4. References (`refs`) are wired between fullUrls, nearest in the group tree first.

No YAML is read here and no FHIR model is built: the tables are compiled once
(`default_tables()`), the output is plain dicts. Tests validate it with fhir.resources.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from mappings.context import Context, apply_rule_set, display_of, first_value
from mappings.errors import (
    Location,
    MalformedMessage,
    MissingRequiredField,
    MissingRequiredSegment,
    UnsupportedMessageType,
)
from mappings.hl7v2.tokenizer import Hl7ParseError, Message, parse_message
from mappings.loader import default_tables
from mappings.report import ConversionReport, SegmentRecord
from mappings.structure import GroupNode, SegmentNode
from mappings.tables import Identity, RuleSet, Spec, Tables, assign
from mappings.tables import Path as TargetPath

__all__ = ["MappingResult", "map_bytes", "map_message"]

JSON = dict[str, Any]
_OFFSET = re.compile(r"([+-])(\d{2})(\d{2})$")
_MSH_USED = {
    1: "field separator: read by the tokenizer",
    2: "encoding characters: read by the tokenizer",
    3: "sending application: identifies the sender when MSH-4 is empty",
    4: "sending facility: selects local code systems and the default assigning authority",
    7: "message time: its UTC offset is used for times that have none",
    9: "message type: selects the mapping table",
    10: "message control id: seeds the bundle's urn:uuid fullUrls",
    12: "version: one union structure serves 2.3 to 2.8",
    18: "character set: decodes the message",
}
_MSH_NOT_MAPPED = {
    5: "receiving application: the hub itself",
    6: "receiving facility: the hub itself",
    8: "security: not carried",
    11: "processing id: checked by the listener, not carried",
    13: "sequence number: not carried",
    14: "continuation pointer: not carried",
    15: "accept acknowledgment type: read by the listener",
    16: "application acknowledgment type: read by the listener",
    17: "country code: not carried",
    19: "principal language of the message: not carried",
    20: "alternate character set handling: not carried",
    21: "message profile identifier: not checked",
    22: "sending responsible organization: not carried",
    23: "receiving responsible organization: not carried",
    24: "sending network address: not carried",
    25: "receiving network address: not carried",
}


@dataclass(frozen=True, slots=True)
class MappingResult:
    """The transaction Bundle made from one message, and the report of what went where."""

    bundle: JSON
    report: ConversionReport


def map_bytes(raw: bytes, tables: Tables | None = None) -> MappingResult:
    """Tokenize and map raw message bytes; MalformedMessage if they are not HL7 v2."""
    try:
        message = parse_message(raw)
    except Hl7ParseError as exc:
        raise MalformedMessage(str(exc), Location("MSH")) from exc
    return map_message(message, tables)


def map_message(message: Message, tables: Tables | None = None) -> MappingResult:
    """Map one tokenized message to a FHIR R4 transaction Bundle and a ConversionReport.

    Raises UnsupportedMessageType (no table for MSH-9), MissingRequiredSegment,
    MissingRequiredField: each a MappingError with the HL7 location and a reason.
    """
    tables = tables or default_tables()
    code, trigger, _ = message.message_type
    message_map = tables.messages.get(f"{code}_{trigger}")
    if message_map is None:
        raise UnsupportedMessageType(
            f"no mapping table for message type {code}^{trigger}", Location("MSH", 1, 9)
        )
    if not message.control_id:
        raise MissingRequiredField(
            "MSH-10 is empty: the message control id seeds the bundle", Location("MSH", 1, 10)
        )
    _, nodes = message_map.structure.match(message.segments)
    records = [SegmentRecord(node) for node in nodes]
    report = ConversionReport(message, message_map.name, records)
    _explain_segments(tables, message_map.not_mapped, records)
    builder = _BundleBuilder(tables.namespace, message.control_id)
    ctx = _context(tables, message, report, builder)
    instances = _build(ctx, message_map.specs, nodes, records)
    scope = _Scope(instances)
    for instance in instances:
        _finish(ctx, builder, instance, scope)
    for instance in instances:
        _wire(instance, scope)
    return MappingResult(builder.bundle(instances), report)


class _Scope:
    """Finds the instances of a spec nearest to a group: in the closest enclosing group
    that holds any (a result's patient, a report's results). Answers are memoized."""

    def __init__(self, instances: list[_Instance]) -> None:
        self.by_spec: dict[str, list[_Instance]] = {}
        for instance in instances:
            self.by_spec.setdefault(instance.spec.name, []).append(instance)
        self.ancestors: dict[int, set[int]] = {}
        for instance in instances:
            chain: set[int] = set()
            group: GroupNode | None = instance.node.group
            while group is not None:
                chain.add(id(group))
                group = group.parent
            self.ancestors[id(instance)] = chain
        self.memo: dict[tuple[str, int], list[_Instance]] = {}

    def nearest(self, name: str, group: GroupNode | None) -> list[_Instance]:
        if group is None:
            return []
        key = (name, id(group))
        found = self.memo.get(key)
        if found is None:
            marker = id(group)
            ancestors = self.ancestors
            found = [i for i in self.by_spec.get(name, ()) if marker in ancestors[id(i)]]
            if not found:
                found = self.nearest(name, group.parent)
            self.memo[key] = found
        return found


class _Instance:
    """One resource being made from one segment occurrence."""

    __slots__ = (
        "spec",
        "node",
        "resource",
        "identity",
        "full_url",
        "display",
        "position",
        "entry",
    )

    def __init__(self, spec: Spec, node: SegmentNode, position: int) -> None:
        self.spec = spec
        self.node = node
        self.resource: JSON = {"resourceType": spec.resource.resource_type}
        self.identity: tuple[str, str] | None = None
        self.full_url: str | None = None
        self.display: str | None = None
        self.position = position
        self.entry: JSON | None = None

    def reference(self) -> JSON | None:
        if self.full_url:
            return {"reference": self.full_url}
        if self.display is None:
            self.display = display_of(self.resource)
        return {"display": self.display} if self.display else None


class _BundleBuilder:
    """Entries keyed by (type, identifier): one entry per business identity."""

    def __init__(self, namespace: uuid.UUID, control_id: str) -> None:
        self.namespace = namespace
        self.control_id = control_id
        self.entries: dict[tuple[str, str], JSON] = {}
        self.extra: list[JSON] = []

    def add(self, resource: JSON, identity: tuple[str, str], update: bool) -> JSON:
        resource_type = resource["resourceType"]
        token = _token(*identity)
        key = (resource_type, token)
        entry = self.entries.get(key)
        if entry is not None:  # the same business identity: merge, keep one entry
            assign(entry["resource"], _MERGE, resource, fallback=True)
            if update:
                entry["request"] = _request(resource_type, token, True)
            return entry
        full_url = _uuid5(self.namespace, f"{self.control_id}|{resource_type}|{token}")
        entry = {
            "fullUrl": full_url,
            "resource": resource,
            "request": _request(resource_type, token, update),
        }
        self.entries[key] = entry
        return entry

    def bundle(self, instances: list[_Instance]) -> JSON:
        ordered: dict[str, JSON] = {}
        for instance in instances:
            entry = instance.entry
            if entry is not None and entry["fullUrl"] not in ordered:
                ordered[entry["fullUrl"]] = entry
        for entry in self.entries.values():
            ordered.setdefault(entry["fullUrl"], entry)
        return {"resourceType": "Bundle", "type": "transaction", "entry": list(ordered.values())}


_MERGE = TargetPath.parse(".")


def _uuid5(namespace: uuid.UUID, name: str) -> str:
    """`urn:uuid:` + uuid.uuid5(namespace, name), without building UUID objects."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digest.hex()
    return f"urn:uuid:{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _request(resource_type: str, token: str, update: bool) -> JSON:
    if update:
        return {"method": "PUT", "url": f"{resource_type}?identifier={token}"}
    return {"method": "POST", "url": resource_type, "ifNoneExist": f"identifier={token}"}


_SAFE = re.compile(r"[A-Za-z0-9:/.\-_~@]*")


def _token(system: str, value: str) -> str:
    """`system|value` as a FHIR search token (\\ | , $ escaped) in a URL query."""
    return f"{_escape(system)}|{_escape(value)}"


def _escape(text: str) -> str:
    if _SAFE.fullmatch(text):
        return text
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,")
    return quote(text.replace("$", "\\$"), safe=":/.-_~@")


def _context(
    tables: Tables, message: Message, report: ConversionReport, builder: _BundleBuilder
) -> Context:
    msh = message.msh
    facility = msh.value(4) or msh.value(3)
    offset = _OFFSET.search(msh.value(7).split(".")[0]) if msh.value(7) else None
    if offset:
        utc_offset, source = f"{offset.group(1)}{offset.group(2)}:{offset.group(3)}", "MSH-7"
    else:
        utc_offset = tables.terminology.senders.utc_offset(facility)
        source = "the sender's entry in senders.yaml"

    def make_reference(resource_type: str, content: JSON) -> JSON | None:
        content = {"resourceType": resource_type, **content}
        identity = _first_identifier(content, ())
        display = display_of(content)
        if identity is None:
            ctx.note_default(
                None,
                f"no identifier: the {resource_type} is referenced by "
                "its name only (Reference.display)",
            )
            return {"display": display} if display else None
        entry = builder.add(content, identity, update=False)
        reference = {"reference": entry["fullUrl"]}
        if display:
            reference["display"] = display
        return reference

    ctx = Context(tables, message, report, facility, utc_offset, source, make_reference)
    return ctx


def _explain_segments(
    tables: Tables, reasons: dict[str, str], records: list[SegmentRecord]
) -> None:
    for record in records:
        node = record.node
        if node.name == "MSH":
            record.used.update(_MSH_USED)
            record.ignored.update(_MSH_NOT_MAPPED)
            record.consumers.append("engine (MSH)")
            continue
        if node.name.startswith("Z"):
            record.reason = f"{node.name} is a Z-segment: site-defined, no table maps it"
        elif not node.expected:
            record.reason = f"{node.name} is not expected here in the message structure"
        else:
            record.reason = (
                reasons.get(node.name)
                or tables.segment_reasons.get(node.name)
                or (f"no resource in this message table is made from {node.name}")
            )


def _build(
    ctx: Context, specs: list[Spec], nodes: list[SegmentNode], records: list[SegmentRecord]
) -> list[_Instance]:
    by_name: dict[str, list[SegmentNode]] = {}
    for node in nodes:
        if node.expected:
            by_name.setdefault(node.name, []).append(node)
    instances: list[_Instance] = []
    made: dict[str, list[_Instance]] = {}
    selectors: dict[tuple[int, int, int], str] = {}  # condition values, read once
    for spec in specs:
        mine: list[_Instance] = []
        rule_set = spec.resource.segments[spec.rules]
        for node in by_name.get(spec.segment, ()):
            if spec.group is not None and node.group.name != spec.group:
                continue
            condition = spec.when
            if condition is not None:
                where = (node.index, condition.field, condition.component)
                selector = selectors.get(where)
                if selector is None:
                    selector = selectors[where] = first_value(
                        ctx, node, condition.field, condition.component
                    ).upper()
                if not condition.holds(selector):
                    continue
            if spec.into is not None:
                targets = _nearest(made.get(spec.into, []), node.group)
                if targets:
                    _apply(ctx, spec, rule_set, node, targets[0].resource)
                continue
            instance = _Instance(spec, node, len(instances))
            _apply(ctx, spec, rule_set, node, instance.resource)
            for key, value in spec.constants.items():
                present = instance.resource.get(key)
                if isinstance(value, list) and isinstance(present, list):
                    present[:0] = [_copy(v) for v in value if v not in present]
                elif present is None:
                    instance.resource[key] = _copy(value)
            mine.append(instance)
            instances.append(instance)
        if spec.required and spec.into is None and not mine:
            raise MissingRequiredSegment(
                f"{spec.segment} is required: the {spec.resource.resource_type} is made from it",
                Location(spec.segment),
            )
        made.setdefault(spec.name, []).extend(mine)
    return instances


def _apply(ctx: Context, spec: Spec, rule_set: RuleSet, node: SegmentNode, resource: JSON) -> None:
    """The spec's own segment, then its related ones (`also`), into one resource."""
    apply_rule_set(ctx, rule_set, node, resource)
    for path in spec.also:
        for other in _resolve(node.group, path):
            other_rules = spec.resource.segments.get(other.name)
            if other_rules is not None:
                apply_rule_set(ctx, other_rules, other, resource)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _resolve(group: GroupNode, path: tuple[tuple[str, str], ...]) -> list[SegmentNode]:
    groups = [group]
    for kind, name in path:
        if kind == "up":
            groups = [g.parent for g in groups if g.parent is not None]
        elif kind == "group":
            groups = [child for g in groups for child in g.groups(name)]
        else:
            return [segment for g in groups for segment in g.segments(name)]
    return []


def _nearest(instances: list[_Instance], group: GroupNode | None) -> list[_Instance]:
    """The instances in the closest enclosing group that holds any."""
    while group is not None:
        found = [i for i in instances if i.node.group.is_within(group)]
        if found:
            return found
        group = group.parent
    return []


def _finish(ctx: Context, builder: _BundleBuilder, instance: _Instance, scope: _Scope) -> None:
    """Defaults, finalizers, identity and the bundle entry of one resource."""
    resource = instance.resource
    node = instance.node
    resource_map = instance.spec.resource
    record = ctx.report.record(node.index)
    ctx.node, ctx.record = node, record
    ctx.field = ctx.component = ctx.subcomponent = ctx.repetition = None
    for path, value, location, reason in resource_map.defaults:
        if path.single in resource:
            continue
        if assign(resource, path, _copy(value), fallback=True):
            where = _location(location, node)
            record.notes.append(
                (where, "defaulted", f"{resource['resourceType']}.{path.text}", value, reason)
            )
    if resource_map.finalize:
        for function, params in resource_map.finalize:
            function(resource, ctx, params)
        for key in [k for k in resource if k.startswith("_")]:
            del resource[key]
    identity = instance.spec.identity
    found = _first_identifier(resource, identity.prefer)
    if found is None and identity.within is not None:
        found = _derive(ctx, instance, identity, scope)
    if found is None:
        instance.display = display_of(resource)
        if identity.otherwise == "display" and instance.display:
            return
        where = _location(identity.location or f"{node.name}-1", node)
        raise MissingRequiredField(identity.reason, where)
    instance.identity = found
    added = builder.add(resource, found, update=instance.spec.request == "update")
    instance.entry = added
    instance.full_url = added["fullUrl"]
    if added["resource"] is not resource:
        instance.resource = added["resource"]


def _location(text: str, node: SegmentNode) -> Location:
    segment, _, field = text.partition("-")
    sequence = node.sequence if segment == node.name else 1
    return Location(segment, sequence, int(field) if field else None)


def _first_identifier(resource: JSON, prefer: tuple[str, ...]) -> tuple[str, str] | None:
    candidates = [i for i in resource.get("identifier") or [] if i.get("system") and i.get("value")]
    for wanted in prefer:
        for identifier in candidates:
            codings = (identifier.get("type") or {}).get("coding") or []
            if any(c.get("code") == wanted for c in codings):
                return identifier["system"], identifier["value"]
    if candidates:
        return candidates[0]["system"], candidates[0]["value"]
    return None


def _derive(
    ctx: Context, instance: _Instance, identity: Identity, scope: _Scope
) -> tuple[str, str] | None:
    """An identifier within the parent's: `<parent value>-<label>-<key>` in its system."""
    assert identity.within is not None
    parents = scope.nearest(identity.within, instance.node.group)
    if not parents or parents[0].identity is None:
        return None
    system, value = parents[0].identity
    node = instance.node
    key = first_value(ctx, node, identity.key) if identity.key else ""
    if not key:
        parent = parents[0]
        siblings = [
            i
            for i in scope.by_spec[instance.spec.name]
            if scope.nearest(identity.within, i.node.group)[:1] == [parent]
        ]
        key = str(siblings.index(instance) + 1)
        if identity.key:
            ctx.field = identity.key
            ctx.note_default(
                key,
                f"{node.name}-{identity.key} is empty; the identifier uses "
                "the segment's position instead",
                f"{instance.resource['resourceType']}.identifier",
            )
            ctx.field = None
    derived = {
        "system": ctx.terminology.authorities.derived_system(system),
        "value": f"{value}-{identity.label}{key}",
    }
    instance.resource.setdefault("identifier", []).append(derived)
    return derived["system"], derived["value"]


def _wire(instance: _Instance, scope: _Scope) -> None:
    for ref in instance.spec.refs:
        targets = scope.nearest(ref.to, instance.node.group)
        if not ref.all:
            targets = targets[:1]
        for target in targets:
            if target is instance:
                continue
            reference = target.reference()
            if reference is None:
                continue
            value = reference if ref.template is None else _fill(ref.template, reference)
            assign(instance.resource, ref.path, value)


def _fill(template: Any, value: Any) -> Any:
    if template == "$ref":
        return value
    if isinstance(template, dict):
        return {key: _fill(item, value) for key, item in template.items()}
    return template
