"""A second opinion (FHIR DiagnosticReport + its referral) read into the values every
message that carries it needs: status codes, text lines, coded conclusions, the PDF, the
document and order numbers, the specialist."""

from __future__ import annotations

import base64
import binascii
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass

from mappings.hl7v2.outbound.datatypes import Person, ce, dtm_of_fhir, ei, escape
from mappings.hl7v2.outbound.errors import OutboundMappingError
from mappings.hl7v2.outbound.resources import (
    JSON,
    ReferenceResolver,
    effective_of,
    filler_identifier,
    placer_identifier,
    sendable_identifiers,
)
from mappings.hl7v2.outbound.tables import ReportStatusCodes, tables

LINE_WIDTH = 80  # characters of text per OBX (TX) line, before escaping
# hl7apy holds OBX-5 components as ST: at most 199 characters once escaped (STRICT level).
MAX_ESCAPED_LINE = 199
PDF = "application/pdf"


@dataclass(frozen=True)
class Opinion:
    """The parts of a second opinion that the MDM and ORU messages carry (ER7 where noted)."""

    status: ReportStatusCodes
    document_type: str  # TXA-2
    document_number: str  # EI (ER7)
    placer_number: str  # EI (ER7), '' without a referral
    filler_number: str  # EI (ER7)
    report_code: str  # CE (ER7): OBX-3 of the text and the PDF
    service: str  # CE (ER7): OBR-4
    lines: tuple[str, ...]  # the conclusion, one line per OBX (not escaped)
    conclusion_codes: tuple[str, ...]  # CE (ER7) each
    pdf: bytes | None
    specialist: Person
    requester: Person
    effective: str  # DTM
    issued: str  # DTM
    confidentiality: str  # TXA-18


def read_opinion(
    report: JSON,
    referral: JSON | None,
    pdf: bytes | None,
    *,
    sending_application: str,
    resources: Mapping[str, JSON] | None = None,
) -> Opinion:
    """Read a DiagnosticReport (and the ServiceRequest it is based on) for sending.

    Raises OutboundMappingError when the report's status is not one an opinion is sent in,
    or it has nothing to send (no conclusion, coded conclusion or PDF), or no identity.
    """
    t = tables()
    status = str(report.get("status") or "")
    codes = t.report_statuses.get(status)
    if codes is None:
        raise OutboundMappingError(f"DiagnosticReport.status '{status}' is not sent as an opinion.")
    resolver = ReferenceResolver(report, resources)
    referral_resolver = ReferenceResolver(referral or {}, resources)
    lines = conclusion_lines(str(report.get("conclusion") or ""))
    conclusion_codes = tuple(
        code for code in (ce(c) for c in report.get("conclusionCode") or []) if code
    )
    pdf = pdf if pdf is not None else _presented_pdf(report)
    if not lines and not conclusion_codes and pdf is None:
        raise OutboundMappingError(
            "DiagnosticReport has no conclusion, conclusionCode or PDF presentedForm to send."
        )
    placer = placer_identifier(referral)
    filler = filler_identifier(referral)
    document_number = _document_number(report, sending_application)
    return Opinion(
        status=codes,
        document_type=_document_type(report),
        document_number=document_number,
        placer_number=ei(str(placer["value"]), str(placer.get("system") or "")) if placer else "",
        filler_number=(
            ei(str(filler["value"]), str(filler.get("system") or ""), sending_application)
            if filler
            else ""
        ),
        report_code=ce(report.get("code"), t.local_codes["report"]),
        service=ce((referral or {}).get("code"), t.local_codes["universal_service"]),
        lines=lines,
        conclusion_codes=conclusion_codes,
        pdf=pdf,
        specialist=resolver.person(
            [*(report.get("performer") or []), *(report.get("resultsInterpreter") or [])]
        ),
        requester=referral_resolver.person(
            [referral["requester"]] if referral and referral.get("requester") else []
        ),
        effective=dtm_of_fhir(effective_of(report)),
        issued=dtm_of_fhir(str(report.get("issued") or "")),
        confidentiality=_confidentiality(report),
    )


def conclusion_lines(text: str, width: int = LINE_WIDTH) -> tuple[str, ...]:
    """The text as display lines of at most `width` characters; blank lines kept inside."""
    lines: list[str] = []
    for paragraph in text.strip("\r\n").splitlines():
        if not paragraph.strip():
            lines.append("")
            continue
        for line in textwrap.wrap(
            paragraph.rstrip(),
            width,
            break_long_words=True,
            break_on_hyphens=False,
            replace_whitespace=False,
        ):
            lines.extend(_fit(line))
    return tuple(lines) if any(lines) else ()


def _fit(line: str) -> list[str]:
    """`line` cut where needed so that each piece stays within MAX_ESCAPED_LINE escaped."""
    if len(escape(line)) <= MAX_ESCAPED_LINE:
        return [line]
    middle = len(line) // 2
    return [*_fit(line[:middle]), *_fit(line[middle:])]


def _presented_pdf(report: JSON) -> bytes | None:
    for attachment in report.get("presentedForm") or []:
        if attachment.get("contentType") == PDF and attachment.get("data"):
            try:
                return base64.b64decode(str(attachment["data"]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise OutboundMappingError(
                    "DiagnosticReport.presentedForm.data is not base64."
                ) from exc
    return None


def _document_number(report: JSON, sending_application: str) -> str:
    """TXA-12: the report's business identifier, else its id under the sending application."""
    identifiers = sendable_identifiers(report)
    if identifiers:
        first = identifiers[0]
        return ei(str(first["value"]), str(first.get("system") or ""), sending_application)
    if report.get("id"):
        return ei(str(report["id"]), "", sending_application)
    raise OutboundMappingError("DiagnosticReport has neither identifier nor id (TXA-12).")


def _document_type(report: JSON) -> str:
    t = tables()
    for coding in (report.get("code") or {}).get("coding") or []:
        found = t.document_types.get((str(coding.get("system")), str(coding.get("code"))))
        if found:
            return found
    for category in report.get("category") or []:
        for coding in category.get("coding") or []:
            found = t.document_types.get((str(coding.get("system")), str(coding.get("code"))))
            if found:
                return found
    return t.default_document_type


def _confidentiality(report: JSON) -> str:
    t = tables()
    for label in (report.get("meta") or {}).get("security") or []:
        if label.get("system") == t.confidentiality_system:
            return t.confidentiality.get(str(label.get("code")), "")
    return ""
