"""The rules of writing a second opinion directly (POST/PUT of its DiagnosticReport): a
draft only, by the case's assigned specialist, once the case is accepted (see
hub.workflow.opinions for finalizing and amending)."""

from __future__ import annotations

from typing import Any

from hub.errors import Forbidden, IllegalTransition, InvalidRequest
from hub.profiles.canonical import REPORT_TYPE_SYSTEM, SECOND_OPINION_REPORT_CODE
from hub.security.principal import Principal
from hub.storage.indexer import split_reference
from hub.storage.repository import StoredResource

DRAFT, FINAL, AMENDED = "preliminary", "final", "amended"
# The case statuses in which an opinion may be written.
WORKING = ("accepted", "in-progress")


def is_opinion(resource: dict[str, Any] | None) -> bool:
    return bool(resource) and any(
        (coding.get("system"), coding.get("code"))
        == (REPORT_TYPE_SYSTEM, SECOND_OPINION_REPORT_CODE)
        for coding in ((resource or {}).get("code") or {}).get("coding") or []
    )


def referral_reference(report: dict[str, Any]) -> tuple[str, str] | None:
    for based_on in report.get("basedOn") or []:
        target = split_reference(str(based_on.get("reference", "")))
        if target and target[0] == "ServiceRequest":
            return target
    return None


def check_opinion_write(
    case: StoredResource | None,
    principal: Principal | None,
    new: dict[str, Any],
    old: StoredResource | None,
) -> None:
    """Refuse a direct write (POST/PUT) of an opinion that breaks the rules above;
    `case` is the case Task of the referral the opinion is based on."""
    if case is None:
        raise InvalidRequest(
            "An opinion must be basedOn the ServiceRequest of a second-opinion case.",
            expression="DiagnosticReport.basedOn",
        )
    if old is not None and old.content.get("status") != DRAFT:
        raise IllegalTransition(
            f"The opinion is {old.content.get('status')}: it changes only by $amend, "
            "with a reason.",
            expression="DiagnosticReport.status",
        )
    if new.get("status") != DRAFT:
        raise IllegalTransition(
            "An opinion is written as a draft (status 'preliminary') and made final by "
            "$finalize, which signs it.",
            expression="DiagnosticReport.status",
        )
    require_author(case, principal)
    if case.content.get("status") not in WORKING:
        raise IllegalTransition(
            f"The case is {case.content.get('status')}: an opinion is written once it is accepted.",
            expression="DiagnosticReport.basedOn",
        )


def require_author(case: StoredResource, principal: Principal | None) -> None:
    """Only the case's assigned specialist writes its opinion (the hub itself may too)."""
    if principal is None:
        return
    owner = str((case.content.get("owner") or {}).get("reference", ""))
    if not (principal.has_role("specialist") and owner and principal.fhir_user == owner):
        raise Forbidden("Only the specialist the case is assigned to writes its opinion.")
