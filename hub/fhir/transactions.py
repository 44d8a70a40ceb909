"""Batch and transaction Bundles (FHIR R4 §3.1.0.11).

A transaction is all-or-nothing: it runs in the caller's unit of work, and any failure
raises (the API rolls back). A batch runs each entry in a savepoint of its own and reports
each entry's outcome. In a transaction, `urn:uuid:` fullUrls of created resources are
replaced by the ids the hub assigns, in every reference of every entry.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from hub.errors import HubError, InvalidRequest, Issue, MethodNotAllowed, NotFound
from hub.fhir.bundles import response_entry, searchset
from hub.fhir.interactions import FhirInteractions, parse_etag, require_type
from hub.fhir.references import rewrite
from hub.fhir.validation import validate_resource
from hub.storage.repository import new_id

# FHIR R4 §3.1.0.11.2: the order in which a transaction's entries are processed.
METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}


def process_bundle(
    interactions: FhirInteractions, bundle: Any, base: str, *, models: bool = True
) -> dict[str, Any]:
    """Run a batch or transaction Bundle; return its batch-response/transaction-response.

    `models=False` skips the model validation (see `validate_resource`).
    """
    validate_resource(bundle, expected_type="Bundle", models=models)
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise InvalidRequest(
            f"POST to the base accepts a batch or transaction Bundle, not '{kind}'.",
            expression="Bundle.type",
        )
    entries = list(bundle.get("entry") or [])
    for index, entry in enumerate(entries):
        _check_entry(index, entry)
    _check_full_urls(entries)
    if kind == "transaction":
        responses = _transaction(interactions, entries, base)
    else:
        responses = _batch(interactions, entries, base)
    return {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": responses,
    }


def _check_entry(index: int, entry: dict[str, Any]) -> None:
    request = entry.get("request") or {}
    where = f"Bundle.entry[{index}].request"
    if request.get("method") not in METHOD_ORDER:
        raise InvalidRequest(
            f"Entry {index}: request.method must be one of {', '.join(METHOD_ORDER)}.",
            expression=f"{where}.method",
        )
    if not request.get("url"):
        raise InvalidRequest(f"Entry {index} has no request.url.", expression=f"{where}.url")
    if request["method"] in ("POST", "PUT") and "resource" not in entry:
        raise InvalidRequest(
            f"Entry {index}: a {request['method']} needs a resource.",
            expression=f"Bundle.entry[{index}].resource",
        )


def _check_full_urls(entries: list[dict[str, Any]]) -> None:
    """bdl-7: a fullUrl names one entry (else urn:uuid references would be ambiguous)."""
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        url = entry.get("fullUrl")
        if url and url in seen:
            raise InvalidRequest(
                f"Entry {index} repeats the fullUrl '{url}' of an earlier entry.",
                expression=f"Bundle.entry[{index}].fullUrl",
            )
        if url:
            seen.add(url)


def _check_identities(entries: list[dict[str, Any]]) -> None:
    """FHIR R4 §3.1.0.11.2: a transaction whose writes touch one resource twice fails."""
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        method = entry["request"]["method"]
        if "_assigned" in entry:
            identity = entry["_assigned"][0]
        elif method in ("PUT", "DELETE"):
            identity = entry["request"]["url"].lstrip("/").partition("?")[0]
        else:
            continue
        if identity in seen:
            raise InvalidRequest(
                f"Entry {index} writes {identity}, which an earlier entry writes too.",
                expression=f"Bundle.entry[{index}].request.url",
            )
        seen.add(identity)


def _transaction(
    interactions: FhirInteractions, entries: list[dict[str, Any]], base: str
) -> list[dict[str, Any]]:
    assigned = _assign_ids(interactions, entries)
    _check_identities(entries)
    order = sorted(range(len(entries)), key=lambda i: METHOD_ORDER[entries[i]["request"]["method"]])
    responses: list[dict[str, Any]] = [{} for _ in entries]
    for index in order:
        entry = entries[index]
        if "resource" in entry:
            entry = {**entry, "resource": rewrite(entry["resource"], assigned)}
        try:
            responses[index] = _run_entry(interactions, index, entry, base, assigned)
        except HubError as exc:
            exc.issues = [_located(issue, index) for issue in exc.issues]
            raise
    interactions.finish()
    return responses


def _batch(
    interactions: FhirInteractions, entries: list[dict[str, Any]], base: str
) -> list[dict[str, Any]]:
    responses = []
    for index, entry in enumerate(entries):
        savepoint = interactions.session.begin_nested()
        try:
            response = _run_entry(interactions, index, entry, base, {})
            interactions.finish()
            savepoint.commit()
        except HubError as exc:
            savepoint.rollback()
            response = {
                "response": {
                    "status": str(exc.status_code),
                    "outcome": exc.operation_outcome(),
                }
            }
        responses.append(response)
    return responses


def _assign_ids(interactions: FhirInteractions, entries: list[dict[str, Any]]) -> dict[str, str]:
    """fullUrl → `Type/id` for each create and conditional update: the resource its
    condition (ifNoneExist, or the PUT's query) matches, else a new id."""
    writes: list[tuple[int, str, str | None]] = []  # (entry, type, condition)
    for index, entry in enumerate(entries):
        request = entry["request"]
        path, _, query = request["url"].lstrip("/").partition("?")
        if request["method"] == "POST":
            condition = request.get("ifNoneExist")
            if "/" in path:
                raise InvalidRequest(
                    f"Entry {index}: a POST's url names a resource type, not '{path}'.",
                    expression=f"Bundle.entry[{index}].request.url",
                )
        elif request["method"] == "PUT" and query and "/" not in path:
            condition = query  # conditional update (FHIR R4 §3.1.0.4.3)
        else:
            continue
        _require_type(path, index)
        writes.append((index, path, condition))
    conditional = [(i, path, condition) for i, path, condition in writes if condition]
    try:
        found = interactions.conditional_matches([(path, c) for _, path, c in conditional])
    except HubError as exc:
        # Rare: find the entry to name in the error by running the conditions one by one.
        for index, path, condition in conditional:
            try:
                interactions.conditional_match(path, condition or "")
            except HubError as located:
                located.issues = [_located(issue, index) for issue in located.issues]
                raise located from exc
        raise
    matches = {index: match for (index, _, _), match in zip(conditional, found, strict=True)}
    assigned: dict[str, str] = {}
    for index, path, _ in writes:
        existing = matches.get(index)
        target = existing.reference if existing else f"{path}/{new_id()}"
        entries[index]["_assigned"] = (target, existing)
        if entries[index].get("fullUrl"):
            assigned[entries[index]["fullUrl"]] = target
    return assigned


def _run_entry(
    interactions: FhirInteractions,
    index: int,
    entry: dict[str, Any],
    base: str,
    assigned: dict[str, str],
) -> dict[str, Any]:
    request = entry["request"]
    method, url = request["method"], request["url"].lstrip("/")
    path, _, query = url.partition("?")
    parts = path.split("/")
    where = f"Bundle.entry[{index}].resource"
    if method == "POST":
        target, existing = entry.get("_assigned") or (None, None)
        if existing is not None:
            return {"response": response_entry(base, existing, 200)}
        stored, created = interactions.create(
            parts[0],
            entry["resource"],
            where=where,
            if_none_exist=None if target else request.get("ifNoneExist"),
            resource_id=target.split("/")[1] if target else None,
            validated=True,  # the whole Bundle was validated first
        )
        return {"response": response_entry(base, stored, 201 if created else 200)}
    if method == "PUT" and query and len(parts) == 1:
        target, existing = entry["_assigned"]
        if existing is None:  # no match: created under the id assigned above
            stored, _ = interactions.create(
                parts[0],
                entry["resource"],
                where=where,
                resource_id=target.split("/")[1],
                validated=True,
            )
            return {"response": response_entry(base, stored, 201)}
        resource = {**entry["resource"], "id": existing.resource_id}
        stored, _ = interactions.update(
            parts[0], existing.resource_id, resource, where=where, validated=True
        )
        return {"response": response_entry(base, stored, 200)}
    if method == "PUT" and len(parts) == 2:
        try:
            if_match = parse_etag(request.get("ifMatch"))
        except InvalidRequest as exc:
            raise InvalidRequest(
                exc.diagnostics, expression=f"Bundle.entry[{index}].request.ifMatch"
            ) from exc
        stored, created = interactions.update(
            parts[0],
            parts[1],
            entry["resource"],
            where=where,
            if_match=if_match,
            validated=True,
        )
        return {"response": response_entry(base, stored, 201 if created else 200)}
    if method == "DELETE" and len(parts) == 2:
        interactions.delete(parts[0], parts[1])
        return {"response": {"status": "204 No Content"}}
    if method == "GET" and len(parts) == 2 and not query:
        stored = interactions.read(parts[0], parts[1])
        return {"resource": stored.content, "response": response_entry(base, stored, 200)}
    if method == "GET" and len(parts) == 1:
        _require_type(parts[0], index)
        params = parse_qsl(query, keep_blank_values=True)
        search = interactions.parse_search(parts[0], params)
        page = interactions.search(search)
        return {"resource": searchset(base, search, params, page), "response": {"status": "200 OK"}}
    raise MethodNotAllowed(
        f"Entry {index}: {method} {url} is not supported in a Bundle.",
        expression=f"Bundle.entry[{index}].request.url",
    )


def _require_type(resource_type: str, index: int) -> None:
    """NotFound, located at the entry's request.url, unless the hub serves the type."""
    try:
        require_type(resource_type)
    except NotFound as exc:
        raise NotFound(
            f"Entry {index}: {exc.diagnostics}", expression=f"Bundle.entry[{index}].request.url"
        ) from exc


def _located(issue: Issue, index: int) -> Issue:
    """An issue whose path is prefixed with its entry, unless it already names one."""
    expressions = tuple(
        e if e.startswith("Bundle.") else f"Bundle.entry[{index}].{e}" for e in issue.expression
    ) or (f"Bundle.entry[{index}]",)
    return Issue(issue.diagnostics, issue.code, issue.severity, expressions)
