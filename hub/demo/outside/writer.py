"""The record being written: its timeline, the invented child, ids and the entry list."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Final

from hub.demo.outside.cancers import CancerProfile
from hub.demo.outside.shapes import JSON, LOCAL_TZ, SYNTHETIC_TAG, instant

HISTORY_DAYS: Final = 700  # day 0 of the record is this many days before as_of

# Resource type -> id prefix; ids are "<prefix>-<cancer abbreviation><seed>-<n>".
ID_PREFIX: Final = {
    "Patient": "pat",
    "RelatedPerson": "rp",
    "Practitioner": "prac",
    "Organization": "org",
    "Coverage": "cov",
    "AllergyIntolerance": "alg",
    "Encounter": "enc",
    "Condition": "cond",
    "Observation": "obs",
    "DiagnosticReport": "dr",
    "ImagingStudy": "img",
    "Procedure": "proc",
    "MedicationRequest": "mreq",
    "MedicationAdministration": "madm",
    "CarePlan": "cp",
    "DocumentReference": "doc",
    "Binary": "bin",
}

_UID_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://outside-record.example/uid")

_CHILD_NAMES: Final = {
    "male": ("Otis", "Rowan", "Felix", "Idris", "Caspian", "Tobin"),
    "female": ("Hazel", "Juniper", "Ada", "Mira", "Rosalind", "Tamsin"),
}
_PARENT_NAMES: Final = {
    "mother": ("Imogen", "Leticia", "Nadia", "Oona", "Rhea"),
    "father": ("Anselm", "Bartholomew", "Cyrus", "Desmond", "Ilias"),
}
_FAMILY_NAMES: Final = ("Ashcombe", "Pellworth", "Tennant-Vale", "Orrin", "Skelding", "Wyndle")
_STREETS: Final = ("Larkspur Row", "Tidewater Lane", "Kestrel Bend", "Copperbeech Way")


@dataclass(frozen=True)
class Actors:
    """References (``Type/id``) of the people and organizations the record names."""

    hospital: str
    lab: str
    oncologist: str
    surgeon: str
    radiologist: str
    pathologist: str
    patient: str


def years_before(day: date, years: int) -> date:
    """The same calendar day ``years`` earlier (29 February maps to 28 February)."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


class RecordWriter:
    """Collects the entries of one record; knows its days, its child and its encounters.

    All randomness comes from ``rng``, seeded from the cancer and the seed, and is drawn in
    a fixed order, so the same arguments always give the same record.
    """

    def __init__(self, profile: CancerProfile, seed: int, source: str, as_of: date) -> None:
        self.profile = profile
        self.source = source
        self.rng = random.Random(f"outside-record|{profile.key}|{seed}")
        self.tag = f"{profile.abbreviation}{seed}"
        self.day0 = as_of - timedelta(days=HISTORY_DAYS)
        self.entries: list[JSON] = []
        self._numbers: Counter[str] = Counter()
        self._encounters: list[tuple[int, int, str]] = []  # (first day, last day, reference)
        rng = self.rng
        self.mrn = f"{rng.randint(10_000_000, 99_999_999)}"
        self.gender = rng.choice(("male", "female"))
        self.given = rng.choice(_CHILD_NAMES[self.gender])
        self.family = rng.choice(_FAMILY_NAMES)
        self.relationship = rng.choice(("mother", "father"))
        self.parent_given = rng.choice(_PARENT_NAMES[self.relationship])
        self.phone = f"+1-971-555-01{rng.randint(0, 99):02d}"  # 555-01xx: fictional
        self.street = f"{rng.randint(10, 990)} {rng.choice(_STREETS)}"
        self.postal_code = f"97{rng.randint(0, 999):03d}"
        age = rng.randint(*profile.age_range)
        self.birth_date = years_before(as_of, age) - timedelta(days=rng.randint(1, 330))
        self._height_factor = rng.uniform(0.95, 1.05)
        self._bmi_factor = rng.uniform(0.9, 1.1)
        self.cycle_days = [
            profile.first_cycle_day + number * profile.cycle_interval_days
            for number in range(len(profile.cycles))
        ]
        self.fever_day = profile.first_cycle_day + 9  # admitted for fever and neutropenia
        self.pathology_day = profile.procedures[0].day + 4

    # -- entries ---------------------------------------------------------------------------
    def add(self, resource: JSON, updated: datetime) -> str:
        """Append ``resource`` as a PUT entry under the next id of its type, last updated at
        ``updated``; return its reference ``Type/id``."""
        resource_type = resource["resourceType"]
        self._numbers[resource_type] += 1
        resource_id = f"{ID_PREFIX[resource_type]}-{self.tag}-{self._numbers[resource_type]}"
        body: JSON = {
            "resourceType": resource_type,
            "id": resource_id,
            "meta": {
                "lastUpdated": instant(updated),
                "source": self.source,
                "tag": [dict(SYNTHETIC_TAG)],
            },
        }
        body.update((key, value) for key, value in resource.items() if key != "resourceType")
        url = f"{resource_type}/{resource_id}"
        self.entries.append({"resource": body, "request": {"method": "PUT", "url": url}})
        return url

    def identifier(self, kind: str, value: str) -> JSON:
        """A business identifier in the outside EHR's namespace, e.g. ``{source}/encounter``."""
        return {"system": f"{self.source}/{kind}", "value": value}

    def uid(self, *parts: object) -> str:
        """A deterministic DICOM UID under the UUID-derived root 2.25 (PS3.5 B.2)."""
        label = "|".join(str(part) for part in (self.source, self.tag, *parts))
        return f"2.25.{uuid.uuid5(_UID_NAMESPACE, label).int}"

    # -- time ------------------------------------------------------------------------------
    def at(self, day: int, hour: int = 9, minute: int = 0) -> datetime:
        """Local time on day ``day`` of the record."""
        return datetime.combine(self.day0 + timedelta(days=day), time(hour, minute), LOCAL_TZ)

    def date_of(self, day: int) -> str:
        return (self.day0 + timedelta(days=day)).isoformat()

    def add_encounter(self, first: int, last: int, reference: str) -> None:
        self._encounters.append((first, last, reference))

    def encounter_on(self, day: int) -> str | None:
        """The first Encounter whose days include ``day``, if any."""
        for first, last, reference in self._encounters:
            if first <= day <= last:
                return reference
        return None

    # -- the child -------------------------------------------------------------------------
    def address(self) -> JSON:
        return {
            "use": "home",
            "line": [self.street],
            "city": "Larkfield",
            "state": "OR",
            "postalCode": self.postal_code,
            "country": "US",
        }

    def age_on(self, day: int) -> float:
        return (self.day0 + timedelta(days=day) - self.birth_date).days / 365.25

    def height_cm(self, day: int) -> float:
        age = self.age_on(day)
        height = 75.0 + 6.5 * age if age <= 12 else 153.0 + 4.0 * min(age - 12, 5)
        return height * self._height_factor

    def weight_kg(self, day: int) -> float:
        """Weight from height and an age-typical BMI, 5% lower during chemotherapy."""
        bmi = (15.5 + 0.35 * max(self.age_on(day) - 6.0, 0.0)) * self._bmi_factor
        on_therapy = self.cycle_days[0] <= day <= self.cycle_days[-1] + 30
        return (self.height_cm(day) / 100) ** 2 * bmi * (0.95 if on_therapy else 1.0)
