"""The `$validate` operation: FHIR R4 and the hub's profiles, without storing anything.

`POST /fhir/Bundle/$validate` (and `/fhir/{type}/$validate`) takes the resource as the body,
or a Parameters with a `resource` and optional `profile`s (the `?profile=` parameter works
too), and answers 200 with an OperationOutcome: its issues, or one `information` issue when
all is well. Only a body that is not FHIR JSON (or a type that is not the URL's) is a 4xx.

The caller needs a valid token whose scopes allow reading the type, like every FHIR
route (a token for Practitioner reads only may not validate a Bundle). The operation reads
and writes nothing of the hub's records, so it writes no AuditEvent (the audit trail
records access to patient data the hub holds; what the caller sends is neither stored nor
logged).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from hub.api.deps import Caller, authenticate, fhir_body_schema, read_body
from hub.api.responses import FhirResponse
from hub.errors import Forbidden, InvalidRequest, NotFound
from hub.fhir.search_parameters import supported_types
from hub.fhir.validation import is_resource_type
from hub.profiles import outcome, validate_content
from hub.security.principal import Principal

router = APIRouter(prefix="/fhir", tags=["Validation"], dependencies=[Depends(authenticate)])
Body = Annotated[Any, Depends(read_body)]
ProfileQuery = Annotated[
    list[str] | None, Query(description="A profile (canonical URL) to apply too.")
]


@router.post("/Bundle/$validate", openapi_extra=fhir_body_schema("Bundle", "Parameters"))
def validate_bundle_operation(
    caller: Caller, body: Body, profile: ProfileQuery = None
) -> FhirResponse:
    """Validate a Bundle: base R4, the hub's profiles, references resolving inside it."""
    return _validate(caller, "Bundle", body, profile or [])


@router.post(
    "/{resource_type}/$validate", openapi_extra=fhir_body_schema(*supported_types(), "Parameters")
)
def validate_resource_operation(
    caller: Caller, resource_type: str, body: Body, profile: ProfileQuery = None
) -> FhirResponse:
    """Validate a resource of this type against base R4 and the hub's profiles."""
    if not is_resource_type(resource_type):
        raise NotFound(f"'{resource_type}' is not a FHIR R4 resource type.")
    return _validate(caller, resource_type, body, profile or [])


def _validate(
    caller: Principal, resource_type: str, body: Any, profiles: list[str]
) -> FhirResponse:
    if not caller.allows(resource_type, "r"):
        raise Forbidden(
            f"The access token has no scope that allows reading {resource_type} "
            f"(e.g. system/{resource_type}.r)."
        )
    resource, asked = _content(resource_type, body)
    return FhirResponse(outcome(validate_content(resource, profiles=[*profiles, *asked])))


def _content(resource_type: str, body: Any) -> tuple[Any, list[str]]:
    """The resource to validate and the profiles asked for: the body itself, or the
    `resource` and `profile` parameters of a Parameters body."""
    profiles: list[str] = []
    if resource_type != "Parameters" and isinstance(body, dict) and _is_parameters(body):
        resource = None
        parameters = body.get("parameter")
        for parameter in parameters if isinstance(parameters, list) else []:
            if not isinstance(parameter, dict):
                continue
            if parameter.get("name") == "resource":
                resource = parameter.get("resource")
            elif parameter.get("name") == "profile":
                uri = parameter.get("valueUri", parameter.get("valueCanonical"))
                if isinstance(uri, str):
                    profiles.append(uri)
        if resource is None:
            raise InvalidRequest(
                "The Parameters hold no 'resource' to validate.",
                expression="Parameters.parameter",
            )
        body = resource
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise InvalidRequest("A FHIR resource (a JSON object with a resourceType) was expected.")
    if body["resourceType"] != resource_type:
        raise InvalidRequest(
            f"The resourceType '{body['resourceType']}' does not match the type in the URL "
            f"'{resource_type}'.",
            expression=f"{resource_type}.resourceType",
        )
    return body, profiles


def _is_parameters(body: dict[str, Any]) -> bool:
    return body.get("resourceType") == "Parameters"
