"""A StructureDefinition's differential, compiled into the rules the validator applies.

The differential must be self-sufficient: the validator knows no snapshot and no base
profile (mCODE's are not shipped); the base R4 model is checked by hub.fhir.validation.
What a differential element may say, and what it means here:

- `min` / `max`: how many times the element appears in each of its parents (a choice
  element `value[x]` counts all its typed forms together);
- `type`: for `nnn[x]`, the types allowed; for a Reference, the types its
  `targetProfile`s name (base R4 resource types, or the hub's own profiles' types);
- `fixed[x]` (equal) or `pattern[x]` (contains: a CodeableConcept pattern is met by a
  concept with a matching coding);
- `binding` of strength `required` to a ValueSet of the hub (others are documentation);
- `constraint`: FHIRPath invariants on each occurrence of the element;
- `slicing` by `pattern` on `$this` and its slices (`sliceName` with a `pattern[x]` or
  `fixed[x]` and `min`/`max`): how many occurrences must match each slice.

Anything else (a discriminator on a sub-path, elements inside a slice, a ValueSet not the
hub's in a required binding) is refused when the definitions load, so that nothing in a
profile is silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hub.fhir.validation import is_resource_type
from hub.profiles.errors import ProfileDefinitionError
from hub.profiles.invariants import Invariant, compile_invariant
from hub.profiles.terminology import ValueSetIndex

JSON = dict[str, Any]
R4_PROFILE_BASE = "http://hl7.org/fhir/StructureDefinition/"

# Documentation only: they change nothing a validator checks.
_DOCUMENTATION = frozenset(
    {
        "short",
        "definition",
        "comment",
        "requirements",
        "alias",
        "label",
        "mustSupport",
        "isSummary",
        "meaningWhenMissing",
        "example",
        "mapping",
        "extension",
    }
)
_CHECKED = frozenset(
    {"id", "path", "min", "max", "type", "binding", "constraint", "slicing", "sliceName"}
)
_SLICE_KEYS = frozenset({"id", "path", "sliceName", "min", "max"})


@dataclass(frozen=True)
class SliceRule:
    """A slice: how many occurrences of the sliced element must match `value`."""

    name: str
    min: int
    max: int | None
    kind: str
    """`pattern` or `fixed`."""
    value: Any


@dataclass(frozen=True)
class ElementRule:
    """What a profile says of one element (path `element`, e.g. `Composition.section.code`)."""

    element: str
    min: int = 0
    max: int | None = None
    """None: the profile sets no upper limit."""
    types: frozenset[str] = frozenset()
    """For a choice element: the type codes allowed (empty: any)."""
    value_kind: str | None = None
    """`fixed` or `pattern` (with `value`), or None."""
    value: Any = None
    binding: ValueSetIndex | None = None
    targets: frozenset[str] = frozenset()
    """For a Reference: the resource types it may point at (empty: any)."""
    slices: tuple[SliceRule, ...] = ()
    invariants: tuple[Invariant, ...] = ()

    @property
    def cardinality(self) -> str:
        return f"{self.min}..{'*' if self.max is None else self.max}"


@dataclass
class RuleNode:
    """The rules of the elements under one node of a resource, by element name."""

    rule: ElementRule | None = None
    children: dict[str, RuleNode] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """A compiled StructureDefinition of the hub."""

    url: str
    id: str
    title: str
    type: str
    base_definition: str
    root: RuleNode
    invariants: tuple[Invariant, ...]
    """The invariants on the resource itself."""


def compile_profile(
    definition: JSON,
    value_sets: Mapping[str, ValueSetIndex],
    profile_types: Mapping[str, str],
) -> Profile:
    """Compile one StructureDefinition; ProfileDefinitionError for what cannot be applied.

    `profile_types`: the resource type of each of the hub's profiles (by URL), for
    targetProfiles that name one.
    """
    url = str(definition.get("url"))
    resource_type = definition.get("type")
    if (
        definition.get("kind") != "resource"
        or definition.get("derivation") != "constraint"
        or not is_resource_type(resource_type)
    ):
        raise ProfileDefinitionError(f"{url}: not a constraint on a FHIR R4 resource type.")
    resource_type = str(resource_type)
    root = RuleNode()
    root_invariants: tuple[Invariant, ...] = ()
    slicing_declared: set[str] = set()
    pending_slices: dict[str, list[SliceRule]] = {}
    for element in (definition.get("differential") or {}).get("element") or []:
        path = str(element.get("path", ""))
        where = f"{url}: element {element.get('id', path)}"
        if path != resource_type and not path.startswith(f"{resource_type}."):
            raise ProfileDefinitionError(f"{where}: its path is not under {resource_type}.")
        if "sliceName" in element:
            pending_slices.setdefault(path, []).append(_slice(element, where))
            continue
        _check_keys(element, where)
        if ":" in str(element.get("id", "")):
            raise ProfileDefinitionError(f"{where}: elements inside a slice are not supported.")
        if "slicing" in element:
            _check_slicing(element["slicing"], where)
            slicing_declared.add(path)
        invariants = tuple(
            _invariant(constraint, path, where) for constraint in element.get("constraint") or []
        )
        if path == resource_type:
            root_invariants = invariants
            continue
        node = root
        for step in path.split(".")[1:]:
            node = node.children.setdefault(step, RuleNode())
        if node.rule is not None:
            raise ProfileDefinitionError(f"{where}: declared twice.")
        node.rule = _element_rule(element, path, invariants, value_sets, profile_types, where)
    for path, slices in pending_slices.items():
        if path not in slicing_declared:
            raise ProfileDefinitionError(f"{url}: slices of {path} without its slicing.")
        node = root
        for step in path.split(".")[1:]:
            node = node.children[step]
        if node.rule is not None:  # set with its slicing
            node.rule = replace(node.rule, slices=tuple(slices))
    return Profile(
        url,
        str(definition.get("id")),
        str(definition.get("title") or definition.get("name")),
        resource_type,
        str(definition.get("baseDefinition", "")),
        root,
        root_invariants,
    )


def _check_keys(element: JSON, where: str) -> None:
    for key in element:
        if key in _DOCUMENTATION or key in _CHECKED:
            continue
        if key.startswith(("fixed", "pattern")) and key not in ("fixed", "pattern"):
            continue
        raise ProfileDefinitionError(f"{where}: '{key}' is not supported by the validator.")


def _check_slicing(slicing: JSON, where: str) -> None:
    for discriminator in slicing.get("discriminator") or []:
        if (
            discriminator.get("type") not in ("pattern", "value")
            or discriminator.get("path") != "$this"
        ):
            raise ProfileDefinitionError(
                f"{where}: only slicing by pattern or value on $this is supported."
            )


def _slice(element: JSON, where: str) -> SliceRule:
    kind, value = _fixed_or_pattern(element, where)
    extra = set(element) - _SLICE_KEYS - _DOCUMENTATION
    if kind is None or any(not key.startswith(("fixed", "pattern")) for key in extra):
        raise ProfileDefinitionError(f"{where}: a slice needs a fixed[x] or pattern[x] only.")
    return SliceRule(
        str(element["sliceName"]), int(element.get("min", 0)), _max(element), kind, value
    )


def _element_rule(
    element: JSON,
    path: str,
    invariants: tuple[Invariant, ...],
    value_sets: Mapping[str, ValueSetIndex],
    profile_types: Mapping[str, str],
    where: str,
) -> ElementRule:
    kind, value = _fixed_or_pattern(element, where)
    types: set[str] = set()
    targets: set[str] = set()
    for element_type in element.get("type") or []:
        code = str(element_type.get("code"))
        types.add(code)
        for target in element_type.get("targetProfile") or []:
            targets.add(_target_type(str(target), profile_types, where))
    if types and not path.endswith("[x]") and types != {"Reference"}:
        raise ProfileDefinitionError(f"{where}: a type can only be narrowed on a choice [x].")
    return ElementRule(
        element=path,
        min=int(element.get("min", 0)),
        max=_max(element),
        types=frozenset(types) if path.endswith("[x]") else frozenset(),
        value_kind=kind,
        value=value,
        binding=_binding(element.get("binding"), value_sets, where),
        targets=frozenset(targets),
        invariants=invariants,
    )


def _max(element: JSON) -> int | None:
    text = element.get("max")
    return None if text in (None, "*") else int(str(text))


def _fixed_or_pattern(element: JSON, where: str) -> tuple[str | None, Any]:
    found = [key for key in element if key.startswith(("fixed", "pattern"))]
    if len(found) > 1:
        raise ProfileDefinitionError(f"{where}: more than one fixed[x] / pattern[x].")
    if not found:
        return None, None
    key = found[0]
    return ("fixed" if key.startswith("fixed") else "pattern"), element[key]


def _target_type(target: str, profile_types: Mapping[str, str], where: str) -> str:
    if target in profile_types:
        return profile_types[target]
    name = target.removeprefix(R4_PROFILE_BASE)
    if target.startswith(R4_PROFILE_BASE) and is_resource_type(name):
        return name
    raise ProfileDefinitionError(f"{where}: targetProfile {target} is not one the hub knows.")


def _binding(
    binding: JSON | None, value_sets: Mapping[str, ValueSetIndex], where: str
) -> ValueSetIndex | None:
    if not binding or binding.get("strength") != "required":
        return None  # extensible, preferred, example: guidance, not checked
    url = str(binding.get("valueSet", "")).split("|")[0]
    if url not in value_sets:
        raise ProfileDefinitionError(f"{where}: required binding to {url}, not a hub ValueSet.")
    return value_sets[url]


def _invariant(constraint: JSON, path: str, where: str) -> Invariant:
    key = str(constraint.get("key"))
    expression = constraint.get("expression")
    severity = constraint.get("severity")
    if not isinstance(expression, str) or severity not in ("error", "warning"):
        raise ProfileDefinitionError(f"{where}: constraint {key} needs an expression.")
    try:
        return compile_invariant(key, severity, str(constraint.get("human")), expression, path)
    except Exception as exc:  # fhirpathpy's parser raises assorted errors
        raise ProfileDefinitionError(f"{where}: constraint {key} does not parse: {exc}") from exc
