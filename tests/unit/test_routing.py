"""The routing table (config/routing.yaml): which program, and which cases go fast."""

import pytest

from hub.workflow.routing import ICD10CM, ICDO3, SNOMED, load_routing, route

TABLE = load_routing()


def icd10(code: str) -> dict:
    return {"system": ICD10CM, "code": code}


@pytest.mark.parametrize(
    ("coding", "program", "urgent"),
    [
        (icd10("C71.6"), "neuro-oncology", False),  # medulloblastoma (cerebellum)
        (icd10("C91.02"), "bmt-cellular-therapy", True),  # ALL in relapse
        (icd10("C91.00"), "oncology", False),  # ALL, not in remission: no relapse
        (icd10("C74.12"), "oncology", False),  # neuroblastoma (adrenal medulla)
        (icd10("C40.22"), "oncology", False),  # osteosarcoma (long bones, leg)
        (icd10("C81.10"), "oncology", False),  # Hodgkin lymphoma
        (icd10("D66"), "hemophilia-thrombosis", False),  # haemophilia A
        (icd10("I82.401"), "hemophilia-thrombosis", False),  # deep vein thrombosis
        (icd10("D57.1"), "hematology", False),  # sickle cell disease
        ({"system": ICDO3, "code": "9470/3"}, "oncology", False),  # a morphology
        ({"system": ICDO3, "code": "C71.6"}, "neuro-oncology", False),  # a topography
        ({"system": SNOMED, "code": "443333004"}, "neuro-oncology", False),
    ],
)
def test_a_diagnosis_code_chooses_the_program(coding: dict, program: str, urgent: bool) -> None:
    decision = route(TABLE, [coding])
    assert (decision.program, decision.urgent) == (program, urgent)
    assert coding["code"] in decision.why


def test_the_first_matching_rule_wins_whatever_the_order_of_the_codes() -> None:
    decision = route(TABLE, [icd10("C81.10"), icd10("C71.6")])
    assert decision.program == "neuro-oncology"


def test_no_code_is_no_program_and_nothing_urgent() -> None:
    decision = route(TABLE, [{"system": "urn:local", "code": "x"}, {"code": ""}])
    assert (decision.program, decision.urgent) == (None, False)
