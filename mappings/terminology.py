"""Code tables, ConceptMaps, coding systems, assigning authorities: terminology as data.

All of it is read from `mappings/terminology/*.yaml` and `fhir_profiles/ConceptMap/*.json`
once, by the loader; this module holds the compiled lookups the engine uses per message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Authorities",
    "CodeTable",
    "CodingSystems",
    "ConceptMaps",
    "Senders",
    "Terminology",
    "Units",
]

V2_TABLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-{table}"
_HL7_TABLE = re.compile(r"^HL7[ _-]?(\d{4})$", re.IGNORECASE)
_LOCAL = re.compile(r"^(L|LOCAL|99[A-Z0-9]{1,3})$", re.IGNORECASE)
_SLUG = re.compile(r"[^a-z0-9]+")

Coding = dict[str, str]


def slug(text: str) -> str:
    """A URL path segment from a namespace or facility id (`RBCH Lab` → `rbch-lab`)."""
    return _SLUG.sub("-", text.lower()).strip("-") or "unknown"


@dataclass(frozen=True, slots=True)
class CodeTable:
    """An HL7 v2 table mapped to a FHIR code system (or to a FHIR `code` element).

    `unmapped` says what a code outside the table becomes: `omit` (nothing, reported),
    `silent` (nothing, not reported: another rule reads the same code), `source` (kept as a
    coding of the v2 table's own code system), or `default` (the `default` code, reported
    as defaulted).
    """

    id: str
    title: str
    source: str
    target: str | None
    entries: dict[str, tuple[str, str | None]]
    unmapped: Literal["omit", "silent", "source", "default"] = "omit"
    default: str | None = None

    def lookup(self, code: str) -> tuple[str, str | None] | None:
        found = self.entries.get(code)
        if found is None:
            found = self.entries.get(code.upper())
        return found


@dataclass(frozen=True, slots=True)
class ConceptMaps:
    """(source system, code) → target codings, from the FHIR ConceptMaps in fhir_profiles/."""

    index: dict[tuple[str, str], tuple[Coding, ...]] = field(default_factory=dict)

    def translate(self, system: str, code: str) -> tuple[Coding, ...]:
        return self.index.get((system, code), ())

    @classmethod
    def from_resources(cls, resources: list[dict[str, Any]]) -> ConceptMaps:
        index: dict[tuple[str, str], tuple[Coding, ...]] = {}
        for resource in resources:
            for group in resource.get("group", []):
                source, target = group.get("source"), group.get("target")
                if not source or not target:
                    continue
                for element in group.get("element", []):
                    codings = []
                    for mapped in element.get("target", []):
                        if mapped.get("equivalence") not in (
                            "equivalent",
                            "equal",
                            "wider",
                            "subsumes",
                        ):
                            continue
                        coding = {"system": target, "code": mapped["code"]}
                        if mapped.get("display"):
                            coding["display"] = mapped["display"]
                        codings.append(coding)
                    key = (source, element["code"])
                    index[key] = index.get(key, ()) + tuple(codings)
        return cls(index)


@dataclass(frozen=True, slots=True)
class Senders:
    """Per sending facility (MSH-4.1): its UTC offset and what its local codes mean, for
    the whole facility or per sending application (MSH-3.1), keyed `APP@FACILITY`."""

    default_offset: str
    local_template: str
    offsets: dict[str, str]
    local_systems: dict[tuple[str, str], str]

    def utc_offset(self, facility: str) -> str:
        return self.offsets.get(facility.upper(), self.default_offset)

    def is_local(self, system: str) -> bool:
        """Whether `system` is one of the senders' local code systems."""
        prefix = self.local_template.split("{", 1)[0]
        return system.startswith(prefix) or system in self.local_systems.values()

    def local_system(self, facility: str, kind: str, application: str = "") -> str:
        """The code system of a sender's local codes of one kind: the application's own
        (MSH-3) if listed, else the facility's, else one minted from the template."""
        upper = facility.upper()
        found = self.local_systems.get((f"{application.upper()}@{upper}", kind))
        if found is None:
            found = self.local_systems.get((upper, kind))
        if found:
            return found
        return self.local_template.format(facility=slug(facility or "unknown"), kind=kind)


@dataclass(frozen=True, slots=True)
class CodingSystems:
    """HL7 table 0396 names (CWE.3) → FHIR code system URIs."""

    names: dict[str, str]

    def system(self, name: str) -> str | None:
        """The URI for a CWE.3 name; None for local codes (`L`, `99zzz`) and unknown names."""
        found = self.names.get(name.upper())
        if found:
            return found
        table = _HL7_TABLE.match(name)
        if table:
            return V2_TABLE_SYSTEM.format(table=table.group(1))
        return None

    @staticmethod
    def is_local(name: str) -> bool:
        return not name or bool(_LOCAL.match(name))


@dataclass(frozen=True, slots=True)
class Authorities:
    """Assigning authorities (CX.4, XCN.9, EI.2-4 as HD) and identifier types → systems."""

    namespaces: dict[str, str]
    universal_ids: dict[str, str]
    identifier_types: dict[str, str]
    unknown_template: str
    derived_template: str

    def derived_system(self, parent_system: str) -> str:
        """The hub-minted system of identifiers derived from a parent's (an OBX within its
        filler number, an NK1 within the patient's MRN)."""
        return self.derived_template.format(parent=slug(parent_system.split("://", 1)[-1]))

    def system(
        self, namespace: str, universal_id: str, universal_type: str, identifier_type: str
    ) -> tuple[str | None, bool]:
        """(system, known): known is False when the system had to be derived."""
        upper_ns = namespace.upper()
        if upper_ns:
            typed = self.namespaces.get(f"{upper_ns}|{identifier_type.upper()}")
            if typed:
                return typed, True
            found = self.namespaces.get(upper_ns)
            if found:
                return found, True
        if universal_id:
            found = self.universal_ids.get(universal_id)
            if found:
                return found, True
            kind = universal_type.upper()
            if kind == "ISO" and re.fullmatch(r"[0-2](\.(0|[1-9]\d*))+", universal_id):
                return f"urn:oid:{universal_id}", True
            if kind in ("URI", "URL") and ":" in universal_id:
                return universal_id, True
        if identifier_type:
            found = self.identifier_types.get(identifier_type.upper())
            if found:
                return found, True
        if namespace:
            return self.unknown_template.format(authority=slug(namespace)), False
        return None, False


@dataclass(frozen=True, slots=True)
class Units:
    """Units as labs write them → UCUM codes; `ucum` lists the codes accepted as they are."""

    aliases: dict[str, str]
    ucum: frozenset[str]

    def ucum_code(self, unit: str, declared_ucum: bool) -> str | None:
        if unit in self.ucum or declared_ucum:
            return unit
        return self.aliases.get(unit) or self.aliases.get(unit.lower())


@dataclass(frozen=True, slots=True)
class Terminology:
    """Everything terminological the engine consults."""

    tables: dict[str, CodeTable]
    concept_maps: ConceptMaps
    coding_systems: CodingSystems
    authorities: Authorities
    senders: Senders
    units: Units
    mime_types: dict[str, str]
