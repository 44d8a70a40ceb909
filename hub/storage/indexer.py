"""Extracts the search-index values of a resource, following the search parameter table."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

from hub.fhir.dates import EARLIEST, LATEST, date_range
from hub.fhir.references import references_in
from hub.fhir.search_parameters import SearchParameter, search_parameters

# Every reference anywhere in a resource, indexed under this name: it finds all that
# points at a patient or a case (the record bundle) without one parameter per element.
ANY_REFERENCE = "_reference"


class IndexValue(NamedTuple):
    """One row of the search index, before it is tied to its resource."""

    param: str
    system: str | None = None
    value: str | None = None
    low: datetime | None = None
    high: datetime | None = None


def normalise_text(text: str) -> str:
    """How string parameters are compared: case-insensitive, whitespace collapsed."""
    return " ".join(text.split()).casefold()[:255]


def split_reference(reference: str) -> tuple[str, str] | None:
    """`Patient/1`, `http://x/fhir/Patient/1/_history/2` → ("Patient", "1"); else None."""
    if reference.startswith(("#", "urn:")):
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2 or not parts[-1] or not parts[-2][:1].isupper():
        return None
    return parts[-2], parts[-1]


def index_values(resource_type: str, resource: dict[str, Any]) -> list[IndexValue]:
    """All index rows of `resource` (deduplicated, in a stable order), for the parameters of
    its type."""
    rows: dict[IndexValue, None] = {}
    for param in search_parameters().get(resource_type, {}).values():
        for value in param.evaluate(resource):
            rows.update(dict.fromkeys(_values_of(param, value)))
    for reference in references_in(resource):
        target = split_reference(reference)
        if target:
            rows[IndexValue(ANY_REFERENCE, system=target[0], value=target[1])] = None
    return list(rows)


def _values_of(param: SearchParameter, value: Any) -> Iterator[IndexValue]:
    if param.type == "token":
        yield from _tokens(param.name, value)
    elif param.type == "string":
        yield from _strings(param.name, value)
    elif param.type == "reference":
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            target = split_reference(value["reference"])
            if target and (not param.targets or target[0] in param.targets):
                yield IndexValue(param.name, system=target[0], value=target[1])
    elif param.type == "date":
        low, high = _date_bounds(value)
        if low is not None:
            yield IndexValue(param.name, low=low, high=high)


def _tokens(name: str, value: Any) -> Iterator[IndexValue]:
    if isinstance(value, (str, bool, int)):
        text = str(value).lower() if isinstance(value, bool) else str(value)
        yield IndexValue(name, value=text[:255])
    elif isinstance(value, dict):
        if "coding" in value or "text" in value and "value" not in value:
            for coding in value.get("coding") or []:
                yield from _tokens(name, coding)
        elif "code" in value:  # Coding
            yield IndexValue(name, system=value.get("system"), value=str(value["code"])[:255])
        elif "value" in value:  # Identifier
            yield IndexValue(name, system=value.get("system"), value=str(value["value"])[:255])


def _strings(name: str, value: Any) -> Iterator[IndexValue]:
    if isinstance(value, str):
        yield IndexValue(name, value=normalise_text(value))
    elif isinstance(value, dict):  # HumanName: each part on its own, and the whole
        parts = [value.get("text"), value.get("family"), *(value.get("given") or [])]
        for part in parts:
            if isinstance(part, str):
                yield IndexValue(name, value=normalise_text(part))


def _date_bounds(value: Any) -> tuple[datetime | None, datetime | None]:
    try:
        if isinstance(value, str):
            return date_range(value)
        if isinstance(value, dict) and ("start" in value or "end" in value):
            low = date_range(value["start"])[0] if value.get("start") else EARLIEST
            high = date_range(value["end"])[1] if value.get("end") else LATEST
            return low, high
    except ValueError:
        pass  # not a date (e.g. effectiveTiming): not indexed
    return None, None
