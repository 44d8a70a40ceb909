"""Code systems and small FHIR shapes of the synthetic outside-EHR record, and a tiny PDF."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final

from hub.demo.synthetic import (
    LOINC,
    OBSERVATION_CATEGORY,
    UCUM,
    V3_ACT_REASON,
    V3_INTERPRETATION,
    coding,
    concept,
)

JSON = dict[str, Any]

_THO: Final = "http://terminology.hl7.org/CodeSystem"
V3_ACT_CODE: Final = f"{_THO}/v3-ActCode"
ALLERGY_CLINICAL: Final = f"{_THO}/allergyintolerance-clinical"
ALLERGY_VERIFICATION: Final = f"{_THO}/allergyintolerance-verification"
DICOM_DCM: Final = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID: Final = "urn:dicom:uid"

LOCAL_TZ: Final = timezone(timedelta(hours=-5))  # the outside EHR's local time (fixed offset)
SYNTHETIC_TAG: Final = {"system": V3_ACT_REASON, "code": "HTEST", "display": "test health data"}


def ref(reference: str) -> JSON:
    return {"reference": reference}


def quantity(value: float, code: str, unit: str | None = None) -> JSON:
    """A UCUM Quantity; ``unit`` is the human-readable form (default: the code)."""
    return {"value": value, "unit": unit or code, "system": UCUM, "code": code}


def loinc(code: str, display: str) -> JSON:
    return concept(coding(LOINC, code, display), text=display)


def observation_category(code: str, display: str) -> list[JSON]:
    return [concept(coding(OBSERVATION_CATEGORY, code, display))]


def when(moment: datetime) -> str:
    """A FHIR dateTime in the outside EHR's local time."""
    return moment.isoformat(timespec="seconds")


def instant(moment: datetime) -> str:
    """A FHIR instant in UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def interpretation(value: float, low: float, high: float) -> list[JSON]:
    """HL7 v3 ObservationInterpretation L, H or N against the reference range."""
    if value < low:
        code, display = "L", "Low"
    elif value > high:
        code, display = "H", "High"
    else:
        code, display = "N", "Normal"
    return [concept(coding(V3_INTERPRETATION, code, display))]


def pdf(title: str, text: str) -> bytes:
    """A small valid one-page PDF 1.4 (Helvetica) showing ``title`` and ``text``."""
    lines = [title, ""]
    for paragraph in text.splitlines():
        lines.extend(textwrap.wrap(paragraph, 90) or [""])
    ops = ["BT", "/F1 10 Tf", "14 TL", "56 750 Td"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        ops.append(f"({escaped}) Tj T*")
    ops.append("ET")
    stream = "\n".join(ops).encode("latin-1", "replace")
    objects = (
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n%b\nendstream" % (len(stream), stream),
    )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%b\nendobj\n" % (number, body)
    xref = len(out)
    # Each cross-reference entry is exactly 20 bytes (PDF 32000-1, 7.5.4).
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n" % (len(objects) + 1, xref)
    out += b"%%EOF\n"
    return bytes(out)
