"""Parsing request bodies and validating resources against the FHIR R4 models (fhir.resources R4B).

Every problem is reported as an `Issue` whose expression is the FHIRPath of the bad element,
e.g. `Observation.code.coding[0].system`.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from hub.errors import InvalidRequest, Issue, UnprocessableResource

_REQUIRED_CODES = Path(__file__).with_name("required_codes.yaml")


def parse_json(body: bytes) -> Any:
    """Decode a request body as JSON, or raise InvalidRequest saying where it broke."""
    if not body.strip():
        raise InvalidRequest("The request body is empty; a FHIR JSON resource was expected.")
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The request body is not UTF-8: {exc.reason}.") from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}."
        ) from exc


def fhirpath_of(root: str, location: tuple[int | str, ...]) -> str:
    """`('code', 'coding', 0, 'system')` under `Observation` → `Observation.code.coding[0].system`."""
    path = root
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part and not str(part).startswith(("function-", "json-or-python")):
            path += f".{part}"
    return path


@cache
def _required_codes() -> dict[str, frozenset[str]]:
    table = yaml.safe_load(_REQUIRED_CODES.read_text(encoding="utf-8"))
    return {element: frozenset(str(code) for code in codes) for element, codes in table.items()}


def validate_resource(
    data: Any, *, expected_type: str | None = None, where: str | None = None
) -> dict[str, Any]:
    """Check that `data` is a valid FHIR R4 resource; return it unchanged.

    `expected_type` is the type the URL names; `where` prefixes the issue paths when the
    resource sits inside a Bundle (e.g. `Bundle.entry[3].resource`).
    """
    root = where or (expected_type or "Resource")
    if not isinstance(data, dict):
        raise InvalidRequest("A FHIR resource must be a JSON object.", expression=root)
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidRequest(
            "The resource has no resourceType.", expression=f"{root}.resourceType"
        )
    if expected_type and resource_type != expected_type:
        raise InvalidRequest(
            f"The resourceType '{resource_type}' does not match the type in the URL "
            f"'{expected_type}'.",
            expression=f"{root}.resourceType",
        )
    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError) as exc:
        raise UnprocessableResource(
            f"'{resource_type}' is not a FHIR R4 resource type.",
            expression=f"{root}.resourceType",
        ) from exc
    root = where or resource_type
    try:
        model.model_validate(data)
    except ValidationError as exc:
        raise UnprocessableResource(
            f"The {resource_type} is not valid FHIR R4.",
            issues=[
                Issue(
                    f"{error['msg']} ({fhirpath_of(root, tuple(error['loc']))})",
                    code="structure" if error["type"] == "extra_forbidden" else "value",
                    expression=(fhirpath_of(root, tuple(error["loc"])),),
                )
                for error in exc.errors()
            ],
        ) from exc
    except (TypeError, ValueError) as exc:  # validators that raise outside pydantic's wrapper
        raise UnprocessableResource(f"The {resource_type} is not valid FHIR R4: {exc}",
                                    expression=root) from exc
    _check_required_codes(data, resource_type, root)
    return data


def _check_required_codes(data: dict[str, Any], resource_type: str, root: str) -> None:
    issues = []
    for element, allowed in _required_codes().items():
        owner, _, name = element.partition(".")
        value = data.get(name)
        if owner == resource_type and value is not None and str(value) not in allowed:
            issues.append(
                Issue(
                    f"'{value}' is not a valid code for {element}; expected one of "
                    f"{', '.join(sorted(allowed))}.",
                    code="code-invalid",
                    expression=(f"{root}.{name}",),
                )
            )
    if issues:
        raise UnprocessableResource(f"The {resource_type} has invalid codes.", issues=issues)
