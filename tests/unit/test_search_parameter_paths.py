"""The index's plain-path walker gives exactly what fhirpathpy gives, parameter by parameter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

from hub.demo.synthetic import build_patient_records, build_referral
from hub.fhir.search_parameters import _compiled, _plain_path, search_parameters

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "hl7v2"


def _resources() -> list[dict[str, Any]]:
    bundles = [build_patient_records(seed) for seed in (1, 2, 3)]
    bundles += [build_referral("Patient/p-1", "Organization/ref-1", seed) for seed in (1, 2)]
    bundles += [json.loads(path.read_text()) for path in sorted(GOLDEN.glob("*.json"))]
    found = [
        entry["resource"]
        for bundle in bundles
        for entry in bundle.get("entry", [])
        if "resource" in entry
    ]
    # Choice elements under other types than the samples use.
    found += [
        {"resourceType": "Observation", "effectivePeriod": {"start": "2026-01-01"}},
        {"resourceType": "Observation", "effectiveInstant": "2026-01-01T00:00:00Z"},
        {"resourceType": "Condition", "onsetPeriod": {"start": "2025-05"}},
        {"resourceType": "Condition", "onsetString": "age 4"},
        {"resourceType": "Patient", "name": [{"given": ["A", "B"]}, {"family": "C"}]},
    ]
    return found


RESOURCES = _resources()
PARAMETERS = [
    (resource_type, param)
    for resource_type, params in search_parameters().items()
    for param in params.values()
]


def test_the_samples_cover_many_types() -> None:
    assert len({r["resourceType"] for r in RESOURCES}) >= 12


@pytest.mark.parametrize(
    ("resource_type", "param"), PARAMETERS, ids=[f"{t}.{p.name}" for t, p in PARAMETERS]
)
def test_walker_matches_fhirpathpy(resource_type: str, param: Any) -> None:
    reference = compile_fhirpath(param.expression, models["r4"])
    samples = [r for r in RESOURCES if r["resourceType"] == resource_type]
    for resource in samples:
        assert list(_compiled(param.expression)(resource)) == list(reference(resource)), resource


def test_every_table_expression_takes_the_plain_path() -> None:
    slow = [
        f"{t}.{p.name}"
        for t, p in PARAMETERS
        if any(_plain_path(b.strip()) is None for b in p.expression.split("|"))
    ]
    assert slow == []


def test_a_primitive_extension_is_not_a_value() -> None:
    # fhirpathpy returns `_birthDate`'s object as a second item; the index wants the date only.
    patient = {"resourceType": "Patient", "birthDate": "2019", "_birthDate": {"id": "x"}}
    assert list(_compiled("Patient.birthDate")(patient)) == ["2019"]


@pytest.mark.parametrize(
    "expression",
    [
        "Observation.value.ofType(Quantity).value",
        "Patient.name.where(use='official')",
        "Patient",
        "x.y",
    ],
)
def test_other_expressions_are_left_to_fhirpathpy(expression: str) -> None:
    assert _plain_path(expression) is None
