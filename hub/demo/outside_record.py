"""A SYNTHETIC outside-EHR record of one child with cancer, at any size.

Nothing here is real patient data: every name, identifier, date, value and note is invented
by this module (and its implementation in :mod:`hub.demo.outside`) from small tables and a
seeded random generator.  The record is what an outside EHR's FHIR R4 server would hold for
a referred child: the material for tests and benchmarks of the FHIR REST connector.

The public API:

* :func:`build_outside_record` - a FHIR R4 transaction Bundle of ``PUT Type/id`` entries with
  explicit, stable, server-style ids (``obs-mb7-1234``), exactly ``resources`` entries long.
* :func:`minimum_resources` - the size of a record's fixed part (all but labs and vitals).
* :func:`dangling_reference` - the missing Practitioner that ``dangling`` resources name.
* :func:`patient_id`, :func:`counts` - small helpers to read such a Bundle.
* :data:`CANCERS` - the supported kinds of cancer (:class:`CancerProfile` each).

Shape.  A fixed part of 80 to 110 resources - Organizations, Practitioners, Patient,
RelatedPerson guardian, Coverage, AllergyIntolerances, Encounters, Conditions (the cancer
with stage and history as text, and comorbidities), ImagingStudies with their radiology
DiagnosticReports, pathology and molecular reports, Procedures, chemotherapy
MedicationRequests and MedicationAdministrations, a CarePlan, DocumentReferences each with
its Binary (a small PDF or plain text) - is filled up to the requested size with clinic
visits: vital signs, a CBC and, every other visit, a metabolic panel (each panel a
DiagnosticReport whose ``result`` lists its Observations), spread evenly over the record.

Time.  Day 0 (the first visit) is 700 days before ``as_of``; the last visit is on the day
before ``as_of``.  ``meta.lastUpdated`` is when the outside EHR last wrote each resource:
Organizations and Practitioners 20 days before day 0, clinical resources minutes to hours
after the event they record, the Patient and guardian at the last visit.  All lie in
``[as_of - 730 days, as_of)``; as the visits are evenly spread, an incremental pull with
``_lastUpdated=ge<as_of - N days>`` returns about N/700 of the labs and vitals.  (A server
the Bundle is loaded into usually sets ``meta.lastUpdated`` to its own write time.)

References are relative (``Patient/pat-mb7-1``) and resolve inside the Bundle, except the
``dangling`` ones; entries have no fullUrl.  The same arguments always give the same Bundle.
"""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Final

from hub.demo.outside import care, people
from hub.demo.outside.cancers import CANCERS, CancerProfile
from hub.demo.outside.shapes import JSON, SYNTHETIC_TAG
from hub.demo.outside.visits import VisitWriter, observation_count, plan_visits
from hub.demo.outside.writer import HISTORY_DAYS, Actors, RecordWriter
from hub.demo.synthetic import DEFAULT_AS_OF

__all__ = [
    "CANCERS",
    "DEFAULT_SOURCE",
    "HISTORY_DAYS",
    "CancerProfile",
    "build_outside_record",
    "counts",
    "dangling_reference",
    "minimum_resources",
    "patient_id",
]

DEFAULT_SOURCE: Final = "https://ehr.outside-childrens.example"


def _profile(cancer: str) -> CancerProfile:
    try:
        return CANCERS[cancer]
    except KeyError:
        known = ", ".join(sorted(CANCERS))
        raise ValueError(f"Unknown cancer {cancer!r}; expected one of: {known}") from None


def _fixed_part(w: RecordWriter, with_contained: bool) -> Actors:
    """Everything but the clinic visits."""
    actors = people.actors(w)
    admission, cycle_encounters = people.encounters(w, actors)
    for spec in w.profile.imaging:
        care.imaging(w, actors, spec)
    evidence = [care.pathology(w, actors), care.molecular(w, actors)]
    condition = care.conditions(w, actors, admission, evidence)
    care.procedures(w, actors, condition)
    requests = care.chemotherapy(w, actors, condition, cycle_encounters, with_contained)
    care.care_plan(w, actors, condition, evidence, requests)
    return actors


def dangling_reference(*, cancer: str = "medulloblastoma", seed: int = 7) -> str:
    """The ``Practitioner/<id>`` reference, absent from the Bundle, that the ``dangling``
    Observations of :func:`build_outside_record` name as their performer."""
    return f"Practitioner/prac-{_profile(cancer).abbreviation}{seed}-departed"


def minimum_resources(cancer: str = "medulloblastoma") -> int:
    """The number of entries in the fixed part of every record of ``cancer`` (the smallest
    ``resources`` that :func:`build_outside_record` accepts)."""
    w = RecordWriter(_profile(cancer), 0, DEFAULT_SOURCE, DEFAULT_AS_OF)
    _fixed_part(w, with_contained=False)
    return len(w.entries)


def build_outside_record(
    *,
    resources: int = 2000,
    cancer: str = "medulloblastoma",
    seed: int = 7,
    source: str = DEFAULT_SOURCE,
    as_of: date = DEFAULT_AS_OF,
    dangling: int = 0,
    with_contained: bool = False,
) -> JSON:
    """Return a FHIR R4 transaction Bundle: one child's record as an outside EHR holds it.

    ``resources`` is the exact number of entries (at least :func:`minimum_resources`).
    ``cancer`` is a key of :data:`CANCERS`.  ``seed`` picks names, age and values; ids hold
    the cancer's abbreviation and the seed (``obs-mb7-12``), so records of different cancers
    or seeds can share one server.  ``source`` is the outside EHR's base URL: identifier
    systems (``{source}/mrn``) and ``meta.source``.  ``as_of`` is the day after the last
    visit.  ``dangling`` lab and vital-sign Observations, spread over the record, name
    :func:`dangling_reference` as performer, a Practitioner the Bundle lacks.
    ``with_contained`` gives the first MedicationRequest a contained Medication
    (``medicationReference: #med1``).

    Every entry is ``request: {method: PUT, url: Type/id}``.  Raises ValueError for an
    unknown cancer, a size below the fixed part, or a negative ``dangling`` or one larger
    than the number of lab and vital-sign Observations.
    """
    profile = _profile(cancer)
    w = RecordWriter(profile, seed, source, as_of)
    actors = _fixed_part(w, with_contained)
    if resources < len(w.entries):
        raise ValueError(
            f"A {cancer} record needs at least {len(w.entries)} resources, not {resources}"
        )
    plan = plan_visits(resources - len(w.entries))
    observations = observation_count(plan)
    if not 0 <= dangling <= observations:
        raise ValueError(
            f"dangling must be between 0 and {observations} (the lab and vital-sign "
            f"Observations of this record), not {dangling}"
        )
    marked = {index * observations // dangling for index in range(dangling)}
    missing = dangling_reference(cancer=cancer, seed=seed)
    VisitWriter(w, actors.patient, actors.hospital, marked, missing).write(plan)
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": {"tag": [dict(SYNTHETIC_TAG)]},
        "entry": w.entries,
    }


def patient_id(bundle: JSON) -> str:
    """The id of the (single) Patient of ``bundle``; ValueError if it has none."""
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Patient":
            return str(resource["id"])
    raise ValueError("The bundle holds no Patient")


def counts(bundle: JSON) -> dict[str, int]:
    """The number of entries of each resource type in ``bundle``, sorted by type."""
    found = Counter(entry["resource"]["resourceType"] for entry in bundle.get("entry", []))
    return dict(sorted(found.items()))
