"""The hub's canonical resources in fhir_profiles/, loaded and compiled once per process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hub.profiles.errors import ProfileDefinitionError
from hub.profiles.rules import R4_PROFILE_BASE, Profile, compile_profile
from hub.profiles.terminology import ValueSetIndex, code_system_codes, expand_value_sets

PROFILES_DIR = Path(__file__).resolve().parents[2] / "fhir_profiles"
JSON = dict[str, Any]


@dataclass(frozen=True)
class Definitions:
    """The profiles, ValueSets and CodeSystems of the hub, by canonical URL."""

    profiles: Mapping[str, Profile]
    value_sets: Mapping[str, ValueSetIndex]
    code_systems: Mapping[str, frozenset[str]]
    derived_from: Mapping[str, tuple[str, ...]]
    """Base profile URL (mCODE's) → the hub's profiles built on it."""

    def profile(self, profile_id: str) -> Profile:
        """The hub's profile with this id; ProfileDefinitionError if there is none."""
        for profile in self.profiles.values():
            if profile.id == profile_id:
                return profile
        raise ProfileDefinitionError(f"No profile '{profile_id}' in fhir_profiles/.")

    def value_set(self, value_set_id: str) -> ValueSetIndex:
        """The hub's ValueSet with this id (the last part of its URL)."""
        for url, value_set in self.value_sets.items():
            if url.rsplit("/", 1)[-1] == value_set_id:
                return value_set
        raise ProfileDefinitionError(f"No ValueSet '{value_set_id}' in fhir_profiles/.")


@cache
def definitions() -> Definitions:
    """The definitions in the repository's fhir_profiles/ (read on first use, then kept)."""
    return load_definitions(PROFILES_DIR)


def load_definitions(folder: Path) -> Definitions:
    """Read and compile the CodeSystems, ValueSets and StructureDefinitions under `folder`."""
    code_systems = {
        str(cs["url"]): code_system_codes(cs) for cs in _read(folder / "CodeSystem", "CodeSystem")
    }
    value_sets = expand_value_sets(
        {str(vs["url"]): vs for vs in _read(folder / "ValueSet", "ValueSet")}, code_systems
    )
    structure_definitions = _read(folder / "StructureDefinition", "StructureDefinition")
    # A targetProfile may name one of our profiles: know their types before compiling.
    profile_types = {str(sd["url"]): str(sd.get("type")) for sd in structure_definitions}
    profiles = {
        str(sd["url"]): compile_profile(sd, value_sets, profile_types)
        for sd in structure_definitions
    }
    derived: dict[str, list[str]] = {}
    for profile in profiles.values():
        # Claiming base R4 (every ServiceRequest conforms to ServiceRequest) says nothing.
        if not profile.base_definition.startswith(R4_PROFILE_BASE):
            derived.setdefault(profile.base_definition, []).append(profile.url)
    return Definitions(
        profiles,
        value_sets,
        code_systems,
        {base: tuple(urls) for base, urls in derived.items()},
    )


def _read(folder: Path, resource_type: str) -> list[JSON]:
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            resource = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ProfileDefinitionError(f"{path}: cannot be read: {exc}") from exc
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            raise ProfileDefinitionError(f"{path}: not a {resource_type}.")
        if not isinstance(resource.get("url"), str):
            raise ProfileDefinitionError(f"{path}: has no canonical url.")
        found.append(resource)
    return found
