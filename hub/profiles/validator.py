"""Applying the hub's profiles to a resource: `validate_resource_profiles`, `outcome`.

The walk follows the profile's rule tree, not the resource: only the elements a profile
speaks of are visited, on the plain JSON. Paths of issues are FHIRPath, prefixed by where
the resource is (`Bundle.entry[3].resource.code.coding[0]`). Content of the wrong shape
(a string where an object belongs, say) is skipped here: the base R4 validation reports it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from hub.errors import Issue, information_outcome, operation_outcome
from hub.profiles.applicability import JSON, Resolve, profiles_for
from hub.profiles.invariants import Invariant
from hub.profiles.loader import definitions
from hub.profiles.rules import ElementRule, Profile, RuleNode
from hub.profiles.terminology import ValueSetIndex

log = logging.getLogger("hub.profiles")

# The type of a reference from its form: `Type/id`, `.../Type/id`, either with `/_history/v`.
_TYPED_REFERENCE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$"
)
# Primitive types are named in lower camel case (`dateTime`); choice keys capitalise them.
_PRIMITIVES = frozenset(
    {
        "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id",
        "instant", "integer", "markdown", "oid", "positiveInt", "string", "time",
        "unsignedInt", "uri", "url", "uuid",
    }
)  # fmt: skip


def validate_resource_profiles(resource: JSON, path: str) -> list[Issue]:
    """Issues of `resource` against every hub profile that applies to it (`profiles_for`),
    their expressions prefixed by `path` (e.g. `Bundle.entry[3].resource`; empty: the
    resource type). Never raises."""
    if not isinstance(resource, dict):
        return []
    return check_profiles(resource, path, profiles_for(resource))


def check_profiles(
    resource: JSON, path: str, profile_urls: Iterable[str], resolve: Resolve | None = None
) -> list[Issue]:
    """Issues of `resource` against each of `profile_urls` (the hub's; others are skipped).

    `resolve` finds what a reference names (inside a bundle), to check the type of a
    `urn:uuid:` reference's target. Never raises: a fault of the validator itself is
    logged and reported as an issue, so that one bad resource cannot fail a bundle.
    """
    root = path or str(resource.get("resourceType", "Resource"))
    issues: list[Issue] = []
    known = definitions().profiles
    for url in profile_urls:
        profile = known.get(url)
        if profile is None:
            continue
        if profile.type != resource.get("resourceType"):
            issues.append(
                Issue(
                    f"Profile {profile.id} is for a {profile.type}, not a "
                    f"{resource.get('resourceType')}.",
                    code="invalid",
                    expression=(f"{root}.meta.profile",),
                )
            )
            continue
        try:
            issues.extend(_ProfileCheck(profile, resource, resolve).run(root))
        except Exception:
            log.exception("Validating against profile %s at %s failed", profile.id, root)
            issues.append(
                Issue(
                    f"Profile {profile.id}: the validator failed on this resource; see the log.",
                    code="exception",
                    expression=(root,),
                )
            )
    return issues


def outcome(issues: list[Issue]) -> dict[str, Any]:
    """The OperationOutcome of a validation: its issues, or one `information` issue saying
    that all is well."""
    if not issues:
        return information_outcome(
            "Valid: no issues against FHIR R4 and the hub's profiles that apply."
        )
    return operation_outcome(issues)


def is_valid(issues: Iterable[Issue]) -> bool:
    """No issue of severity error or fatal."""
    return not any(issue.severity in ("error", "fatal") for issue in issues)


class _ProfileCheck:
    """One resource against one profile."""

    def __init__(self, profile: Profile, resource: JSON, resolve: Resolve | None) -> None:
        self.profile = profile
        self.resource = resource
        self.resolve = resolve
        self.issues: list[Issue] = []

    def run(self, root: str) -> list[Issue]:
        for invariant in self.profile.invariants:
            self._invariant(invariant, self.resource, root, self.profile.type)
        self._children(self.profile.root, self.resource, root)
        return self.issues

    def _issue(self, text: str, code: str, path: str, severity: str = "error") -> None:
        self.issues.append(
            Issue(f"Profile {self.profile.id}: {text}", code, severity, expression=(path,))
        )

    def _children(self, node: RuleNode, data: JSON, path: str) -> None:
        for step, child in node.children.items():
            found = _values(data, step)
            if child.rule is not None:
                self._element(child.rule, step, found, path)
            if child.children:
                for key, index, value in found:
                    if isinstance(value, dict):
                        self._children(child, value, _at(path, key, index))

    def _element(
        self, rule: ElementRule, step: str, found: list[tuple[str, int | None, Any]], path: str
    ) -> None:
        choice = step.endswith("[x]")
        name = step[:-3] if choice else step
        if len(found) < rule.min:
            self._issue(
                f"{rule.element} is required ({rule.cardinality}) but missing.",
                "required",
                f"{path}.{name}",
            )
        if rule.max is not None and len(found) > rule.max:
            self._issue(
                f"{rule.element} may appear at most {rule.max} time(s) ({rule.cardinality}); "
                f"found {len(found)}.",
                "structure",
                f"{path}.{found[0][0]}",
            )
        for key, index, value in found:
            where = _at(path, key, index)
            type_code = _type_code(key[len(name) :]) if choice else None
            if rule.types and type_code not in rule.types:
                self._issue(
                    f"{rule.element} must be {' or '.join(sorted(rule.types))}; {key} is not "
                    "allowed.",
                    "structure",
                    where,
                )
                continue
            if rule.value_kind is not None and not _conforms(value, rule.value_kind, rule.value):
                self._issue(
                    f"{rule.element} must {_expected(rule.value_kind, rule.value)}; found "
                    f"{_describe(value)}.",
                    "value",
                    _culprit(where, value),
                )
            if rule.binding is not None:
                self._binding(rule.element, rule.binding, value, type_code, where)
            if rule.targets:
                self._target(rule, value, where)
            for invariant in rule.invariants:
                self._invariant(invariant, value, where, rule.element)
        for rule_slice in rule.slices:
            matching = sum(
                1 for _k, _i, value in found if _conforms(value, rule_slice.kind, rule_slice.value)
            )
            too_many = rule_slice.max is not None and matching > rule_slice.max
            if matching < rule_slice.min or too_many:
                wanted = f"{rule_slice.min}..{'*' if rule_slice.max is None else rule_slice.max}"
                expected = _expected(rule_slice.kind, rule_slice.value)
                present = "; ".join(_describe(value) for _k, _i, value in found) or "none"
                self._issue(
                    f"{rule.element} must include {wanted} item(s) that {expected} (slice "
                    f"{rule_slice.name}); found {matching} (present: {present}).",
                    "value",
                    f"{path}.{found[0][0] if found else name}",
                )

    def _binding(
        self,
        element: str,
        value_set: ValueSetIndex,
        value: Any,
        type_code: str | None,
        where: str,
    ) -> None:
        if type_code in ("code", None) and isinstance(value, str):
            if not value_set.has_code(value):
                self._issue(
                    f"{element} {_describe(value)} is not in the value set {value_set.title} "
                    f"({value_set.url}), a required binding.",
                    "code-invalid",
                    where,
                )
            return
        if not isinstance(value, dict) or type_code not in (None, "Coding", "CodeableConcept"):
            return
        if "coding" in value or type_code == "CodeableConcept" or "code" not in value:
            listed = value.get("coding")
            codings = [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []
        else:
            codings = [value]
        if any(value_set.has_coding(c.get("system"), c.get("code")) for c in codings):
            return
        self._issue(
            f"{element} {_describe(value)} is not in the value set {value_set.title} "
            f"({value_set.url}), a required binding.",
            "code-invalid",
            _culprit(where, value),
        )

    def _target(self, rule: ElementRule, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            return
        reference = value.get("reference")
        declared = value.get("type")
        actual = None
        if isinstance(reference, str):
            actual = _reference_type(reference, self.resource, self.resolve)
        if actual is None and isinstance(declared, str):
            actual = declared
        if actual is not None and actual not in rule.targets:
            shown = f"'{reference}'" if isinstance(reference, str) else "the reference"
            self._issue(
                f"{rule.element} must refer to {' or '.join(sorted(rule.targets))}; {shown} is "
                f"a {actual}.",
                "invalid",
                f"{where}.reference" if isinstance(reference, str) else where,
            )

    def _invariant(self, invariant: Invariant, node: Any, where: str, element: str) -> None:
        try:
            holds = invariant.check(node, self.resource)
        except Exception:  # fhirpathpy on content whose elements have the wrong types
            self._issue(
                f"invariant {invariant.key} on {element} could not be evaluated on this "
                f"content ({invariant.human})",
                "invariant",
                where,
                invariant.severity,
            )
            return
        if not holds:
            self._issue(
                f"{element} does not satisfy {invariant.key}: {invariant.human} "
                f"[{invariant.expression}]",
                "invariant",
                where,
                invariant.severity,
            )


def _values(data: JSON, step: str) -> list[tuple[str, int | None, Any]]:
    """(JSON key, array index or None, value) of each occurrence of element `step`."""
    if step.endswith("[x]"):
        name = step[:-3]
        size = len(name)
        keys = [k for k in data if len(k) > size and k.startswith(name) and k[size].isupper()]
    else:
        keys = [step] if step in data else []
    found: list[tuple[str, int | None, Any]] = []
    for key in keys:
        value = data[key]
        if isinstance(value, list):
            found.extend((key, i, item) for i, item in enumerate(value) if item is not None)
        elif value is not None:
            found.append((key, None, value))
    return found


def _at(path: str, key: str, index: int | None) -> str:
    return f"{path}.{key}" if index is None else f"{path}.{key}[{index}]"


def _type_code(suffix: str) -> str:
    """`Quantity` → Quantity, `DateTime` → dateTime: the FHIR type of a choice key suffix."""
    lowered = suffix[:1].lower() + suffix[1:]
    return lowered if lowered in _PRIMITIVES else suffix


def _conforms(value: Any, kind: str, expected: Any) -> bool:
    return _equal(value, expected) if kind == "fixed" else _contains(value, expected)


def _equal(value: Any, expected: Any) -> bool:
    return type(value) is type(expected) and bool(value == expected)


def _contains(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x]: each property of the pattern is in the value (each array item of the
    pattern matched by some item of the value); primitives are equal."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            _contains(value.get(key), part) for key, part in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(any(_contains(v, p) for v in value) for p in pattern)
    return _equal(value, pattern)


def _expected(kind: str, value: Any) -> str:
    if kind == "pattern" and isinstance(value, dict) and "coding" in value:
        return f"have a coding {_codings(value)}"
    return f"{'be' if kind == 'fixed' else 'match'} {_describe(value)}"


def _codings(concept: dict[str, Any]) -> str:
    codings = concept.get("coding")
    if not isinstance(codings, list):
        return "(no coding)"
    tokens = [f"{c.get('system', '')}|{c.get('code', '')}" for c in codings if isinstance(c, dict)]
    return ", ".join(tokens) or "(no coding)"


def _describe(value: Any) -> str:
    """A short account of a value for a diagnostic: codes and types, never free text."""
    if isinstance(value, dict):
        if "coding" in value:
            return _codings(value)
        if "code" in value or "system" in value:
            return f"{value.get('system', '')}|{value.get('code', '')}"
        return "an object with " + ", ".join(sorted(str(k) for k in value)[:6])
    if isinstance(value, str):
        shown = json.dumps(value[:64])
        return shown if len(value) <= 64 else f"{shown}..."
    if isinstance(value, list):
        return f"an array of {len(value)}"
    return json.dumps(value)


def _culprit(where: str, value: Any) -> str:
    """The path of the single coding of a concept that is wrong, else of the element."""
    codings = value.get("coding") if isinstance(value, dict) else None
    if isinstance(codings, list) and len(codings) == 1:
        return f"{where}.coding[0]"
    return where


def _reference_type(reference: str, resource: JSON, resolve: Resolve | None) -> str | None:
    """The type of resource a reference names, when its form or its target says it."""
    if reference.startswith("#"):
        for contained in resource.get("contained") or []:
            if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                found = contained.get("resourceType")
                return found if isinstance(found, str) else None
        return None
    typed = _TYPED_REFERENCE.search(reference)
    if typed is not None:
        return typed.group(1)
    target = resolve(reference) if resolve is not None else None
    found = target.get("resourceType") if isinstance(target, dict) else None
    return found if isinstance(found, str) else None
