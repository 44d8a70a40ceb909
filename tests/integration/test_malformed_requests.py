"""Malformed requests: each gets its 4xx and an OperationOutcome, and stores nothing.

The table is data: a request (method, url, body, headers), what the test must set up first,
the status the API answers with and, where the API can name one, the FHIRPath expression of
the problem. `{patient}`, `{deleted}` and `{task}` in urls and JSON bodies stand for ids the
test creates. Transaction cases put valid entries before the bad one, so that all-or-nothing
is really tested: the row counts before and after must be equal.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.backends import sqlite_only
from tests.fhir_client import assert_outcome, patient, post, referral, row_counts

LIMIT = 256 * 1024  # max_request_bytes in the tests' settings
URN_PATIENT = "urn:uuid:6f1c2b9e-3d4a-4b8c-9e21-0a7d5c3f8b11"
URN_OBSERVATION = "urn:uuid:0b9e7c44-1f2a-4e3d-8c5b-7a6d9e0f1c22"
URN_NOBODY = "urn:uuid:5d0c1e2f-0000-4000-8000-000000000000"  # names no entry


# -- request builders ------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunked:
    """A body sent in chunks without Content-Length (so only the stream can be measured)."""

    data: bytes


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: Any = None  # dict/list: JSON with {placeholders}; bytes: sent as is; Chunked
    headers: dict[str, str] = field(default_factory=dict)
    arrange: tuple[str, ...] = ()  # names in ARRANGE: what must exist first


def bad(
    case_id: str,
    request_line: str,
    body: Any,
    status: int,
    expression: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    arrange: tuple[str, ...] = (),
) -> Any:
    """One row of the table: `request_line` is "METHOD url"."""
    method, url = request_line.split(" ", 1)
    request = Request(method, url, body, headers or {}, arrange)
    return pytest.param(request, status, expression, id=case_id)


def observation(**changes: Any) -> dict[str, Any]:
    """A valid Observation of the test's Patient, with `changes` (None removes an element)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/{patient}"},
        "valueQuantity": {"value": 72, "unit": "/min"},
    }
    resource.update(changes)
    return {key: value for key, value in resource.items() if value is not None}


def transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    """A Bundle whose first entry is a valid new Patient, then `entries`."""
    first = post_entry(patient("Newborn"), URN_PATIENT)
    return {"resourceType": "Bundle", "type": kind, "entry": [first, *entries]}


def post_entry(
    resource: dict[str, Any], full_url: str | None = None, url: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": url or resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def put_patient_entry(if_match: str | None = None) -> dict[str, Any]:
    """PUT of the test's Patient (optionally with an ifMatch)."""
    request = {"method": "PUT", "url": "Patient/{patient}"}
    if if_match:
        request["ifMatch"] = if_match
    return {"resource": patient(id="{patient}"), "request": request}


def parameters(**values: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [{"name": name, "valueCode": value} for name, value in values.items()],
    }


def nested_extension(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "x"}
    for _ in range(levels):
        extension = {"url": "http://example.org/node", "extension": [extension]}
    return extension


# -- bodies and headers too long for a row of the table -------------------------------------

TRUNCATED = b'{"resourceType": "Patient", "birthDa'
TRAILING_COMMA = b'{"resourceType": "Patient",}'
LATIN1 = '{"resourceType": "Patient", "name": [{"family": "Müller"}]}'.encode("latin-1")
UTF16 = json.dumps(patient()).encode("utf-16")
NAN = b'{"resourceType": "Observation", "status": "final", "valueQuantity": {"value": NaN}}'
TOO_DEEP = patient(extension=[nested_extension(60)])  # 120+ levels of JSON
OVERSIZED = json.dumps(patient("x" * LIMIT)).encode()
NO_TYPE = {"name": [{"family": "Nobody"}]}
SPACESHIP = {"resourceType": "Spaceship"}
DATATYPE = patient(contained=[{"resourceType": "HumanName"}])  # a data type, not a resource
SYSTEM_42 = observation(code={"coding": [{"system": 42, "code": "8867-4"}]})
NO_STATUS = observation(status=None)
BOGUS_STATUS = observation(status="bogus")
TWO_VALUES = observation(valueString="seventy-two")  # and valueQuantity
LONG_ID = "a" * 65
LONG_ID_PATIENT = patient(id=LONG_ID)
NOT_A_DATE = patient(birth_date="soon")
BORN_12 = patient(birth_date=12)
NOT_A_REF = observation(subject={"reference": "not a ref"})
ALIEN_REF = observation(subject={"reference": "Spaceship/1"})
ABSENT_REF = observation(subject={"reference": "Patient/absent"})
HUGE = "99999999999999999999"
SAME = patient(id="{patient}")
TWIN = patient("Twin")

TEXT_PLAIN = {"Content-Type": "text/plain"}
NO_MEDIA_TYPE = {"Content-Type": ""}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOT_ETAG = {"If-Match": "version-one"}
STALE_ETAG = {"If-Match": 'W/"7"'}
IF_TWIN = {"If-None-Exist": "family=Twin"}

TX_NOT_FHIR = transaction(post_entry(SPACESHIP, url="Patient"))
TX_BAD_MIDDLE = transaction(
    post_entry(BOGUS_STATUS),
    post_entry(observation(subject={"reference": URN_PATIENT}), URN_OBSERVATION),
)
TX_URN = transaction(post_entry(observation(subject={"reference": URN_NOBODY})))
COLLECTION = transaction(kind="collection")
TX_NO_REQUEST = transaction({"resource": patient("Lost")})
TX_TWO_FULL_URLS = transaction(post_entry(patient("Again"), URN_PATIENT))
TX_WRITES_TWICE = transaction(
    put_patient_entry(), {"request": {"method": "DELETE", "url": "Patient/{patient}"}}
)
TX_UNKNOWN_TYPE = transaction(post_entry(patient(), url="Spaceship"))
TX_NOT_ETAG = transaction(put_patient_entry(if_match="version-one"))
TX_LAST_STALE = transaction(
    post_entry(observation(subject={"reference": URN_PATIENT})),
    put_patient_entry(if_match='W/"7"'),
)

COMPLETE = parameters(status="completed")
STATUSLESS = parameters(businessStatus="assigned")
CASE = ("case",)  # arrange: a referral whose case Task is "received"

POST_OBSERVATION = "POST /fhir/Observation"
POST_SEARCH = "POST /fhir/Patient/_search"
PUT_PATIENT = "PUT /fhir/Patient/{patient}"
PUT_LONG_ID = f"PUT /fhir/Patient/{LONG_ID}"
TRANSITION = "POST /fhir/Task/{task}/$transition"

# -- the table: id, "METHOD url", body, status, expression -----------------------------------

CASES = [
    # The body is not a JSON object of FHIR's media type.
    bad("empty-body", "POST /fhir/Patient", b"", 400),
    bad("json-truncated", "POST /fhir/Patient", TRUNCATED, 400),
    bad("json-trailing-comma", "POST /fhir/Patient", TRAILING_COMMA, 400),
    bad("json-array-not-object", "POST /fhir/Patient", [patient()], 400, "Patient"),
    bad("not-utf8-latin1", "POST /fhir/Patient", LATIN1, 400),
    bad("not-utf8-utf16", "POST /fhir/Patient", UTF16, 400),
    bad("json-nan-literal", POST_OBSERVATION, NAN, 400),
    bad("json-nested-too-deep", "POST /fhir/Patient", TOO_DEEP, 400),
    bad("content-type-text-plain", "POST /fhir/Patient", patient(), 415, headers=TEXT_PLAIN),
    bad("content-type-empty", "POST /fhir/Patient", patient(), 415, headers=NO_MEDIA_TYPE),
    bad("body-over-limit", "POST /fhir/Patient", OVERSIZED, 413),
    bad("body-over-limit-chunked", "POST /fhir/Patient", Chunked(OVERSIZED), 413),
    # The resource type.
    bad("no-resourceType", "POST /fhir/Patient", NO_TYPE, 400, "Patient.resourceType"),
    bad("resourceType-not-url", "POST /fhir/Patient", observation(), 400, "Patient.resourceType"),
    bad("unknown-type-in-url", "POST /fhir/Spaceship", SPACESHIP, 404),
    bad("not-fhir-type", "POST /fhir", TX_NOT_FHIR, 422, "Bundle.entry[1].resource.resourceType"),
    bad("contained-type", "POST /fhir/Patient", DATATYPE, 422, "Patient.contained[0].resourceType"),
    # Elements.
    bad("unknown-element", "POST /fhir/Patient", patient(foo="bar"), 422, "Patient.foo"),
    bad("birthDate-number", "POST /fhir/Patient", BORN_12, 422, "Patient.birthDate"),
    bad("birthDate-not-date", "POST /fhir/Patient", NOT_A_DATE, 422, "Patient.birthDate"),
    bad("birthDate-zero", "POST /fhir/Patient", patient(birthDate=0), 422, "Patient.birthDate"),
    bad("boolean-as-string", "POST /fhir/Patient", patient(active="yes"), 422, "Patient.active"),
    bad("boolean-as-number", "POST /fhir/Patient", patient(active=1), 422, "Patient.active"),
    bad(
        "object-not-array", "POST /fhir/Patient", patient(name={"family": "X"}), 422, "Patient.name"
    ),
    bad("nested-wrong-type", POST_OBSERVATION, SYSTEM_42, 422, "Observation.code.coding[0].system"),
    bad("missing-required", POST_OBSERVATION, NO_STATUS, 422, "Observation.status"),
    bad("invalid-code", POST_OBSERVATION, BOGUS_STATUS, 422, "Observation.status"),
    bad("choice-two-values", POST_OBSERVATION, TWO_VALUES, 422, "Observation.value"),
    bad("id-over-64-chars", PUT_LONG_ID, LONG_ID_PATIENT, 422, "Patient.id"),
    # References.
    bad("ref-bad-format", POST_OBSERVATION, NOT_A_REF, 422, "Observation.subject.reference"),
    bad("ref-not-fhir-type", POST_OBSERVATION, ALIEN_REF, 422, "Observation.subject.reference"),
    bad("ref-absent-patient", POST_OBSERVATION, ABSENT_REF, 422, "Observation.subject.reference"),
    # Search.
    bad("search-unknown-param", "GET /fhir/Patient?foo=bar", None, 400, "Patient?foo"),
    bad("search-bad-date", "GET /fhir/Patient?birthdate=soon", None, 400, "Patient?birthdate"),
    bad("search-bad-count", "GET /fhir/Patient?_count=-5", None, 400, "Patient?_count"),
    bad("offset-overflow", f"GET /fhir/Patient?_offset={HUGE}", None, 400, "Patient?_offset"),
    bad("search-bad-sort", "GET /fhir/Patient?_sort=name", None, 400, "Patient?_sort"),
    bad("search-bad-modifier", "GET /fhir/Patient?name:exact=Sam", None, 400, "Patient?name"),
    bad("bad-include", "GET /fhir/Patient?_include=Patient:x", None, 400, "Patient?_include"),
    bad("search-unknown-type", "GET /fhir/Spaceship?name=x", None, 404),
    bad("post-search-unknown", POST_SEARCH, b"foo=1", 400, "Patient?foo", headers=FORM),
    bad("post-search-json-body", POST_SEARCH, patient(), 415),
    bad("history-offset-overflow", f"GET /fhir/Patient/_history?_offset={HUGE}", None, 400),
    # Instance interactions.
    bad("read-unknown-id", "GET /fhir/Patient/does-not-exist", None, 404),
    bad("patch-not-allowed", "PATCH /fhir/Patient/{patient}", [{"op": "remove"}], 405),
    bad("delete-on-type", "DELETE /fhir/Patient", None, 405),
    bad("put-id-mismatch", "PUT /fhir/Patient/{patient}", patient(id="other"), 400, "Patient.id"),
    bad("put-without-id", "PUT /fhir/Patient/{patient}", patient(), 400, "Patient.id"),
    bad("if-match-not-etag", PUT_PATIENT, SAME, 400, "If-Match", headers=NOT_ETAG),
    bad("if-match-stale", PUT_PATIENT, SAME, 412, headers=STALE_ETAG),
    bad("vread-non-numeric", "GET /fhir/Patient/{patient}/_history/latest", None, 404),
    bad("vread-absent-version", "GET /fhir/Patient/{patient}/_history/9", None, 404),
    bad("read-deleted", "GET /fhir/Patient/{deleted}", None, 410, arrange=("deleted",)),
    bad("if-none-exist-two", "POST /fhir/Patient", TWIN, 412, headers=IF_TWIN, arrange=("twins",)),
    # Batches and transactions (each puts a valid new Patient first).
    bad("tx-bad-middle", "POST /fhir", TX_BAD_MIDDLE, 422, "Bundle.entry[1].resource.status"),
    bad("tx-bad-urn", "POST /fhir", TX_URN, 422, "Bundle.entry[1].resource.subject.reference"),
    bad("bundle-collection", "POST /fhir", COLLECTION, 400, "Bundle.type"),
    bad("tx-no-request", "POST /fhir", TX_NO_REQUEST, 400, "Bundle.entry[1].request.method"),
    bad("tx-duplicate-fullUrl", "POST /fhir", TX_TWO_FULL_URLS, 400, "Bundle.entry[1].fullUrl"),
    bad("tx-writes-twice", "POST /fhir", TX_WRITES_TWICE, 400, "Bundle.entry[2].request.url"),
    bad("tx-unknown-type", "POST /fhir", TX_UNKNOWN_TYPE, 404, "Bundle.entry[1].request.url"),
    bad("tx-if-match-not-etag", "POST /fhir", TX_NOT_ETAG, 400, "Bundle.entry[1].request.ifMatch"),
    bad("tx-last-entry-stale", "POST /fhir", TX_LAST_STALE, 412, "Bundle.entry[2]"),
    # The case workflow.
    bad("transition-illegal", TRANSITION, COMPLETE, 409, "Task.status", arrange=CASE),
    bad("transition-no-status", TRANSITION, STATUSLESS, 400, "Parameters.parameter", arrange=CASE),
    bad("transition-unknown-task", "POST /fhir/Task/nope/$transition", COMPLETE, 404),
]


# Refused while the request itself is read (media type, size, JSON, the resource's own
# elements, the route): before any query, the same on every backend, so run on SQLite only.
# The others (references, searches, versions, transactions, the workflow) run on both.
REFUSED_BEFORE_STORAGE = {
    "empty-body",
    "json-truncated",
    "json-trailing-comma",
    "json-array-not-object",
    "not-utf8-latin1",
    "not-utf8-utf16",
    "json-nan-literal",
    "json-nested-too-deep",
    "content-type-text-plain",
    "content-type-empty",
    "body-over-limit",
    "body-over-limit-chunked",
    "no-resourceType",
    "resourceType-not-url",
    "unknown-type-in-url",
    "contained-type",
    "unknown-element",
    "birthDate-number",
    "birthDate-not-date",
    "birthDate-zero",
    "boolean-as-string",
    "boolean-as-number",
    "object-not-array",
    "nested-wrong-type",
    "missing-required",
    "invalid-code",
    "choice-two-values",
    "post-search-json-body",
    "patch-not-allowed",
    "delete-on-type",
    "put-id-mismatch",
    "put-without-id",
}
assert {case.id for case in CASES} >= REFUSED_BEFORE_STORAGE  # no id misspelt
STORAGE_CASES = [case for case in CASES if case.id not in REFUSED_BEFORE_STORAGE]
EARLY_CASES = [case for case in CASES if case.id in REFUSED_BEFORE_STORAGE]


# -- what the cases need first ---------------------------------------------------------------


def _deleted(client: TestClient, ids: dict[str, str]) -> None:
    ids["deleted"] = post(client, patient("Gone"))["id"]
    assert client.delete(f"/fhir/Patient/{ids['deleted']}").status_code == 200


def _twins(client: TestClient, ids: dict[str, str]) -> None:
    post(client, patient("Twin"))
    post(client, patient("Twin"))


def _case(client: TestClient, ids: dict[str, str]) -> None:
    request = post(client, referral(f"Patient/{ids['patient']}"))
    found = client.get("/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"})
    assert found.status_code == 200, found.text
    (entry,) = found.json()["entry"]
    assert entry["resource"]["status"] == "received"
    ids["task"] = entry["resource"]["id"]


ARRANGE: dict[str, Callable[[TestClient, dict[str, str]], None]] = {
    "deleted": _deleted,
    "twins": _twins,
    "case": _case,
}


def _fill(value: Any, ids: dict[str, str]) -> Any:
    """`value` with the {placeholders} in its strings replaced by the ids."""
    if isinstance(value, str):
        return value.format(**ids) if "{" in value else value
    if isinstance(value, dict):
        return {key: _fill(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, ids) for item in value]
    return value


def _content(body: Any, ids: dict[str, str]) -> bytes | Iterator[bytes] | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, Chunked):
        return iter([body.data[i : i + 8192] for i in range(0, len(body.data), 8192)])
    return json.dumps(_fill(body, ids)).encode()


def send(client: TestClient, request: Request, ids: dict[str, str]) -> Any:
    return client.request(
        request.method,
        _fill(request.url, ids),
        content=_content(request.body, ids),
        headers=request.headers,
    )


# -- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize(("request_", "status", "expression"), STORAGE_CASES)
def test_malformed_request_is_refused_and_stores_nothing(
    client: TestClient,
    database_url: str,
    request_: Request,
    status: int,
    expression: str | None,
) -> None:
    refused_and_nothing_stored(client, database_url, request_, status, expression)


@sqlite_only
@pytest.mark.parametrize(("request_", "status", "expression"), EARLY_CASES)
def test_malformed_request_is_refused_before_storage_and_stores_nothing(
    client: TestClient,
    database_url: str,
    request_: Request,
    status: int,
    expression: str | None,
) -> None:
    refused_and_nothing_stored(client, database_url, request_, status, expression)


def refused_and_nothing_stored(
    client: TestClient,
    database_url: str,
    request_: Request,
    status: int,
    expression: str | None,
) -> None:
    ids = {"patient": post(client, patient())["id"]}
    for name in request_.arrange:
        ARRANGE[name](client, ids)
    before = row_counts(database_url)

    response = send(client, request_, ids)

    assert 400 <= status < 500
    assert_outcome(response, status, expression=expression)
    assert row_counts(database_url) == before
