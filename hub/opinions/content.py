"""What the specialist wrote in an opinion, read from its DiagnosticReport.

The opinion is a FHIR R4 DiagnosticReport (profile second-opinion-report). Besides the
standard `conclusion` and `conclusionCode`, the specialist's content sits in the hub's own
extensions on the report (contained resources would be heavier for the same content):

- `plan-assessment` (valueCode agree | modify | disagree, at most one): whether the
  specialist agrees with the current treatment plan;
- `recommendation` (valueString, repeating, in order);
- `clinical-trial` (valueString such as "NCT01234567 — title", repeating);
- `answer` (complex: sub-extensions `question` and `answer`, both valueString, repeating):
  the answer to one of the questions the referral asked (ServiceRequest.note).

`OpinionContent.from_report` reads them leniently: anything malformed is left out, never
raised, so a draft half written still renders. `OpinionContent.extensions()` writes them back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeGuard

from hub.profiles.canonical import PROFILE_BASE

log = logging.getLogger(__name__)

PLAN_ASSESSMENT_URL: Final = f"{PROFILE_BASE}/plan-assessment"
RECOMMENDATION_URL: Final = f"{PROFILE_BASE}/recommendation"
CLINICAL_TRIAL_URL: Final = f"{PROFILE_BASE}/clinical-trial"
ANSWER_URL: Final = f"{PROFILE_BASE}/answer"
# The sub-extensions of `answer` (relative URLs, as FHIR complex extensions name them).
ANSWER_QUESTION: Final = "question"
ANSWER_TEXT: Final = "answer"

PlanAssessment = Literal["agree", "modify", "disagree"]
# The words a reader sees for each plan-assessment code.
PLAN_ASSESSMENTS: Final[Mapping[PlanAssessment, str]] = {
    "agree": "Agrees with the current treatment plan",
    "modify": "Recommends modifying the current treatment plan",
    "disagree": "Disagrees with the current treatment plan",
}

_SPACES = re.compile(r"\s+")
# Short names of the code systems a conclusion is usually coded in.
_SYSTEM_NAMES: Final = {
    "http://snomed.info/sct": "SNOMED CT",
    "http://hl7.org/fhir/sid/icd-10": "ICD-10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
    "http://terminology.hl7.org/CodeSystem/icd-o-3": "ICD-O-3",
}


def question_key(text: str) -> str:
    """The form in which a question and an answer's question are compared: case, spacing
    and trailing punctuation do not matter."""
    return _SPACES.sub(" ", text).strip().rstrip("?.!: ").casefold()


@dataclass(frozen=True)
class CodedConclusion:
    """One `conclusionCode`: its text (CodeableConcept.text, else a coding's display) and
    its first coding."""

    text: str | None
    system: str | None = None
    code: str | None = None

    @property
    def label(self) -> str:
        """What a reader sees: the text, with the code and its system's name after it."""
        if not self.code:
            return self.text or ""
        system = _SYSTEM_NAMES.get(self.system or "")
        code = f"{system} {self.code}" if system else self.code
        return f"{self.text} ({code})" if self.text else code


@dataclass(frozen=True)
class Answer:
    """The specialist's answer to one question of the referral."""

    question: str
    answer: str


@dataclass(frozen=True)
class OpinionContent:
    """The specialist's content of an opinion, typed; every part but the status may be
    empty (a draft may not have a conclusion yet)."""

    status: str
    conclusion: str | None = None
    conclusion_codes: tuple[CodedConclusion, ...] = ()
    plan_assessment: PlanAssessment | None = None
    recommendations: tuple[str, ...] = ()
    clinical_trials: tuple[str, ...] = ()
    answers: tuple[Answer, ...] = ()

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> OpinionContent:
        """Read the content of the opinion `report` (a DiagnosticReport as JSON)."""
        extensions = [e for e in _list(report.get("extension")) if isinstance(e, Mapping)]
        return cls(
            status=_text(report.get("status")) or "unknown",
            conclusion=_text(report.get("conclusion")),
            conclusion_codes=tuple(
                coded
                for concept in _list(report.get("conclusionCode"))
                if (coded := _coded(concept)) is not None
            ),
            plan_assessment=_plan_assessment(extensions),
            recommendations=_strings(extensions, RECOMMENDATION_URL),
            clinical_trials=_strings(extensions, CLINICAL_TRIAL_URL),
            answers=tuple(
                answer
                for extension in extensions
                if extension.get("url") == ANSWER_URL
                if (answer := _answer(extension)) is not None
            ),
        )

    @property
    def plan_assessment_text(self) -> str | None:
        """The plan assessment in words."""
        return PLAN_ASSESSMENTS[self.plan_assessment] if self.plan_assessment else None

    def answer_to(self, question: str) -> str | None:
        """The answer given to `question` (compared by `question_key`), if any."""
        key = question_key(question)
        for answer in self.answers:
            if question_key(answer.question) == key:
                return answer.answer
        return None

    def extensions(self) -> list[dict[str, Any]]:
        """The report's extensions that hold this content (plan assessment,
        recommendations, clinical trials, answers), in that order."""
        extensions: list[dict[str, Any]] = []
        if self.plan_assessment:
            extensions.append({"url": PLAN_ASSESSMENT_URL, "valueCode": self.plan_assessment})
        extensions += [{"url": RECOMMENDATION_URL, "valueString": r} for r in self.recommendations]
        extensions += [{"url": CLINICAL_TRIAL_URL, "valueString": t} for t in self.clinical_trials]
        extensions += [
            {
                "url": ANSWER_URL,
                "extension": [
                    {"url": ANSWER_QUESTION, "valueString": a.question},
                    {"url": ANSWER_TEXT, "valueString": a.answer},
                ],
            }
            for a in self.answers
        ]
        return extensions


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    """A non-blank string, stripped; anything else is None."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def _strings(extensions: Iterable[Mapping[str, Any]], url: str) -> tuple[str, ...]:
    return tuple(
        text
        for extension in extensions
        if extension.get("url") == url
        if (text := _text(extension.get("valueString"))) is not None
    )


def _is_plan_assessment(code: str | None) -> TypeGuard[PlanAssessment]:
    return code in PLAN_ASSESSMENTS


def _plan_assessment(extensions: Iterable[Mapping[str, Any]]) -> PlanAssessment | None:
    for extension in extensions:
        if extension.get("url") != PLAN_ASSESSMENT_URL:
            continue
        code = _text(extension.get("valueCode"))
        if _is_plan_assessment(code):
            return code
        log.warning("opinion plan-assessment code not understood; left out")
    return None


def _answer(extension: Mapping[str, Any]) -> Answer | None:
    parts = {
        part.get("url"): _text(part.get("valueString"))
        for part in _list(extension.get("extension"))
        if isinstance(part, Mapping)
    }
    question, answer = parts.get(ANSWER_QUESTION), parts.get(ANSWER_TEXT)
    if question is None or answer is None:
        return None
    return Answer(question=question, answer=answer)


def _coded(concept: Any) -> CodedConclusion | None:
    if not isinstance(concept, Mapping):
        return None
    codings = [c for c in _list(concept.get("coding")) if isinstance(c, Mapping)]
    first = codings[0] if codings else {}
    text = _text(concept.get("text")) or next(
        (display for c in codings if (display := _text(c.get("display"))) is not None), None
    )
    coded = CodedConclusion(
        text=text, system=_text(first.get("system")), code=_text(first.get("code"))
    )
    return coded if coded.text or coded.code else None
