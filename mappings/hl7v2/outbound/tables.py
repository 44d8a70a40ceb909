"""The outbound code tables, read once from the YAML files next to this module.

Each file documents its table (which HL7 table, which FHIR element, why a code was chosen);
this module only checks their shape and gives them types. A malformed file fails at first use
with a ValueError naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class AssigningAuthority:
    """An Identifier.system as HL7 v2 sees it: HD (CX-4, EI-2..4, XCN-9) and CX-5."""

    system: str
    namespace_id: str
    universal_id: str
    universal_id_type: str
    identifier_type: str
    send: bool = True


@dataclass(frozen=True)
class ReportStatusCodes:
    """DiagnosticReport.status → TXA-17, TXA-19, OBX-11, OBR-25, ORC-5."""

    txa_17: str
    txa_19: str
    obx_11: str
    obr_25: str
    orc_5: str


@dataclass(frozen=True)
class OrderStatusCodes:
    """Task.status → ORC-1 order control (table 0119), ORC-5 order status (table 0038)."""

    orc_1: str
    orc_5: str


@dataclass(frozen=True)
class LocalCode:
    """A local code (CE with coding system L)."""

    code: str
    text: str


@dataclass(frozen=True)
class OutboundTables:
    """Every table the outbound mappings use."""

    authorities: Mapping[str, AssigningAuthority]
    document_types: Mapping[tuple[str, str], str]
    default_document_type: str
    report_statuses: Mapping[str, ReportStatusCodes]
    authenticated: frozenset[str]
    order_statuses: Mapping[str, OrderStatusCodes]
    administrative_sex: Mapping[str, str]
    name_types: Mapping[str, str]
    coding_systems: Mapping[str, str]
    confidentiality_system: str
    confidentiality: Mapping[str, str]
    local_codes: Mapping[str, LocalCode]

    def authority(self, system: str) -> AssigningAuthority:
        """The assigning authority of an Identifier.system (derived when not in the table)."""
        known = self.authorities.get(system)
        if known is not None:
            return known
        universal_id, universal_id_type = universal_id_of(system)
        return AssigningAuthority(system, "", universal_id, universal_id_type, "")


def universal_id_of(system: str) -> tuple[str, str]:
    """HD-2 and HD-3 (HL7 table 0301) for a FHIR system URI: an OID, a UUID or a URI."""
    if system.startswith("urn:oid:"):
        return system[len("urn:oid:") :], "ISO"
    if system.startswith("urn:uuid:"):
        return system[len("urn:uuid:") :], "UUID"
    return system, "URI" if system else ""


def _read(name: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a mapping at the top level.")
    return data


def _strings(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{name}: expected a mapping of strings to strings.")
    return dict(value)


def _authorities(data: dict[str, Any]) -> dict[str, AssigningAuthority]:
    out: dict[str, AssigningAuthority] = {}
    for row in data.get("authorities") or []:
        system = str(row["system"])
        derived_id, derived_type = universal_id_of(system)
        out[system] = AssigningAuthority(
            system=system,
            namespace_id=str(row.get("namespace_id", "")),
            universal_id=str(row.get("universal_id", derived_id)),
            universal_id_type=str(row.get("universal_id_type", derived_type)),
            identifier_type=str(row.get("identifier_type", "")),
            send=bool(row.get("send", True)),
        )
    return out


@cache
def tables() -> OutboundTables:
    """The outbound tables (read and checked once per process)."""
    try:
        authorities = _authorities(_read("assigning_authorities.yaml"))
        documents = _read("document_types.yaml")
        reports = _read("report_status.yaml")
        orders = _read("order_status.yaml")
        vocabulary = _read("vocabulary.yaml")
        return OutboundTables(
            authorities=authorities,
            document_types={
                (str(row["system"]), str(row["code"])): str(row["type"])
                for row in documents["by_code"]
            },
            default_document_type=str(documents["default"]),
            report_statuses={
                status: ReportStatusCodes(**_strings(f"report_status.yaml {status}", codes))
                for status, codes in reports["statuses"].items()
            },
            authenticated=frozenset(str(code) for code in reports["authenticated"]),
            order_statuses={
                status: OrderStatusCodes(**_strings(f"order_status.yaml {status}", codes))
                for status, codes in orders["statuses"].items()
            },
            administrative_sex=_strings("administrative_sex", vocabulary["administrative_sex"]),
            name_types=_strings("name_type", vocabulary["name_type"]),
            coding_systems=_strings("coding_systems", vocabulary["coding_systems"]),
            confidentiality_system=str(vocabulary["confidentiality_system"]),
            confidentiality=_strings("confidentiality", vocabulary["confidentiality"]),
            local_codes={
                key: LocalCode(**_strings(f"local_codes {key}", value))
                for key, value in vocabulary["local_codes"].items()
            },
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"An outbound HL7 v2 table is malformed: {exc!r}") from exc
