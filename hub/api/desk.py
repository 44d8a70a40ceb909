"""What the case managers' desks (imaging, records) share: the role and scope check, the
case Task a request names, and the small JSON bodies they take."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Request

from hub import codes
from hub.api.deps import Caller, unit_of_work
from hub.errors import Forbidden, InvalidRequest, NotFound
from hub.fhir.interactions import FhirInteractions
from hub.security.access import AccessPolicy
from hub.security.principal import Principal
from hub.storage.repository import StoredResource


def case_manager(
    desk: str, resource_type: str, interaction: str
) -> Callable[[Request, Principal], Principal]:
    """A dependency: the caller is a case manager with a scope for `interaction` on
    `resource_type`."""

    def require(request: Request, caller: Caller) -> Principal:
        # Before any lookup or body, inside a unit of work so that a refusal is audited.
        with unit_of_work(request, caller):
            if not caller.has_role("case-manager"):
                raise Forbidden(f"The {desk} desk is for the role case-manager.")
            if not caller.allows(resource_type, interaction):
                raise Forbidden(
                    f"The access token has no scope that allows '{interaction}' on "
                    f"{resource_type} (e.g. user/{resource_type}.{interaction})."
                )
        return caller

    return require


def policy(fhir: FhirInteractions) -> AccessPolicy:
    if fhir.access is None:  # pragma: no cover - the API always has a caller
        raise Forbidden("No access policy for this caller.")
    return fhir.access


def case_task(fhir: FhirInteractions, task_id: str) -> StoredResource:
    """The case Task the caller names, if the caller may see it."""
    task = fhir.repository.find("Task", task_id)
    is_case = task is not None and any(
        coding.get("system") == codes.CASE_TASK_SYSTEM
        and coding.get("code") == codes.CASE_TASK_CODE
        for coding in (task.content.get("code") or {}).get("coding") or []
    )
    if task is None or not is_case or not policy(fhir).can_see(task):
        raise NotFound(f"Task/{task_id} is not a case the hub knows.", expression="case")
    return task


def json_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """The OpenAPI description of a small JSON request body."""
    schema = {"type": "object", "properties": properties, "required": required}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def text_field(body: Any, name: str, limit: int, *, required: bool = True) -> str:
    """A string member of a JSON object body ("" when optional and absent)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"'{name}' is required: a non-empty string.", expression=name)
    if len(value) > limit:
        raise InvalidRequest(f"'{name}' is longer than {limit} characters.", expression=name)
    return value.strip()
