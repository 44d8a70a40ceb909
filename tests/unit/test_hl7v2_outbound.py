"""FHIR → HL7 v2.5.1 outbound messages: MDM^T02, ORU^R01, OSU^O51, field by field.

Every resource here is invented. Fields are read back with the hub's tokenizer (so escapes
are undone by its `unescape`), and every message is re-parsed by hl7apy at STRICT level.
"""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse
from hypothesis import given, settings
from hypothesis import strategies as st

from mappings.hl7v2.outbound import (
    OutboundMappingError,
    OutboundValidationError,
    opinion_to_mdm_t02,
    opinion_to_oru_r01,
    osu_o51_profile,
    referral_status_to_osu_o51,
    reparse,
)
from mappings.hl7v2.outbound.datatypes import dtm_of_fhir, escape
from mappings.hl7v2.tokenizer import Delimiters, Message, Segment, parse_message, unescape

HUB = "https://second-opinion-hub.example/fhir"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
NOW = datetime(2026, 11, 2, 9, 30, 5, tzinfo=timezone(timedelta(hours=1)))
SENDING, RECEIVING = ("SOH-HUB", "CHILDRENS-REF"), ("ONCO-EHR", "ST-ELSEWHERE")
PDF_BYTES = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
CONCLUSION = (
    "Findings support WNT-activated medulloblastoma | low risk ^ standard & more ~ "
    "path C:\\records\\mri.\n"
    "\n"
    "Recommendation: continue the current protocol; reduce cisplatin exposure per "
    "audiology findings and review at the next tumour board in four weeks' time, with a "
    "repeat MRI of the spine."
)


def patient() -> dict:
    return {
        "resourceType": "Patient",
        "id": "pat-71",
        "identifier": [
            {"system": f"{HUB}/sid/patient", "value": "SYN-5512"},
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                "system": "https://outside-ehr.example/mrn",
                "value": "8831207",
            },
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "000-12-3456"},
            {"use": "old", "system": "https://outside-ehr.example/mrn", "value": "OLD-1"},
        ],
        "name": [
            {"use": "usual", "family": "Quill", "given": ["Wren"]},
            {"use": "official", "family": "Quillfeather", "given": ["Wren", "Isolde"]},
        ],
        "gender": "female",
        "birthDate": "2017-03-05",
    }


def referral() -> dict:
    return {
        "resourceType": "ServiceRequest",
        "id": "sr-4401",
        "identifier": [{"system": "https://outside-ehr.example/referral", "value": "REF-7Q2"}],
        "status": "active",
        "intent": "order",
        "code": {"text": "Second opinion review: pediatric oncology"},
        "requester": {
            "reference": "Practitioner/ref-3",
            "display": "Dr. Orla Brennick",
        },
    }


def specialist() -> dict:
    return {
        "resourceType": "Practitioner",
        "id": "p-7",
        "identifier": [
            {"system": f"{HUB}/sid/staff", "value": "ST-12"},
            {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"},
        ],
        "name": [
            {"use": "official", "family": "Okafor", "given": ["Ada", "N."], "prefix": ["Dr."]}
        ],
    }


def report(**changes: object) -> dict:
    base: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": "dr-901",
        "meta": {
            "security": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
            ]
        },
        "identifier": [{"system": f"{HUB}/sid/opinion", "value": "OP-2026-0042"}],
        "basedOn": [{"reference": "ServiceRequest/sr-4401"}],
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "11488-4", "display": "Consult note"}]
        },
        "subject": {"reference": "Patient/pat-71"},
        "effectiveDateTime": "2026-10-30T14:05:00+01:00",
        "issued": "2026-10-31T08:00:00Z",
        "performer": [{"reference": "Practitioner/p-7"}],
        "conclusion": CONCLUSION,
        "conclusionCode": [
            {
                "coding": [
                    {
                        "system": "http://snomed.info/sct",
                        "code": "443333004",
                        "display": "Medulloblastoma",
                    },
                    {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C71.6"},
                ]
            }
        ],
    }
    base.update(changes)
    return base


RESOURCES = {"Practitioner/p-7": specialist()}


def mdm(**kwargs: Any) -> Message:
    args: dict = {
        "referral": referral(),
        "pdf": PDF_BYTES,
        "sending": SENDING,
        "receiving": RECEIVING,
        "control_id": "HUB-MDM-0001",
        "now": NOW,
        "resources": RESOURCES,
    }
    the_report = kwargs.pop("report", None) or report()
    the_patient = kwargs.pop("patient", None) or patient()
    args.update(kwargs)
    raw = opinion_to_mdm_t02(the_report, the_patient, **args)
    assert raw.endswith(b"\r") and b"\n" not in raw
    return parse_message(raw)


def oru(**kwargs: Any) -> Message:
    args: dict = {
        "referral": referral(),
        "pdf": PDF_BYTES,
        "sending": SENDING,
        "receiving": RECEIVING,
        "control_id": "HUB-ORU-0001",
        "now": NOW,
        "resources": RESOURCES,
    }
    the_report = kwargs.pop("report", None) or report()
    args.update(kwargs)
    return parse_message(opinion_to_oru_r01(the_report, patient(), **args))


def first(message: Message, name: str) -> Segment:
    segment = message.first(name)
    assert segment is not None, f"no {name} segment"
    return segment


def names(message: Message) -> list[str]:
    return [segment.name for segment in message.segments]


def obx_lines(message: Message) -> list[str]:
    return [s.value(5) for s in message.all("OBX") if s.value(2) == "TX"]


# -- MDM^T02 -----------------------------------------------------------------------------------


def test_mdm_header_fields():
    message = mdm()
    msh = message.msh
    assert names(message)[:5] == ["MSH", "EVN", "PID", "PV1", "TXA"]
    assert message.message_type == ("MDM", "T02", "MDM_T02")
    assert message.control_id == "HUB-MDM-0001"
    assert (msh.value(3), msh.value(4), msh.value(5), msh.value(6)) == (*SENDING, *RECEIVING)
    assert msh.value(7) == "20261102093005+0100"
    assert msh.value(11) == "P"
    assert msh.value(12) == "2.5.1"
    assert (msh.value(15), msh.value(16)) == ("AL", "NE")
    assert msh.value(18) == "UNICODE UTF-8"
    evn = first(message, "EVN")
    assert (evn.value(1), evn.value(2), evn.value(6)) == (
        "T02",
        "20261102093005+0100",
        "20261031080000+0000",
    )


def test_mdm_pid_identifiers_names_birth_date_sex():
    pid = first(mdm(), "PID")
    # PID-3: the hub's id and the MRN with assigning authority (CX-4) and type (CX-5);
    # the SSN is kept out by the table (send: false), the 'old' MRN by its use.
    assert pid.repetitions(3) and len(pid.repetitions(3)) == 2
    assert pid.value(3, 1, repetition=1) == "SYN-5512"
    assert pid.value(3, 4, 1, repetition=1) == "SOH"
    assert pid.value(3, 4, 2, repetition=1) == f"{HUB}/sid/patient"
    assert pid.value(3, 4, 3, repetition=1) == "URI"
    assert pid.value(3, 5, repetition=1) == "PI"
    assert pid.value(3, 1, repetition=2) == "8831207"
    assert pid.value(3, 4, 1, repetition=2) == "OUTSIDE-EHR"
    assert pid.value(3, 5, repetition=2) == "MR"
    assert "000-12-3456" not in pid.field(3) and "OLD-1" not in pid.field(3)
    # PID-5: the official (legal, L) name first, then the usual one (D).
    assert [pid.value(5, c, repetition=1) for c in (1, 2, 3, 7)] == [
        "Quillfeather",
        "Wren",
        "Isolde",
        "L",
    ]
    assert [pid.value(5, c, repetition=2) for c in (1, 2, 7)] == ["Quill", "Wren", "D"]
    assert (pid.value(7), pid.value(8)) == ("20170305", "F")
    assert first(mdm(), "PV1").value(2) == "N"


def test_mdm_txa_describes_the_document():
    txa = first(mdm(), "TXA")
    assert txa.value(1) == "1"
    assert txa.value(2) == "CN"  # LOINC 11488-4 consult note → table 0270 CN
    assert txa.value(3) == "multipart"  # text and PDF
    assert txa.value(4) == "20261030140500+0100"
    assert txa.value(6) == "20261031080000+0000"
    for number in (5, 9):  # primary activity provider, originator: the specialist by NPI
        assert txa.value(number, 1) == "1234567893"
        assert (txa.value(number, 2), txa.value(number, 3)) == ("Okafor", "Ada")
        assert (txa.value(number, 4), txa.value(number, 6)) == ("N.", "Dr.")
        assert txa.value(number, 9, 1) == "NPI"
        assert txa.value(number, 9, 2) == "2.16.840.1.113883.4.6"
        assert txa.value(number, 9, 3) == "ISO"
        assert txa.value(number, 13) == "NPI"
    # TXA-12 unique document number: the report's identifier with its system as authority.
    assert txa.value(12, 1) == "OP-2026-0042"
    assert (txa.value(12, 3), txa.value(12, 4)) == (f"{HUB}/sid/opinion", "URI")
    # TXA-14 placer (the referrer's number), TXA-15 filler (the hub's case number).
    assert [txa.value(14, c) for c in (1, 2, 3, 4)] == [
        "REF-7Q2",
        "OUTSIDE-EHR",
        "https://outside-ehr.example/referral",
        "URI",
    ]
    assert [txa.value(15, c) for c in (1, 2)] == ["sr-4401", "SOH"]
    assert txa.value(17) == "AU"  # final → authenticated (table 0271)
    assert txa.value(18) == "R"  # meta.security R → restricted (table 0272)
    assert txa.value(19) == "AV"
    assert txa.value(22, 1) == "1234567893"
    assert txa.value(22, 15) == "20261031080000+0000"  # PPN-15: when it was authenticated


def test_mdm_obx_text_lines_code_and_pdf():
    message = mdm()
    obx = message.all("OBX")
    assert [s.value(1) for s in obx] == [str(n) for n in range(1, len(obx) + 1)]
    text = [s for s in obx if s.value(2) == "TX"]
    assert all(s.value(3, 1) == "11488-4" and s.value(3, 3) == "LN" for s in text)
    assert [s.value(4) for s in obx if s.value(2) != "ED"] == ["1"] * (len(obx) - 1)
    assert all(s.value(11) == "F" for s in obx)
    assert all(s.value(14) == "20261030140500+0100" for s in obx)
    lines = obx_lines(message)
    assert all(len(line) <= 80 for line in lines)
    assert lines[2] == ""  # the first paragraph takes two lines; the blank one is kept
    assert " ".join(line for line in lines if line).split() == CONCLUSION.split()
    coded = [s for s in obx if s.value(2) == "CE"]
    assert len(coded) == 1
    assert [coded[0].value(3, c) for c in (1, 3)] == ["CONCLUSION", "L"]
    assert [coded[0].value(5, c) for c in range(1, 7)] == [
        "443333004",
        "Medulloblastoma",
        "SCT",
        "C71.6",
        "",
        "I10C",
    ]
    pdf = [s for s in obx if s.value(2) == "ED"]
    assert len(pdf) == 1 and pdf[0] is obx[-1] and pdf[0].value(4) == "2"
    assert [pdf[0].value(5, c) for c in (2, 3, 4)] == ["application", "pdf", "Base64"]
    assert base64.b64decode(pdf[0].value(5, 5)) == PDF_BYTES


def test_delimiters_in_text_are_escaped_and_round_trip():
    message = mdm()
    raw = " ".join(s.field(5) for s in message.all("OBX") if s.value(2) == "TX")
    for sequence in ("\\F\\", "\\S\\", "\\T\\", "\\R\\", "\\E\\"):
        assert sequence in raw
    assert "|" not in raw and "^" not in raw and "&" not in raw and "~" not in raw
    assert obx_lines(message)[0].startswith(
        "Findings support WNT-activated medulloblastoma | low risk ^ standard & more ~"
    )
    assert "C:\\records\\mri." in " ".join(obx_lines(message))


def test_names_with_delimiters_round_trip_through_the_tokenizer():
    tricky = patient()
    tricky["name"] = [{"use": "official", "family": "O'Hara|Smith^Jr & Co~\\", "given": ["Zoë"]}]
    pid = first(mdm(patient=tricky), "PID")
    assert pid.value(5, 1) == "O'Hara|Smith^Jr & Co~\\"
    assert pid.value(5, 2) == "Zoë"


def test_mdm_reparses_with_hl7apy_strict_and_only_known_table_warnings(tmp_path):
    raw = opinion_to_mdm_t02(
        report(),
        patient(),
        referral=referral(),
        pdf=PDF_BYTES,
        sending=SENDING,
        receiving=RECEIVING,
        control_id="HUB-MDM-0002",
        now=NOW,
        resources=RESOURCES,
    )
    parsed = reparse(raw)
    assert parsed.name == "MDM_T02"
    assert parsed.msh.msh_10.to_er7() == "HUB-MDM-0002"
    report_file = tmp_path / "warnings.txt"
    hl7apy_parse(
        raw.decode().rstrip("\r"),
        validation_level=VALIDATION_LEVEL.STRICT,
        force_validation=True,
        report_file=str(report_file),
    )
    warnings = report_file.read_text().splitlines()
    # hl7apy's copies of tables 0396 and 0203 lack codes the v2.5.1 guides use.
    allowed = ("Value SCT not in table", "Value I10C not in table")
    assert all(w.startswith("Warning: ") and w[9:].startswith(allowed) for w in warnings), warnings


@pytest.mark.parametrize(
    ("status", "txa_17", "txa_19", "obx_11", "authenticated"),
    [
        ("final", "AU", "AV", "F", True),
        ("amended", "AU", "AV", "C", True),
        ("corrected", "AU", "AV", "C", True),
        ("appended", "AU", "AV", "C", True),
        ("preliminary", "DO", "UN", "P", False),
        ("partial", "IP", "UN", "P", False),
        ("registered", "IN", "UN", "I", False),
    ],
)
def test_report_status_table(status, txa_17, txa_19, obx_11, authenticated):
    message = mdm(report=report(status=status))
    txa = first(message, "TXA")
    assert (txa.value(17), txa.value(19)) == (txa_17, txa_19)
    assert {s.value(11) for s in message.all("OBX")} == {obx_11}
    assert bool(txa.field(22)) is authenticated


@pytest.mark.parametrize("status", ["cancelled", "entered-in-error", "unknown", ""])
def test_reports_in_other_statuses_are_not_sent(status):
    with pytest.raises(OutboundMappingError, match="status"):
        mdm(report=report(status=status))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ({"coding": [{"system": "http://loinc.org", "code": "11526-1"}]}, "SP"),
        ({"coding": [{"system": "http://loinc.org", "code": "99999-9"}]}, "CN"),
        ({"text": "Second opinion"}, "CN"),
    ],
)
def test_document_type_table(code, expected):
    message = mdm(report=report(code=code))
    assert first(message, "TXA").value(2) == expected


def test_report_code_without_coding_uses_the_local_code_with_its_text():
    message = mdm(report=report(code={"text": "Tumour board second opinion"}))
    obx = [s for s in message.all("OBX") if s.value(2) == "TX"][0]
    assert [obx.value(3, c) for c in (1, 2, 3)] == [
        "SECOND-OPINION",
        "Tumour board second opinion",
        "L",
    ]


def test_pdf_from_presented_form_and_text_only_presentation():
    form = [{"contentType": "application/pdf", "data": base64.b64encode(PDF_BYTES).decode()}]
    message = mdm(report=report(presentedForm=form), pdf=None)
    ed = message.all("OBX")[-1]
    assert base64.b64decode(ed.value(5, 5)) == PDF_BYTES
    text_only = mdm(pdf=None)
    assert first(text_only, "TXA").value(3) == "TX"
    assert all(s.value(2) != "ED" for s in text_only.all("OBX"))


def test_a_large_pdf_is_carried_whole():
    big = bytes(range(256)) * 4000  # 1 MB: far beyond hl7apy's 199-character ST at STRICT
    message = mdm(pdf=big)
    assert base64.b64decode(message.all("OBX")[-1].value(5, 5)) == big


def test_a_line_of_delimiters_is_split_to_stay_within_hl7apy_lengths():
    message = mdm(report=report(conclusion="|" * 80, conclusionCode=[]), pdf=None)
    lines = obx_lines(message)
    assert "".join(lines) == "|" * 80
    assert all(len(escape(line)) <= 199 for line in lines)


def test_without_referral_the_order_numbers_are_empty():
    txa = first(mdm(referral=None), "TXA")
    assert txa.field(14) == "" and txa.field(15) == ""


def test_contained_performer_and_display_only_performer():
    contained = report(
        contained=[{**specialist(), "id": "spec"}],
        performer=[{"reference": "#spec"}],
    )
    assert first(mdm(report=contained, resources=None), "TXA").value(5, 2) == "Okafor"
    display_only = report(performer=[{"reference": "Practitioner/x", "display": "Dr. Ada Okafor"}])
    txa = first(mdm(report=display_only, resources=None), "TXA")
    assert (txa.value(5, 1), txa.value(5, 2)) == ("", "Dr. Ada Okafor")


def test_a_patient_without_a_name_gets_name_type_unspecified():
    nameless = patient()
    del nameless["name"]
    pid = first(mdm(patient=nameless), "PID")
    assert (pid.value(5, 1), pid.value(5, 7)) == ("", "U")  # PID-5 is required (table 0200 U)


def test_a_patient_without_a_sendable_identifier_is_refused():
    only_ssn = patient()
    only_ssn["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-ssn", "value": "000-12-3456"}]
    with pytest.raises(OutboundMappingError, match="PID-3"):
        mdm(patient=only_ssn)


def test_nothing_to_send_is_refused():
    empty = report(conclusion="  \n ", conclusionCode=[])
    with pytest.raises(OutboundMappingError, match="nothing|no conclusion"):
        mdm(report=empty, pdf=None)


@pytest.mark.parametrize("control_id", ["", "A|B", "A^B", "A\rB", "A\\B"])
def test_control_ids_with_delimiters_are_refused(control_id):
    with pytest.raises(OutboundMappingError, match="MSH-10"):
        mdm(control_id=control_id)


def test_an_impossible_date_is_refused_naming_the_field_not_the_value():
    with pytest.raises(OutboundMappingError) as caught:
        mdm(report=report(effectiveDateTime="2026-13-45T10:00:00Z"))
    assert "2026" not in str(caught.value)


def test_naive_now_has_no_offset():
    assert mdm(now=datetime(2026, 11, 2, 9, 30, 5)).msh.value(7) == "20261102093005"


@pytest.mark.parametrize(
    ("fhir", "hl7"),
    [
        ("2026", "2026"),
        ("2026-10", "202610"),
        ("2026-10-30", "20261030"),
        ("2026-10-30T14:05:00+01:00", "20261030140500+0100"),
        ("2026-10-30T14:05:00.123456Z", "20261030140500.1234+0000"),
        ("not a date", ""),
    ],
)
def test_fhir_dates_become_dtm_with_their_precision(fhir, hl7):
    assert dtm_of_fhir(fhir) == hl7


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"))))
def test_escape_round_trips_through_the_tokenizer(text):
    assert unescape(escape(text), Delimiters()) == text


@settings(max_examples=15, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("abcXYZ019 éß|^&~\\-.,;:'()")),
        min_size=1,
        max_size=400,
    ).filter(lambda s: s.strip())
)
def test_any_conclusion_comes_back_through_the_tokenizer(text):
    message = mdm(report=report(conclusion=text, conclusionCode=[]), pdf=None)
    lines = obx_lines(message)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert all(len(line) <= 80 for line in lines)


# -- ORU^R01 -----------------------------------------------------------------------------------


def test_oru_structure_and_order_fields():
    message = oru()
    assert names(message)[:4] == ["MSH", "PID", "ORC", "OBR"]
    assert set(names(message)[4:]) == {"OBX"}
    assert message.message_type == ("ORU", "R01", "ORU_R01")
    assert message.control_id == "HUB-ORU-0001"
    assert first(message, "PID").value(3, 1) == "SYN-5512"
    orc, obr = first(message, "ORC"), first(message, "OBR")
    assert orc.value(1) == "RE"
    assert orc.value(5) == "CM"  # final report → order completed (table 0038)
    assert orc.value(9) == "20261031080000+0000"
    assert orc.value(12, 2) == "Dr. Orla Brennick"  # the requester, by its display
    for segment, (placer, filler) in ((orc, (2, 3)), (obr, (2, 3))):
        assert [segment.value(placer, c) for c in (1, 2)] == ["REF-7Q2", "OUTSIDE-EHR"]
        assert [segment.value(filler, c) for c in (1, 2, 3)] == [
            "sr-4401",
            "SOH",
            f"{HUB}/sid/case",
        ]
    assert [obr.value(4, c) for c in (1, 2, 3)] == [
        "SECOND-OPINION",
        "Second opinion review: pediatric oncology",
        "L",
    ]
    assert obr.value(7) == "20261030140500+0100"
    assert obr.value(16, 2) == "Dr. Orla Brennick"
    assert obr.value(22) == "20261031080000+0000"
    assert obr.value(25) == "F"
    # OBR-32 principal result interpreter: NDL, its CNN name in subcomponents.
    assert [obr.value(32, 1, s) for s in (1, 2, 3, 6, 9, 10, 11)] == [
        "1234567893",
        "Okafor",
        "Ada",
        "Dr.",
        "NPI",
        "2.16.840.1.113883.4.6",
        "ISO",
    ]


def test_oru_observations_match_the_mdm_ones():
    message = oru()
    assert obx_lines(message) == obx_lines(mdm())
    assert base64.b64decode(message.all("OBX")[-1].value(5, 5)) == PDF_BYTES


def test_oru_without_referral_files_under_the_report_number():
    obr = first(oru(referral=None), "OBR")
    assert obr.field(2) == ""
    assert obr.value(3, 1) == "OP-2026-0042"
    assert [obr.value(4, c) for c in (1, 2)] == ["SECOND-OPINION", "Second opinion"]


def test_oru_preliminary_statuses():
    message = oru(report=report(status="preliminary"))
    assert first(message, "ORC").value(5) == "IP"
    assert first(message, "OBR").value(25) == "P"


def test_oru_reparses_with_hl7apy_strict():
    raw = opinion_to_oru_r01(
        report(),
        patient(),
        referral=referral(),
        pdf=None,
        sending=SENDING,
        receiving=RECEIVING,
        control_id="HUB-ORU-0002",
        now=NOW,
        resources=RESOURCES,
    )
    parsed = reparse(raw)
    assert parsed.name == "ORU_R01"
    obr = parsed.oru_r01_patient_result.oru_r01_order_observation.obr
    assert obr.obr_25.to_er7() == "F"


# -- OSU^O51 -----------------------------------------------------------------------------------


def task(status: str = "in-progress", **changes: object) -> dict:
    base: dict[str, Any] = {
        "resourceType": "Task",
        "id": "t-5",
        "identifier": [{"system": f"{HUB}/sid/case", "value": "sr-4401"}],
        "status": status,
        "intent": "order",
        "focus": {"reference": "ServiceRequest/sr-4401"},
        "lastModified": "2026-11-01T16:45:00Z",
        "businessStatus": {
            "coding": [
                {
                    "system": f"{HUB}/CodeSystem/case-business-status",
                    "code": "assigned",
                    "display": "Assigned to a specialist",
                }
            ],
            "text": "Assigned to a specialist",
        },
    }
    base.update(changes)
    return base


def osu(the_task: dict, the_referral: dict | None = None) -> bytes:
    return referral_status_to_osu_o51(
        the_task,
        the_referral or referral(),
        patient(),
        sending=SENDING,
        receiving=RECEIVING,
        control_id="HUB-OSU-0001",
        now=NOW,
    )


# Task.status → ORC-5 (HL7 table 0038), written out here rather than read from the YAML.
ORDER_STATUS = {
    "requested": "SC",
    "ready": "SC",
    "received": "IP",
    "accepted": "IP",
    "in-progress": "IP",
    "on-hold": "HD",
    "completed": "CM",
    "cancelled": "CA",
    "rejected": "CA",
    "failed": "DC",
}


@pytest.mark.parametrize(("status", "orc_5"), sorted(ORDER_STATUS.items()))
def test_osu_order_status_table(status, orc_5):
    message = parse_message(osu(task(status)))
    orc = first(message, "ORC")
    assert (orc.value(1), orc.value(5)) == ("SC", orc_5)


def test_osu_fields():
    raw = osu(task("on-hold", statusReason={"text": "Waiting for the spinal MRI"}))
    message = parse_message(raw)
    assert names(message) == ["MSH", "PID", "ORC"]
    assert message.message_type == ("OSU", "O51", "OSU_O51")
    assert message.control_id == "HUB-OSU-0001"
    assert message.version == "2.5.1"
    orc = first(message, "ORC")
    assert [orc.value(2, c) for c in (1, 2)] == ["REF-7Q2", "OUTSIDE-EHR"]
    assert [orc.value(3, c) for c in (1, 2)] == ["sr-4401", "SOH"]
    assert orc.value(9) == "20261101164500+0000"
    assert orc.value(12, 2) == "Dr. Orla Brennick"
    assert orc.value(16, 2) == "Waiting for the spinal MRI"
    assert first(message, "PID").value(5, 1) == "Quillfeather"


def test_osu_reason_falls_back_to_the_business_status_and_now():
    the_task = task("received")
    del the_task["lastModified"]
    orc = first(parse_message(osu(the_task)), "ORC")
    assert orc.value(16, 2) == "Assigned to a specialist"
    assert orc.value(9) == "20261102093005+0100"


def test_osu_coded_status_reason():
    reason = {
        "coding": [{"system": "http://example.org/reasons", "code": "NOREC"}],
        "text": "No records",
    }
    orc = first(parse_message(osu(task("rejected", statusReason=reason))), "ORC")
    assert [orc.value(16, c) for c in (1, 2, 3)] == ["NOREC", "No records", "L"]


@pytest.mark.parametrize("status", ["draft", "entered-in-error", ""])
def test_osu_refuses_statuses_never_reported(status):
    with pytest.raises(OutboundMappingError, match="Task.status"):
        osu(task(status))


def test_osu_without_any_order_number_is_refused():
    bare = referral()
    bare["identifier"] = []
    del bare["id"]
    with pytest.raises(OutboundMappingError, match="ORC-2"):
        osu(task(identifier=[]), bare)


def test_osu_reparses_with_hl7apy_strict_against_the_360x_profile(tmp_path):
    raw = osu(task())
    parsed = reparse(raw, osu_o51_profile())
    assert [child.name for child in parsed.children] == ["MSH", "PID", "ORC"]
    report_file = tmp_path / "warnings.txt"
    hl7apy_parse(
        raw.decode().rstrip("\r"),
        validation_level=VALIDATION_LEVEL.STRICT,
        message_profile=osu_o51_profile(),
        force_validation=True,
        report_file=str(report_file),
    )
    # Only MSH-9 warns: hl7apy's v2.5.1 tables 0076/0003/0354 predate OSU^O51^OSU_O51.
    assert [line.split(" in element ")[1] for line in report_file.read_text().splitlines()] == [
        "MSH_9.MSG_1",
        "MSH_9.MSG_2",
        "MSH_9.MSG_3",
    ]
    # The profile is real validation: the same message without its ORC fails it.
    without_orc = b"\r".join(s for s in raw.split(b"\r") if not s.startswith(b"ORC"))
    with pytest.raises(OutboundValidationError, match="ORC"):
        reparse(without_orc, osu_o51_profile())


def test_inputs_are_not_modified():
    the_report, the_patient, the_referral = report(), patient(), referral()
    before = copy.deepcopy((the_report, the_patient, the_referral))
    opinion_to_oru_r01(
        the_report,
        the_patient,
        referral=the_referral,
        pdf=PDF_BYTES,
        sending=SENDING,
        receiving=RECEIVING,
        control_id="HUB-ORU-0003",
        now=datetime(2026, 11, 2, tzinfo=UTC),
        resources=RESOURCES,
    )
    assert (the_report, the_patient, the_referral) == before
