"""The compiled form of the YAML tables: rules, datatypes, resource and message maps.

The loader builds these once; the engine only reads them. Nothing here knows HL7 field
meanings: that knowledge is in the YAML files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mappings.structure import Structure
from mappings.terminology import CodeTable, Terminology

if TYPE_CHECKING:
    from mappings.context import Context

__all__ = [
    "APPEND",
    "Condition",
    "Datatype",
    "Identity",
    "MessageMap",
    "Path",
    "Primitive",
    "RefSpec",
    "ResourceMap",
    "Rule",
    "RuleSet",
    "Spec",
    "Tables",
    "assign",
    "present",
]

JSON = dict[str, Any]
Function = Callable[[Any, "Context", Mapping[str, Any]], Any]
PrimitiveFunction = Callable[[str, "Context"], Any]
APPEND = -1
REPEAT_NONE, REPEAT_EACH, REPEAT_JOIN = 0, 1, 2
KIND_NONE, KIND_TEXT, KIND_PRIMITIVE, KIND_DATATYPE = 0, 1, 2, 3  # what a rule reads


@dataclass(frozen=True, slots=True)
class Path:
    """A target path such as `name`, `identifier[]` (append), `coding[0].code`, `.` (merge)."""

    text: str
    steps: tuple[tuple[str, int | None], ...]
    merge: bool
    single: str | None = None  # a plain `key`: set at once
    # `list[n].key` (the common shape of datatype components: coding[0].code): its parts
    indexed: tuple[str, int, str] | None = None

    @classmethod
    def parse(cls, text: str) -> Path:
        if text == ".":
            return cls(text, (), True)
        steps: list[tuple[str, int | None]] = []
        for part in text.split("."):
            if part.endswith("[]"):
                steps.append((part[:-2], APPEND))
            elif part.endswith("]") and "[" in part:
                name, _, index = part[:-1].partition("[")
                steps.append((name, int(index)))
            else:
                steps.append((part, None))
        if any(index == APPEND for _, index in steps[:-1]):
            raise ValueError(f"'{text}': only the last step may append ([])")
        single = steps[0][0] if len(steps) == 1 and steps[0][1] is None else None
        indexed = None
        first_index = steps[0][1]
        if (
            len(steps) == 2
            and first_index is not None
            and first_index >= 0
            and (steps[1][1] is None)
        ):
            indexed = (steps[0][0], first_index, steps[1][0])
        return cls(text, tuple(steps), False, single, indexed)


def present(target: JSON, path: Path) -> bool:
    """Whether `path` already holds a value in `target` (for fallback rules)."""
    if path.merge:
        return False
    node: Any = target
    for key, index in path.steps:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return False
        if index is not None:
            if not node:
                return False
            if index >= 0:
                if index >= len(node):
                    return False
                node = node[index]
            else:
                return True
    return True


def assign(
    target: JSON, path: Path, value: Any, fallback: bool = False, join: str | None = None
) -> bool:
    """Put `value` at `path` in `target`; False if nothing was written."""
    items: Any
    if not fallback and join is None:
        key = path.single
        if key is not None:
            target[key] = value
            return True
        indexed = path.indexed
        if indexed is not None:
            name, position, key = indexed
            items = target.get(name)
            if items is None:
                items = target[name] = []
            while len(items) <= position:
                items.append({})
            items[position][key] = value
            return True
    if path.merge:
        if not isinstance(value, dict):
            return False
        return _merge(target, value, fallback)
    node: Any = target
    steps = path.steps
    for key, index in steps[:-1]:
        if index is None:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            node = child
        else:
            items = node.get(key)
            if items is None:
                items = node[key] = []
            while len(items) <= index:
                items.append({})
            node = items[index]
    key, index = steps[-1]
    if index is None:
        if key in node:
            if fallback:
                return False
            if join is not None and isinstance(node[key], str):
                node[key] = f"{node[key]}{join}{value}"
                return True
        node[key] = value
        return True
    items = node.get(key)
    if items is None:
        items = node[key] = []
    elif fallback and items:
        return False
    if index == APPEND:
        if value in items:
            return True
        items.append(value)
        return True
    while len(items) <= index:
        items.append({})
    items[index] = value
    return True


def _merge(target: JSON, value: JSON, fallback: bool) -> bool:
    written = False
    for key, item in value.items():
        present = target.get(key)
        if present is None:
            target[key] = item
            written = True
        elif isinstance(present, list) and isinstance(item, list):
            for element in item:
                if element not in present:
                    present.append(element)
                    written = True
        elif not fallback:
            target[key] = item
            written = True
    return written


@dataclass(frozen=True, slots=True)
class Condition:
    """`{field: 2, in: [TX, FT]}` (or `not_in`): on component 1 of a field, unescaped."""

    field: int
    component: int
    values: frozenset[str]
    negate: bool

    def holds(self, value: str) -> bool:
        return (value in self.values) != self.negate


@dataclass(slots=True)
class Primitive:
    """A primitive v2 type read by a Python function (ST, NM, DTM ...)."""

    name: str
    function: PrimitiveFunction
    text: bool  # reads the whole value, delimiters and all (TX, FT, ST)


@dataclass(slots=True, eq=False)
class Rule:
    """How one field (in a segment) or one component (in a datatype) becomes FHIR."""

    number: int
    source: str
    path: Path | None = None
    report_path: str = ""
    type_name: str | None = None
    type: Datatype | Primitive | None = None
    component: int | None = None
    table: CodeTable | None = None
    table_as: Literal["code", "coding", "concept"] = "code"
    function: Function | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    repeat: int = REPEAT_NONE
    join: str | None = None
    required: str | None = None
    fallback: bool = False
    always: bool = False
    always_if: int | None = None  # `always: N`: even when empty, if component N is present
    compose: tuple[int, ...] = ()
    set: JSON | None = None
    wrap: Any = None
    reference: str | None = None
    ignore: str | None = None
    used: str | None = None
    switch: int | None = None
    cases: dict[str, Rule] = field(default_factory=dict)
    default: Rule | None = None
    otherwise: Rule | None = None
    quick: bool = False  # skippable at once when its field is empty
    local: str | None = None  # the kind of local codes it reads (params.local)
    direct: PrimitiveFunction | None = None  # a bare primitive read: no table, function ...
    kind_code: int = 0  # KIND_*: how its type reads a value
    simple: bool = False  # one repetition, no composed fields, not remembered per message


@dataclass(slots=True, eq=False)
class Datatype:
    """A composite v2 datatype (CX, XPN, CWE ...) and the FHIR type it becomes."""

    name: str
    fhir: str
    rules: list[Rule]
    known: frozenset[int]
    ignored: dict[int, str]
    finalize: list[tuple[Function, Mapping[str, Any]]]
    require: tuple[str, ...]
    scalar: bool
    # for a value of n parts: rules[:limits[n]] can read a part; late[n] are `always` rules
    # beyond the last part (filled in by `prepare`)
    limits: list[int] = field(default_factory=list)
    late: list[list[Rule]] = field(default_factory=list)
    first_noted: int = 1  # the first part that, when present, is reported as not mapped
    # the compiled reader (mappings/compiler.py); (ctx, parts, rest, fields) → value
    read: Callable[..., Any] | None = None

    def prepare(self) -> None:
        unknown = next(n for n in range(1, 1000) if n not in self.known)
        self.first_noted = min([unknown, *self.ignored])
        top = max((rule.number for rule in self.rules), default=0)
        self.limits = [sum(1 for r in self.rules if r.number <= n) for n in range(top + 1)]
        self.late = [[r for r in self.rules if r.number > n and r.always] for n in range(top + 1)]


@dataclass(slots=True, eq=False)
class RuleSet:
    """The rules of one segment (or segment variant, `OBX/narrative`) for one resource."""

    name: str
    table: str  # the file it came from, for the report
    rules: list[Rule]
    into: Path | None
    into_text: str
    require: tuple[str, ...]
    ignored: dict[int, str]
    used: dict[int, str]
    # the compiled applier (mappings/compiler.py); (ctx, node, target, record) → None
    apply: Callable[..., None] | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """How a resource's business identifier (for ifNoneExist / conditional update) is found."""

    prefer: tuple[str, ...] = ()
    within: str | None = None
    key: int | None = None
    label: str = ""
    otherwise: Literal["error", "display"] = "error"
    location: str | None = None
    reason: str = "no identifier to match the resource on"


@dataclass(slots=True, eq=False)
class ResourceMap:
    """`resources/<Resource>.yaml`: how each segment's fields fill one FHIR resource type."""

    resource_type: str
    table: str
    segments: dict[str, RuleSet]
    identity: Identity
    defaults: list[tuple[Path, Any, str, str]]  # path, value, location, reason
    finalize: list[tuple[Function, Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class RefSpec:
    """A reference from one produced resource to others: `subject: patient`."""

    path: Path
    to: str
    all: bool
    template: Any = None


@dataclass(slots=True, eq=False)
class Spec:
    """One line of a message table: which segment (in which group) makes which resource."""

    name: str
    resource: ResourceMap
    segment: str
    group: str | None
    rules: str
    also: tuple[tuple[tuple[str, str], ...], ...]
    when: Condition | None
    required: bool
    into: str | None
    request: Literal["create", "update"]
    identity: Identity
    refs: tuple[RefSpec, ...]
    constants: JSON


@dataclass(slots=True, eq=False)
class MessageMap:
    """`messages/<TYPE_TRIGGER>.yaml`: structure, resources and not-mapped segments."""

    name: str
    table: str
    structure: Structure
    specs: list[Spec]
    not_mapped: dict[str, str]


@dataclass(slots=True, eq=False)
class Tables:
    """Every compiled table: the engine's whole configuration."""

    messages: dict[str, MessageMap]
    datatypes: dict[str, Datatype | Primitive]
    resources: dict[str, ResourceMap]
    terminology: Terminology
    segment_reasons: dict[str, str]
    namespace: Any  # uuid.UUID for the fullUrls
