"""The sections of a case's record document and which resources go in each
(the table is record_sections.yaml, next to this module)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

_TABLE = Path(__file__).with_name("record_sections.yaml")

# Where a rule's `code` looks, by type (default: `code`).
CODE_ELEMENT = {
    "DocumentReference": "type",
    "MedicationRequest": "medicationCodeableConcept",
    "MedicationAdministration": "medicationCodeableConcept",
    "MedicationStatement": "medicationCodeableConcept",
}


@dataclass(frozen=True)
class SectionRule:
    resource_type: str
    categories: frozenset[str] = frozenset()
    codes: frozenset[str] = frozenset()
    case_only: bool = False

    def matches(self, resource: dict[str, Any], in_case: bool) -> bool:
        if resource.get("resourceType") != self.resource_type or (self.case_only and not in_case):
            return False
        if self.categories and not self.categories & _tokens(resource.get("category")):
            return False
        element = CODE_ELEMENT.get(self.resource_type, "code")
        return not self.codes or bool(self.codes & _tokens(resource.get(element)))


@dataclass(frozen=True)
class Section:
    code: str
    title: str
    rules: tuple[SectionRule, ...] = ()
    sections: tuple[Section, ...] = field(default_factory=tuple)

    def leaves(self) -> list[Section]:
        """This section, or its sub-sections in order (resources go in the leaves)."""
        return [leaf for sub in self.sections for leaf in sub.leaves()] if self.sections else [self]


@cache
def record_sections() -> tuple[Section, ...]:
    table = yaml.safe_load(_TABLE.read_text(encoding="utf-8"))
    return tuple(_section(entry) for entry in table["sections"])


def section_of(resource: dict[str, Any], in_case: bool = False) -> str | None:
    """The code of the leaf section `resource` goes in, or None if no rule takes it."""
    for code, rule in _rules_by_type().get(str(resource.get("resourceType")), ()):
        if rule.matches(resource, in_case):
            return code
    return None


@cache
def _rules_by_type() -> dict[str, tuple[tuple[str, SectionRule], ...]]:
    """Each type's rules in table order, with their leaf section's code."""
    found: dict[str, list[tuple[str, SectionRule]]] = {}
    for section in record_sections():
        for leaf in section.leaves():
            for rule in leaf.rules:
                found.setdefault(rule.resource_type, []).append((leaf.code, rule))
    return {resource_type: tuple(rules) for resource_type, rules in found.items()}


def _section(entry: dict[str, Any]) -> Section:
    return Section(
        code=str(entry["code"]),
        title=str(entry["title"]),
        rules=tuple(
            SectionRule(
                resource_type=str(rule["type"]),
                categories=frozenset(rule.get("category") or ()),
                codes=frozenset(rule.get("code") or ()),
                case_only=bool(rule.get("case")),
            )
            for rule in entry.get("rules") or ()
        ),
        sections=tuple(_section(sub) for sub in entry.get("sections") or ()),
    )


def _tokens(value: Any) -> frozenset[str]:
    """`system|code` of every coding in a CodeableConcept or a list of them."""
    concepts = value if isinstance(value, list) else [value]
    return frozenset(
        f"{coding.get('system')}|{coding.get('code')}"
        for concept in concepts
        if isinstance(concept, dict)
        for coding in concept.get("coding") or []
        if isinstance(coding, dict)
    )
