"""The table of supported resource types and search parameters (search_parameters.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models as fhirpath_models

ParamType = Literal["token", "string", "reference", "date"]
_TABLE = Path(__file__).with_name("search_parameters.yaml")
_FHIRPATH_MODEL = fhirpath_models["r4"]


@dataclass(frozen=True)
class SearchParameter:
    """One search parameter of one resource type."""

    name: str
    type: ParamType
    expression: str
    targets: tuple[str, ...] = ()

    def evaluate(self, resource: dict[str, Any]) -> list[Any]:
        """The values of this parameter's expression in `resource`."""
        return list(_compiled(self.expression)(resource))


@cache
def _compiled(expression: str) -> Any:
    return compile_fhirpath(expression, _FHIRPATH_MODEL)


@cache
def search_parameters() -> dict[str, dict[str, SearchParameter]]:
    """Resource type → parameter name → SearchParameter, for every type the API serves."""
    table = yaml.safe_load(_TABLE.read_text(encoding="utf-8"))
    result: dict[str, dict[str, SearchParameter]] = {}
    for resource_type, params in table.items():
        result[resource_type] = {
            name: SearchParameter(name, spec[0], spec[1], tuple(spec[2]) if len(spec) > 2 else ())
            for name, spec in (params or {}).items()
        }
    return result


def supported_types() -> list[str]:
    return sorted(search_parameters())
