"""Finding the case's patient at an outside FHIR source.

By identifier first (each of the hub patient's identifiers, `identifier=system|value`);
failing that by `Patient/$match` where the CapabilityStatement offers it; else by family
name and birth date, each candidate scored here on name, birth date and sex. One candidate
at or above the threshold is the patient; several are an ambiguity for a case manager,
never a guess.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Any

from connectors.fhir_rest.client import FhirClient

JsonObject = dict[str, Any]
THRESHOLD = 0.8
_WEIGHTS = {"family": 0.35, "given": 0.2, "birthDate": 0.35, "gender": 0.1}
_CERTAIN_GRADES = ("certain", "probable")


@dataclass(frozen=True)
class Candidate:
    source_id: str
    score: float
    how: str
    """identifier, $match or name+birthdate"""
    summary: str
    """Name, birth date and sex as the source has them (for the case manager)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.source_id,
            "score": round(self.score, 2),
            "how": self.how,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class PatientMatch:
    """The outcome: `found` (one candidate), or the ambiguous or empty candidate list."""

    found: Candidate | None
    candidates: list[Candidate] = field(default_factory=list)


async def find_patient(client: FhirClient, patient: JsonObject) -> PatientMatch:
    """Find `patient` (the hub's Patient) at the source."""
    by_identifier: dict[str, Candidate] = {}
    for identifier in patient.get("identifier") or []:
        system, value = identifier.get("system"), identifier.get("value")
        if not system or not value:
            continue
        async for page in client.search("Patient", {"identifier": f"{system}|{value}"}):
            for resource in _resources(page):
                by_identifier[resource["id"]] = Candidate(
                    resource["id"], 1.0, "identifier", summary(resource)
                )
    if by_identifier:
        return _decide(list(by_identifier.values()))
    if await client.offers("match"):
        return _decide(await _by_match(client, patient))
    return _decide(await _by_demographics(client, patient))


async def _by_match(client: FhirClient, patient: JsonObject) -> list[Candidate]:
    probe: JsonObject = {
        k: patient[k]
        for k in ("resourceType", "name", "birthDate", "gender", "identifier")
        if k in patient
    }
    found = []
    for entry in await client.match(probe):
        resource = entry["resource"]
        search = entry.get("search") or {}
        grade = next(
            (
                e.get("valueCode")
                for e in search.get("extension") or []
                if str(e.get("url", "")).endswith("match-grade")
            ),
            None,
        )
        score = float(search.get("score") or 0.0)
        if grade is not None and grade not in _CERTAIN_GRADES:
            score = min(score, THRESHOLD - 0.01)
        found.append(Candidate(str(resource.get("id")), score, "$match", summary(resource)))
    return found


async def _by_demographics(client: FhirClient, patient: JsonObject) -> list[Candidate]:
    family = _first_name(patient).get("family")
    birth_date = patient.get("birthDate")
    if not family or not birth_date:
        return []
    found = []
    async for page in client.search("Patient", {"family": family, "birthdate": birth_date}):
        for resource in _resources(page):
            found.append(
                Candidate(
                    resource["id"], score(patient, resource), "name+birthdate", summary(resource)
                )
            )
    return found


def _decide(candidates: list[Candidate]) -> PatientMatch:
    ranked = sorted(candidates, key=lambda c: -c.score)
    matching = [c for c in ranked if c.score >= THRESHOLD]
    return PatientMatch(matching[0] if len(matching) == 1 else None, ranked)


def score(ours: JsonObject, theirs: JsonObject) -> float:
    """0..1: how well the source's patient agrees with ours on name, birth date and sex."""
    a, b = _first_name(ours), _first_name(theirs)
    points = 0.0
    if a.get("family") and _fold(a.get("family")) == _fold(b.get("family")):
        points += _WEIGHTS["family"]
    given_a, given_b = (a.get("given") or [""])[0], (b.get("given") or [""])[0]
    if given_a and _fold(given_a) == _fold(given_b):
        points += _WEIGHTS["given"]
    if ours.get("birthDate") and ours.get("birthDate") == theirs.get("birthDate"):
        points += _WEIGHTS["birthDate"]
    if ours.get("gender") and ours.get("gender") == theirs.get("gender"):
        points += _WEIGHTS["gender"]
    return points


def summary(patient: JsonObject) -> str:
    name = _first_name(patient)
    given = " ".join(name.get("given") or [])
    return (
        f"{name.get('family', '?')}, {given or '?'}; born {patient.get('birthDate', '?')}; "
        f"{patient.get('gender', '?')}"
    )


def _first_name(patient: JsonObject) -> JsonObject:
    names = patient.get("name") or [{}]
    official = [n for n in names if n.get("use") == "official"]
    name: JsonObject = (official or names)[0]
    return name


def _fold(text: Any) -> str:
    decomposed = unicodedata.normalize("NFKD", str(text or ""))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold().strip()


def _resources(page: JsonObject) -> list[JsonObject]:
    return [
        e["resource"]
        for e in page.get("entry") or []
        if isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == "Patient"
        and e["resource"].get("id")
    ]
