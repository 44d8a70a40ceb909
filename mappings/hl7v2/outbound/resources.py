"""Reading the FHIR R4 resources the outbound messages need: people behind references, the
order numbers of a referral, the dates of a report. Resources are plain JSON dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hub import codes
from mappings.hl7v2.outbound.datatypes import V2_0203, Person

JSON = Mapping[str, Any]
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"


class ReferenceResolver:
    """Finds the resource a Reference points to: a contained one (`#id`) or one the caller gave.

    `resources` maps reference strings (`Practitioner/p-7`, a full URL or a `urn:uuid:`) to
    resources; a full URL also matches by its last two segments.
    """

    def __init__(self, container: JSON, resources: Mapping[str, JSON] | None = None) -> None:
        self._contained = {
            f"#{r.get('id')}": r for r in container.get("contained") or [] if r.get("id")
        }
        self._resources = dict(resources or {})

    def resolve(self, reference: JSON | None) -> JSON | None:
        target = str((reference or {}).get("reference") or "")
        if not target:
            return None
        if target.startswith("#"):
            return self._contained.get(target)
        found = self._resources.get(target)
        if found is None and target.count("/") >= 2 and not target.startswith("urn:"):
            found = self._resources.get("/".join(target.rstrip("/").split("/")[-2:]))
        return found

    def person(self, references: Iterable[JSON]) -> Person:
        """The first practitioner among `references` (resolved, else as the Reference says)."""
        candidates = list(references)
        for reference in candidates:
            resource = self.resolve(reference)
            if resource is None:
                continue
            if resource.get("resourceType") == "PractitionerRole":
                inner = self.resolve(resource.get("practitioner"))
                resource = inner if inner is not None else resource
            if resource.get("resourceType") in ("Practitioner", "PractitionerRole"):
                person = Person(
                    identifier=_preferred_identifier(resource.get("identifier") or []),
                    name=_preferred_name(resource.get("name") or []),
                )
                if not person.is_empty:
                    return person
        for reference in candidates:
            display = str(reference.get("display") or "")
            person = Person(
                identifier=reference.get("identifier") or {},
                name={"text": display} if display else {},
            )
            if not person.is_empty:
                return person
        return Person()


def _preferred_identifier(identifiers: Iterable[JSON]) -> JSON:
    usable = [i for i in identifiers if i.get("value") and i.get("use") != "old"]
    npi = [i for i in usable if i.get("system") == NPI_SYSTEM]
    return (npi or usable or [{}])[0]


def _preferred_name(names: Iterable[JSON]) -> JSON:
    current = [n for n in names if n.get("use") != "old"]
    official = [n for n in current if n.get("use") == "official"]
    return (official or current or [{}])[0]


def patient_names(patient: JSON) -> list[JSON]:
    """Patient.name for PID-5: the official name first, names in use 'old' left out."""
    current = [n for n in patient.get("name") or [] if n.get("use") != "old"]
    return sorted(current, key=lambda n: n.get("use") != "official")


def sendable_identifiers(resource: JSON) -> list[JSON]:
    """Identifiers with a value, not 'old' (whether the table lets one be sent is separate)."""
    return [i for i in resource.get("identifier") or [] if i.get("value") and i.get("use") != "old"]


def _typed(identifiers: Iterable[JSON], code: str) -> JSON | None:
    for identifier in identifiers:
        for coding in (identifier.get("type") or {}).get("coding") or []:
            if coding.get("system") == V2_0203 and coding.get("code") == code:
                return identifier
    return None


def placer_identifier(referral: JSON | None) -> JSON | None:
    """The referrer's number for the referral (ORC-2, OBR-2, TXA-14).

    The identifier typed PLAC (HL7 table 0203), else the first one not issued by the hub.
    """
    if referral is None:
        return None
    identifiers = sendable_identifiers(referral)
    typed = _typed(identifiers, "PLAC")
    if typed is not None:
        return typed
    outside = [
        i for i in identifiers if not str(i.get("system", "")).startswith(codes.CANONICAL_BASE)
    ]
    return outside[0] if outside else None


def filler_identifier(referral: JSON | None, task: JSON | None = None) -> JSON | None:
    """The hub's number for the case (ORC-3, OBR-3, TXA-15).

    The case Task's identifier in the hub's case system, else the referral's identifier typed
    FILL, else the referral's id in the case system (the hub numbers a case by its referral).
    """
    for identifier in sendable_identifiers(task or {}):
        if identifier.get("system") == codes.HUB_CASE_ID_SYSTEM:
            return identifier
    if referral is None:
        return None
    typed = _typed(sendable_identifiers(referral), "FILL")
    if typed is not None:
        return typed
    if referral.get("id"):
        return {"system": codes.HUB_CASE_ID_SYSTEM, "value": str(referral["id"])}
    return None


def effective_of(report: JSON) -> str:
    """DiagnosticReport.effective[x] as a FHIR dateTime ('' if absent)."""
    if report.get("effectiveDateTime"):
        return str(report["effectiveDateTime"])
    return str((report.get("effectivePeriod") or {}).get("start") or "")
