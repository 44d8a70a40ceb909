"""Small helpers the API tests share: minimal valid resources and checks on responses."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub import codes
from hub.storage.tables import ResourceRow, ResourceVersionRow, SearchIndexRow


def patient(
    family: str = "Testchild", birth_date: str = "2017-03-04", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Sam"]}],
        "birthDate": birth_date,
        "gender": "female",
        **extra,
    }


def referral(patient_ref: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [
            {"coding": [{"system": codes.CASE_CATEGORY_SYSTEM, "code": codes.SECOND_OPINION}]}
        ],
        "subject": {"reference": patient_ref},
        "note": [{"text": "Is proton therapy an option?"}],
        **extra,
    }


def post(client: TestClient, resource: dict[str, Any], **headers: str) -> dict[str, Any]:
    """POST a resource that must be created; return the stored resource."""
    response = client.post(
        f"/fhir/{resource['resourceType']}", content=json.dumps(resource), headers=headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_outcome(response: Any, status: int, *, expression: str | None = None) -> None:
    """The response is an OperationOutcome with `status` (and an issue at `expression`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"] and all(issue.get("diagnostics") for issue in outcome["issue"])
    if expression is not None:
        expressions = [e for issue in outcome["issue"] for e in issue.get("expression", [])]
        assert expression in expressions, expressions


def row_counts(database_url: str) -> tuple[int, int, int]:
    """(current resources, versions, index rows): to prove nothing partial was stored.

    The audit trail is left out: a refused request is audited, on purpose.
    """
    from hub.storage.db import make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            return tuple(  # type: ignore[return-value]
                session.scalar(
                    select(func.count()).select_from(table).where(table.res_type != "AuditEvent")
                )
                or 0
                for table in (ResourceRow, ResourceVersionRow, SearchIndexRow)
            )
    finally:
        engine.dispose()


def token(
    settings: Any,
    *,
    subject: str = "test-ehr",
    roles: tuple[str, ...] = ("referrer", "case-manager"),
    scope: str = "system/*.cruds",
    fhir_user: str | None = None,
    programs: tuple[str, ...] = ("oncology",),
    referrer_kind: str | None = "clinician",
) -> str:
    """An access token from the hub's own authorization server, for a caller like this."""
    from hub.security.authorization_server import issue_token
    from hub.security.clients import RegisteredClient

    caller = RegisteredClient(
        client_id=subject,
        name=subject,
        roles=frozenset(roles),
        scopes=scope,
        jwks=None,
        jwks_url=None,
        fhir_user=fhir_user,
        programs=frozenset(programs),
        referrer_kind=referrer_kind,
    )
    return issue_token(settings, caller, scope)


def bearer(settings: Any, **claims: Any) -> dict[str, str]:
    """Authorization header for `token(settings, **claims)`."""
    return {"Authorization": f"Bearer {token(settings, **claims)}"}


def path_jobs(settings: Any) -> dict[str, Any]:
    """The runtime's job handlers less the records check (`check-records`) that a new case
    and each arriving record queue: for tests that count the jobs of one path (mapping,
    attaching) and are not about completeness."""
    from hub.runtime import job_handlers
    from hub.workflow.checklist import CHECK_RECORDS_JOB

    return {kind: h for kind, h in job_handlers(settings).items() if kind != CHECK_RECORDS_JOB}
