"""The opinion as a readable PDF letter, rendered with fpdf2.

The same inputs always give the same bytes (the PDF's creation date comes from the
opinion, its file identifier from its content), so a retried finalize renders the very
same document.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from hub import codes
from hub.fhir.dates import date_range
from hub.opinions._fonts import FontChoice, use_fonts
from hub.opinions.content import OpinionContent, question_key

HUB_NAME: Final = "Pediatric cancer second-opinion hub"

# DiagnosticReport.status → what the letter's header says.
_STATUS_WORDS: Final = {
    "registered": "DRAFT",
    "partial": "DRAFT",
    "preliminary": "DRAFT",
    "final": "FINAL",
    "amended": "AMENDED",
    "corrected": "CORRECTED",
    "appended": "APPENDED",
    "cancelled": "CANCELLED",
    "entered-in-error": "ENTERED IN ERROR",
}
# Statuses whose every page carries a watermark: the text is not a signed opinion.
_NOT_SIGNED: Final = frozenset(
    {"registered", "partial", "preliminary", "cancelled", "entered-in-error", "unknown"}
)
# Statuses of a signed opinion revised after its first signature.
_REVISED: Final = frozenset({"amended", "corrected", "appended"})
# v2-0203 identifier type of a medical record number.
_MRN_TYPE: Final = "MR"
# When the opinion carries no date at all: a fixed creation date, still deterministic.
_NO_DATE: Final = datetime(2000, 1, 1, tzinfo=UTC)

_MARGIN, _LINE, _LABEL_WIDTH = 20.0, 5.2, 45.0
_GREY, _BLACK, _WATERMARK = (100, 100, 100), (0, 0, 0), (225, 225, 225)


def render_opinion_pdf(
    report: Mapping[str, Any],
    referral: Mapping[str, Any],
    patient: Mapping[str, Any],
    *,
    specialist: str,
    program: str,
    signed_at: str | None,
) -> bytes:
    """The opinion `report` (DiagnosticReport) as a PDF letter to the referrer.

    `referral` is the case's ServiceRequest (requester, reason, the questions in its
    notes), `patient` the child's Patient, `specialist` the signer's name, `program` a
    program code of `hub.codes.PROGRAMS` (or a name, shown as given), `signed_at` the
    FHIR instant of the signature (None for a draft). Missing optional parts are left
    out; drafts and withdrawn opinions carry a watermark on every page.
    """
    content = OpinionContent.from_report(report)
    status = content.status
    when = (
        signed_at
        or _text(report.get("issued"))
        or _text(_mapping(report.get("meta")).get("lastUpdated"))
    )
    letter = _Letter(
        status_word=_STATUS_WORDS.get(status, status.upper()),
        watermark=_STATUS_WORDS.get(status, "DRAFT") if status in _NOT_SIGNED else None,
    )
    letter.set_creation_date(_moment(when or _text(report.get("effectiveDateTime"))))
    letter.set_title("Second opinion")
    letter.set_creator(HUB_NAME)
    letter.set_lang("en")
    letter.set_author(specialist)
    letter.add_page()

    letter.title_block(codes.PROGRAMS.get(program, program), _show_date(when))
    if status in _REVISED:
        letter.paragraphs(["This version amends an opinion signed earlier; it replaces it."])
    letter.heading("Patient")
    letter.field("Name", person_name(patient))
    letter.field("Birth date", _text(patient.get("birthDate")))
    letter.field("Sex", _text(patient.get("gender")))
    for label, value in _patient_identifiers(patient):
        letter.field(label, value)

    letter.heading("Referral")
    letter.field("Referring physician", _reference_name(referral.get("requester")))
    letter.field("Referred on", _show_date(_text(referral.get("authoredOn"))))
    letter.field("Request", _concept_text(referral.get("code")))
    letter.field("Referral id", _first_identifier(referral))

    letter.heading("Case summary")
    summary = [_concept_text(c) for c in _list(referral.get("reasonCode"))]
    summary += [_reference_name(r) for r in _list(referral.get("reasonReference"))]
    letter.paragraphs([s for s in summary if s] or ["(no case summary given)"])

    _questions_and_answers(letter, referral, content)

    letter.heading("Conclusion")
    letter.paragraphs([content.conclusion or "(no conclusion written yet)"])
    if content.conclusion_codes:
        letter.subheading("Coded diagnoses")
        letter.numbered([c.label for c in content.conclusion_codes], bullet=True)
    if content.plan_assessment_text:
        letter.subheading("Current treatment plan")
        letter.paragraphs([content.plan_assessment_text])

    if content.recommendations:
        letter.heading("Recommendations")
        letter.numbered(list(content.recommendations))
    if content.clinical_trials:
        letter.heading("Clinical trials to consider")
        letter.numbered(list(content.clinical_trials), bullet=True)

    letter.heading("Signature")
    if signed_at and status not in _NOT_SIGNED:
        letter.field("Signed by", specialist)
        letter.field("Signed at", _show_date(signed_at))
    else:
        letter.field("Prepared by", specialist)
        letter.field("Signed", "not signed")
    return bytes(letter.output())


def _questions_and_answers(
    letter: _Letter, referral: Mapping[str, Any], content: OpinionContent
) -> None:
    notes = [n for n in _list(referral.get("note")) if _text(n.get("text"))]
    asked = {question_key(str(n["text"])) for n in notes}
    others = [a for a in content.answers if question_key(a.question) not in asked]
    if not notes and not others:
        return
    letter.heading("Questions and answers")
    for number, note in enumerate(notes, start=1):
        author = _text(note.get("authorString")) or _reference_name(note.get("authorReference"))
        asked_by = ", ".join(p for p in (author, _show_date(_text(note.get("time")))) if p)
        letter.question(number, str(note["text"]).strip(), asked_by)
        letter.answer(content.answer_to(str(note["text"])))
    if others:
        letter.subheading("Further questions answered")
        for number, answer in enumerate(others, start=len(notes) + 1):
            letter.question(number, answer.question, None)
            letter.answer(answer.answer)


class _Letter(FPDF):
    """An A4 page layout: running header, watermark, "Page X of Y" footer, and the few
    blocks the letter is made of."""

    def __init__(self, *, status_word: str, watermark: str | None) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.font_choice: FontChoice = use_fonts(self)
        self.status_word = status_word
        self.watermark = watermark
        self.set_margins(_MARGIN, _MARGIN + 4, _MARGIN)
        self.set_auto_page_break(auto=True, margin=_MARGIN)

    def header(self) -> None:
        if self.watermark:
            self._font(64 if len(self.watermark) < 10 else 40, bold=True)
            self.set_text_color(*_WATERMARK)
            width = self.get_string_width(self._prepare(self.watermark))
            center_x, center_y = self.w / 2, self.h / 2
            with self.rotation(angle=45, x=center_x, y=center_y):
                self.text(center_x - width / 2, center_y, self._prepare(self.watermark))
        self._font(8)
        self.set_text_color(*_GREY)
        self.set_xy(_MARGIN, 10)
        self.cell(0, 4, self._prepare(HUB_NAME))
        self.set_x(_MARGIN)
        self.cell(0, 4, self._prepare(f"Second opinion — {self.status_word}"), align="R")
        self.set_draw_color(*_GREY)
        self.line(_MARGIN, 15, self.w - _MARGIN, 15)
        self.set_text_color(*_BLACK)
        self.set_y(_MARGIN + 4)

    def footer(self) -> None:
        self.set_y(-14)
        self._font(8)
        self.set_text_color(*_GREY)
        self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(*_BLACK)

    def title_block(self, program: str, date: str | None) -> None:
        self._font(18, bold=True)
        self.cell(0, 9, self._prepare("Second opinion"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self._font(10)
        for line in (program, f"Date: {date or 'not dated'}", f"Status: {self.status_word}"):
            self.cell(0, _LINE, self._prepare(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if self.watermark:
            self._font(10, bold=True)
            note = f"{self.watermark}: not a signed opinion, not for clinical decisions."
            self.cell(0, _LINE, self._prepare(note), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(self, text: str) -> None:
        # Kept with the first lines that follow it.
        if self.will_page_break(9 + 3 * _LINE):
            self.add_page()
        self.ln(4)
        self._font(12, bold=True)
        self.cell(0, 7, self._prepare(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(*_GREY)
        self.line(_MARGIN, self.get_y(), self.w - _MARGIN, self.get_y())
        self.ln(1.5)

    def subheading(self, text: str) -> None:
        if self.will_page_break(6 + 2 * _LINE):
            self.add_page()
        self.ln(1.5)
        self._font(10, bold=True)
        self.cell(0, 6, self._prepare(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def field(self, label: str, value: str | None) -> None:
        if not value:
            return
        self._font(10, bold=True)
        self.cell(_LABEL_WIDTH, _LINE, self._prepare(label))
        self._font(10)
        self._block(value)

    def paragraphs(self, texts: list[str]) -> None:
        self._font(10)
        for text in texts:
            for paragraph in text.split("\n\n"):
                self._block(paragraph.strip())
                self.ln(1)

    def numbered(self, items: list[str], *, bullet: bool = False) -> None:
        for number, item in enumerate(items, start=1):
            self._font(10)
            self.cell(8, _LINE, "-" if bullet else f"{number}.")
            self._block(item)
            self.ln(0.8)

    def question(self, number: int, text: str, asked_by: str | None) -> None:
        self.ln(1.5)
        self._font(10, bold=True)
        self.cell(8, _LINE, f"Q{number}")
        self._block(text)
        if asked_by:
            self.set_text_color(*_GREY)
            self._font(9)
            self.set_x(_MARGIN + 8)
            self._block(f"asked by {asked_by}")
            self.set_text_color(*_BLACK)

    def answer(self, text: str | None) -> None:
        self._font(10)
        self.set_x(_MARGIN + 8)
        if text is None:
            self.set_text_color(*_GREY)
            self._block("(not answered)")
            self.set_text_color(*_BLACK)
            return
        self._block(text)

    def _block(self, text: str) -> None:
        """Wrapped text from the current x to the right margin, then a new line."""
        self.multi_cell(
            0, _LINE, self._prepare(text), align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )

    def _font(self, size: float, *, bold: bool = False) -> None:
        self.set_font(self.font_choice.family, "B" if bold else "", size)

    def _prepare(self, text: str) -> str:
        return self.font_choice.prepare(text)


def _list(value: Any) -> list[Any]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _moment(value: str | None) -> datetime:
    """The creation date of the PDF: `value` (a FHIR date or dateTime) as an aware UTC
    datetime, or a fixed date when there is none."""
    if value:
        try:
            return date_range(value)[0].replace(tzinfo=UTC)
        except ValueError:
            pass
    return _NO_DATE


def _show_date(value: str | None) -> str | None:
    """A FHIR date as given; a dateTime as 'YYYY-MM-DD HH:MM UTC'."""
    if not value or "T" not in value:
        return value
    try:
        return date_range(value)[0].strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def person_name(person: Mapping[str, Any]) -> str | None:
    """How a Patient, Practitioner or RelatedPerson is named: official, then usual name."""
    names = _list(person.get("name"))
    names.sort(key=lambda n: {"official": 0, "usual": 1}.get(str(n.get("use")), 2))
    for name in names:
        if text := _text(name.get("text")):
            return text
        given = [g.strip() for g in _strings(name.get("given")) if g.strip()]
        parts = [*given, _text(name.get("family")) or ""]
        if joined := " ".join(p for p in parts if p):
            return joined
    return None


def _patient_identifiers(patient: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The MRNs of the patient; any identifiers, if it has no MRN."""
    identifiers = [i for i in _list(patient.get("identifier")) if _text(i.get("value"))]
    mrns = [
        i
        for i in identifiers
        for c in _list(_mapping(i.get("type")).get("coding"))
        if c.get("code") == _MRN_TYPE
    ]
    shown = []
    for identifier in mrns or identifiers[:3]:
        issuer = _reference_name(identifier.get("assigner"))
        value = str(identifier["value"]).strip() + (f" ({issuer})" if issuer else "")
        shown.append(("MRN" if mrns else "Identifier", value))
    return shown


def _first_identifier(resource: Mapping[str, Any]) -> str | None:
    return next(
        (v for i in _list(resource.get("identifier")) if (v := _text(i.get("value")))), None
    )


def _reference_name(reference: Any) -> str | None:
    if not isinstance(reference, Mapping):
        return None
    return _text(reference.get("display")) or _text(reference.get("reference"))


def _concept_text(concept: Any) -> str | None:
    if not isinstance(concept, Mapping):
        return None
    return _text(concept.get("text")) or next(
        (d for c in _list(concept.get("coding")) if (d := _text(c.get("display")))), None
    )
