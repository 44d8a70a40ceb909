"""The rendered opinion as FHIR: the report's presentedForm Attachment and the
DocumentReference that indexes the same PDF (FHIR R4 §2.24 DocumentReference)."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Mapping
from typing import Any, Final

from hub import codes
from hub.fhir.dates import date_range, instant
from hub.profiles.canonical import REPORT_TYPE_SYSTEM, SECOND_OPINION_REPORT_CODE

# DocumentReference.identifier system of an opinion's rendered document.
OPINION_DOCUMENT_ID_SYSTEM: Final = f"{codes.CANONICAL_BASE}/sid/opinion-document"
# The namespace of the documents' urn:uuid masterIdentifier (uuid5 of report id + version).
_DOCUMENT_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, OPINION_DOCUMENT_ID_SYSTEM)

# DocumentReference.type: LOINC 11488-4 "Consult note".
CONSULT_NOTE: Final = {"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}
# DocumentReference.category: a clinical note (US Core's category code system), and the
# hub's own report type, so that the opinion documents can be searched for.
_CATEGORIES: Final = (
    {
        "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
        "code": "clinical-note",
        "display": "Clinical Note",
    },
    {"system": REPORT_TYPE_SYSTEM, "code": SECOND_OPINION_REPORT_CODE, "display": "Second opinion"},
)
# DiagnosticReport.status → DocumentReference.docStatus (composition-status).
_DOC_STATUS: Final = {
    "final": "final",
    "amended": "amended",
    "corrected": "amended",
    "appended": "amended",
    "cancelled": "entered-in-error",
    "entered-in-error": "entered-in-error",
}
# DocumentReference.author may be none of the other types DiagnosticReport.performer allows.
_AUTHOR_TYPES: Final = ("Practitioner/", "PractitionerRole/", "Organization/")


def opinion_attachments(
    report: Mapping[str, Any], pdf: bytes, *, replaces: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The presentedForm Attachment of the opinion `report` rendered as `pdf`, and a
    DocumentReference (without id) for the same PDF.

    The document's identifiers derive from the report's id and meta.versionId (the version
    the attachment belongs to: pass the report as it will be stored), so rendering the
    same version again gives the same identity. `replaces` is a Reference to the document
    of the version this one amends (relatesTo replaces). Raises ValueError when the report
    has no id.
    """
    report_id = report.get("id")
    if not isinstance(report_id, str) or not report_id:
        raise ValueError("the opinion needs an id to be indexed as a document")
    meta: Mapping[str, Any] = report.get("meta") or {}
    if not isinstance(meta, Mapping):
        meta = {}
    version = str(meta.get("versionId") or "") or f"sha1-{hashlib.sha1(pdf).hexdigest()}"
    status = str(report.get("status") or "")
    when = _instant(report.get("issued")) or _instant(meta.get("lastUpdated"))

    attachment: dict[str, Any] = {
        "contentType": "application/pdf",
        "language": "en",
        "data": base64.b64encode(pdf).decode("ascii"),
        "size": len(pdf),
        # Attachment.hash: base64 of the SHA-1 of the data (FHIR R4 §2.24.0.4 Attachment).
        "hash": base64.b64encode(hashlib.sha1(pdf).digest()).decode("ascii"),
        "title": f"Second opinion ({_STATUS_TITLES.get(status, status or 'unknown')})",
    }
    if when:
        attachment["creation"] = when

    references = [
        dict(b)
        for b in report.get("basedOn") or []
        if isinstance(b, Mapping) and b.get("reference")
    ]
    document: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "masterIdentifier": {
            "system": "urn:ietf:rfc:3986",
            "value": f"urn:uuid:{uuid.uuid5(_DOCUMENT_NAMESPACE, f'{report_id}/{version}')}",
        },
        "identifier": [
            {"system": OPINION_DOCUMENT_ID_SYSTEM, "value": f"{report_id}/_history/{version}"}
        ],
        "status": "current",
        "docStatus": _DOC_STATUS.get(status, "preliminary"),
        "type": {"coding": [dict(CONSULT_NOTE)], "text": "Second opinion"},
        "category": [{"coding": [dict(c)]} for c in _CATEGORIES],
        "description": "Second opinion on a pediatric cancer case",
        "content": [{"attachment": dict(attachment)}],
        "context": {
            "related": [*references, {"reference": f"DiagnosticReport/{report_id}"}],
        },
    }
    if isinstance(report.get("subject"), Mapping):
        document["subject"] = dict(report["subject"])
    if when:
        document["date"] = when
    authors = [
        dict(r)
        for r in [*(report.get("resultsInterpreter") or []), *(report.get("performer") or [])]
        if isinstance(r, Mapping) and str(r.get("reference", "")).startswith(_AUTHOR_TYPES)
    ]
    if authors:
        document["author"] = list({a["reference"]: a for a in authors}.values())
    if replaces:
        document["relatesTo"] = [{"code": "replaces", "target": dict(replaces)}]
    return attachment, document


_STATUS_TITLES: Final = {"preliminary": "draft", "registered": "draft", "partial": "draft"}


def _instant(value: Any) -> str | None:
    """A FHIR dateTime with a time as an instant (UTC); a bare date or anything else is
    None (DocumentReference.date is an instant)."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        return instant(date_range(value)[0])
    except ValueError:
        return None
