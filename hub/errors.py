"""Errors the hub raises; the API turns each into its HTTP status and an OperationOutcome.

HubError                      500  (only ever as the base; never raised directly)
 ├── InvalidRequest           400  malformed JSON, bad search parameter, bad header
 │    └── UnknownSearchParameter
 ├── NotFound                 404  unknown type or id (also: a case you may not see)
 ├── MethodNotAllowed         405
 ├── Conflict                 409  concurrent write, illegal case transition
 │    └── IllegalTransition
 ├── Gone                     410  deleted resource
 ├── PreconditionFailed       412  If-Match mismatch, ambiguous conditional create
 ├── PayloadTooLarge          413
 ├── UnsupportedMediaType     415
 └── UnprocessableResource    422  a resource that is not valid FHIR R4
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: what went wrong and where (a FHIRPath expression)."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: tuple[str, ...] = field(default_factory=tuple)

    def to_fhir(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


class HubError(Exception):
    """Base of every error the hub reports to a caller."""

    status_code = 500
    issue_code = "exception"
    default_headers: dict[str, str] = {}

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: str | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.headers = dict(self.default_headers, **(headers or {}))
        if issues:
            self.issues = issues
        else:
            where = (expression,) if expression else ()
            self.issues = [Issue(diagnostics, code=self.issue_code, expression=where)]

    def operation_outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


class InvalidRequest(HubError):
    status_code = 400
    issue_code = "invalid"


class UnknownSearchParameter(InvalidRequest):
    issue_code = "not-supported"


class Unauthorized(HubError):
    status_code = 401
    issue_code = "login"
    default_headers = {"WWW-Authenticate": 'Bearer realm="fhir"'}


class Forbidden(HubError):
    status_code = 403
    issue_code = "forbidden"


class NotFound(HubError):
    status_code = 404
    issue_code = "not-found"


class MethodNotAllowed(HubError):
    status_code = 405
    issue_code = "not-supported"


class Conflict(HubError):
    status_code = 409
    issue_code = "conflict"


class IllegalTransition(Conflict):
    issue_code = "business-rule"


class Gone(HubError):
    status_code = 410
    issue_code = "deleted"


class PreconditionFailed(HubError):
    status_code = 412
    issue_code = "conflict"


class PayloadTooLarge(HubError):
    status_code = 413
    issue_code = "too-costly"


class UnsupportedMediaType(HubError):
    status_code = 415
    issue_code = "not-supported"


class TooManyRequests(HubError):
    status_code = 429
    issue_code = "throttled"


class UnprocessableResource(HubError):
    status_code = 422
    issue_code = "processing"


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource holding `issues`."""
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


def information_outcome(diagnostics: str) -> dict[str, Any]:
    """An OperationOutcome that reports success (e.g. for DELETE)."""
    return operation_outcome([Issue(diagnostics, code="informational", severity="information")])
