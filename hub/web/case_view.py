"""What a specialist's case page shows, read from the case's record (the same records, and
the same access rules, as the record bundle): the questions, the patient, a timeline,
readable reports, laboratory series, imaging studies and the opinion so far."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.fhir.dates import date_range
from hub.opinions import person_name
from hub.storage.indexer import split_reference
from hub.storage.repository import StoredResource
from hub.storage.tables import DicomStudyRow
from hub.workflow.opinion_rules import is_opinion
from hub.workflow.record_document import record_label, record_line, record_when
from hub.workflow.record_members import CaseRecord, Key
from hub.workflow.record_sections import record_sections, section_of

JSON = dict[str, Any]
READABLE_TYPES = ("text/plain", "text/html", "text/markdown")
MAX_TEXT = 200_000
"""Characters of one attachment shown in the page (a longer one is cut, and says so)."""
REPORT_TYPES = ("DiagnosticReport", "DocumentReference")
LAB_CATEGORY = "laboratory"
DICOM_UID_SYSTEM = "urn:dicom:uid"
CHEMOTHERAPY_TYPES = ("MedicationAdministration",)


@dataclass(frozen=True)
class TimelineEntry:
    when: str
    what: str
    section: str
    source: str
    reference: str


@dataclass(frozen=True)
class ReadableReport:
    reference: str
    title: str
    when: str
    section: str
    status: str
    conclusion: str | None
    texts: tuple[str, ...]
    results: tuple[str, ...]
    attachments: tuple[tuple[str, str], ...]
    """(title, content type) of attachments not shown as text (a PDF, an image)."""


@dataclass(frozen=True)
class LabPoint:
    when: datetime
    day: str
    value: float
    flag: str | None


@dataclass
class LabSeries:
    label: str
    unit: str
    low: float | None = None
    high: float | None = None
    points: list[LabPoint] = field(default_factory=list)


@dataclass(frozen=True)
class SeriesView:
    uid: str
    number: int | None
    modality: str
    description: str
    instances: int


@dataclass(frozen=True)
class StudyView:
    uid: str
    started: str
    description: str
    modalities: str
    series: tuple[SeriesView, ...]


@dataclass(frozen=True)
class PatientSummary:
    name: str
    birth_date: str
    gender: str
    identifiers: tuple[str, ...]
    guardians: tuple[str, ...]
    diagnoses: tuple[str, ...]


@dataclass(frozen=True)
class CaseView:
    task: StoredResource
    referral: StoredResource
    questions: tuple[str, ...]
    reasons: tuple[str, ...]
    referred_by: str
    patient: PatientSummary
    timeline: tuple[TimelineEntry, ...]
    reports: tuple[ReadableReport, ...]
    labs: tuple[LabSeries, ...]
    chemotherapy_days: tuple[tuple[datetime, str], ...]
    studies: tuple[StudyView, ...]
    opinion: StoredResource | None


def case_view(record: CaseRecord, task: StoredResource, referral: StoredResource) -> CaseView:
    members = record.members
    patient_key = split_reference(str((task.content.get("for") or {}).get("reference", "")))
    patient = members.get(patient_key) if patient_key else None
    sources = _sources(members.values())
    titles = {leaf.code: leaf.title for s in record_sections() for leaf in s.leaves()}
    clinical = [
        stored
        for stored in members.values()
        if stored.resource_type not in ("Provenance", "Binary", "Task", "ServiceRequest")
        and stored.resource_type != "Patient"
    ]
    in_reports = _report_results(members.values())
    timeline = sorted(
        (
            TimelineEntry(
                when=record_when(stored.content)[:10],
                what=_undated(record_line(stored.content)),
                section=titles.get(section_of(stored.content) or "", "Other records"),
                source=sources.get(stored.reference, "Sent through the hub's FHIR API"),
                reference=stored.reference,
            )
            for stored in clinical
            if stored.reference not in in_reports and not is_opinion(stored.content)
        ),
        key=lambda entry: (entry.when or "9999", entry.reference),
        reverse=True,
    )
    return CaseView(
        task=task,
        referral=referral,
        questions=tuple(
            str(note["text"]) for note in referral.content.get("note") or [] if note.get("text")
        ),
        reasons=tuple(
            label
            for concept in referral.content.get("reasonCode") or []
            if (label := record_label({"code": concept}))
        ),
        referred_by=str((referral.content.get("requester") or {}).get("display") or ""),
        patient=_patient_summary(patient, members),
        timeline=tuple(timeline),
        reports=tuple(_readable_reports(members, titles)),
        labs=tuple(_lab_series(members.values())),
        chemotherapy_days=tuple(_chemotherapy_days(members.values())),
        studies=tuple(_studies(members.values())),
        opinion=_latest_opinion(members.values(), referral.resource_id),
    )


def _undated(line: str) -> str:
    """A record's line without the date it starts with (the timeline has a date column)."""
    first, _, rest = line.partition(" ")
    return rest if rest and first[:4].isdigit() else line


def _sources(resources: Iterable[StoredResource]) -> dict[str, str]:
    """Each record's source: the first agent of a Provenance that targets it."""
    found: dict[str, str] = {}
    for stored in resources:
        if stored.resource_type != "Provenance":
            continue
        agents = stored.content.get("agent") or [{}]
        who = agents[0].get("who") or {}
        label = who.get("display") or who.get("reference") or "Unknown source"
        for target in stored.content.get("target") or []:
            found.setdefault(str(target.get("reference", "")), str(label))
    return found


def _report_results(resources: Iterable[StoredResource]) -> set[str]:
    """Observations listed in a report's results: shown with the report, not on their own."""
    return {
        str(result.get("reference", ""))
        for stored in resources
        if stored.resource_type == "DiagnosticReport"
        for result in stored.content.get("result") or []
    }


def _patient_summary(
    patient: StoredResource | None, members: dict[Key, StoredResource]
) -> PatientSummary:
    content = patient.content if patient else {}
    guardians = tuple(
        " ".join(
            part
            for part in (
                person_name(stored.content) or "",
                f"({record_label({'code': stored.content.get('relationship')})})"
                if stored.content.get("relationship")
                else "",
                _telecom(stored.content),
            )
            if part
        )
        for stored in members.values()
        if stored.resource_type == "RelatedPerson"
    )
    diagnoses = tuple(
        f"{record_label(stored.content)}"
        + (f", since {record_when(stored.content)[:10]}" if record_when(stored.content) else "")
        for stored in members.values()
        if stored.resource_type == "Condition"
    )
    return PatientSummary(
        name=person_name(content) or "(no name on file)",
        birth_date=str(content.get("birthDate") or "unknown"),
        gender=str(content.get("gender") or "unknown"),
        identifiers=tuple(
            f"{identifier.get('value')} ({_identifier_kind(identifier)})"
            for identifier in content.get("identifier") or []
            if identifier.get("value")
        ),
        guardians=guardians,
        diagnoses=diagnoses,
    )


def _identifier_kind(identifier: JSON) -> str:
    kind = identifier.get("type") or {}
    label = record_label({"code": kind}) if kind else ""
    return label or str(identifier.get("system") or "identifier")


def _telecom(content: JSON) -> str:
    return ", ".join(
        str(point["value"]) for point in content.get("telecom") or [] if point.get("value")
    )


def _readable_reports(
    members: dict[Key, StoredResource], titles: dict[str, str]
) -> Iterable[ReadableReport]:
    by_reference = {stored.reference: stored for stored in members.values()}
    reports = [
        stored
        for stored in members.values()
        if stored.resource_type in REPORT_TYPES and not is_opinion(stored.content)
    ]
    for stored in sorted(reports, key=lambda s: record_when(s.content), reverse=True):
        content = stored.content
        attachments = _attachments(content)
        texts: list[str] = []
        others: list[tuple[str, str]] = []
        for attachment in attachments:
            text = _attachment_text(attachment, by_reference)
            if text is not None:
                texts.append(text)
            else:
                title = str(attachment.get("title") or "Attachment")
                others.append((title, str(attachment.get("contentType") or "unknown type")))
        results = tuple(
            record_line(by_reference[ref].content)
            for ref in (str(r.get("reference", "")) for r in content.get("result") or [])
            if ref in by_reference
        )
        yield ReadableReport(
            reference=stored.reference,
            title=record_label(content) or stored.resource_type,
            when=record_when(content)[:10],
            section=titles.get(section_of(content) or "", "Other records"),
            status=str(content.get("status") or ""),
            conclusion=content.get("conclusion") or content.get("description"),
            texts=tuple(texts),
            results=results,
            attachments=tuple(others),
        )


def _attachments(content: JSON) -> list[JSON]:
    if content.get("resourceType") == "DocumentReference":
        return [c["attachment"] for c in content.get("content") or [] if c.get("attachment")]
    return list(content.get("presentedForm") or [])


def _attachment_text(attachment: JSON, by_reference: dict[str, StoredResource]) -> str | None:
    """The attachment as text, if it is text and on file (inline or a Binary of the case)."""
    kind = str(attachment.get("contentType") or "").split(";")[0].strip().lower()
    if kind not in READABLE_TYPES:
        return None
    data = attachment.get("data")
    if data is None and attachment.get("url") in by_reference:
        data = by_reference[str(attachment["url"])].content.get("data")
    if not isinstance(data, str):
        return None
    try:
        text = base64.b64decode(data, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None
    if len(text) > MAX_TEXT:
        return text[:MAX_TEXT] + "\n[… cut here: the rest is in the record bundle]"
    return text


def _lab_series(resources: Iterable[StoredResource]) -> list[LabSeries]:
    """Numeric laboratory results by code and unit, each series in date order."""
    series: dict[tuple[str, str], LabSeries] = {}
    for stored in resources:
        content = stored.content
        quantity = content.get("valueQuantity")
        if stored.resource_type != "Observation" or not isinstance(quantity, dict):
            continue
        if LAB_CATEGORY not in _category_codes(content) or quantity.get("value") is None:
            continue
        when = record_when(content)
        if not when:
            continue
        unit = str(quantity.get("unit") or quantity.get("code") or "")
        label = record_label(content)
        entry = series.setdefault((label, unit), LabSeries(label, unit))
        ranges = content.get("referenceRange") or [{}]
        entry.low = _number(ranges[0].get("low")) if entry.low is None else entry.low
        entry.high = _number(ranges[0].get("high")) if entry.high is None else entry.high
        flags = content.get("interpretation") or []
        entry.points.append(
            LabPoint(
                when=date_range(when)[0],
                day=when[:10],
                value=float(quantity["value"]),
                flag=record_label({"code": flags[0]}) if flags else None,
            )
        )
    for entry in series.values():
        entry.points.sort(key=lambda point: point.when)
    return sorted(series.values(), key=lambda entry: (-len(entry.points), entry.label))


def _category_codes(content: JSON) -> set[str]:
    return {
        str(coding.get("code"))
        for concept in content.get("category") or []
        for coding in concept.get("coding") or []
    }


def _number(quantity: Any) -> float | None:
    if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
        return float(quantity["value"])
    return None


def _chemotherapy_days(resources: Iterable[StoredResource]) -> list[tuple[datetime, str]]:
    """When chemotherapy was given (marked on the laboratory plots)."""
    days = {
        (date_range(when)[0], record_label(stored.content))
        for stored in resources
        if stored.resource_type in CHEMOTHERAPY_TYPES
        if (when := record_when(stored.content))
    }
    return sorted(days)


def _studies(resources: Iterable[StoredResource]) -> list[StudyView]:
    studies = []
    for stored in resources:
        if stored.resource_type != "ImagingStudy":
            continue
        content = stored.content
        uid = next(
            (
                str(i["value"]).removeprefix("urn:oid:")
                for i in content.get("identifier") or []
                if i.get("system") == DICOM_UID_SYSTEM and i.get("value")
            ),
            "",
        )
        series = tuple(
            SeriesView(
                uid=str(s.get("uid", "")),
                number=s.get("number"),
                modality=str((s.get("modality") or {}).get("code", "")),
                description=str(s.get("description") or ""),
                instances=int(s.get("numberOfInstances") or len(s.get("instance") or [])),
            )
            for s in content.get("series") or []
        )
        studies.append(
            StudyView(
                uid=uid,
                started=str(content.get("started") or "")[:10],
                description=str(content.get("description") or "Imaging study"),
                modalities=", ".join(sorted({s.modality for s in series if s.modality})),
                series=series,
            )
        )
    return sorted(studies, key=lambda study: study.started, reverse=True)


def held_studies(session: Session, studies: Iterable[StudyView]) -> frozenset[str]:
    """The UIDs of `studies` whose images the hub holds (attached DICOM): only these have
    thumbnails and a DICOMweb address; the others are known from their ImagingStudy alone
    (a record pulled from an EHR names studies its PACS has not sent)."""
    uids = [study.uid for study in studies if study.uid]
    if not uids:
        return frozenset()
    attached = select(DicomStudyRow.study_uid).where(
        DicomStudyRow.study_uid.in_(uids),
        DicomStudyRow.status == "attached",
        DicomStudyRow.imaging_study_id.is_not(None),
    )
    return frozenset(session.scalars(attached))


def _latest_opinion(resources: Iterable[StoredResource], referral_id: str) -> StoredResource | None:
    opinions = [
        stored
        for stored in resources
        if is_opinion(stored.content)
        and any(
            b.get("reference") == f"ServiceRequest/{referral_id}"
            for b in stored.content.get("basedOn") or []
        )
        and stored.content.get("status") != "entered-in-error"
    ]
    return max(opinions, key=lambda s: s.last_updated, default=None)
