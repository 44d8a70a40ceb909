"""The JSON types FHIR R4 requires of each element (FHIR R4 §2.6.2, JSON representation).

fhir.resources coerces lax input (`"active": "yes"`, `"birthDate": 0`) into valid values;
a FHIR server must refuse it instead. This walks the JSON along the models' fields and
reports each element whose JSON type is wrong, with its FHIRPath.
"""

from __future__ import annotations

import datetime
import decimal
import typing
from collections.abc import Iterator
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from hub.errors import Issue

_JSON_KINDS: dict[type, str] = {
    bool: "boolean",
    int: "number",
    decimal.Decimal: "number",
    float: "number",
    str: "string",
    datetime.date: "string",
    datetime.datetime: "string",
    datetime.time: "string",
    bytes: "string",
}


def json_type_issues(data: dict[str, Any], resource_type: str, path: str) -> list[Issue]:
    """Issues for the elements of resource `data` whose JSON type FHIR does not allow."""
    return list(_check_object(data, resource_type, path))


def _check_object(data: dict[str, Any], model_name: str, path: str) -> Iterator[Issue]:
    fields = _fields(model_name)
    for key, value in data.items():
        if key not in fields or value is None:
            continue  # unknown elements are the model's to report
        is_list, kind = fields[key]
        where = f"{path}.{key}"
        if is_list != isinstance(value, list):
            wanted = "an array" if is_list else "a single value, not an array"
            yield Issue(f"{where} must be {wanted}.", code="structure", expression=(where,))
            continue
        items = list(enumerate(value)) if is_list else [(None, value)]
        for index, item in items:
            item_path = where if index is None else f"{where}[{index}]"
            if item is not None:
                yield from _check_value(item, kind, item_path)


def _check_value(value: Any, kind: str, path: str) -> Iterator[Issue]:
    if kind in ("boolean", "number", "string"):
        actual = _json_kind(value)
        if actual != kind:
            yield Issue(
                f"{path} must be a JSON {kind}, not {actual}.", code="value", expression=(path,)
            )
    elif not isinstance(value, dict):
        yield Issue(
            f"{path} must be a JSON object, not {_json_kind(value)}.",
            code="structure",
            expression=(path,),
        )
    elif kind == "Resource":
        if isinstance(value.get("resourceType"), str):
            yield from _check_object(value, value["resourceType"], path)
    else:
        yield from _check_object(value, kind, path)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


@cache
def _fields(model_name: str) -> dict[str, tuple[bool, str]]:
    """JSON name → (is an array, JSON kind or the model name of an object) for a model."""
    try:
        model = get_fhir_model_class(model_name)
    except (KeyError, ValueError):
        return {}
    fields: dict[str, tuple[bool, str]] = {}
    for name, info in model.model_fields.items():
        if name == "fhir_comments":
            continue
        shape = _shape(info.annotation)
        if shape is not None:
            fields[info.alias or name] = shape
    return fields


def _shape(annotation: Any) -> tuple[bool, str] | None:
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin is typing.Annotated:
            annotation = args[0]
        elif origin in (list, typing.List):  # noqa: UP006 - the models use typing.List
            is_list, annotation = True, args[0]
        elif origin is not None and len(args) == 1:  # Optional[X] / X | None
            annotation = args[0]
        else:
            break
    if annotation in _JSON_KINDS:
        return is_list, _JSON_KINDS[annotation]
    name = getattr(annotation, "__name__", "")
    if name.endswith("Type"):
        return is_list, name.removesuffix("Type")
    return None
