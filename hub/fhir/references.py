"""References inside resources: finding them with their paths, checking and rewriting them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from hub.errors import Issue
from hub.fhir.validation import is_resource_type

_RELATIVE = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}(/_history/[A-Za-z0-9\-.]{1,64})?$")
_ABSOLUTE = re.compile(r"^(https?://\S+|urn:uuid:[0-9a-fA-F\-]{36}|urn:oid:[0-9.]+|#\S*)$")


def iter_references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(FHIRPath of the Reference.reference, its value) for every reference under `node`."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "reference" and isinstance(child, str):
                yield f"{path}.reference", child
            elif key != "contained":
                yield from iter_references(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from iter_references(child, f"{path}[{index}]")


def references_in(node: Any) -> list[str]:
    """Every Reference.reference under `node` (not inside contained resources), without
    their paths: a loop over a stack, several times faster than `iter_references` on a
    large resource (the store path calls it for every write)."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if key == "reference" and isinstance(child, str):
                    found.append(child)
                # An element named `reference` may hold a Reference (CarePlan.activity).
                elif key != "contained" and isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(child for child in item if isinstance(child, dict | list))
    return found


def is_local(reference: str) -> bool:
    """A relative reference (`Type/id[/_history/v]`) to a resource on this server."""
    return bool(_RELATIVE.match(reference))


def format_problem(reference: str) -> str | None:
    """Why `reference` is not a well-formed Reference.reference, or None."""
    if is_local(reference):
        resource_type = reference.split("/")[0]
        if not is_resource_type(resource_type):
            return (
                f"'{reference}' is not a reference: '{resource_type}' is not a FHIR R4 "
                "resource type."
            )
        return None
    if _ABSOLUTE.match(reference):
        return None
    return (
        f"'{reference}' is not a reference: expected Type/id, an absolute URL, "
        "urn:uuid:, urn:oid: or #contained."
    )


def unresolved(reference: str, path: str) -> Issue:
    return Issue(
        f"The reference '{reference}' does not resolve to a resource on this server.",
        code="not-found",
        expression=(path,),
    )


def rewrite(node: Any, assigned: dict[str, str]) -> Any:
    """A copy of `node` with each reference found in `assigned` replaced by its value."""
    if isinstance(node, dict):
        return {
            key: assigned.get(value, value)
            if key == "reference" and isinstance(value, str)
            else rewrite(value, assigned)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [rewrite(item, assigned) for item in node]
    return node
