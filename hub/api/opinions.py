"""The opinion's operations: `$finalize` signs a draft and sends it back to the referrer;
`$amend` replaces a final opinion with a new signed version, saying why. Drafts are written
with the plain FHIR interactions (POST/PUT DiagnosticReport)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from hub.api.deps import (
    Caller,
    authenticate,
    base_url,
    fhir_body_schema,
    hub_state,
    read_body,
    unit_of_work,
    wake_worker,
)
from hub.api.responses import FhirResponse, resource_response
from hub.errors import Forbidden, InvalidRequest
from hub.fhir.interactions import FhirInteractions
from hub.fhir.validation import validate_resource
from hub.security.keys import signing_key
from hub.settings import Settings
from hub.workflow.opinion_delivery import OpinionChannels
from hub.workflow.opinion_render import opinion_renderer
from hub.workflow.opinions import OpinionDesk

router = APIRouter(prefix="/fhir", tags=["Opinions"], dependencies=[Depends(authenticate)])
Base = Annotated[str, Depends(base_url)]


def opinion_desk(fhir: FhirInteractions, settings: Settings) -> OpinionDesk:
    return OpinionDesk(
        fhir,
        signing_key(settings.signing_key_file),
        opinion_renderer(fhir.repository, settings.default_program),
        OpinionChannels(settings.fhir_sources, settings.mllp_destinations).queue,
    )


@router.post("/DiagnosticReport/{report_id}/$finalize")
def finalize(request: Request, caller: Caller, report_id: str, base: Base) -> FhirResponse:
    """Sign the draft opinion as final (the case's specialist only): its PDF rendered, a
    signed Provenance, and its delivery to the referrer queued."""
    with unit_of_work(request, caller) as fhir:
        stored = opinion_desk(fhir, hub_state(request).settings).finalize(report_id)
    wake_worker(request)
    return resource_response(stored, base)


@router.post("/DiagnosticReport/{report_id}/$amend", openapi_extra=fhir_body_schema("Parameters"))
def amend(
    request: Request,
    caller: Caller,
    report_id: str,
    body: Annotated[Any, Depends(read_body)],
    base: Base,
) -> FhirResponse:
    """Amend a final opinion: Parameters with `resource` (the new DiagnosticReport) and
    `reason`; a new signed version, delivered again."""
    if not caller.allows("DiagnosticReport", "u"):
        raise Forbidden("The access token has no scope that allows updating DiagnosticReport.")
    validate_resource(body, expected_type="Parameters")
    content, reason = None, ""
    for parameter in body.get("parameter") or []:
        if parameter.get("name") == "resource":
            content = parameter.get("resource")
        elif parameter.get("name") == "reason":
            reason = str(parameter.get("valueString") or "")
    if not isinstance(content, dict):
        raise InvalidRequest(
            "The Parameters need a 'resource': the amended DiagnosticReport.",
            expression="Parameters.parameter",
        )
    validate_resource(content, expected_type="DiagnosticReport", where="Parameters.parameter")
    with unit_of_work(request, caller) as fhir:
        stored = opinion_desk(fhir, hub_state(request).settings).amend(report_id, content, reason)
    wake_worker(request)
    return resource_response(stored, base)
