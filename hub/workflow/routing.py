"""Routing of a new case: its program, its urgency and due date, its specialist.

The table (config/routing.yaml) maps the codes of the referral (its reasonCode, the Conditions
of its reasonReference, its category) to a program, first matching rule first; some codes
make a case urgent (relapsed or refractory high-risk leukaemia), with a shorter due date.
The specialist is the least loaded of the program's pool: the fewest open cases, the pool's
order breaking ties. A case manager can reassign a case by changing its Task.owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from hub import codes
from hub.storage.tables import ResourceRow, SearchIndexRow

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
SNOMED = "http://snomed.info/sct"
DEFAULT_TABLE = Path(__file__).resolve().parents[2] / "config" / "routing.yaml"
CLOSED_STATUSES = ("completed", "rejected", "cancelled")


class Codes(BaseModel):
    """Codes that select: ICD-10-CM and ICD-O-3 by prefix, SNOMED CT and categories exactly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    icd10: tuple[str, ...] = ()
    icdo3_topography: tuple[str, ...] = ()
    icdo3_morphology: tuple[str, ...] = ()
    snomed: tuple[str, ...] = ()
    category: tuple[str, ...] = ()

    def match(self, coding: dict[str, Any]) -> bool:
        system, code = coding.get("system"), str(coding.get("code") or "")
        if not code:
            return False
        if system == ICD10CM:
            return code.startswith(self.icd10) if self.icd10 else False
        if system == ICDO3:
            # One system for both axes: morphologies have a behaviour (9470/3).
            prefixes = self.icdo3_morphology if "/" in code else self.icdo3_topography
            return code.startswith(prefixes) if prefixes else False
        if system == SNOMED:
            return code in self.snomed
        return code in self.category


class Rule(Codes):
    program: str

    @field_validator("program")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in codes.PROGRAMS:
            raise ValueError(f"unknown program {value!r}; known: {', '.join(codes.PROGRAMS)}")
        return value


class RoutingTable(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[Rule, ...] = ()
    urgent: Codes = Field(default_factory=Codes)
    due_days: dict[str, int] = Field(default_factory=lambda: {"routine": 14, "urgent": 3})
    pools: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    """Program → Practitioner ids."""


@dataclass(frozen=True)
class Route:
    program: str | None
    """None: no rule matched (the hub's default program applies)."""
    urgent: bool
    why: str
    """The code that decided, for the case's history."""


@cache
def load_routing(path: Path = DEFAULT_TABLE) -> RoutingTable:
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return RoutingTable.model_validate(document.get("routing") or {})


_active = DEFAULT_TABLE


def use_routing_file(path: Path) -> None:
    """The table this process routes by (the `routing_file` setting); loaded, so checked,
    now."""
    global _active
    load_routing(path)
    _active = path


def active_routing() -> RoutingTable:
    return load_routing(_active)


def route(table: RoutingTable, codings: list[dict[str, Any]]) -> Route:
    urgent = any(table.urgent.match(coding) for coding in codings)
    for rule in table.rules:
        for coding in codings:
            if rule.match(coding):
                return Route(rule.program, urgent, f"{coding.get('system')}|{coding.get('code')}")
    return Route(None, urgent, "no routing rule matched")


def least_loaded(session: Session, pool: tuple[str, ...]) -> str | None:
    """The Practitioner id of `pool` with the fewest open cases (the first on a tie)."""
    if not pool:
        return None
    owner = aliased(SearchIndexRow)
    status = aliased(SearchIndexRow)
    counts = dict(
        session.execute(
            select(owner.value, func.count())
            .join(status, (status.res_type == owner.res_type) & (status.res_id == owner.res_id))
            .join(
                ResourceRow,
                (ResourceRow.res_type == owner.res_type) & (ResourceRow.res_id == owner.res_id),
            )
            .where(
                owner.res_type == "Task",
                owner.param == "owner",
                owner.system == "Practitioner",
                owner.value.in_(pool),
                status.param == "status",
                status.value.not_in(CLOSED_STATUSES),
                ResourceRow.deleted.is_(False),
            )
            .group_by(owner.value)
        ).all()
    )
    return min(
        pool, key=lambda practitioner: (counts.get(practitioner, 0), pool.index(practitioner))
    )
