"""Parsing request bodies and validating resources against the FHIR R4 models (fhir.resources R4B).

Every problem is reported as an `Issue` whose expression is the FHIRPath of the bad element,
e.g. `Observation.code.coding[0].system`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from hub.errors import InvalidRequest, Issue, UnprocessableResource
from hub.fhir.json_types import json_type_issues

_REQUIRED_CODES = Path(__file__).with_name("required_codes.yaml")

# No FHIR resource nests anywhere near this deep; deeper input only exhausts the stack of the
# parser or of the model validation (a RecursionError, i.e. a 500) before it is refused.
MAX_JSON_DEPTH = 100
# FHIR R4 id: [A-Za-z0-9\-\.]{1,64} (the models check the characters, not the length).
MAX_ID_LENGTH = 64
# fhir.resources reports a choice element given twice (or a required one missing) on the
# element that holds it, naming the candidates: "... from this list ['valueBoolean', ...]".
_CHOICE_FIELDS = re.compile(r"this list \[([^\]]*)\]")


def parse_json(body: bytes) -> Any:
    """Decode a request body as JSON, or raise InvalidRequest saying where it broke.

    FHIR JSON is UTF-8 (a byte order mark is tolerated); NaN and Infinity are not JSON.
    """
    if not body.strip():
        raise InvalidRequest("The request body is empty; a FHIR JSON resource was expected.")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"The request body is not UTF-8: {exc.reason}.") from exc
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}."
        ) from exc
    except ValueError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}.") from exc
    except RecursionError as exc:
        raise InvalidRequest(_too_deep()) from exc
    if _deeper_than(data, MAX_JSON_DEPTH):
        raise InvalidRequest(_too_deep())
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _too_deep() -> str:
    return f"The request body nests JSON more than {MAX_JSON_DEPTH} levels deep."


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether objects and arrays in `data` nest more than `limit` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if isinstance(node, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in node)
    return False


def is_resource_type(name: Any) -> bool:
    """Whether `name` is a FHIR R4 resource type (not a data type such as HumanName)."""
    return isinstance(name, str) and _is_resource_type(name)


@cache
def _is_resource_type(name: str) -> bool:
    try:
        return issubclass(get_fhir_model_class(name), Resource)
    except (KeyError, ValueError):
        return False


def fhirpath_of(root: str, location: tuple[int | str, ...]) -> str:
    """`('code', 'coding', 0, 'system')` under `Observation` → `Observation.code.coding[0]...`."""
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
    data: Any,
    *,
    expected_type: str | None = None,
    where: str | None = None,
    models: bool = True,
) -> dict[str, Any]:
    """Check that `data` is a valid FHIR R4 resource; return it unchanged.

    `expected_type` is the type the URL names; `where` prefixes the issue paths when the
    resource sits inside a Bundle (e.g. `Bundle.entry[3].resource`). Without `models`, the
    fhir.resources model validation (most of the cost) is skipped: for the hub's own
    mapping output, whose tables the test suite validates against the models.
    """
    root = where or (expected_type or "Resource")
    if not isinstance(data, dict):
        raise InvalidRequest("A FHIR resource must be a JSON object.", expression=root)
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidRequest("The resource has no resourceType.", expression=f"{root}.resourceType")
    if expected_type and resource_type != expected_type:
        raise InvalidRequest(
            f"The resourceType '{resource_type}' does not match the type in the URL "
            f"'{expected_type}'.",
            expression=f"{root}.resourceType",
        )
    if not is_resource_type(resource_type):
        raise UnprocessableResource(
            f"'{resource_type}' is not a FHIR R4 resource type.",
            expression=f"{root}.resourceType",
        )
    model = get_fhir_model_class(resource_type)
    root = where or resource_type
    # The models fail with a KeyError (a 500) on a contained or entry resource of an unknown
    # type: find those first, and name where they are.
    nested = list(_nested_type_issues(data, root))
    if nested:
        raise UnprocessableResource(
            f"The {resource_type} holds resources of unknown types.", issues=nested
        )
    wrong_types = json_type_issues(data, resource_type, root)
    if wrong_types:
        raise UnprocessableResource(
            f"The {resource_type} has elements of the wrong JSON type.", issues=wrong_types
        )
    try:
        if models:
            model.model_validate(data)
    except ValidationError as exc:
        raise UnprocessableResource(
            f"The {resource_type} is not valid FHIR R4.",
            issues=[_model_issue(root, error, data) for error in exc.errors()],
        ) from exc
    except (TypeError, ValueError, KeyError) as exc:  # raised outside pydantic's wrapper
        raise UnprocessableResource(
            f"The {resource_type} is not valid FHIR R4: {exc}", expression=root
        ) from exc
    _check_id_length(data, root)
    check_required_codes(data, resource_type, root)
    return data


def _model_issue(root: str, error: Any, data: Any) -> Issue:
    path = fhirpath_of(root, tuple(error["loc"]))
    choice = _CHOICE_FIELDS.search(str(error["msg"]))
    if choice and isinstance(_at(data, tuple(error["loc"])), dict):
        # The problem is the choice element nnn[x] itself, not the element that holds it.
        names = [name.strip(" '\"") for name in choice.group(1).split(",")]
        path = f"{path}.{_choice_name(names)}"
    return Issue(
        f"{error['msg']} ({path})",
        code="structure" if error["type"] == "extra_forbidden" else "value",
        expression=(path,),
    )


def _at(data: Any, location: tuple[int | str, ...]) -> Any:
    """The JSON value at a pydantic error location (None if it cannot be followed)."""
    node = data
    for part in location:
        if isinstance(part, str) and part.startswith(("function-", "json-or-python")):
            continue
        in_list = isinstance(part, int) and isinstance(node, list) and part < len(node)
        if not (in_list or (isinstance(node, dict) and part in node)):
            return None
        node = node[part]
    return node


def _choice_name(names: list[str]) -> str:
    """`['valueBoolean', 'valueCodeableConcept']` → `value` (the FHIRPath of value[x])."""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    # Each name is the prefix + a type name starting with a capital: back off to there.
    while prefix and any(len(n) > len(prefix) and not n[len(prefix)].isupper() for n in names):
        prefix = prefix[:-1]
    return prefix or names[0]


def _nested_type_issues(node: Any, path: str, *, nested: bool = False) -> Iterator[Issue]:
    """An issue for each contained/entry resource whose resourceType is not FHIR's."""
    if isinstance(node, dict):
        if nested and "resourceType" in node and not is_resource_type(node["resourceType"]):
            yield Issue(
                f"{node['resourceType']!r} is not a FHIR R4 resource type.",
                code="value",
                expression=(f"{path}.resourceType",),
            )
        for key, child in node.items():
            yield from _nested_type_issues(child, f"{path}.{key}", nested=True)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _nested_type_issues(child, f"{path}[{index}]", nested=True)


def _check_id_length(data: dict[str, Any], root: str) -> None:
    resource_id = data.get("id")
    if isinstance(resource_id, str) and len(resource_id) > MAX_ID_LENGTH:
        raise UnprocessableResource(
            f"The id is {len(resource_id)} characters long; FHIR allows at most {MAX_ID_LENGTH}.",
            expression=f"{root}.id",
        )


def check_required_codes(data: dict[str, Any], resource_type: str, root: str) -> None:
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
