"""Case operations: the record bundle of a referral, what its records still lack, and moving
a case between states."""

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
)
from hub.api.desk import policy
from hub.api.responses import FhirResponse, resource_response
from hub.errors import InvalidRequest
from hub.fhir.validation import validate_resource
from hub.workflow.checklist import case_program, evaluate, load_checklist
from hub.workflow.completeness import summary
from hub.workflow.record_bundle import record_bundle
from hub.workflow.transfer_of_care import request_transfer

router = APIRouter(prefix="/fhir", tags=["Cases"], dependencies=[Depends(authenticate)])
Base = Annotated[str, Depends(base_url)]


@router.get("/ServiceRequest/{referral_id}/$record-bundle")
def get_record_bundle(
    request: Request, caller: Caller, referral_id: str, base: Base
) -> FhirResponse:
    """Everything the caller may see of the case of this referral, as one Bundle."""
    with unit_of_work(request, caller) as fhir:
        return FhirResponse(record_bundle(fhir, referral_id, base))


@router.get("/Task/{task_id}/$completeness")
def get_completeness(request: Request, caller: Caller, task_id: str) -> FhirResponse:
    """The case's checklist (config/checklist.yaml): each item present or missing, with
    whether its program requires it and the records that satisfy it."""
    settings = hub_state(request).settings
    with unit_of_work(request, caller) as fhir:
        task = fhir.fetch("Task", task_id)
        referral = fhir.cases.referral_of(task)
        status = evaluate(
            fhir.searcher,
            load_checklist(settings.checklist_file),
            task,
            referral,
            case_program(task, settings.default_program),
            fhir.access.visible if fhir.access else None,
        )
        fhir.audited_export("operation", [task, referral])
        return FhirResponse(summary(status))


@router.post("/Task/{task_id}/$transition", openapi_extra=fhir_body_schema("Parameters"))
def transition(
    request: Request,
    caller: Caller,
    task_id: str,
    body: Annotated[Any, Depends(read_body)],
    base: Base,
) -> FhirResponse:
    """Move a case: Parameters with status, optional businessStatus and reason."""
    validate_resource(body, expected_type="Parameters")
    values = _parameters(body)
    if "status" not in values:
        raise InvalidRequest("The Parameters need a 'status'.", expression="Parameters.parameter")
    with unit_of_work(request, caller) as fhir:
        stored = fhir.transition(
            task_id, values["status"], values.get("businessStatus"), values.get("reason")
        )
    return resource_response(stored, base)


@router.post("/Task/{task_id}/$transfer-care", openapi_extra=fhir_body_schema("Parameters"))
def transfer_care(
    request: Request,
    caller: Caller,
    task_id: str,
    body: Annotated[Any, Depends(read_body)],
    base: Base,
) -> FhirResponse:
    """After the opinion, the family moves care: a case manager asks the referring
    organization to hand it over (Parameters: `reason`); the new ServiceRequest."""
    with unit_of_work(request, caller) as fhir:
        policy(fhir).require_role("case-manager")
        validate_resource(body, expected_type="Parameters")
        stored = request_transfer(fhir, task_id, _parameters(body).get("reason", ""))
    return resource_response(stored, base, status=201)


def _parameters(body: dict[str, Any]) -> dict[str, str]:
    values = {}
    for index, parameter in enumerate(body.get("parameter") or []):
        value = parameter.get("valueCode", parameter.get("valueString"))
        if not isinstance(value, str):
            raise InvalidRequest(
                f"Parameter '{parameter.get('name')}' needs a valueCode or valueString.",
                expression=f"Parameters.parameter[{index}]",
            )
        values[str(parameter.get("name"))] = value
    return values
