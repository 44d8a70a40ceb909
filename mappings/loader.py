"""Load the YAML tables and ConceptMaps once, check them, and compile them for the engine.

Layout (under `mappings/`)::

    hl7v2/messages/<TYPE_TRIGGER>.yaml   structure + which segments make which resources
    hl7v2/resources/<Resource>.yaml      segment fields → elements of one resource type
    hl7v2/datatypes/<DT>.yaml            components of one v2 datatype → a FHIR datatype
    hl7v2/segments.yaml                  why segments no table reads are not mapped; MSH
    terminology/tables/<nnnn>.yaml       v2 table → FHIR code system
    terminology/*.yaml                   coding systems, authorities, senders, units, MIME

plus `fhir_profiles/ConceptMap/*.json` (local codes → LOINC ...). A site layers its own
files over these (`load_tables(overrides=[...])`): a file at the same relative path is
merged key by key over the default one, so a site states only what differs.

Strings may name hub constants as `${codes.CANONICAL_BASE}`.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import yaml

from hub import codes
from mappings.compiler import compile_datatype, compile_rule_set
from mappings.context import field_of, note_parts, rule_set_loop, value_of
from mappings.errors import Location, MappingTableError, MissingRequiredField
from mappings.functions import FUNCTIONS, PRIMITIVES
from mappings.structure import parse_structure
from mappings.tables import (
    KIND_DATATYPE,
    KIND_PRIMITIVE,
    KIND_TEXT,
    REPEAT_EACH,
    REPEAT_JOIN,
    REPEAT_NONE,
    Condition,
    Datatype,
    Function,
    Identity,
    MessageMap,
    Primitive,
    RefSpec,
    ResourceMap,
    Rule,
    RuleSet,
    Spec,
    Tables,
    assign,
    present,
)
from mappings.tables import (
    Path as TargetPath,
)
from mappings.terminology import (
    Authorities,
    CodeTable,
    CodingSystems,
    ConceptMaps,
    Senders,
    Terminology,
    Units,
)

__all__ = ["default_tables", "load_tables"]

MAPPINGS_DIR = Path(__file__).resolve().parent
PROFILES_DIR = MAPPINGS_DIR.parent / "fhir_profiles"
_CONSTANT = re.compile(r"\$\{codes\.([A-Z_]+)\}")
_RULE_KEYS = {
    "path",
    "type",
    "component",
    "table",
    "as",
    "function",
    "params",
    "repeat",
    "join",
    "required",
    "fallback",
    "always",
    "compose",
    "set",
    "wrap",
    "reference",
    "ignore",
    "used",
    "switch",
    "cases",
    "default",
    "otherwise",
    "report",
}
_SPEC_KEYS = {
    "name",
    "resource",
    "segment",
    "group",
    "rules",
    "also",
    "when",
    "unless",
    "required",
    "into",
    "request",
    "identity",
    "refs",
    "set",
}
JSON = dict[str, Any]


@functools.cache
def default_tables() -> Tables:
    """The tables shipped in this package, loaded and compiled once per process."""
    return load_tables()


def load_tables(overrides: Sequence[Path] = (), profiles: Path = PROFILES_DIR) -> Tables:
    """Read, merge (site `overrides` over the defaults), check and compile every table."""
    documents = _read_tree(MAPPINGS_DIR, overrides)
    terminology = _terminology(documents, profiles)
    datatypes: dict[str, Datatype | Primitive] = dict(PRIMITIVES)
    pending: list[tuple[Rule, str]] = []
    aliases = {}
    for name, document in _under(documents, "hl7v2/datatypes/").items():
        if "same_as" in document:
            aliases[name] = str(document["same_as"])
        else:
            datatypes[name] = _datatype(name, document, terminology, pending)
    for name, same_as in aliases.items():
        if same_as not in datatypes:
            raise MappingTableError(f"datatypes/{name}.yaml: same_as names no datatype")
        datatypes[name] = datatypes[same_as]
    resources = {
        name: _resource(name, document, terminology, pending)
        for name, document in _under(documents, "hl7v2/resources/").items()
    }
    for rule, where in pending:
        _link(rule, datatypes, where)
    helpers = {"value_of": value_of, "assign": assign, "note_parts": note_parts}
    for datatype in datatypes.values():
        if isinstance(datatype, Datatype) and datatype.read is None:
            datatype.read = compile_datatype(datatype, helpers)
    rule_helpers = {
        "field": field_of,
        "value_of": value_of,
        "assign": assign,
        "present": present,
        "loop": rule_set_loop,
        "Location": Location,
        "MissingRequiredField": MissingRequiredField,
    }
    for resource_map in resources.values():
        for rule_set in resource_map.segments.values():
            rule_set.apply = compile_rule_set(rule_set, rule_helpers)
    message_documents = _under(documents, "hl7v2/messages/")
    segments = documents.get("hl7v2/segments", {})
    messages = {
        name: _message(name, _extended(name, message_documents), resources)
        for name in message_documents
    }
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"{codes.CANONICAL_BASE}/hl7v2")
    return Tables(
        messages, datatypes, resources, terminology, dict(segments.get("segments", {})), namespace
    )


# -- reading -------------------------------------------------------------------------------
_TABLE_FILES = (
    "hl7v2/messages/*.yaml",
    "hl7v2/resources/*.yaml",
    "hl7v2/datatypes/*.yaml",
    "hl7v2/segments.yaml",
    "terminology/*.yaml",
    "terminology/tables/*.yaml",
)


def _read_tree(root: Path, overrides: Sequence[Path]) -> dict[str, JSON]:
    documents: dict[str, JSON] = {}
    for base in (root, *overrides):
        for path in sorted(p for pattern in _TABLE_FILES for p in base.glob(pattern)):
            key = path.relative_to(base).with_suffix("").as_posix()
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError as exc:
                raise MappingTableError(f"{key}.yaml is not valid YAML: {exc}") from exc
            if not isinstance(loaded, dict):
                raise MappingTableError(f"{key}.yaml must hold a mapping")
            loaded = _substitute(loaded)
            documents[key] = _deep_merge(documents[key], loaded) if key in documents else loaded
    return documents


def _substitute(node: Any) -> Any:
    if isinstance(node, str):
        return _CONSTANT.sub(lambda m: str(getattr(codes, m.group(1))), node)
    if isinstance(node, dict):
        return {key: _substitute(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_substitute(value) for value in node]
    return node


def _deep_merge(base: JSON, override: JSON) -> JSON:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _under(documents: dict[str, JSON], prefix: str) -> dict[str, JSON]:
    return {key[len(prefix) :]: doc for key, doc in documents.items() if key.startswith(prefix)}


# -- terminology ---------------------------------------------------------------------------
def _terminology(documents: dict[str, JSON], profiles: Path) -> Terminology:
    tables = {}
    for name, document in _under(documents, "terminology/tables/").items():
        entries: dict[str, tuple[str, str | None]] = {}
        for code, target in (document.get("map") or {}).items():
            if isinstance(code, bool):
                raise MappingTableError(f"table {name}: quote the code read as {code} (YAML)")
            if isinstance(target, list):
                entries[str(code)] = (str(target[0]), str(target[1]) if len(target) > 1 else None)
            else:
                entries[str(code)] = (str(target), None)
        unmapped = document.get("unmapped", "omit")
        if unmapped not in ("omit", "silent", "source", "default"):
            raise MappingTableError(
                f"table {name}: unmapped must be omit, silent, source or default"
            )
        tables[name] = CodeTable(
            id=str(document.get("table", name)),
            title=str(document.get("title", name)),
            source=str(document["source"]),
            target=document.get("target"),
            entries=entries,
            unmapped=unmapped,
            default=document.get("default"),
        )
    concept_maps = []
    for path in sorted((profiles / "ConceptMap").glob("*.json")):
        concept_maps.append(json.loads(path.read_text(encoding="utf-8")))
    systems = documents.get("terminology/coding_systems", {})
    authorities = documents.get("terminology/assigning_authorities", {})
    senders = documents.get("terminology/senders", {})
    units = documents.get("terminology/units", {})
    facilities = senders.get("facilities") or {}
    return Terminology(
        tables=tables,
        concept_maps=ConceptMaps.from_resources(concept_maps),
        coding_systems=CodingSystems(
            {str(k).upper(): str(v) for k, v in (systems.get("systems") or {}).items()}
        ),
        authorities=Authorities(
            namespaces={
                str(k).upper(): str(v) for k, v in (authorities.get("namespaces") or {}).items()
            },
            universal_ids={
                str(k): str(v) for k, v in (authorities.get("universal_ids") or {}).items()
            },
            identifier_types={
                str(k).upper(): str(v)
                for k, v in (authorities.get("identifier_types") or {}).items()
            },
            unknown_template=str(authorities["unknown"]),
            derived_template=str(authorities["derived"]),
        ),
        senders=Senders(
            default_offset=str(senders.get("default_utc_offset", "+00:00")),
            local_template=str(senders["local_code_system"]),
            offsets={
                str(k).upper(): str(v["utc_offset"])
                for k, v in facilities.items()
                if v.get("utc_offset")
            },
            local_systems=_local_systems(facilities),
        ),
        units=Units(
            aliases={str(k): str(v) for k, v in (units.get("aliases") or {}).items()},
            ucum=frozenset(str(u) for u in units.get("ucum") or []),
        ),
        mime_types={
            str(k).upper(): str(v)
            for k, v in (documents.get("terminology/mime_types", {}).get("types") or {}).items()
        },
    )


def _local_systems(facilities: JSON) -> dict[tuple[str, str], str]:
    systems: dict[tuple[str, str], str] = {}
    for facility, entry in facilities.items():
        name = str(facility).upper()
        for kind, uri in (entry.get("local_code_systems") or {}).items():
            systems[(name, str(kind))] = str(uri)
        for application, app_entry in (entry.get("applications") or {}).items():
            for kind, uri in (app_entry.get("local_code_systems") or {}).items():
                systems[(f"{str(application).upper()}@{name}", str(kind))] = str(uri)
    return systems


# -- rules ---------------------------------------------------------------------------------
def _rule(
    number: int,
    source: str,
    spec: Any,
    terminology: Terminology,
    pending: list[tuple[Rule, str]],
    report_prefix: str,
) -> Rule:
    if not isinstance(spec, dict):
        raise MappingTableError(f"{source}: a rule is a mapping, not {type(spec).__name__}")
    unknown = set(spec) - _RULE_KEYS
    if unknown:
        raise MappingTableError(f"{source}: unknown keys {sorted(unknown)}")
    rule = Rule(number=number, source=source)
    if "path" in spec:
        try:
            rule.path = TargetPath.parse(str(spec["path"]))
        except ValueError as exc:
            raise MappingTableError(f"{source}: {exc}") from exc
        shown = str(spec.get("report", spec["path"])).replace("[]", "")
        rule.report_path = f"{report_prefix}{shown}".replace("[]", "").rstrip(".")
    rule.type_name = spec.get("type")
    rule.component = spec.get("component")
    if "table" in spec:
        table = terminology.tables.get(str(spec["table"]))
        if table is None:
            raise MappingTableError(f"{source}: no terminology table {spec['table']}")
        rule.table = table
        rule.table_as = spec.get("as", "code")
    if "function" in spec:
        rule.function = _function(str(spec["function"]), source)
    rule.params = dict(spec.get("params") or {})
    repeat = spec.get("repeat", False)
    rule.repeat = REPEAT_JOIN if repeat == "join" else REPEAT_EACH if repeat else REPEAT_NONE
    rule.join = spec.get("join")
    required = spec.get("required")
    if required:
        rule.required = required if isinstance(required, str) else f"{source} is required"
    rule.fallback = bool(spec.get("fallback", False))
    always = spec.get("always", False)
    rule.always = bool(always)
    if not isinstance(always, bool) and isinstance(always, int):
        rule.always_if = always
    rule.compose = tuple(int(n) for n in spec.get("compose") or ())
    rule.set = spec.get("set")
    rule.wrap = spec.get("wrap")
    rule.reference = spec.get("reference")
    rule.ignore = spec.get("ignore")
    rule.used = spec.get("used")
    if "switch" in spec:
        rule.switch = int(spec["switch"])
        rule.cases = {
            str(code).upper(): _rule(
                number, f"{source}[{code}]", case, terminology, pending, report_prefix
            )
            for code, case in (spec.get("cases") or {}).items()
        }
        if "default" in spec:
            rule.default = _rule(
                number, f"{source}[default]", spec["default"], terminology, pending, report_prefix
            )
    if "otherwise" in spec:
        rule.otherwise = _rule(
            number, f"{source}[otherwise]", spec["otherwise"], terminology, pending, report_prefix
        )
    if rule.path is None and rule.switch is None and not (rule.ignore or rule.used):
        raise MappingTableError(f"{source}: a rule needs a path, a switch, ignore or used")
    if rule.type_name:
        pending.append((rule, source))
    rule.quick = rule.switch is None and not rule.always and not rule.required
    rule.simple = not rule.repeat and not rule.compose and rule.reference is None
    rule.local = rule.params.get("local")
    return rule


def _function(name: str, where: str) -> Function:
    function = FUNCTIONS.get(name)
    if function is None:
        raise MappingTableError(f"{where}: no function '{name}' in mappings/functions.py")
    return function


def _link(rule: Rule, datatypes: Mapping[str, Datatype | Primitive], where: str) -> None:
    assert rule.type_name is not None
    found = datatypes.get(rule.type_name)
    if found is None:
        raise MappingTableError(f"{where}: no datatype {rule.type_name}")
    rule.type = found
    if isinstance(found, Datatype):
        rule.kind_code = KIND_DATATYPE
    else:
        rule.kind_code = KIND_TEXT if found.text else KIND_PRIMITIVE
    bare = (
        rule.component is None
        and rule.table is None
        and rule.function is None
        and rule.set is None
        and rule.wrap is None
        and rule.reference is None
        and rule.local is None
        and not rule.always
    )
    if isinstance(found, Primitive) and found.text and bare:
        rule.direct = found.function  # text types read the whole value: no splitting


def _numbered(entries: Any, where: str) -> list[tuple[int, Any]]:
    if not isinstance(entries, dict):
        raise MappingTableError(f"{where}: expected numbered entries")
    result = []
    for key, value in entries.items():
        try:
            number = int(key)
        except (TypeError, ValueError) as exc:
            raise MappingTableError(f"{where}: '{key}' is not a number") from exc
        for item in value if isinstance(value, list) else [value]:
            result.append((number, item))
    return sorted(result, key=lambda pair: pair[0])


def _finalizers(entries: Any, where: str) -> list[tuple[Function, Mapping[str, Any]]]:
    result: list[tuple[Function, Mapping[str, Any]]] = []
    for entry in entries or []:
        if isinstance(entry, str):
            result.append((_function(entry, where), {}))
        else:
            result.append(
                (_function(str(entry["function"]), where), dict(entry.get("params") or {}))
            )
    return result


# -- datatypes, resources, messages ------------------------------------------------------
def _datatype(
    name: str, document: JSON, terminology: Terminology, pending: list[tuple[Rule, str]]
) -> Datatype:
    rules, ignored, known = [], {}, set()
    for number, spec in _numbered(document.get("components") or {}, f"{name}.yaml"):
        rule = _rule(number, f"{name}.{number}", spec, terminology, pending, "")
        known.add(number)
        if rule.ignore:
            ignored[number] = rule.ignore
        if rule.path is not None:
            rules.append(rule)
    datatype = Datatype(
        name=name,
        fhir=str(document.get("fhir", "")),
        rules=rules,
        known=frozenset(known),
        ignored=ignored,
        finalize=_finalizers(document.get("finalize"), f"{name}.yaml"),
        require=tuple(document.get("require") or ()),
        scalar=bool(document.get("scalar", False)),
    )
    datatype.prepare()
    return datatype


def _resource(
    name: str, document: JSON, terminology: Terminology, pending: list[tuple[Rule, str]]
) -> ResourceMap:
    resource_type = str(document.get("resource", name))
    table = f"resources/{name}.yaml"
    rule_sets = {}
    for segment, spec in (document.get("segments") or {}).items():
        into = spec.get("into")
        prefix = f"{resource_type}.{into + '.' if into else ''}"
        rules, ignored, used = [], {}, {}
        for number, item in _numbered(spec.get("fields") or {}, f"{table} {segment}"):
            seg_name = segment.split("/")[0]
            rule = _rule(number, f"{seg_name}-{number}", item, terminology, pending, prefix)
            if rule.ignore:
                ignored[number] = rule.ignore
            if rule.used:
                used[number] = rule.used
            if rule.path is not None or rule.switch is not None:
                rules.append(rule)
        rule_sets[segment] = RuleSet(
            name=segment,
            table=table,
            rules=rules,
            into=TargetPath.parse(into) if into else None,
            into_text=f"{resource_type}.{into}" if into else "",
            require=tuple(spec.get("require") or ()),
            ignored=ignored,
            used=used,
        )
    defaults = []
    for entry in document.get("defaults") or []:
        defaults.append(
            (
                TargetPath.parse(str(entry["path"])),
                entry["value"],
                str(entry["location"]),
                str(entry["reason"]),
            )
        )
    return ResourceMap(
        resource_type=resource_type,
        table=table,
        segments=rule_sets,
        identity=_identity(document.get("identity") or {}, Identity(), table),
        defaults=defaults,
        finalize=_finalizers(document.get("finalize"), table),
    )


def _identity(spec: JSON, base: Identity, where: str) -> Identity:
    derive = spec.get("derive") or {}
    otherwise = spec.get("otherwise", base.otherwise)
    if otherwise not in ("error", "display"):
        raise MappingTableError(f"{where}: identity.otherwise must be error or display")
    return Identity(
        prefer=tuple(spec.get("prefer", base.prefer)),
        within=derive.get("within", base.within),
        key=derive.get("key", base.key),
        label=str(derive.get("label", base.label)),
        otherwise=cast(Any, otherwise),
        location=spec.get("location", base.location),
        reason=str(spec.get("reason", base.reason)),
    )


def _extended(name: str, documents: dict[str, JSON], seen: tuple[str, ...] = ()) -> JSON:
    document = documents[name]
    base = document.get("extends")
    if not base:
        return document
    if base not in documents or base in seen:
        raise MappingTableError(f"messages/{name}.yaml extends unknown or circular {base}")
    merged = _deep_merge(_extended(base, documents, (*seen, name)), document)
    merged.pop("extends", None)
    return merged


def _condition(spec: JSON | None, negate: bool, where: str) -> Condition | None:
    if not spec:
        return None
    values = spec.get("in")
    if values is None:
        raise MappingTableError(f"{where}: a condition needs `in`")
    return Condition(
        int(spec["field"]),
        int(spec.get("component", 1)),
        frozenset(str(v).upper() for v in values),
        negate,
    )


def _message(name: str, document: JSON, resources: dict[str, ResourceMap]) -> MessageMap:
    table = f"messages/{name}.yaml"
    structure_lines = document.get("structure") or {}
    root = next(iter(structure_lines), None)
    if root is None:
        raise MappingTableError(f"{table}: no structure")
    structure = parse_structure(root, {str(k): str(v) for k, v in structure_lines.items()})
    specs: list[Spec] = []
    names: set[str] = set()
    entries = [dict(entry) for entry in document.get("resources") or []]
    for spec_name, changes in (document.get("override") or {}).items():
        matching = [entry for entry in entries if entry.get("name") == spec_name]
        if not matching:
            raise MappingTableError(f"{table}: override names no resource {spec_name}")
        matching[0].update(changes)
    for entry in entries:
        unknown = set(entry) - _SPEC_KEYS
        if unknown:
            raise MappingTableError(f"{table}: unknown keys {sorted(unknown)}")
        spec_name = str(entry["name"])
        where = f"{table} {spec_name}"
        target = str(entry.get("resource") or "")
        into = entry.get("into")
        if into:
            base = next((s for s in specs if s.name == into), None)
            if base is None:
                raise MappingTableError(f"{where}: into names no earlier resource")
            resource = base.resource
        else:
            resource = resources.get(target)  # type: ignore[assignment]
            if resource is None:
                raise MappingTableError(f"{where}: no resources/{target}.yaml")
        segment = str(entry["segment"])
        rules = str(entry.get("rules", segment))
        if rules not in resource.segments:
            raise MappingTableError(f"{where}: {resource.table} has no rules for {rules}")
        if segment not in structure.segment_names:
            raise MappingTableError(f"{where}: {segment} is not in the structure")
        also = []
        for path in entry.get("also") or []:
            steps = []
            for step in str(path).split("/"):
                steps.append(
                    ("up", "")
                    if step == ".."
                    else ("segment", step)
                    if len(step) == 3
                    else ("group", step)
                )
            also.append(tuple(steps))
        identity = _identity(entry.get("identity") or {}, resource.identity, where)
        if identity.within and identity.within not in names:
            raise MappingTableError(f"{where}: identity derives within an unknown resource")
        refs = []
        for path, ref in (entry.get("refs") or {}).items():
            ref = {"to": ref} if isinstance(ref, str) else ref
            refs.append(
                RefSpec(
                    TargetPath.parse(str(path).rstrip("*")),
                    str(ref["to"]),
                    all=str(path).endswith("[]"),
                    template=ref.get("as"),
                )
            )
        condition = _condition(entry.get("when"), False, where) or _condition(
            entry.get("unless"), True, where
        )
        request = entry.get("request", "create")
        if request not in ("create", "update"):
            raise MappingTableError(f"{where}: request must be create or update")
        specs.append(
            Spec(
                name=spec_name,
                resource=resource,
                segment=segment,
                group=entry.get("group"),
                rules=rules,
                also=tuple(also),
                when=condition,
                required=bool(entry.get("required", False)),
                into=into,
                request=request,
                identity=identity,
                refs=tuple(refs),
                constants=dict(entry.get("set") or {}),
            )
        )
        names.add(spec_name)
    for spec in specs:
        for ref in spec.refs:
            if ref.to not in names:
                raise MappingTableError(f"{table} {spec.name}: refs name unknown {ref.to}")
    return MessageMap(name, table, structure, specs, dict(document.get("not_mapped") or {}))
