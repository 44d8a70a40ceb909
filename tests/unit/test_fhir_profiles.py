"""Our canonical resources are valid R4 and agree with the code that uses them."""

import json
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hub import codes
from hub.api.capability import OPERATIONS
from hub.workflow.case_states import BUSINESS_STATUS_DISPLAY

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"
FILES = sorted(PROFILES.rglob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_each_file_is_valid_r4_with_its_canonical_url(path):
    resource = load(path)
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    assert resource["url"] == f"{codes.CANONICAL_BASE}/{resource['resourceType']}/{resource['id']}"


def test_business_status_code_system_matches_the_workflow_table():
    code_system = load(PROFILES / "CodeSystem" / "case-business-status.json")
    assert code_system["url"] == codes.BUSINESS_STATUS_SYSTEM
    assert {c["code"]: c["display"] for c in code_system["concept"]} == BUSINESS_STATUS_DISPLAY


def test_case_code_systems_hold_the_codes_the_hub_uses():
    category = load(PROFILES / "CodeSystem" / "case-category.json")
    task = load(PROFILES / "CodeSystem" / "case-task.json")
    assert (category["url"], category["concept"][0]["code"]) == (
        codes.CASE_CATEGORY_SYSTEM,
        codes.SECOND_OPINION,
    )
    assert (task["url"], task["concept"][0]["code"]) == (
        codes.CASE_TASK_SYSTEM,
        codes.CASE_TASK_CODE,
    )


def test_every_advertised_operation_is_defined():
    defined = {load(p)["id"] for p in (PROFILES / "OperationDefinition").glob("*.json")}
    advertised = {definition for ops in OPERATIONS.values() for _, definition in ops}
    assert advertised == defined
