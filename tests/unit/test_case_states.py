import pytest

from hub.workflow.case_states import BUSINESS_STATUSES, STATUS_MOVES, transition_problem

HAPPY_PATH = [
    ("requested", None, "received", "awaiting-records"),
    ("received", "awaiting-records", "received", "records-complete"),
    ("received", "records-complete", "accepted", "assigned"),
    ("accepted", "assigned", "in-progress", "assigned"),
    ("in-progress", "assigned", "in-progress", "opinion-drafted"),
    ("in-progress", "opinion-drafted", "in-progress", "opinion-delivered"),
    ("in-progress", "opinion-delivered", "completed", "opinion-delivered"),
]


@pytest.mark.parametrize(("old", "old_business", "new", "new_business"), HAPPY_PATH)
def test_the_happy_path_is_allowed(old, old_business, new, new_business):
    assert transition_problem(old, old_business, new, new_business, has_reason=False) is None


@pytest.mark.parametrize(
    ("old", "old_business", "new", "new_business", "reason", "says"),
    [
        ("requested", None, "completed", "opinion-delivered", False, "cannot move"),
        ("received", "awaiting-records", "in-progress", "assigned", False, "cannot move"),
        ("completed", "opinion-delivered", "in-progress", "assigned", False, "cannot move"),
        ("cancelled", None, "received", "awaiting-records", False, "cannot move"),
        ("received", "awaiting-records", "received", "opinion-delivered", False, "businessStatus"),
        ("in-progress", "opinion-drafted", "completed", "opinion-delivered", False, "delivered"),
        ("received", "awaiting-records", "on-hold", None, False, "statusReason"),
        ("received", "awaiting-records", "rejected", None, False, "statusReason"),
        ("received", "awaiting-records", "draft", None, False, "not a status"),
    ],
)
def test_illegal_moves_are_explained(old, old_business, new, new_business, reason, says):
    problem = transition_problem(old, old_business, new, new_business, has_reason=reason)
    assert problem is not None and says in problem


def test_hold_with_a_reason_and_resume():
    assert (
        transition_problem(
            "received", "awaiting-records", "on-hold", "awaiting-records", has_reason=True
        )
        is None
    )
    assert (
        transition_problem(
            "on-hold", "awaiting-records", "received", "awaiting-records", has_reason=False
        )
        is None
    )


def test_every_status_has_its_sub_states():
    assert set(STATUS_MOVES) == set(BUSINESS_STATUSES)
    for targets in STATUS_MOVES.values():
        assert targets <= set(STATUS_MOVES)
