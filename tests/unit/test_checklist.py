"""config/checklist.yaml: it loads, covers what a second-opinion review needs, and a broken
checklist is refused when the hub starts, naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from hub.settings import REPO_ROOT, Settings
from hub.workflow.checklist import load_checklist

SHIPPED = REPO_ROOT / "config" / "checklist.yaml"


def test_the_shipped_checklist_covers_a_review() -> None:
    items = {item.id: item for item in load_checklist(SHIPPED)}
    assert set(items) == {
        "patient-summary",
        "recent-labs",
        "radiology-reports",
        "operative-notes",
        "pathology-reports",
        "molecular-testing",
        "chemotherapy",
        "radiation-summary",
        "cross-sectional-imaging",
        "biopsy-slides",
        "treatment-plan",
        "current-physician",
        "insurance",
        "guardian-contact",
        "legal-consent",
    }
    assert items["legal-consent"].required_for("hemophilia-thrombosis")
    assert items["radiation-summary"].required_for("neuro-oncology")
    assert not items["radiation-summary"].required_for("hematology")
    assert "dicom" in items["biopsy-slides"].fetch


def write(tmp_path: Path, item: dict[str, object]) -> Path:
    path = tmp_path / "checklist.yaml"
    path.write_text(yaml.safe_dump({"checklist": [item]}))
    return path


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"id": "x", "title": "X", "queries": ["Nonsense?patient={patient}"]}, "'Nonsense'"),
        ({"id": "x", "title": "X", "queries": ["Condition?colour={patient}"]}, "colour"),
        (
            {
                "id": "x",
                "title": "X",
                "queries": ["Condition?patient={patient}"],
                "required": ["dental"],
            },
            "dental",
        ),
        (
            {"id": "x", "title": "X", "queries": ["Condition?patient={patient}"], "fetch": ["fax"]},
            "fax",
        ),
    ],
)
def test_a_broken_checklist_stops_the_hub_naming_the_problem(
    tmp_path: Path, item: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(checklist_file=write(tmp_path, item))
    assert "checklist_file" in str(raised.value) and problem in str(raised.value)


def test_a_missing_checklist_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot be read"):
        Settings(checklist_file=tmp_path / "nowhere.yaml")
