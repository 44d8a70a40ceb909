"""Which of the hub's profiles a resource is held to: `profiles_for`.

A resource is held to the hub's profiles its meta.profile names (an mCODE profile it claims
counts as the hub's profile built on it), and to those that applicability.yaml picks by its
codes: a Condition coded as a primary cancer, a Procedure coded as a radiotherapy course...
The table is compiled once; a rule costs a few dictionary lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import yaml

from hub.profiles.errors import ProfileDefinitionError
from hub.profiles.invariants import compile_invariant
from hub.profiles.loader import Definitions, definitions
from hub.profiles.terminology import ValueSetIndex

APPLICABILITY_FILE = Path(__file__).with_name("applicability.yaml")
JSON = dict[str, Any]
Resolve = Callable[[str], JSON | None]
"""Finds the resource a reference names (inside a bundle being validated), or None."""


class Condition(Protocol):
    def __call__(self, resource: JSON, resolve: Resolve | None, /) -> bool: ...


@dataclass(frozen=True)
class CodeMatcher:
    """Codes of one system: listed, in a range, with an ending, or any; less `excluded`."""

    system: str
    codes: frozenset[str] = frozenset()
    ranges: tuple[tuple[str, str], ...] = ()
    suffixes: tuple[str, ...] = ()
    any_code: bool = False
    excluded: tuple[str, ...] = ()

    def matches(self, system: Any, code: Any) -> bool:
        if system != self.system or not isinstance(code, str) or code.startswith(self.excluded):
            return False
        return (
            self.any_code
            or code in self.codes
            or code.endswith(self.suffixes)
            or any(low <= code[: len(low)] <= high for low, high in self.ranges)
        )


@dataclass(frozen=True)
class Rule:
    """`resource_type` resources for which `when` holds are held to `profile` (a URL)."""

    profile: str
    resource_type: str
    when: Condition


@dataclass(frozen=True)
class ApplicabilityTable:
    by_type: Mapping[str, tuple[Rule, ...]]


def profiles_for(resource: JSON, resolve: Resolve | None = None) -> list[str]:
    """The URLs of the hub's profiles that apply to `resource`: those its meta.profile
    claims that the hub knows (or whose mCODE base it claims), then those the
    applicability table picks. `resolve` finds the targets of references (inside a bundle)
    for rules that look at them; without it those rules do not apply. Never raises."""
    if not isinstance(resource, dict):
        return []
    known = definitions()
    found: list[str] = []
    for claimed in _claimed(resource):
        url = claimed.split("|")[0]
        for profile in (url,) if url in known.profiles else known.derived_from.get(url, ()):
            if profile not in found and known.profiles[profile].type == resource.get(
                "resourceType"
            ):
                found.append(profile)
    for rule in applicability().by_type.get(str(resource.get("resourceType")), ()):
        if rule.profile not in found and rule.when(resource, resolve):
            found.append(rule.profile)
    return found


def _claimed(resource: JSON) -> list[str]:
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return [p for p in profiles if isinstance(p, str)] if isinstance(profiles, list) else []


@cache
def applicability() -> ApplicabilityTable:
    """The table of applicability.yaml, compiled (once)."""
    return load_applicability(APPLICABILITY_FILE, definitions())


def load_applicability(path: Path, known: Definitions) -> ApplicabilityTable:
    """Compile the applicability table at `path` against the hub's definitions."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileDefinitionError(f"{path}: cannot be read: {exc}") from exc
    code_sets = {
        str(name): _matchers(entries, f"{path}: code set {name}")
        for name, entries in (document.get("code_sets") or {}).items()
    }
    by_type: dict[str, list[Rule]] = {}
    for number, entry in enumerate(document.get("rules") or [], start=1):
        where = f"{path}: rule {number}"
        if not isinstance(entry, dict) or set(entry) != {"profile", "type", "when"}:
            raise ProfileDefinitionError(f"{where}: needs exactly profile, type and when.")
        profile = known.profile(str(entry["profile"]))
        if profile.type != entry["type"]:
            raise ProfileDefinitionError(f"{where}: {profile.id} is a {profile.type} profile.")
        when = _condition(entry["when"], profile.type, code_sets, known, where)
        by_type.setdefault(profile.type, []).append(Rule(profile.url, profile.type, when))
    return ApplicabilityTable({t: tuple(rules) for t, rules in by_type.items()})


def _condition(
    spec: Any,
    resource_type: str,
    code_sets: Mapping[str, tuple[CodeMatcher, ...]],
    known: Definitions,
    where: str,
) -> Condition:
    if not isinstance(spec, dict):
        raise ProfileDefinitionError(f"{where}: a condition is a mapping.")
    if set(spec) in ({"any"}, {"all"}):
        combine = any if "any" in spec else all
        parts = [
            _condition(part, resource_type, code_sets, known, where)
            for part in spec.get("any", spec.get("all")) or []
        ]
        return lambda resource, resolve: combine(part(resource, resolve) for part in parts)
    if set(spec) == {"fhirpath"}:
        check = compile_invariant("applies", "error", "", str(spec["fhirpath"]), resource_type)
        return lambda resource, _resolve: _safely(check.check, resource)
    keys = set(spec) - {"element"}
    if "element" not in spec or len(keys) != 1:
        raise ProfileDefinitionError(f"{where}: {sorted(spec)} is not a condition.")
    steps = tuple(str(spec["element"]).split("."))
    (kind,) = keys
    if kind == "codes":
        value = spec["codes"]
        if isinstance(value, str):
            if value not in code_sets:
                raise ProfileDefinitionError(f"{where}: no code set named {value}.")
            matchers = code_sets[value]
        else:
            matchers = _matchers(value, where)
        return lambda resource, _resolve: any(
            matcher.matches(system, code)
            for system, code in codings_at(resource, steps)
            for matcher in matchers
        )
    if kind == "valueset":
        value_set = known.value_set(str(spec["valueset"]))
        return lambda resource, _resolve: _in_value_set(resource, steps, value_set)
    if kind == "values":
        wanted = frozenset(str(v) for v in spec["values"] or [])
        return lambda resource, _resolve: any(
            isinstance(v, str) and v in wanted for v in values_at(resource, steps)
        )
    if kind == "refers_to":
        target = known.profile(str(spec["refers_to"])).url
        return lambda resource, resolve: _refers_to(resource, steps, target, resolve)
    raise ProfileDefinitionError(f"{where}: unknown condition {kind}.")


def _safely(check: Callable[[Any, JSON], bool], resource: JSON) -> bool:
    try:
        return check(resource, resource)
    except Exception:  # content fhirpathpy cannot read does not match a rule
        return False


def _matchers(entries: Any, where: str) -> tuple[CodeMatcher, ...]:
    allowed = {"system", "codes", "from", "to", "suffix", "any", "except"}
    matchers = []
    for entry in entries or []:
        if not isinstance(entry, dict) or "system" not in entry or set(entry) - allowed:
            raise ProfileDefinitionError(f"{where}: {entry!r} is not a code set entry.")
        if ("from" in entry) != ("to" in entry):
            raise ProfileDefinitionError(f"{where}: a range needs both from and to.")
        ranges = ((str(entry["from"]), str(entry["to"])),) if "from" in entry else ()
        matchers.append(
            CodeMatcher(
                system=str(entry["system"]),
                codes=frozenset(str(c) for c in entry.get("codes") or []),
                ranges=ranges,
                suffixes=tuple(str(s) for s in entry.get("suffix") or []),
                any_code=bool(entry.get("any", False)),
                excluded=tuple(str(e) for e in entry.get("except") or []),
            )
        )
    return tuple(matchers)


def values_at(node: Any, steps: tuple[str, ...]) -> Iterator[Any]:
    """Every value at the dotted path `steps` under `node`, arrays flattened."""
    if not steps:
        if isinstance(node, list):
            yield from node
        else:
            yield node
        return
    items = node if isinstance(node, list) else [node]
    for item in items:
        if isinstance(item, dict) and item.get(steps[0]) is not None:
            yield from values_at(item[steps[0]], steps[1:])


def codings_at(node: Any, steps: tuple[str, ...]) -> Iterator[tuple[Any, Any]]:
    """(system, code) of every coding at the path: of CodeableConcepts, Codings, or bare
    codes (system None)."""
    for value in values_at(node, steps):
        if isinstance(value, str):
            yield None, value
        elif isinstance(value, dict):
            codings = value.get("coding")
            if isinstance(codings, list):
                for coding in codings:
                    if isinstance(coding, dict):
                        yield coding.get("system"), coding.get("code")
            elif "code" in value:
                yield value.get("system"), value.get("code")


def _in_value_set(resource: JSON, steps: tuple[str, ...], value_set: ValueSetIndex) -> bool:
    return any(
        value_set.has_code(code) if system is None else value_set.has_coding(system, code)
        for system, code in codings_at(resource, steps)
    )


def _refers_to(
    resource: JSON, steps: tuple[str, ...], profile: str, resolve: Resolve | None
) -> bool:
    if resolve is None:
        return False
    for value in values_at(resource, steps):
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str):
            target = resolve(reference)
            # One level only: the target's own reference rules are not followed.
            if target is not None and profile in profiles_for(target):
                return True
    return False
