"""The hub's ValueSets and CodeSystems as membership tests.

Only what the hub owns is expanded: a ValueSet includes codes listed one by one, every code
of one of our CodeSystems (their content is complete), or a whole external system such as
LOINC, whose codes cannot be listed here and are then all accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from hub.profiles.errors import ProfileDefinitionError

JSON = dict[str, Any]


@dataclass(frozen=True)
class ValueSetIndex:
    """The codes of one ValueSet, expanded once."""

    url: str
    title: str
    codings: frozenset[tuple[str, str]]
    """(system, code) pairs listed, or taken from our CodeSystems."""
    whole_systems: frozenset[str]
    """Systems included whole without being ours (every code of them is a member)."""

    @property
    def bare_codes(self) -> frozenset[str]:
        return frozenset(code for _system, code in self.codings)

    def has_coding(self, system: Any, code: Any) -> bool:
        """Is (system, code) a member? Both must be strings."""
        if not isinstance(system, str) or not isinstance(code, str):
            return False
        return system in self.whole_systems or (system, code) in self.codings

    def has_code(self, code: Any) -> bool:
        """Is `code` (of an element of type code, whose system is implied) a member?"""
        if not isinstance(code, str):
            return False
        return bool(self.whole_systems) or code in self.bare_codes


def code_system_codes(code_system: JSON) -> frozenset[str]:
    """Every code a CodeSystem defines, nested concepts included."""
    return frozenset(_concept_codes(code_system.get("concept") or []))


def _concept_codes(concepts: list[Any]) -> Iterator[str]:
    for concept in concepts:
        if isinstance(concept, dict) and isinstance(concept.get("code"), str):
            yield concept["code"]
            yield from _concept_codes(concept.get("concept") or [])


def expand_value_sets(
    value_sets: Mapping[str, JSON], code_systems: Mapping[str, frozenset[str]]
) -> dict[str, ValueSetIndex]:
    """Each ValueSet (by canonical URL) expanded against `code_systems` and the others."""
    expanded: dict[str, ValueSetIndex] = {}

    def expand(url: str, seen: tuple[str, ...]) -> ValueSetIndex:
        if url in expanded:
            return expanded[url]
        if url in seen:
            raise ProfileDefinitionError(f"ValueSet {url} includes itself.")
        if url not in value_sets:
            raise ProfileDefinitionError(f"ValueSet {url} is not in fhir_profiles/ValueSet.")
        value_set = value_sets[url]
        codings: set[tuple[str, str]] = set()
        whole: set[str] = set()
        compose = value_set.get("compose") or {}
        for include in compose.get("include") or []:
            _include(url, include, code_systems, codings, whole)
            for imported in include.get("valueSet") or []:
                other = expand(str(imported), (*seen, url))
                codings |= other.codings
                whole |= other.whole_systems
        for exclude in compose.get("exclude") or []:
            if "filter" in exclude or "valueSet" in exclude or "concept" not in exclude:
                raise ProfileDefinitionError(
                    f"ValueSet {url}: only excludes of listed concepts are supported."
                )
            codings -= {(exclude["system"], c["code"]) for c in exclude["concept"]}
        index = ValueSetIndex(
            url,
            str(value_set.get("title") or value_set.get("name") or url),
            frozenset(codings),
            frozenset(whole),
        )
        expanded[url] = index
        return index

    for url in value_sets:
        expand(url, ())
    return expanded


def _include(
    url: str,
    include: JSON,
    code_systems: Mapping[str, frozenset[str]],
    codings: set[tuple[str, str]],
    whole: set[str],
) -> None:
    if "filter" in include:
        # A filter needs the code system's hierarchy or properties: a terminology server.
        raise ProfileDefinitionError(f"ValueSet {url}: include filters are not supported.")
    system = include.get("system")
    if system is None:
        return
    if "concept" in include:
        codings.update((system, str(concept["code"])) for concept in include["concept"])
    elif system in code_systems:
        codings.update((system, code) for code in code_systems[system])
    else:
        whole.add(system)
