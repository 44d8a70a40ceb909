"""Scoring the source's patients against the case's (hub.records.patient_match)."""

from hub.records.patient_match import THRESHOLD, Candidate, _decide, score

OURS = {
    "resourceType": "Patient",
    "name": [{"family": "Núñez", "given": ["Sofía"]}],
    "birthDate": "2016-04-02",
    "gender": "female",
}


def test_the_same_child_scores_full_marks_whatever_the_accents():
    theirs = {**OURS, "name": [{"family": "NUNEZ", "given": ["Sofia", "M"]}]}
    assert score(OURS, theirs) == 1.0


def test_a_sibling_born_another_day_is_below_the_threshold():
    sibling = {
        **OURS,
        "name": [{"family": "Núñez", "given": ["Mateo"]}],
        "birthDate": "2018-01-09",
        "gender": "male",
    }
    assert score(OURS, sibling) < THRESHOLD


def test_one_candidate_above_the_threshold_is_the_patient_two_are_ambiguous():
    a = Candidate("a", 0.9, "name+birthdate", "")
    b = Candidate("b", 0.85, "name+birthdate", "")
    low = Candidate("c", 0.3, "name+birthdate", "")
    assert _decide([low, a]).found == a
    ambiguous = _decide([a, b, low])
    assert ambiguous.found is None and [c.source_id for c in ambiguous.candidates] == [
        "a",
        "b",
        "c",
    ]
    assert _decide([low]).found is None
