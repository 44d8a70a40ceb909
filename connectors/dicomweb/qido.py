"""QIDO-RS queries (PS3.18 §10.6): the query string, and the DICOM JSON answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydicom.datadict import tag_for_keyword

from connectors.dicomweb.errors import DicomWebProtocolError

QueryValue = str | int
# Characters that QIDO values use and some servers do not percent-decode (Orthanc 1.10
# with DICOMweb 1.7 matches nothing for PatientName=Doe%5EJohn): sent as they are.
_QUERY_SAFE = "*^,-._~:"


def query_string(
    query: Mapping[str, QueryValue],
    includefield: Iterable[str] = (),
    limit: int | None = None,
    offset: int | None = None,
    fuzzymatching: bool | None = None,
) -> str:
    """The encoded query string of a search. Raises ValueError for an unknown attribute."""
    pairs: list[tuple[str, str]] = [(_attribute(key), str(value)) for key, value in query.items()]
    # Repeated includefield rather than a comma list: both are PS3.18, and the
    # DICOMweb 1.7 plugin of Orthanc reads only the first.
    pairs += [("includefield", _includefield(field)) for field in includefield]
    if fuzzymatching is not None:
        pairs.append(("fuzzymatching", "true" if fuzzymatching else "false"))
    if limit is not None:
        pairs.append(("limit", str(limit)))
    if offset is not None:
        pairs.append(("offset", str(offset)))
    return _encode_query(pairs)


def patient_keys(
    patient_id: str | None,
    issuer: str | None,
    name: str | None,
    birth_date: str | None,
) -> dict[str, QueryValue]:
    """The patient matching keys that were given, by their DICOM keywords."""
    keys: dict[str, QueryValue] = {}
    if patient_id is not None:
        keys["PatientID"] = patient_id
    if issuer is not None:
        keys["IssuerOfPatientID"] = issuer
    if name is not None:
        keys["PatientName"] = name
    if birth_date is not None:
        keys["PatientBirthDate"] = birth_date
    return keys


def _attribute(key: str) -> str:
    """A query key as PS3.18 §8.3.4 allows it: a keyword, a tag, or a dotted path of them
    (into sequences). ValueError for anything else, so that a typo is not silently sent
    (some peers ignore unknown keys and would match everything)."""
    for part in key.split("."):
        if _is_tag(part):
            continue
        if tag_for_keyword(part) is None:
            raise ValueError(f"unknown DICOM attribute {part!r} in a query")
    return key


def _includefield(field: str) -> str:
    return field if field == "all" else _attribute(field)


def _is_tag(text: str) -> bool:
    return len(text) == 8 and all(c in "0123456789abcdefABCDEF" for c in text)


def _encode_query(pairs: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{quote(k, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}" for k, v in pairs)


def first_value(dataset: Mapping[str, Any], tag: str) -> str | None:
    """The first value of `tag` (8 hex digits) in a DICOM JSON object, as text."""
    element = dataset.get(tag)
    if isinstance(element, dict):
        values = element.get("Value")
        if isinstance(values, list) and values and values[0] is not None:
            return str(values[0])
    return None


def dicom_json_list(response: httpx.Response, operation: str) -> list[dict[str, Any]]:
    """The DICOM JSON array of a QIDO-RS or metadata answer ([] for 204 No Content)."""
    if response.status_code == 204 or not response.content:
        return []
    try:
        answer = response.json()
    except ValueError as exc:
        raise DicomWebProtocolError(f"{operation}: the answer is not JSON") from exc
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise DicomWebProtocolError(f"{operation}: the answer is not a DICOM JSON array")
    return answer
