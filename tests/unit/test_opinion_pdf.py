"""The opinion's PDF letter and the FHIR that carries it (hub.opinions).

All data here is synthetic: no real patient, physician or case.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.documentreference import DocumentReference
from pypdf import PdfReader

from hub.opinions import (
    ANSWER_URL,
    PLAN_ASSESSMENT_URL,
    Answer,
    OpinionContent,
    _fonts,
    opinion_attachments,
    render_opinion_pdf,
)
from hub.profiles.canonical import REPORT_TYPE_SYSTEM, SECOND_OPINION_REPORT_CODE

QUESTIONS = (
    (
        "Parent/guardian",
        "Would proton therapy have spared more hearing than the photon craniospinal "
        "irradiation already given?",
    ),
    (
        "Referring oncologist",
        "Given the WNT-activated subgroup, is it reasonable to reduce the remaining "
        "cisplatin exposure?",
    ),
    ("Parent/guardian", "Are there open clinical trials our child could still join?"),
)
ANSWERS = (
    "Proton therapy would likely have lowered the cochlear dose, but the radiation course "
    "is complete; audiology every 6 months is what follows from it now.",
    "Yes: with WNT-activated disease and no metastases, a cisplatin reduction to "
    "4 further cycles is supported by current de-escalation data.",
)
TRIALS = (
    "NCT01878617 — Risk-adapted therapy for children with medulloblastoma",
    "NCT02724579 — Reduced-dose therapy for WNT medulloblastoma",
)
RECOMMENDATIONS = (
    "Reduce the remaining cisplatin to 4 cycles, with amifostine or sodium thiosulfate.",
    "Audiology (ASHA criteria) before each cycle and every 6 months afterwards.",
    "Endocrine follow-up for growth hormone deficiency from 12 months after radiation.",
)


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "pat-1",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                            "code": "MR",
                        }
                    ]
                },
                "system": "https://riverbend.example/mrn",
                "value": "RB-0042871",
                "assigner": {"display": "Riverbend Children's Hospital"},
            },
            {"system": "https://second-opinion-hub.example/fhir/sid/patient", "value": "H-77"},
        ],
        "name": [
            {"use": "nickname", "given": ["Zoé"]},
            {"use": "official", "family": "Lefèvre-Núñez", "given": ["Zoé", "Inès"]},
        ],
        "gender": "female",
        "birthDate": "2016-03-14",
    }


def referral() -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-1",
        "identifier": [{"system": "https://riverbend.example/referral", "value": "REF-9A1C"}],
        "status": "active",
        "intent": "order",
        "code": {"text": "Second opinion review: pediatric oncology"},
        "subject": {"reference": "Patient/pat-1"},
        "authoredOn": "2026-10-02T14:20:00+02:00",
        "requester": {"reference": "Practitioner/pr-9", "display": "Dr. Amara Okafor"},
        "reasonCode": [
            {
                "text": "Medulloblastoma, WNT-activated, posterior fossa, resected; "
                "family requests expert review of the adjuvant plan"
            }
        ],
        "note": [
            {"authorString": author, "time": "2026-10-02T14:20:00+02:00", "text": text}
            for author, text in QUESTIONS
        ],
    }


def report(status: str = "final", **changes: Any) -> dict[str, Any]:
    content = OpinionContent(
        status=status,
        plan_assessment="modify",
        recommendations=RECOMMENDATIONS,
        clinical_trials=TRIALS,
        # Answered with other spacing and case than asked: still matched.
        answers=(
            Answer(QUESTIONS[0][1].upper().replace(" ", "  "), ANSWERS[0]),
            Answer(QUESTIONS[1][1], ANSWERS[1]),
            Answer("What about fertility preservation?", "Discussed with the family."),
        ),
    )
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": "op-1",
        "meta": {"versionId": "3", "lastUpdated": "2026-11-20T09:30:00Z"},
        "extension": content.extensions(),
        "basedOn": [{"reference": "ServiceRequest/sr-1"}],
        "status": status,
        "code": {"coding": [{"system": REPORT_TYPE_SYSTEM, "code": SECOND_OPINION_REPORT_CODE}]},
        "subject": {"reference": "Patient/pat-1"},
        "issued": "2026-11-20T09:30:00Z",
        "performer": [{"reference": "Practitioner/p-7", "display": "Dr. Ada Lindqvist"}],
        "conclusion": "WNT-activated medulloblastoma, standard risk, in remission after "
        "resection and craniospinal irradiation.",
        "conclusionCode": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "443333004",
                        "display": "Medulloblastoma",
                    }
                ]
            },
            {"text": "Sensorineural hearing loss, grade 2"},
        ],
    }
    resource.update(changes)
    return resource


def render(opinion: dict[str, Any], **overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "specialist": "Dr. Ada Lindqvist",
        "program": "neuro-oncology",
        "signed_at": "2026-11-20T09:30:00Z",
    }
    arguments.update(overrides)
    return render_opinion_pdf(opinion, referral(), patient(), **arguments)


def pages_text(data: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


def flat(text: str) -> str:
    """Extracted text with line breaks and runs of spaces made single spaces."""
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def final_pdf() -> bytes:
    return render(report())


@pytest.fixture(scope="module")
def final_text(final_pdf: bytes) -> str:
    return flat(" ".join(pages_text(final_pdf)))


def test_patient_referral_and_program(final_text: str) -> None:
    assert "Zoé Inès Lefèvre-Núñez" in final_text
    assert "2016-03-14" in final_text
    assert "RB-0042871" in final_text
    assert "Dr. Amara Okafor" in final_text
    assert "Neuro-oncology" in final_text
    assert "family requests expert review" in final_text
    assert "FINAL" in final_text
    assert "DRAFT" not in final_text


def test_every_question_followed_by_its_answer(final_text: str) -> None:
    positions = []
    for (_, question), answer in zip(QUESTIONS, [*ANSWERS, "(not answered)"], strict=True):
        asked = final_text.index(flat(question))
        answered = final_text.index(flat(answer), asked)
        positions += [asked, answered]
    assert positions == sorted(positions)
    assert "(not answered)" in final_text
    # An answer to a question the referral did not ask is still shown.
    assert "What about fertility preservation?" in final_text
    assert "Discussed with the family." in final_text


def test_conclusion_recommendations_and_trials(final_text: str) -> None:
    assert "in remission after resection and craniospinal irradiation" in final_text
    assert "Medulloblastoma (SNOMED CT 443333004)" in final_text
    assert "Sensorineural hearing loss, grade 2" in final_text
    assert "Recommends modifying the current treatment plan" in final_text
    for number, recommendation in enumerate(RECOMMENDATIONS, start=1):
        assert f"{number}. {recommendation}" in final_text
    assert "NCT01878617" in final_text and "NCT02724579" in final_text
    assert "Signed by Dr. Ada Lindqvist" in final_text
    assert "2026-11-20 09:30 UTC" in final_text


def test_page_numbers(final_pdf: bytes) -> None:
    texts = pages_text(final_pdf)
    assert len(texts) > 0
    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {len(texts)}" in text


def test_draft_is_watermarked_and_unsigned() -> None:
    texts = pages_text(render(report("preliminary"), signed_at=None))
    assert all("DRAFT" in text for text in texts)
    assert "not signed" in flat(" ".join(texts))
    assert "Signed by" not in flat(" ".join(texts))


def test_same_input_same_bytes(final_pdf: bytes) -> None:
    assert render(report()) == final_pdf


def test_same_bytes_in_another_process(final_pdf: bytes) -> None:
    # A retry may run in another worker, where str hashing (and so set order) differs.
    script = (
        "import hashlib, sys; from tests.unit.test_opinion_pdf import render, report; "
        "sys.stdout.write(hashlib.sha256(render(report())).hexdigest())"
    )
    root = Path(__file__).resolve().parents[2]
    digest = subprocess.run(
        [sys.executable, "-c", script],
        cwd=root,
        env={**os.environ, "PYTHONHASHSEED": "7"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert digest == hashlib.sha256(final_pdf).hexdigest()


def test_amended_version_differs(final_pdf: bytes) -> None:
    amended = render(report("amended", meta={"versionId": "4"}))
    assert amended != final_pdf
    text = flat(" ".join(pages_text(amended)))
    assert "AMENDED" in text
    assert "This version amends an opinion signed earlier" in text


def test_long_conclusion_wraps_onto_pages() -> None:
    sentence = "The tumour board reviewed every slide and image of this case again. "
    long = sentence * 300 + "END-OF-CONCLUSION " + "x" * 400
    texts = pages_text(render(report(conclusion=long)))
    assert len(texts) >= 4
    assert "END-OF-CONCLUSION" in texts[-1] or "END-OF-CONCLUSION" in texts[-2]
    for number, text in enumerate(texts, start=1):
        assert f"Page {number} of {len(texts)}" in text


def test_minimal_inputs_do_not_crash() -> None:
    bare = {
        "resourceType": "DiagnosticReport",
        "status": "preliminary",
        "code": {"text": "Second opinion"},
        "extension": [
            {"url": PLAN_ASSESSMENT_URL, "valueCode": "perhaps"},
            {"url": ANSWER_URL, "extension": [{"url": "question", "valueString": "Q?"}]},
            {"url": ANSWER_URL},
            "not an extension",
        ],
        "conclusionCode": [{}, "junk"],
    }
    data = render_opinion_pdf(
        bare,
        {"resourceType": "ServiceRequest", "note": [{"text": "  "}, {}]},
        {"resourceType": "Patient"},
        specialist="Dr. Ada Lindqvist",
        program="unknown-program",
        signed_at=None,
    )
    text = flat(" ".join(pages_text(data)))
    assert "(no conclusion written yet)" in text
    assert "(no case summary given)" in text
    assert "DRAFT" in text


def test_content_reader_round_trip() -> None:
    base = "https://second-opinion-hub.example/fhir/StructureDefinition"
    assert f"{base}/plan-assessment" == PLAN_ASSESSMENT_URL
    assert f"{base}/answer" == ANSWER_URL
    opinion = report()
    content = OpinionContent.from_report(opinion)
    assert content.plan_assessment == "modify"
    assert content.recommendations == RECOMMENDATIONS
    assert content.clinical_trials == TRIALS
    assert content.answer_to(QUESTIONS[1][1] + " ") == ANSWERS[1]
    assert content.answer_to(QUESTIONS[2][1]) is None
    assert content.extensions() == opinion["extension"]
    # The extensions make a valid R4 DiagnosticReport.
    DiagnosticReport.model_validate(opinion)


def test_missing_font_falls_back_to_latin1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_fonts, "FONT_DIRECTORY", tmp_path)
    opinion = report(conclusion="Grade ≥ 2 hearing loss — stable; Zoé’s follow-up ✓.")
    with caplog.at_level(logging.WARNING, logger=_fonts.__name__):
        data = render(opinion)
    assert "fonts-dejavu-core" in caplog.text
    text = flat(" ".join(pages_text(data)))
    assert "Grade >= 2 hearing loss - stable; Zoé's follow-up ?." in text
    assert "fall" not in text.lower()


def test_characters_without_glyph_are_replaced_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    opinion = report(conclusion="Stable — 李明 reviewed; ﬁne.")
    with caplog.at_level(logging.WARNING):
        data = render(opinion)
    assert "Stable — ?? reviewed; ﬁne." in flat(" ".join(pages_text(data)))
    assert "李" not in caplog.text


def test_attachment_hash_and_size(final_pdf: bytes) -> None:
    attachment, _ = opinion_attachments(report(), final_pdf)
    assert attachment["contentType"] == "application/pdf"
    assert base64.b64decode(attachment["data"]) == final_pdf
    assert attachment["size"] == len(final_pdf)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(final_pdf).digest()).decode()
    assert attachment["creation"].startswith("2026-11-20T09:30:00")
    # It is a valid presentedForm of the report.
    DiagnosticReport.model_validate({**report(), "presentedForm": [attachment]})


def test_document_reference(final_pdf: bytes) -> None:
    _, document = opinion_attachments(report(), final_pdf)
    DocumentReference.model_validate(document)
    assert document["status"] == "current"
    assert document["docStatus"] == "final"
    assert document["type"]["coding"][0]["code"] == "11488-4"
    assert document["subject"] == {"reference": "Patient/pat-1"}
    assert document["author"] == [{"reference": "Practitioner/p-7", "display": "Dr. Ada Lindqvist"}]
    related = [r["reference"] for r in document["context"]["related"]]
    assert related == ["ServiceRequest/sr-1", "DiagnosticReport/op-1"]
    assert (
        document["content"][0]["attachment"]["hash"]
        == opinion_attachments(report(), final_pdf)[0]["hash"]
    )


def test_document_identity_follows_the_version(final_pdf: bytes) -> None:
    _, first = opinion_attachments(report(), final_pdf)
    _, again = opinion_attachments(copy.deepcopy(report()), render(report()))
    assert again["masterIdentifier"] == first["masterIdentifier"]
    assert again["identifier"] == first["identifier"]
    amended_report = report("amended", meta={"versionId": "4"})
    _, amended = opinion_attachments(
        amended_report,
        render(amended_report),
        replaces={"reference": "DocumentReference/doc-1"},
    )
    DocumentReference.model_validate(amended)
    assert amended["docStatus"] == "amended"
    assert amended["masterIdentifier"] != first["masterIdentifier"]
    assert amended["relatesTo"] == [
        {"code": "replaces", "target": {"reference": "DocumentReference/doc-1"}}
    ]
    draft_report = report("preliminary")
    _, draft = opinion_attachments(draft_report, render(draft_report, signed_at=None))
    assert draft["docStatus"] == "preliminary"


def test_document_needs_the_report_id(final_pdf: bytes) -> None:
    opinion = report()
    del opinion["id"]
    with pytest.raises(ValueError, match="id"):
        opinion_attachments(opinion, final_pdf)
