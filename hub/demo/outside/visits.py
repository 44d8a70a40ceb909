"""Clinic visits that fill the synthetic outside-EHR record up to its size: vital signs, a
CBC panel at each visit and a comprehensive metabolic panel at every other one.

Blood counts fall towards the nadir 7-14 days after each chemotherapy cycle; chemistry
scatters around pediatric normal values; a fever may come with a nadir.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Final

from hub.demo.outside.shapes import (
    JSON,
    LOCAL_TZ,
    instant,
    interpretation,
    loinc,
    observation_category,
    quantity,
    ref,
    when,
)
from hub.demo.outside.writer import HISTORY_DAYS, RecordWriter
from hub.demo.synthetic import V2_0074, coding, concept


@dataclass(frozen=True)
class Analyte:
    """A lab analyte: LOINC, UCUM unit, pediatric reference range and how values vary.

    ``marrow`` is the fraction of ``base`` lost at the chemotherapy nadir (blood counts);
    chemistry values scatter around ``base`` with standard deviation ``spread``.
    """

    loinc: str
    display: str
    unit: str
    low: float
    high: float
    decimals: int
    base: float
    spread: float = 0.0
    marrow: float = 0.0


@dataclass(frozen=True)
class _Panel:
    loinc: str
    display: str
    analytes: tuple[Analyte, ...]


_PANELS: Final = {
    "cbc": _Panel("58410-2", "CBC panel - Blood by Automated count", (
        Analyte("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL",
                 4.5, 13.5, 1, 7.0, marrow=0.75),
        Analyte("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL",
                 11.5, 15.5, 1, 12.6, marrow=0.25),
        Analyte("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count", "%",
                 35.0, 45.0, 1, 37.5, marrow=0.25),
        Analyte("777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL",
                 150.0, 450.0, 0, 260.0, marrow=0.8),
        Analyte("751-8", "Neutrophils [#/volume] in Blood by Automated count", "10*3/uL",
                 1.5, 8.0, 2, 3.4, marrow=0.93),
    )),
    "cmp": _Panel("24323-8", "Comprehensive metabolic 2000 panel - Serum or Plasma", (
        Analyte("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L",
                 135.0, 145.0, 0, 139.0, 2.5),
        Analyte("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L",
                 3.5, 5.1, 1, 4.1, 0.4),
        Analyte("2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L",
                 98.0, 107.0, 0, 103.0, 2.5),
        Analyte("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L",
                 20.0, 28.0, 0, 24.0, 2.0),
        Analyte("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL",
                 5.0, 18.0, 0, 11.0, 3.5),
        Analyte("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL",
                 0.3, 0.9, 2, 0.55, 0.1),
        Analyte("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL",
                 70.0, 99.0, 0, 90.0, 13.0),
        Analyte("17861-6", "Calcium [Mass/volume] in Serum or Plasma", "mg/dL",
                 8.8, 10.8, 1, 9.6, 0.4),
        Analyte("1751-7", "Albumin [Mass/volume] in Serum or Plasma", "g/dL",
                 3.5, 5.0, 1, 4.0, 0.35),
        Analyte("1975-2", "Bilirubin.total [Mass/volume] in Serum or Plasma", "mg/dL",
                 0.1, 1.2, 1, 0.5, 0.25),
        Analyte("1742-6", "Alanine aminotransferase [Enzymatic activity/volume] in Serum or "
                 "Plasma", "U/L", 5.0, 45.0, 0, 30.0, 16.0),
        Analyte("1920-8", "Aspartate aminotransferase [Enzymatic activity/volume] in Serum or "
                 "Plasma", "U/L", 10.0, 40.0, 0, 30.0, 10.0),
        Analyte("6768-6", "Alkaline phosphatase [Enzymatic activity/volume] in Serum or "
                 "Plasma", "U/L", 100.0, 390.0, 0, 220.0, 50.0),
    )),
}  # fmt: skip

# Vital signs: key -> (LOINC, display, UCUM code, unit as shown).
_VITALS: Final = {
    "hr": ("8867-4", "Heart rate", "/min", "beats/minute"),
    "rr": ("9279-1", "Respiratory rate", "/min", "breaths/minute"),
    "temp": ("8310-5", "Body temperature", "Cel", "C"),
    "bp": ("85354-9", "Blood pressure panel with all children optional", "mm[Hg]", "mmHg"),
    "spo2": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", "%"),
    "weight": ("29463-7", "Body weight", "kg", "kg"),
    "height": ("8302-2", "Body height", "cm", "cm"),
}
_BP_COMPONENTS: Final = (
    ("8480-6", "Systolic blood pressure"),
    ("8462-4", "Diastolic blood pressure"),
)

# Entries each unit of a visit adds: a panel is its Observations plus its DiagnosticReport.
_UNIT_SIZE: Final = {key: len(panel.analytes) + 1 for key, panel in _PANELS.items()}
_UNIT_SIZE.update(dict.fromkeys(_VITALS, 1))


def plan_visits(count: int) -> list[list[str]]:
    """Split ``count`` entries into clinic visits, each a list of units (``cbc``, ``cmp`` or
    a vital sign); together they add exactly ``count`` entries."""
    visits: list[list[str]] = []
    remaining = count
    while remaining > 0:
        number = len(visits)
        units = ["cbc", *(["cmp"] if number % 2 == 0 else []), "hr", "rr", "temp", "bp"]
        units += ["spo2", "weight", *(["height"] if number % 4 == 0 else [])]
        chosen = []
        for unit in units:
            if _UNIT_SIZE[unit] <= remaining:
                chosen.append(unit)
                remaining -= _UNIT_SIZE[unit]
        visits.append(chosen)
    return visits


def observation_count(plan: list[list[str]]) -> int:
    """The Observations (lab results and vital signs) of the visits of ``plan``."""
    return sum(
        len(_PANELS[unit].analytes) if unit in _PANELS else 1 for visit in plan for unit in visit
    )


class VisitWriter:
    """Writes the planned visits, evenly spread from day 0 to the day before ``as_of``.

    The Observations whose running index is in ``dangling`` name ``missing`` as performer.
    """

    def __init__(
        self, w: RecordWriter, patient: str, lab: str, dangling: set[int], missing: str
    ) -> None:
        self.w = w
        self.patient = patient
        self.lab = lab
        self.dangling = dangling
        self.missing = missing
        self.index = 0

    def write(self, plan: list[list[str]]) -> None:
        first = datetime.combine(self.w.day0, time(7, 0), LOCAL_TZ)
        last_day = HISTORY_DAYS - 1
        for number, units in enumerate(plan):
            day = number * last_day // max(len(plan) - 1, 1)
            minute = (number * 37) % 600  # between 07:00 and 16:59
            moment = first + timedelta(days=day, minutes=minute)
            nadir = self._nadir(day)
            fever = nadir > 0.5 and self.w.rng.random() < 0.25
            for unit in units:
                if unit in _PANELS:
                    self._panel(_PANELS[unit], moment, nadir)
                else:
                    self._vital(unit, moment, day, fever)

    def _nadir(self, day: int) -> float:
        """0..1: how deep into a chemotherapy nadir (days 7-14 of a cycle) ``day`` is."""
        since = [day - start for start in self.w.cycle_days if start <= day]
        return math.exp(-(((min(since) - 10.0) / 3.5) ** 2)) if since else 0.0

    def _performer(self, resource: JSON, default: str | None) -> None:
        index, self.index = self.index, self.index + 1
        performer = self.missing if index in self.dangling else default
        if performer:
            resource["performer"] = [ref(performer)]

    def _panel(self, panel: _Panel, moment: datetime, nadir: float) -> None:
        rng = self.w.rng
        issued = moment + timedelta(hours=2)
        updated = issued + timedelta(minutes=5)
        results = []
        for analyte in panel.analytes:
            if analyte.marrow:
                raw = analyte.base * (1 - analyte.marrow * nadir) * rng.uniform(0.88, 1.12)
            else:
                raw = rng.gauss(analyte.base, analyte.spread)
            raw = max(raw, 10.0**-analyte.decimals)
            value = round(raw, analyte.decimals) if analyte.decimals else round(raw)
            resource: JSON = {
                "resourceType": "Observation",
                "status": "final",
                "category": observation_category("laboratory", "Laboratory"),
                "code": loinc(analyte.loinc, analyte.display),
                "subject": ref(self.patient),
                "effectiveDateTime": when(moment),
                "issued": instant(issued),
                "valueQuantity": quantity(value, analyte.unit),
                "interpretation": interpretation(value, analyte.low, analyte.high),
                "referenceRange": [
                    {
                        "low": quantity(analyte.low, analyte.unit),
                        "high": quantity(analyte.high, analyte.unit),
                        "text": "Pediatric reference range",
                    }
                ],
            }
            self._performer(resource, self.lab)
            results.append(self.w.add(resource, updated))
        self.w.add(
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "category": [concept(coding(V2_0074, "LAB", "Laboratory"))],
                "code": loinc(panel.loinc, panel.display),
                "subject": ref(self.patient),
                "effectiveDateTime": when(moment),
                "issued": instant(issued),
                "performer": [ref(self.lab)],
                "result": [ref(url) for url in results],
            },
            updated,
        )

    def _vital(self, unit: str, moment: datetime, day: int, fever: bool) -> None:
        code, display, ucum, shown = _VITALS[unit]
        w, rng = self.w, self.w.rng
        age = w.age_on(day)
        band = 0 if age < 6 else 1 if age < 12 else 2
        resource: JSON = {
            "resourceType": "Observation",
            "status": "final",
            "category": observation_category("vital-signs", "Vital Signs"),
            "code": loinc(code, display),
            "subject": ref(self.patient),
            "effectiveDateTime": when(moment),
        }
        value: float
        if unit == "bp":
            pressures = (90 + 1.7 * age + rng.gauss(0, 6), 52 + 0.9 * age + rng.gauss(0, 5))
            resource["component"] = [
                {"code": loinc(*part), "valueQuantity": quantity(round(mmhg), ucum, shown)}
                for part, mmhg in zip(_BP_COMPONENTS, pressures, strict=True)
            ]
        else:
            if unit == "hr":
                value = round((105, 88, 75)[band] + rng.gauss(0, 7) + (22 if fever else 0))
            elif unit == "rr":
                value = (24, 20, 16)[band] + rng.randint(-2, 2)
            elif unit == "temp":
                value = round(rng.uniform(38.3, 39.4) if fever else rng.gauss(36.8, 0.2), 1)
            elif unit == "spo2":
                value = rng.randint(96, 100)
            elif unit == "weight":
                value = round(w.weight_kg(day) * rng.uniform(0.99, 1.01), 1)
            else:
                value = round(w.height_cm(day), 1)
            resource["valueQuantity"] = quantity(value, ucum, shown)
        self._performer(resource, None)
        w.add(resource, moment + timedelta(minutes=10))
