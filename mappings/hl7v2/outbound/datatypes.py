"""HL7 v2.5.1 data types written once: FHIR values → ER7 text (escaped, `|^~\\&` delimiters).

Each function returns the text of one field repetition (or, for HD inside CX/EI/XCN, of the
components or subcomponents it fills), with trailing empty components dropped.

Escaping follows HL7 v2.5.1 §2.7.4: the escape character first, then the four delimiters.
Line breaks and other control characters in a single-line value become spaces; multi-line text
is split into separate values by the caller. No `\\.br\\` or `\\Xhh\\` sequences are written:
hl7apy re-escapes every escape sequence but \\H\\ \\N\\ \\F\\ \\S\\ \\T\\ \\R\\ \\E\\, so
those would not survive its validation round trip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mappings.hl7v2.outbound.tables import AssigningAuthority, LocalCode, tables

FIELD, COMPONENT, REPETITION, ESCAPE, SUBCOMPONENT = "|", "^", "~", "\\", "&"
ENCODING_CHARACTERS = f"{COMPONENT}{REPETITION}{ESCAPE}{SUBCOMPONENT}"

_ESCAPES = (
    (ESCAPE, f"{ESCAPE}E{ESCAPE}"),  # first, so the sequences below are not escaped again
    (FIELD, f"{ESCAPE}F{ESCAPE}"),
    (COMPONENT, f"{ESCAPE}S{ESCAPE}"),
    (SUBCOMPONENT, f"{ESCAPE}T{ESCAPE}"),
    (REPETITION, f"{ESCAPE}R{ESCAPE}"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # all but TAB; CR/LF/VT/FS frame MLLP
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def escape(text: str) -> str:
    """`text` as an ER7 value: delimiters escaped, control characters replaced by spaces."""
    text = _CONTROL.sub(" ", text.replace("\r\n", " "))
    for char, sequence in _ESCAPES:
        text = text.replace(char, sequence)
    return text


def join(parts: Iterable[str], separator: str = COMPONENT) -> str:
    """Already escaped parts joined by `separator`, trailing empty ones dropped."""
    return separator.join(parts).rstrip(separator)


# -- date and time (DTM, HL7 v2.5.1 §2.A.22) ---------------------------------------------------

_FHIR_DATETIME = re.compile(
    r"(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d+))?)?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def dtm(moment: datetime) -> str:
    """A Python datetime as DTM, to the second, with its UTC offset when it has one."""
    text = moment.strftime("%Y%m%d%H%M%S")
    return text + moment.strftime("%z") if moment.utcoffset() is not None else text


def dtm_of_fhir(value: str | None) -> str:
    """A FHIR date, dateTime or instant as DTM, keeping its precision ('' if not one)."""
    match = _FHIR_DATETIME.fullmatch(value or "")
    if match is None:
        return ""
    parts = match.groupdict()
    text = "".join(
        parts[name] or "" for name in ("year", "month", "day", "hour", "minute", "second")
    )
    if parts["fraction"]:
        text += "." + parts["fraction"][:4]  # DTM allows four digits of fraction
    zone = parts["zone"]
    if zone:
        text += "+0000" if zone == "Z" else zone.replace(":", "")
    return text


# -- identifiers (HD, CX, EI) ------------------------------------------------------------------


def hd(authority: AssigningAuthority, separator: str = COMPONENT) -> str:
    """HD: namespace id, universal id, universal id type (HL7 table 0301)."""
    parts = (authority.namespace_id, authority.universal_id, authority.universal_id_type)
    return join((escape(p) for p in parts), separator)


def identifier_type_of(identifier: Mapping[str, Any], authority: AssigningAuthority) -> str:
    """CX-5: the v2-0203 code of Identifier.type, else the table's type for its system."""
    for coding in (identifier.get("type") or {}).get("coding") or []:
        if coding.get("system") == V2_0203 and coding.get("code"):
            return str(coding["code"])
    return authority.identifier_type


def cx(identifier: Mapping[str, Any]) -> str:
    """CX from a FHIR Identifier: CX-1 value, CX-4 assigning authority, CX-5 type."""
    authority = tables().authority(str(identifier.get("system") or ""))
    return join(
        (
            escape(str(identifier.get("value") or "")),
            "",
            "",
            hd(authority, SUBCOMPONENT),
            escape(identifier_type_of(identifier, authority)),
        )
    )


def ei(value: str, system: str, default_namespace: str = "") -> str:
    """EI: entity id and the assigning authority of its system (or `default_namespace`)."""
    authority = tables().authority(system) if system else None
    if authority is None or not (authority.namespace_id or authority.universal_id):
        return join((escape(value), escape(default_namespace)))
    return join((escape(value), hd(authority)))


# -- names and people (XPN, XCN, PPN, NDL) ---------------------------------------------------


def xpn(name: Mapping[str, Any]) -> str:
    """XPN from a FHIR HumanName (XPN-7 name type from HumanName.use)."""
    given = [str(g) for g in name.get("given") or []]
    family = str(name.get("family") or "") or (str(name.get("text") or "") if not given else "")
    return join(
        (
            escape(family),
            escape(given[0] if given else ""),
            escape(" ".join(given[1:])),
            escape(" ".join(str(s) for s in name.get("suffix") or [])),
            escape(" ".join(str(p) for p in name.get("prefix") or [])),
            "",
            escape(tables().name_types.get(str(name.get("use") or ""), "")),
        )
    )


@dataclass(frozen=True)
class Person:
    """A practitioner as the XCN family of types needs it (from a resource or a Reference)."""

    identifier: Mapping[str, Any] = field(default_factory=dict)
    name: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.identifier.get("value") or self.name)


def _person_components(person: Person) -> list[str]:
    """XCN-1 .. XCN-13 (PPN shares them)."""
    system = str(person.identifier.get("system") or "")
    value = str(person.identifier.get("value") or "")
    authority = tables().authority(system)
    name = xpn(person.name).split(COMPONENT) if person.name else []
    name += [""] * (7 - len(name))
    return [
        escape(value),
        name[0],  # family
        name[1],  # given
        name[2],  # further given names
        name[3],  # suffix
        name[4],  # prefix
        "",  # degree
        "",  # source table
        hd(authority, SUBCOMPONENT) if value else "",
        name[6],  # name type code (HL7 table 0200)
        "",
        "",
        escape(identifier_type_of(person.identifier, authority)) if value else "",
    ]


def xcn(person: Person) -> str:
    """XCN: id, name and assigning authority of a practitioner."""
    return join(_person_components(person))


def ppn(person: Person, when: str) -> str:
    """PPN: XCN-1..13, then PPN-15 the date/time of the action (a DTM)."""
    return join([*_person_components(person), "", when])


def ndl(person: Person) -> str:
    """NDL (OBR-32): its CNN name as subcomponents (CNN-9..11 are the HD), no dates."""
    return join(_person_components(person)[:9], SUBCOMPONENT)


# -- coded values (CE) -------------------------------------------------------------------------


def coding_system_of(system: str) -> str:
    """CE-3: the HL7 table 0396 code of a FHIR code system (L, local, if unknown)."""
    return tables().coding_systems.get(system, "L")


def ce(concept: Mapping[str, Any] | None, fallback: LocalCode | None = None) -> str:
    """CE from a CodeableConcept: first coding in CE-1..3, second in CE-4..6.

    Without a coding, the concept's text goes in CE-2 with `fallback` (a local code) in CE-1;
    '' when there is nothing at all.
    """
    concept = concept or {}
    codings: Sequence[Mapping[str, Any]] = [c for c in concept.get("coding") or [] if c.get("code")]
    text = str(concept.get("text") or "")
    triples: list[tuple[str, str, str]] = [
        (
            str(c["code"]),
            str(c.get("display") or (text if i == 0 else "")),
            coding_system_of(str(c.get("system") or "")),
        )
        for i, c in enumerate(codings[:2])
    ]
    if not triples:
        if fallback is None:
            return join(("", escape(text)))
        triples = [(fallback.code, text or fallback.text, "L")]
    return join(escape(value) for triple in triples for value in triple)
