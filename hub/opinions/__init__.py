"""The second opinion as a document: what the specialist wrote (`OpinionContent`, read
from the DiagnosticReport's conclusion and the hub's extensions), its PDF letter
(`render_opinion_pdf`) and the FHIR that carries the PDF (`opinion_attachments`: the
presentedForm Attachment and a DocumentReference)."""

from __future__ import annotations

from hub.opinions.content import (
    ANSWER_QUESTION,
    ANSWER_TEXT,
    ANSWER_URL,
    CLINICAL_TRIAL_URL,
    PLAN_ASSESSMENT_URL,
    PLAN_ASSESSMENTS,
    RECOMMENDATION_URL,
    Answer,
    CodedConclusion,
    OpinionContent,
    PlanAssessment,
)
from hub.opinions.document import CONSULT_NOTE, OPINION_DOCUMENT_ID_SYSTEM, opinion_attachments
from hub.opinions.pdf import HUB_NAME, person_name, render_opinion_pdf

__all__ = [
    "ANSWER_QUESTION",
    "ANSWER_TEXT",
    "ANSWER_URL",
    "CLINICAL_TRIAL_URL",
    "CONSULT_NOTE",
    "HUB_NAME",
    "OPINION_DOCUMENT_ID_SYSTEM",
    "PLAN_ASSESSMENTS",
    "PLAN_ASSESSMENT_URL",
    "RECOMMENDATION_URL",
    "Answer",
    "CodedConclusion",
    "OpinionContent",
    "PlanAssessment",
    "opinion_attachments",
    "person_name",
    "render_opinion_pdf",
]
