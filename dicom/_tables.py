"""The code tables of `dicom/tables/` (data, not code): modality and body part codings.

Loaded once, checked for shape when loaded; a malformed table is a packaging bug and
raises ValueError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Concept", "body_site", "is_acquisition_modality", "modality"]

_TABLES = Path(__file__).parent / "tables"


@dataclass(frozen=True)
class Concept:
    """A code of a code system, with its display when the table gives one."""

    system: str
    code: str
    display: str | None = None

    def coding(self) -> dict[str, str]:
        """The FHIR Coding."""
        coding = {"system": self.system, "code": self.code}
        if self.display:
            coding["display"] = self.display
        return coding


@dataclass(frozen=True)
class _Table:
    system: str
    rows: dict[str, dict[str, Any]]


def modality(value: str) -> Concept:
    """The DCM concept of a Modality (0008,0060) value; a value the table lacks keeps its
    code without a display (DCM holds retired modalities too)."""
    table = _load("modalities.yaml")
    row = table.rows.get(value.upper())
    return Concept(table.system, value.upper(), str(row["display"]) if row else None)


def is_acquisition_modality(value: str) -> bool:
    """Whether the modality is in CID 29 Acquisition Modality."""
    row = _load("modalities.yaml").rows.get(value.upper())
    return bool(row and row.get("acquisition"))


def body_site(body_part_examined: str) -> Concept | None:
    """The SNOMED CT concept of a Body Part Examined (0018,0015) value, None if unmapped."""
    table = _load("body_parts.yaml")
    row = table.rows.get(body_part_examined.strip().upper())
    if row is None:
        return None
    return Concept(table.system, str(row["code"]), str(row["display"]))


@cache
def _load(name: str) -> _Table:
    path = _TABLES / name
    with path.open(encoding="utf-8") as stream:
        data = yaml.safe_load(stream)
    if not isinstance(data, dict) or not isinstance(data.get("system"), str):
        raise ValueError(f"{path}: needs a `system` and `codes`")
    rows = data.get("codes")
    if not isinstance(rows, dict) or not all(
        isinstance(key, str) and isinstance(row, dict) for key, row in rows.items()
    ):
        raise ValueError(f"{path}: `codes` must map each code (a string) to its fields")
    return _Table(data["system"], rows)
