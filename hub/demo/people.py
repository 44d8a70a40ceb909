"""The people of a demonstration hub: specialists (each a Practitioner at the hub, in the
routing pools of their programs), a case manager and hospital IT, who sign in to the pages.

The Practitioners and the routing table with their pools are written before the hub starts,
since the hub reads its routing table once. Each run gives the people fresh passwords, so
that the demo can print working ones; run again, it reuses the same people.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from hub import codes
from hub.security.users import UserDirectory, generate_password
from hub.storage.repository import ResourceRepository
from hub.workflow.routing import DEFAULT_TABLE


@dataclass(frozen=True)
class DemoPerson:
    username: str
    display_name: str
    role: str
    programs: tuple[str, ...] = ()
    name: Mapping[str, Any] | None = None
    """A specialist's HumanName: their Practitioner at the hub."""


@dataclass(frozen=True)
class SignIn:
    username: str
    password: str
    display_name: str
    role: str
    practitioner_id: str | None


DEMO_PEOPLE = (
    DemoPerson(
        "demo-specialist",
        "Dr Maya Okonkwo",
        "specialist",
        tuple(codes.PROGRAMS),
        {"family": "Okonkwo", "given": ["Maya"], "prefix": ["Dr."]},
    ),
    DemoPerson("demo-case-manager", "Sam Delgado", "case-manager", tuple(codes.PROGRAMS)),
    DemoPerson("demo-it", "Jo Lindgren", "admin"),
)


def ensure_people(session: Session, people: Sequence[DemoPerson]) -> list[SignIn]:
    """Add the people who are missing (a specialist with a Practitioner of their own), and
    give every one of them a fresh password."""
    directory = UserDirectory(session)
    repository = ResourceRepository(session)
    signed: list[SignIn] = []
    for person in people:
        password = generate_password()
        existing = directory.find(person.username)
        if existing is not None:
            directory.set_password(person.username, password)
            practitioner = (existing.fhir_user or "").removeprefix("Practitioner/") or None
        else:
            practitioner = None
            if person.name is not None:
                practitioner = repository.create(
                    "Practitioner",
                    {"resourceType": "Practitioner", "active": True, "name": [dict(person.name)]},
                ).resource_id
            directory.add(
                person.username,
                display_name=person.display_name,
                roles=[person.role],
                password=password,
                fhir_user=f"Practitioner/{practitioner}" if practitioner else None,
                programs=person.programs if person.role == "case-manager" else (),
            )
        signed.append(
            SignIn(person.username, password, person.display_name, person.role, practitioner)
        )
    return signed


def routing_with_pools(pools: Mapping[str, Sequence[str]], path: Path) -> Path:
    """The hub's routing table with `pools` (program → Practitioner ids), written to
    `path`."""
    table = yaml.safe_load(DEFAULT_TABLE.read_text(encoding="utf-8"))
    table["routing"]["pools"] = {program: list(ids) for program, ids in pools.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(table, sort_keys=False), encoding="utf-8")
    return path


def specialists_pools(
    people: Sequence[DemoPerson], signed: Sequence[SignIn]
) -> dict[str, list[str]]:
    """Program → the Practitioner ids of the specialists who work it."""
    pools: dict[str, list[str]] = {}
    for person, sign_in in zip(people, signed, strict=True):
        if person.role == "specialist" and sign_in.practitioner_id:
            for program in person.programs:
                pools.setdefault(program, []).append(sign_in.practitioner_id)
    return pools
