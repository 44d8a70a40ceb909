"""Golden files: each synthetic message in tests/golden/hl7v2/ maps to its expected Bundle.

A case is `<case>.hl7` (the bytes, as the generator in tests/hl7_samples.py writes them)
and `<case>.json` (the transaction Bundle, reviewed field by field). After a deliberate
change of the tables, regenerate with `python -m tests.hl7_samples --write --json` and
review the diff before committing it.
"""

import json
from pathlib import Path

import pytest

from mappings import map_bytes
from tests.hl7_samples import CASES, GOLDEN_DIR

GOLDEN_CASES = sorted(path.stem for path in GOLDEN_DIR.glob("*.hl7"))


def test_every_generator_case_has_a_golden_pair():
    assert set(GOLDEN_CASES) == set(CASES)
    for name in GOLDEN_CASES:
        assert (GOLDEN_DIR / f"{name}.json").is_file(), name


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_message_maps_to_its_golden_bundle(name: str):
    raw = (GOLDEN_DIR / f"{name}.hl7").read_bytes()
    expected = json.loads((GOLDEN_DIR / f"{name}.json").read_text(encoding="utf-8"))
    assert map_bytes(raw).bundle == expected


@pytest.mark.parametrize("name", GOLDEN_CASES)
def test_generator_still_writes_the_golden_message(name: str):
    """The goldens were written by the generator; a change to either shows here."""
    assert CASES[name]() == Path(GOLDEN_DIR / f"{name}.hl7").read_bytes()
