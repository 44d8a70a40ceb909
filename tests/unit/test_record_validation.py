"""Pulled resources checked against the FHIR R4 models, in the worker process or here."""

import pytest

from hub.records.validation import CHUNK, Validation


def observation(obs_id: str, status: str = "final") -> dict:
    return {"resourceType": "Observation", "id": obs_id, "status": status, "code": {"text": "Hb"}}


@pytest.mark.parametrize("in_process", [False, True], ids=["worker", "in-process"])
def test_only_the_invalid_resources_come_back_with_their_paths(in_process: bool) -> None:
    validation = Validation(in_process=in_process)
    for index in range(CHUNK + 10):  # more than one chunk
        validation.add(f"Observation/o{index}", observation(f"o{index}"))
    validation.add("Observation/bad", observation("bad", status="nonsense"))
    validation.add("Condition/c1", {"resourceType": "Condition", "id": "c1", "subject": 7})
    problems = validation.problems()
    assert sorted(problems) == ["Condition/c1", "Observation/bad"]
    assert "Observation.status" in problems["Observation/bad"]
    assert "Condition.subject" in problems["Condition/c1"]


def test_what_is_checked_is_the_resource_as_it_was_handed_over() -> None:
    validation = Validation()
    resource = observation("o1")
    validation.add("Observation/o1", resource)
    validation.submit()
    resource["status"] = "nonsense"  # rewritten afterwards (as normalization does)
    assert validation.problems() == {}
