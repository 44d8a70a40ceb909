"""SYNTHETIC HL7 v2 messages for the mapping tests: every type the hub maps, in variants.

Nothing here is real patient data: names, identifiers, places and texts are invented
(phone numbers are in the fictional 555-01xx range, NPIs start with 999). Messages of
v2.3 and v2.5.1 are built with hl7apy, which knows each version's segments and groups;
v2.8 ones by careful string assembly (`TextMessage`: hl7apy's v2.8 tables drop withdrawn
fields and shift the later ones), as is a field a version does not define (OBX-26 in
v2.5.1). Free text is escaped here first (hl7apy keeps escape sequences as given).

Variants cover versions 2.3, 2.5.1 and 2.8; repeating segments (OBX, NTE, NK1, PID-3
repetitions); escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\.br\\); missing optional fields;
Z-segments (ZPI); an ED-embedded PDF; ISO-8859-1 and UTF-8 names declared in MSH-18.

    CASES["oru_r01_cbc_v251"]()   # → bytes, segments separated by \\r

Run `python -m tests.hl7_samples --write` to rewrite tests/golden/hl7v2/<case>.hl7 and,
with `--json`, the expected bundles <case>.json from the current mapping (then review the
diff field by field before committing it).
"""

from __future__ import annotations

import argparse
import base64
import json
from collections.abc import Callable
from pathlib import Path

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Group, Message, Segment

__all__ = ["CASES", "GOLDEN_DIR", "escape", "oru_cbc", "tiny_pdf", "write_goldens"]

GOLDEN_DIR = Path(__file__).resolve().parent / "golden" / "hl7v2"
TOLERANT = VALIDATION_LEVEL.TOLERANT
Fields = dict[int, "str | list[str] | None"]

# -- the invented cast ----------------------------------------------------------------------
NPI = "NPI&2.16.840.1.113883.4.6&ISO"
WHITLOCK = f"9990001012^Whitlock^Adaeze^^^Dr.^^^{NPI}^^^^NPI"  # referring oncologist
CASTELLANE = f"9990001020^Castellane^Henrik^^^Dr.^^^{NPI}^^^^NPI"  # pathologist
BRANNIGAN = f"9990001038^Brannigan^Lucia^^^Dr.^^^{NPI}^^^^NPI"  # radiologist
FENWICK_CNN = f"9990002011&Fenwick&Tomas&&&Dr.&&&{NPI}"  # CNN, in OBR-32
TECH = "T-0417^Ostrander^Kofi^^^^^^RBCH_STAFF"
NORA_IDS = ["4821937^^^RBCH^MR", "C-55120^^^CHCMC^MR"]
NORA_NAME = "Brightwater^Nora^June^^^^L"
NORA_ADDRESS = "412 Heron Point Road^^Riverbend^OR^97123^US^H"
MOTHER = "Brightwater^Elena^^^^^L"
FATHER = "Brightwater^Daniel^^^^^L"
HOME_PHONE_25 = "(503)555-0142^PRN^PH^^1^503^5550142"
MOBILE_25 = "^PRS^CP^^1^503^5550187"


def escape(text: str) -> str:
    """HL7 v2 escaping (§2.7) of free text: delimiters, the escape itself, line breaks."""
    out = text.replace("\\", "\\E\\")
    for char, code in (("|", "F"), ("^", "S"), ("&", "T"), ("~", "R")):
        out = out.replace(char, f"\\{code}\\")
    return out.replace("\n", "\\.br\\")


def tiny_pdf(title: str) -> bytes:
    """A valid one-page PDF (correct xref offsets) showing `title`."""
    stream = f"BT /F1 14 Tf 72 720 Td ({title}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def _pdf_ed(title: str) -> str:
    """OBX-5 as ED: source application ^ AP ^ PDF ^ Base64 ^ data."""
    return "RBCH^AP^PDF^Base64^" + base64.b64encode(tiny_pdf(title)).decode("ascii")


# -- building blocks ------------------------------------------------------------------------
class TextMessage:
    """Careful string assembly for v2.8, where hl7apy cannot: its v2.8 tables leave out
    withdrawn fields and so shift the later ones (OBR-16 lands in OBR-14, EVN-2 in EVN-1,
    DG1-15 in DG1-7). Groups are positions only; segments are written in order."""

    def __init__(self, msh: Fields) -> None:
        self.lines = [
            "MSH|^~\\&#|" + "|".join(_field_text(msh.get(n)) for n in range(3, 19)).rstrip("|")
        ]

    def add_group(self, name: str) -> TextMessage:
        return self

    def add_segment_text(self, name: str, fields: Fields) -> None:
        last = max((n for n, v in fields.items() if v is not None), default=0)
        self.lines.append(
            "|".join([name, *(_field_text(fields.get(n)) for n in range(1, last + 1))])
        )

    def to_er7(self) -> str:
        return "\r".join(self.lines)


def _field_text(value: str | list[str] | None) -> str:
    if value is None:
        return ""
    return "~".join(value) if isinstance(value, list) else value


Parent = Message | Group | TextMessage


def _message(
    structure: str,
    version: str,
    message_type: str,
    control_id: str,
    when: str,
    charset: str | None = None,
    sender: str = "RBCH_EHR",
) -> Message | TextMessage:
    msh: Fields = {
        3: sender,
        4: "RBCH",
        5: "SECOND_OPINION_HUB",
        6: "HUB",
        7: when,
        9: message_type,
        10: control_id,
        11: "P",
        12: version,
        18: charset,
    }
    if version == "2.8":
        return TextMessage(msh)
    message = Message(structure, version=version, validation_level=TOLERANT)
    for number, value in msh.items():
        if value is not None:
            setattr(message.msh, f"msh_{number}", value)
    return message


def _segment(parent: Parent, name: str, fields: Fields) -> None:
    if isinstance(parent, TextMessage):
        parent.add_segment_text(name, fields)
        return
    segment = parent.add_segment(name)
    _fill(segment, fields)


def _fill(segment: Segment, fields: Fields) -> None:
    prefix = segment.name.lower()
    for number, value in sorted(fields.items()):
        if value is None:
            continue
        if isinstance(value, list):
            for repetition in value:
                segment.add_field(f"{prefix}_{number}").value = repetition
        else:
            setattr(segment, f"{prefix}_{number}", value)


def _z_segment(parent: Parent, name: str, version: str, fields: Fields) -> None:
    if isinstance(parent, TextMessage):
        parent.add_segment_text(name, fields)
        return
    segment = Segment(name, version=version, validation_level=TOLERANT)
    _fill(segment, fields)
    parent.add(segment)


def _er7(message: Message | TextMessage) -> str:
    """The message text. hl7apy escapes the backslashes of formatting sequences (\\.br\\)
    it does not know; they are put back here."""
    return message.to_er7().replace("\\E\\.br\\E\\", "\\.br\\")


def _bytes(message: Message | TextMessage, charset: str = "utf-8") -> bytes:
    return _er7(message).encode(charset)


def _pid(parent: Parent, version: str, **overrides: str | list[str] | None) -> None:
    fields: Fields = {
        1: "1",
        3: NORA_IDS,
        5: NORA_NAME,
        7: "20170315",
        8: "F" if version != "2.8" else "F^Female^HL70001",
        11: NORA_ADDRESS,
        13: [HOME_PHONE_25] if version != "2.8" else ["^PRN^PH^^1^503^5550142"],
        15: "en^English^ISO639",
    }
    for key, value in overrides.items():
        fields[int(key.lstrip("f"))] = value
    _segment(parent, "PID", fields)


# -- ADT ------------------------------------------------------------------------------------
def adt_a01_v251() -> bytes:
    """Admit: two MRNs, mother and father (NK1 ×2), insurance, a visit; v2.5.1."""
    m = _message("ADT_A01", "2.5.1", "ADT^A01^ADT_A01", "ADT-A01-0001", "20261012081500-0700")
    _segment(m, "EVN", {1: "A01", 2: "20261012081500-0700"})
    _pid(m, "2.5.1", f13=[HOME_PHONE_25, MOBILE_25])
    _segment(
        m,
        "NK1",
        {
            1: "1",
            2: MOTHER,
            3: "MTH^Mother^HL70063",
            4: NORA_ADDRESS,
            5: [HOME_PHONE_25, MOBILE_25],
            7: "N^Next-of-Kin^HL70131",
            15: "F",
        },
    )
    _segment(
        m,
        "NK1",
        {
            1: "2",
            2: FATHER,
            3: "FTH^Father^HL70063",
            5: "^PRS^CP^^1^503^5550163",
            7: "N^Next-of-Kin^HL70131",
            15: "M",
        },
    )
    _segment(m, "PV1", {1: "1", 2: "I", 3: "4W^412^A^RBCH", 7: WHITLOCK})
    insurance = m.add_group("ADT_A01_INSURANCE")
    _segment(
        insurance,
        "IN1",
        {
            1: "1",
            2: "NWF-GOLD^Northwind Family Gold^L",
            3: "NWFHP01^^^NWFHP_PAYER",
            4: "Northwind Family Health Plan",
            8: "GRP-20455",
            12: "20260101",
            13: "20261231",
            15: "FAM^Family plan^L",
            16: MOTHER,
            17: "MTH^Mother^HL70063",
            36: "NW-884201",
        },
    )
    return _bytes(m)


def adt_a04_v23() -> bytes:
    """Register, v2.3: PID-2 external id, v2.3 telephone, one guardian, no address, no
    insurance (missing optional fields)."""
    m = _message("ADT_A01", "2.3", "ADT^A04", "ADT-A04-0002", "20261003101500")
    _segment(m, "EVN", {1: "A04", 2: "20261003101500"})
    _segment(
        m,
        "PID",
        {
            1: "1",
            2: "EXT-7731^^^CHCMC",
            3: "4821937^^^RBCH^MR",
            5: "Brightwater^Nora",
            7: "20170315",
            8: "F",
            13: "(503)555-0142",
        },
    )
    _segment(
        m,
        "NK1",
        {
            1: "1",
            2: "Halloway^Marguerite",
            3: "GRD^Guardian^HL70063",
            5: "(503)555-0199",
            7: "C^Emergency Contact^HL70131",
        },
    )
    _segment(m, "PV1", {1: "1", 2: "O"})
    return _bytes(m)


def adt_a08_v28_utf8() -> bytes:
    """Update, v2.8, UTF-8 (MSH-18): a name outside Latin-1, CWE sex, e-mail, a Z-segment."""
    m = _message(
        "ADT_A01",
        "2.8",
        "ADT^A08^ADT_A01",
        "ADT-A08-0003",
        "20261020091500-0700",
        charset="UNICODE UTF-8",
    )
    _segment(m, "EVN", {2: "20261020091500-0700"})
    _segment(
        m,
        "PID",
        {
            1: "1",
            3: ["5530881^^^RBCH^MR"],
            5: "Wróblewska-Łęcka^Zofia^^^^^L",
            7: "20150822",
            8: "F^Female^HL70001",
            11: "88 Quarry Hill Drive^Apt 3^Riverbend^OR^97124^US^H",
            13: ["^PRN^PH^^1^503^5550121", "^NET^Internet^zofia.parent@example.org"],
        },
    )
    _z_segment(m, "ZPI", "2.8", {1: "1", 2: "PREFERRED-NAME^Zosia", 3: "Y"})
    _segment(
        m,
        "NK1",
        {
            1: "1",
            2: "Wróblewska^Agnieszka^^^^^L",
            3: "MTH^Mother^HL70063",
            5: "^PRS^CP^^1^503^5550122",
        },
    )
    _segment(m, "PV1", {1: "1", 2: "O"})
    return _bytes(m, "utf-8")


def adt_a01_v251_latin1() -> bytes:
    """Admit, v2.5.1, ISO-8859-1 (MSH-18 8859/1): accented names in Latin-1 bytes."""
    m = _message(
        "ADT_A01",
        "2.5.1",
        "ADT^A01^ADT_A01",
        "ADT-A01-0004",
        "20261015111500-0700",
        charset="8859/1",
    )
    _segment(m, "EVN", {2: "20261015111500-0700"})
    _segment(
        m,
        "PID",
        {
            1: "1",
            3: ["6610452^^^RBCH^MR"],
            5: "Ångström-Quillon^Zoë^Léa^^^^L",
            7: "20180204",
            8: "F",
            11: "17 Old Mill Court^^Riverbend^OR^97123^US^H",
        },
    )
    _segment(m, "NK1", {1: "1", 2: "Ångström^Mélanie^^^^^L", 3: "MTH^Mère^HL70063"})
    _segment(m, "PV1", {1: "1", 2: "O"})
    return _bytes(m, "iso-8859-1")


def adt_a40_v251() -> bytes:
    """Merge, v2.5.1: patient 4821999 (a duplicate registration) into 4821937."""
    m = _message("ADT_A39", "2.5.1", "ADT^A40^ADT_A39", "ADT-A40-0005", "20261021150000-0700")
    _segment(m, "EVN", {1: "A40", 2: "20261021150000-0700"})
    patient = m.add_group("ADT_A39_PATIENT")
    _segment(patient, "PID", {1: "1", 3: NORA_IDS, 5: NORA_NAME, 7: "20170315", 8: "F"})
    _segment(patient, "MRG", {1: "4821999^^^RBCH^MR", 7: "Brightwater^Norah"})
    return _bytes(m)


def adt_a40_v23_two() -> bytes:
    """Merge, v2.3, two PATIENT groups (two merges in one message), MRG-1 without a type."""
    m = _message("ADT_A39", "2.3", "ADT^A40", "ADT-A40-0006", "20261022090000-0800")
    _segment(m, "EVN", {1: "A40", 2: "20261022090000"})
    first = m.add_group("ADT_A39_PATIENT")
    _segment(first, "PID", {3: "4821937^^^RBCH^MR", 5: "Brightwater^Nora"})
    _segment(first, "MRG", {1: "4821998^^^RBCH"})
    second = m.add_group("ADT_A39_PATIENT")
    _segment(second, "PID", {3: "6610452^^^RBCH^MR", 5: "Ångström-Quillon^Zoë"})
    _segment(second, "MRG", {1: "6610400^^^RBCH^MR"})
    return _bytes(m)


# -- ORU ------------------------------------------------------------------------------------
# (code, text, value, units, range, flag) of a CBC and a chemistry panel: 15 results.
CBC = [
    ("WBC", "White blood cells", "1.8", "K/uL", "4.5-13.5", "L"),
    ("RBC", "Red blood cells", "3.61", "M/uL", "3.9-5.3", "L"),
    ("HGB", "Hemoglobin", "9.9", "g/dL", "11.5-15.5", "L"),
    ("HCT", "Hematocrit", "29.4", "%", "35.0-45.0", "L"),
    ("MCV", "Mean corpuscular volume", "81.4", "fL", "77-95", "N"),
    ("MCH", "Mean corpuscular hemoglobin", "27.4", "pg", "25-33", "N"),
    ("MCHC", "MCH concentration", "33.7", "g/dL", "31-37", "N"),
    ("RDW", "Red cell distribution width", "15.9", "%", "11.5-14.5", "H"),
    ("PLT", "Platelets", "64", "K/uL", "150-450", "L"),
    ("ANC", "Absolute neutrophil count", "0.42", "K/uL", "1.5-8.0", "LL"),
]
CHEMISTRY = [
    ("CREAT", "Creatinine", "0.41", "mg/dL", "0.3-0.7", "N"),
    ("BUN", "Urea nitrogen", "9", "mg/dL", "5-18", "N"),
    ("NA", "Sodium", "138", "mmol/L", "135-145", "N"),
    ("K", "Potassium", "3.2", "mmol/L", "3.5-5.1", "L"),
    ("ALT", "Alanine aminotransferase", "88", "U/L", "<45", "H"),
]


def oru_cbc(control_id: str = "ORU-CBC-0007") -> bytes:
    """Labs, v2.5.1: a CBC and a chemistry panel, 15 NM results with units, ranges, flags;
    notes on the report and on results (escapes); times without offset (MSH-7's is used)."""
    m = _message(
        "ORU_R01", "2.5.1", "ORU^R01^ORU_R01", control_id, "20261014101500-0700", sender="RBCH_LIS"
    )
    result = m.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    _pid(patient, "2.5.1")
    panels = (
        ("EHR-2026-1001^RBCH_EHR", "LAB-26-300411^RBCH_LAB", "CBC^Complete blood count^L", CBC),
        (
            "EHR-2026-1002^RBCH_EHR",
            "LAB-26-300412^RBCH_LAB",
            "CMP^Comprehensive metabolic panel^L",
            CHEMISTRY,
        ),
    )
    for number, (placer, filler, code, rows) in enumerate(panels, start=1):
        order = result.add_group("ORU_R01_ORDER_OBSERVATION")
        _segment(order, "ORC", {1: "RE", 2: placer, 3: filler, 5: "CM"})
        _segment(
            order,
            "OBR",
            {
                1: str(number),
                2: placer,
                3: filler,
                4: code,
                7: "20261014073000",
                22: "20261014101500-0700",
                24: "HM" if rows is CBC else "CH",
                25: "F",
                32: FENWICK_CNN,
            },
        )
        if rows is CBC:
            _segment(
                order,
                "NTE",
                {
                    1: "1",
                    2: "L",
                    3: escape("Specimen received 07:41; slight hemolysis (H&E smear reviewed)."),
                },
            )
        for index, (test, text, value, units, normal, flag) in enumerate(rows, start=1):
            observation = order.add_group("ORU_R01_OBSERVATION")
            declared = units in ("%", "g/dL", "mg/dL", "mmol/L")  # the others: as labs write
            _segment(
                observation,
                "OBX",
                {
                    1: str(index),
                    2: "NM",
                    3: f"{test}^{text}^L",
                    5: value,
                    6: f"{units}^^UCUM" if declared else units,
                    7: normal,
                    8: flag,
                    11: "F",
                    14: "20261014073000",
                    16: TECH,
                },
            )
            if test == "ANC":
                _segment(
                    observation,
                    "NTE",
                    {
                        1: "1",
                        2: "L",
                        3: escape(
                            "Critical value: called to Dr. Whitlock at 10:12\n"
                            "read back & confirmed."
                        ),
                    },
                )
                _segment(observation, "NTE", {1: "2", 2: "L", 3: "Repeat in 48 hours."})
    return _bytes(m)


def oru_r01_cbc_v23() -> bytes:
    """Labs, v2.3 (RESPONSE group, CE, TS): structured numeric, a value that is not a
    number, a missing result status, units as a lab writes them."""
    m = _message(
        "ORU_R01", "2.3", "ORU^R01", "ORU-CBC-0008", "20261016093000-0700", sender="RBCH_LIS"
    )
    response = m.add_group("ORU_R01_RESPONSE")
    patient = response.add_group("ORU_R01_PATIENT")
    _segment(
        patient,
        "PID",
        {
            1: "1",
            2: "EXT-7731^^^CHCMC",
            3: "4821937^^^RBCH^MR",
            5: "Brightwater^Nora",
            7: "20170315",
            8: "F",
        },
    )
    order = response.add_group("ORU_R01_ORDER_OBSERVATION")
    _segment(
        order,
        "OBR",
        {
            1: "1",
            2: "EHR-2026-1101^RBCH_EHR",
            3: "LAB-26-300901^RBCH_LAB",
            4: "CBC^Complete blood count^L",
            7: "202610160700",
            25: "F",
        },
    )
    rows = [
        ("1", "NM", "WBC^White blood cells^L", "2.6", "x10E3/uL", "4.5-13.5", "L", "F"),
        ("2", "NM", "HGB^Hemoglobin^L", "10.4", "g/dl", "11.5-15.5", "L", "F"),
        ("3", "SN", "PLT^Platelets^L", "<^20", "K/uL", "150-450", "LL", "F"),
        ("4", "NM", "ANC^Absolute neutrophil count^L", "see note", "K/uL", "", "", "F"),
        ("5", "NM", "MCV^Mean corpuscular volume^L", "82", "fl", "77-95", "", None),
    ]
    for set_id, kind, code, value, units, normal, flag, status in rows:
        observation = order.add_group("ORU_R01_OBSERVATION")
        _segment(
            observation,
            "OBX",
            {
                1: set_id,
                2: kind,
                3: code,
                5: value,
                6: units,
                7: normal or None,
                8: flag or None,
                11: status,
            },
        )
    _segment(observation, "NTE", {1: "1", 3: "Smear pending for the neutrophil count."})
    return _bytes(m)


PATHOLOGY_LINES = [
    "SURGICAL PATHOLOGY REPORT (SYNTHETIC DEMO DATA)",
    "Specimen: posterior fossa mass, resection (blocks A1\\A4).",
    "Diagnosis: medulloblastoma, WNT-activated & classic histology (CNS WHO grade 4).",
    "Immunohistochemistry: synaptophysin + | beta-catenin nuclear + | GAB1 -",
    "Ki-67 (MIB-1) ~40%; YAP1^focal.",
]


def oru_r01_pathology_v251() -> bytes:
    """Surgical pathology, v2.5.1: narrative TX lines with every escape sequence, two
    repetitions in one OBX, and the signed report as an embedded PDF (ED)."""
    m = _message(
        "ORU_R01",
        "2.5.1",
        "ORU^R01^ORU_R01",
        "ORU-PATH-0009",
        "20261009164500-0700",
        sender="RBCH_PATH",
    )
    result = m.add_group("ORU_R01_PATIENT_RESULT")
    _pid(result.add_group("ORU_R01_PATIENT"), "2.5.1")
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    placer, filler = "EHR-2026-0877^RBCH_EHR", "SP-26-01452^RBCH_PATH"
    _segment(order, "ORC", {1: "RE", 2: placer, 3: filler})
    _segment(
        order,
        "OBR",
        {
            1: "1",
            2: placer,
            3: filler,
            4: "SURGPATH^Surgical pathology report^L",
            7: "20261002103000-0700",
            22: "20261009164500-0700",
            24: "SP",
            25: "F",
            32: f"9990001020&Castellane&Henrik&&&Dr.&&&{NPI}",
        },
    )
    code = "22637-3^Pathology report final diagnosis Narrative^LN"
    for index, line in enumerate(PATHOLOGY_LINES[:3], start=1):
        _segment(
            order.add_group("ORU_R01_OBSERVATION"),
            "OBX",
            {1: str(index), 2: "TX", 3: code, 5: escape(line), 11: "F"},
        )
    # two lines in one OBX-5 (a repetition each), then a line with a break inside
    _segment(
        order.add_group("ORU_R01_OBSERVATION"),
        "OBX",
        {
            1: "4",
            2: "TX",
            3: code,
            5: [escape(PATHOLOGY_LINES[3]), escape(PATHOLOGY_LINES[4])],
            11: "F",
        },
    )
    last = order.add_group("ORU_R01_OBSERVATION")
    _segment(
        last,
        "OBX",
        {
            1: "5",
            2: "TX",
            3: code,
            11: "F",
            5: escape("Comment: findings discussed at tumor board\nsee also MRI of 2026-09-28."),
        },
    )
    _segment(last, "NTE", {1: "1", 3: "Electronically signed by Dr. Castellane."})
    _segment(
        order.add_group("ORU_R01_OBSERVATION"),
        "OBX",
        {
            1: "6",
            2: "ED",
            3: "PDF^Signed pathology report^L",
            5: _pdf_ed("Synthetic pathology report SP-26-01452"),
            11: "F",
            14: "20261009164500-0700",
        },
    )
    return _bytes(m)


def oru_r01_radiology_v28() -> bytes:
    """MRI report, v2.8 (COMMON_ORDER, DTM, CWE sex): FT narrative with line breaks, a
    Z-segment after PID, an interpretation result."""
    m = _message(
        "ORU_R01",
        "2.8",
        "ORU^R01^ORU_R01",
        "ORU-RAD-0010",
        "20260928153000-0700",
        sender="RBCH_RIS",
    )
    result = m.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    _pid(patient, "2.8")
    _z_segment(patient, "ZPI", "2.8", {1: "1", 2: "INTERPRETER-NEEDED^N"})
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    placer, filler = "EHR-2026-0760^RBCH_EHR", "RAD-26-77120^RBCH_RAD"
    common = order.add_group("ORU_R01_COMMON_ORDER")
    _segment(common, "ORC", {1: "RE", 2: placer, 3: filler})
    _segment(
        order,
        "OBR",
        {
            1: "1",
            2: placer,
            3: filler,
            4: "MRBRAINWWO^MRI brain with and without contrast^L",
            7: "20260928111500-0700",
            22: "20260928153000-0700",
            24: "MR",
            25: "F",
        },
    )
    findings = (
        "FINDINGS: 3.1 x 2.8 cm enhancing mass in the fourth ventricle.\n"
        "No hydrocephalus. No leptomeningeal enhancement."
    )
    _segment(
        order.add_group("ORU_R01_OBSERVATION"),
        "OBX",
        {
            1: "1",
            2: "FT",
            3: "18782-3^Radiology Study observation (narrative)^LN",
            5: escape(findings),
            11: "F",
            16: BRANNIGAN,
        },
    )
    _segment(
        order.add_group("ORU_R01_OBSERVATION"),
        "OBX",
        {
            1: "2",
            2: "FT",
            3: "19005-8^Radiology Imaging study [Impression] (narrative)^LN",
            5: escape("IMPRESSION: posterior fossa tumor, medulloblastoma favored."),
            11: "F",
        },
    )
    _segment(
        order.add_group("ORU_R01_OBSERVATION"),
        "OBX",
        {
            1: "3",
            2: "NM",
            3: "LESIONSIZE^Largest lesion dimension^L",
            5: "31",
            6: "mm^millimeter^UCUM",
            11: "F",
            14: "20260928111500-0700",
        },
    )
    return _bytes(m)


def oru_r01_molecular_v251() -> bytes:
    """Molecular results, v2.5.1: CWE variant results (genes as HGNC, assessments as LOINC
    answers), HGVS strings, sub-ids, a method, an interpretation line, and OBX-26 (a field
    the tables do not know)."""
    m = _message(
        "ORU_R01",
        "2.5.1",
        "ORU^R01^ORU_R01",
        "ORU-MOL-0011",
        "20261011120000-0700",
        sender="RBCH_MOLDX",
    )
    result = m.add_group("ORU_R01_PATIENT_RESULT")
    _pid(result.add_group("ORU_R01_PATIENT"), "2.5.1")
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    placer, filler = "EHR-2026-0901^RBCH_EHR", "MOL-26-00318^RBCH_LAB"
    _segment(order, "ORC", {1: "RE", 2: placer, 3: filler})
    _segment(
        order,
        "OBR",
        {
            1: "1",
            2: placer,
            3: filler,
            4: "81247-9^Master HL7 genetic variant reporting panel^LN",
            7: "20261002103000-0700",
            22: "20261011120000-0700",
            24: "GE",
            25: "F",
        },
    )
    method = "NGS-PANEL^Targeted next-generation sequencing^L"
    rows = [
        ("1", "CWE", "48018-6^Gene studied [ID]^LN", "1", "HGNC:2514^CTNNB1^HGNC"),
        ("2", "CWE", "69548-6^Genetic variant assessment^LN", "1", "LA9633-4^Present^LN"),
        ("3", "ST", "48004-6^DNA change (c.HGVS)^LN", "1", "c.134C>T"),
        ("4", "ST", "48005-3^Amino acid change (pHGVS)^LN", "1", "p.Ser45Phe"),
        ("5", "CWE", "48018-6^Gene studied [ID]^LN", "2", "HGNC:11998^TP53^HGNC"),
        ("6", "CWE", "69548-6^Genetic variant assessment^LN", "2", "LA9634-2^Absent^LN"),
    ]
    for set_id, kind, code, sub_id, value in rows:
        _segment(
            order.add_group("ORU_R01_OBSERVATION"),
            "OBX",
            {1: set_id, 2: kind, 3: code, 4: sub_id, 5: value, 11: "F", 17: method},
        )
    _segment(
        order.add_group("ORU_R01_OBSERVATION"),
        "OBX",
        {
            1: "7",
            2: "TX",
            3: "69047-9^Genetic analysis summary panel^LN",
            11: "F",
            5: escape(
                "CTNNB1 exon 3 hotspot variant detected; consistent with WNT-activated "
                "medulloblastoma. TP53 wild-type."
            ),
        },
    )
    # OBX-26 does not exist in v2.5.1, so hl7apy will not set it: string assembly
    return _with_field(_er7(m), "OBX|1|", 26, "LOCAL-EXTRA").encode("utf-8")


def _with_field(er7: str, line_start: str, number: int, value: str) -> str:
    """Set field `number` of the first segment starting with `line_start` (raw text)."""
    lines = er7.split("\r")
    for index, line in enumerate(lines):
        if line.startswith(line_start):
            fields = line.split("|")
            fields += [""] * (number + 1 - len(fields))
            fields[number] = value
            lines[index] = "|".join(fields)
            break
    return "\r".join(lines)


# -- MDM ------------------------------------------------------------------------------------
def mdm_t02_v251_text() -> bytes:
    """Consult note, v2.5.1: TXA with author, authenticator, status; text in TX lines."""
    m = _message("MDM_T02", "2.5.1", "MDM^T02^MDM_T02", "MDM-0012", "20261020150000-0700")
    _segment(m, "EVN", {1: "T02", 2: "20261020150000-0700"})
    _pid(m, "2.5.1")
    _segment(m, "PV1", {1: "1", 2: "O"})
    _segment(
        m,
        "TXA",
        {
            1: "1",
            2: "CN^Consultation^HL70270",
            3: "TX",
            4: "20261020140000-0700",
            5: WHITLOCK,
            6: "20261020143000-0700",
            10: WHITLOCK,
            12: "DOC-2026-7781^RBCH_DOC",
            17: "AU",
            19: "AV",
        },
    )
    lines = [
        "PEDIATRIC ONCOLOGY CONSULTATION (SYNTHETIC DEMO DATA)",
        "Nine-year-old with WNT-activated medulloblastoma, gross total resection, M0.",
        "Plan: craniospinal irradiation 23.4 Gy & boost; maintenance per protocol.",
        "Family requests an outside opinion | questions attached to the referral.",
    ]
    for index, line in enumerate(lines, start=1):
        _segment(
            m.add_group("MDM_T02_OBXNTE_SUPPGRP"),
            "OBX",
            {1: str(index), 2: "TX", 3: "CONSULT^Consult note^L", 5: escape(line), 11: "F"},
        )
    return _bytes(m)


def mdm_t02_v23_pdf() -> bytes:
    """Discharge summary, v2.3 (flat OBX): an embedded PDF, no availability status (the
    document status is defaulted)."""
    m = _message("MDM_T02", "2.3", "MDM^T02", "MDM-0013", "20261018170000-0700")
    _segment(m, "EVN", {1: "T02", 2: "20261018170000"})
    _segment(
        m, "PID", {1: "1", 3: "4821937^^^RBCH^MR", 5: "Brightwater^Nora", 7: "20170315", 8: "F"}
    )
    _segment(m, "PV1", {1: "1", 2: "I"})
    _segment(
        m,
        "TXA",
        {
            1: "1",
            2: "DS",
            3: "AP",
            4: "20261018",
            9: "9990001012^Whitlock^Adaeze^^^Dr.",
            12: "DOC-2026-7790^RBCH_DOC",
            17: "LA",
        },
    )
    _segment(
        m,
        "OBX",
        {
            1: "1",
            2: "ED",
            3: "DS^Discharge summary^L",
            5: _pdf_ed("Synthetic discharge summary"),
            11: "F",
        },
    )
    return _bytes(m)


def mdm_t02_v28_pathology() -> bytes:
    """Pathology document, v2.8: FT content with line breaks, preliminary status."""
    m = _message("MDM_T02", "2.8", "MDM^T02^MDM_T02", "MDM-0014", "20261003120000-0700")
    _segment(m, "EVN", {2: "20261003120000-0700"})
    _pid(m, "2.8")
    _segment(m, "PV1", {1: "1", 2: "O"})
    _segment(
        m,
        "TXA",
        {
            1: "1",
            2: "SP^Surgical pathology^HL70270",
            3: "FT",
            6: "20261003115500-0700",
            9: CASTELLANE,
            12: "DOC-2026-7702^RBCH_DOC",
            17: "IP",
            19: "AV",
        },
    )
    _segment(
        m.add_group("MDM_T02_OBSERVATION"),
        "OBX",
        {
            1: "1",
            2: "FT",
            3: "PATHDOC^Pathology document^L",
            11: "P",
            5: escape("PRELIMINARY: small round blue cell tumor.\nFinal report to follow."),
        },
    )
    return _bytes(m)


# -- REF ------------------------------------------------------------------------------------
FAMILY_QUESTIONS = [
    "Family asks: is the reduced-dose craniospinal radiation (23.4 Gy) right for WNT "
    "medulloblastoma?",
    "Family asks: can cisplatin be reduced to protect hearing? (audiology: mild loss at 8 kHz)",
    "Referrer asks: review of pathology & molecular subgrouping | second read of MRI.",
]


def ref_i12_v251() -> bytes:
    """Referral for a second opinion, v2.5.1: referring and referred-to providers, parents,
    insurance, two diagnoses, the family's and referrer's questions (NTE ×3)."""
    m = _message("REF_I12", "2.5.1", "REF^I12^REF_I12", "REF-0015", "20261028090000-0700")
    _segment(
        m,
        "RF1",
        {
            1: "A^Accepted^HL70283",
            2: "R^Routine^HL70280",
            3: "Med^Medical^HL70281",
            6: "REF-2026-0042^RBCH_REF",
            7: "20261028085500-0700",
            10: "S^Second Opinion^HL70336",
        },
    )
    referrer = m.add_group("REF_I12_PROVIDER_CONTACT")
    _segment(
        referrer,
        "PRD",
        {
            1: "RP^Referring Provider^HL70286",
            2: "Whitlock^Adaeze^^^Dr.",
            3: "1 Cedar Way^^Riverbend^OR^97123",
            5: "^WPN^PH^^1^503^5550110",
            7: "9990001012^NPI",
        },
    )
    hub = m.add_group("REF_I12_PROVIDER_CONTACT")
    _segment(
        hub,
        "PRD",
        {1: "RT^Referred to Provider^HL70286", 2: "Second Opinion Hub^Pediatric Oncology"},
    )
    _pid(m, "2.5.1")
    _segment(m, "NK1", {1: "1", 2: MOTHER, 3: "MTH^Mother^HL70063", 5: MOBILE_25})
    _segment(m, "NK1", {1: "2", 2: FATHER, 3: "FTH^Father^HL70063"})
    insurance = m.add_group("REF_I12_INSURANCE")
    _segment(
        insurance,
        "IN1",
        {
            1: "1",
            2: "NWF-GOLD^Northwind Family Gold^L",
            3: "NWFHP01^^^NWFHP_PAYER",
            4: "Northwind Family Health Plan",
            16: MOTHER,
            17: "MTH^Mother^HL70063",
            36: "NW-884201",
        },
    )
    _segment(m, "DG1", {1: "1", 3: "C71.6^Malignant neoplasm of cerebellum^I10C", 6: "F"})
    _segment(m, "DG1", {1: "2", 3: "9470/3^Medulloblastoma, NOS^ICDO3", 6: "F"})
    _segment(m.add_group("REF_I12_PATIENT_VISIT"), "PV1", {1: "1", 2: "O"})
    for index, question in enumerate(FAMILY_QUESTIONS, start=1):
        _segment(m, "NTE", {1: str(index), 2: "P", 3: escape(question)})
    return _bytes(m)


def ref_i12_v23() -> bytes:
    """Referral, v2.3, minimal: a referring provider without an id (referenced by name),
    a diagnosis as text only (DG1-4), one question, no insurance."""
    m = _message("REF_I12", "2.3", "REF^I12", "REF-0016", "20261029100000-0800")
    _segment(m, "RF1", {1: "P", 2: "S", 6: "REF-2026-0043^RBCH_REF", 7: "20261029"})
    provider = m.add_group("REF_I12_PROVIDER")
    _segment(provider, "PRD", {1: "RP", 2: "Castellane^Henrik^^^Dr."})
    _segment(m, "PID", {1: "1", 3: "6610452^^^RBCH^MR", 5: "Quillon^Zoe", 7: "20180204", 8: "F"})
    _segment(m, "DG1", {1: "1", 4: "Suspected ependymoma, posterior fossa"})
    _segment(m, "NTE", {1: "1", 3: "Please review the outside MRI before surgery."})
    return _bytes(m)


def ref_i12_v28_results() -> bytes:
    """Referral, v2.8, UTF-8, with an attached result group (pathology narrative and a
    CWE result) and a Z-segment."""
    m = _message(
        "REF_I12",
        "2.8",
        "REF^I12^REF_I12",
        "REF-0017",
        "20261030083000-0700",
        charset="UNICODE UTF-8",
    )
    _segment(
        m,
        "RF1",
        {
            1: "A",
            2: "A^ASAP^HL70280",
            6: "REF-2026-0044^RBCH_REF",
            7: "20261030082000-0700",
            10: "S^Second Opinion^HL70336",
        },
    )
    _segment(
        m.add_group("REF_I12_PROVIDER_CONTACT"),
        "PRD",
        {
            1: "RP^Referring Provider^HL70286",
            2: "Brannigan^Lucia^^^Dr.",
            7: ["9990001038^NPI", "OR-MD-20871^SL^OR"],
        },
    )
    _segment(
        m,
        "PID",
        {
            1: "1",
            3: ["5530881^^^RBCH^MR"],
            5: "Wróblewska-Łęcka^Zofia^^^^^L",
            7: "20150822",
            8: "F^Female^HL70001",
        },
    )
    _z_segment(m, "ZPI", "2.8", {1: "1", 2: "CONSENT-ON-FILE^Y"})
    results = m.add_group("REF_I12_OBSERVATION")
    placer, filler = "EHR-2026-0955^RBCH_EHR", "SP-26-01511^RBCH_PATH"
    _segment(
        results,
        "OBR",
        {
            1: "1",
            2: placer,
            3: filler,
            4: "SURGPATH^Surgical pathology report^L",
            7: "20261020101500-0700",
            24: "SP",
            25: "F",
        },
    )
    notes = results.add_group("REF_I12_RESULTS_NOTES")
    _segment(
        notes,
        "OBX",
        {
            1: "1",
            2: "TX",
            3: "22637-3^Pathology report final diagnosis Narrative^LN",
            5: escape("Ependymoma, PFA group (synthetic)."),
            11: "F",
        },
    )
    notes = results.add_group("REF_I12_RESULTS_NOTES")
    _segment(
        notes,
        "OBX",
        {1: "2", 2: "CWE", 3: "PFA-STATUS^H3K27me3 loss^L", 5: "LA9633-4^Present^LN", 11: "F"},
    )
    _segment(m.add_group("REF_I12_PATIENT_VISIT"), "PV1", {1: "1", 2: "O"})
    _segment(
        m,
        "NTE",
        {
            1: "1",
            2: "P",
            3: escape("Family asks whether proton therapy is an option \\ and where."),
        },
    )
    return _bytes(m, "utf-8")


# -- OMG, ORM -------------------------------------------------------------------------------
SECOND_OPINION_ORDER = "SECOP^Second opinion review^L"


def omg_o19_v251() -> bytes:
    """Second-opinion order, v2.5.1: ordering provider (ORC-12), stat priority (TQ1-9),
    reasons (OBR-31, DG1), questions (NTE ×2), order-entry answers (OBX)."""
    m = _message("OMG_O19", "2.5.1", "OMG^O19^OMG_O19", "OMG-0018", "20261027140000-0700")
    patient = m.add_group("OMG_O19_PATIENT")
    _pid(patient, "2.5.1")
    _segment(patient, "NK1", {1: "1", 2: MOTHER, 3: "MTH^Mother^HL70063"})
    order = m.add_group("OMG_O19_ORDER")
    placer = "EHR-2026-1201^RBCH_EHR"
    _segment(order, "ORC", {1: "NW", 2: placer, 9: "20261027135500-0700", 12: WHITLOCK})
    _segment(order.add_group("OMG_O19_TIMING"), "TQ1", {1: "1", 9: "S^Stat^HL70027"})
    _segment(
        order,
        "OBR",
        {
            1: "1",
            2: placer,
            4: SECOND_OPINION_ORDER,
            31: "C71.6^Malignant neoplasm of cerebellum^I10C",
        },
    )
    _segment(order, "NTE", {1: "1", 2: "P", 3: escape(FAMILY_QUESTIONS[0])})
    _segment(order, "NTE", {1: "2", 2: "P", 3: escape(FAMILY_QUESTIONS[2])})
    _segment(order, "DG1", {1: "1", 3: "C71.6^Malignant neoplasm of cerebellum^I10C", 6: "W"})
    answer = order.add_group("OMG_O19_OBSERVATION")
    _segment(
        answer,
        "OBX",
        {1: "1", 2: "CWE", 3: "SLIDES-SENT^Pathology slides sent^L", 5: "Y^Yes^HL70136", 11: "F"},
    )
    answer = order.add_group("OMG_O19_OBSERVATION")
    _segment(
        answer,
        "OBX",
        {
            1: "2",
            2: "ST",
            3: "IMAGING-LINK^Imaging share^L",
            5: "Study shared via image exchange",
            11: "F",
        },
    )
    return _bytes(m)


def omg_o19_v28() -> bytes:
    """Second-opinion order, v2.8, UTF-8: the requester only in OBR-16, no TQ1, one note."""
    m = _message(
        "OMG_O19",
        "2.8",
        "OMG^O19^OMG_O19",
        "OMG-0019",
        "20261027160000-0700",
        charset="UNICODE UTF-8",
    )
    patient = m.add_group("OMG_O19_PATIENT")
    _segment(
        patient,
        "PID",
        {
            1: "1",
            3: ["5530881^^^RBCH^MR"],
            5: "Wróblewska-Łęcka^Zofia^^^^^L",
            7: "20150822",
            8: "F^Female^HL70001",
        },
    )
    order = m.add_group("OMG_O19_ORDER")
    placer = "EHR-2026-1202^RBCH_EHR"
    _segment(order, "ORC", {1: "NW", 2: placer})
    _segment(order, "OBR", {1: "1", 2: placer, 4: SECOND_OPINION_ORDER, 16: BRANNIGAN})
    _segment(order, "NTE", {1: "1", 3: escape("Ŝecond read of the spine MRI, please.")})
    return _bytes(m, "utf-8")


def orm_o01_v23() -> bytes:
    """Second-opinion order, v2.3 (ORC-7 timing with priority, ORDER_DETAIL choice)."""
    m = _message("ORM_O01", "2.3", "ORM^O01", "ORM-0020", "20261026110000-0700")
    patient = m.add_group("ORM_O01_PATIENT")
    _segment(patient, "PID", {1: "1", 3: NORA_IDS, 5: NORA_NAME, 7: "20170315", 8: "F"})
    order = m.add_group("ORM_O01_ORDER")
    placer = "EHR-2026-1150^RBCH_EHR"
    _segment(order, "ORC", {1: "NW", 2: placer, 7: "^^^^^R", 9: "20261026105500", 12: WHITLOCK})
    detail = order.add_group("ORM_O01_ORDER_DETAIL")
    _segment(
        detail.add_group("ORM_O01_CHOICE"), "OBR", {1: "1", 2: placer, 4: SECOND_OPINION_ORDER}
    )
    _segment(detail, "NTE", {1: "1", 3: escape(FAMILY_QUESTIONS[1])})
    _segment(
        detail,
        "DG1",
        {1: "1", 3: "C71.6^Malignant neoplasm of cerebellum^I10", 4: "Medulloblastoma"},
    )
    return _bytes(m)


def orm_o01_v251_latin1() -> bytes:
    """Second-opinion order, v2.5.1, ISO-8859-1: a Latin-1 name, insurance, two orders."""
    m = _message(
        "ORM_O01", "2.5.1", "ORM^O01^ORM_O01", "ORM-0021", "20261026120000-0700", charset="8859/1"
    )
    patient = m.add_group("ORM_O01_PATIENT")
    _segment(
        patient,
        "PID",
        {
            1: "1",
            3: ["6610452^^^RBCH^MR"],
            5: "Ångström-Quillon^Zoë^Léa^^^^L",
            7: "20180204",
            8: "F",
        },
    )
    insurance = patient.add_group("ORM_O01_INSURANCE")
    _segment(
        insurance,
        "IN1",
        {1: "1", 3: "NWFHP01^^^NWFHP_PAYER", 4: "Northwind Family Health Plan", 36: "NW-990017"},
    )
    for number, (placer, code, question) in enumerate(
        (
            (
                "EHR-2026-1160^RBCH_EHR",
                SECOND_OPINION_ORDER,
                "Revue de la pathologie, s'il vous plaît: épendymome?",
            ),
            (
                "EHR-2026-1161^RBCH_EHR",
                "SECOP-RAD^Second opinion imaging review^L",
                "Second read of the pre-operative MRI.",
            ),
        ),
        start=1,
    ):
        order = m.add_group("ORM_O01_ORDER")
        _segment(order, "ORC", {1: "NW", 2: placer, 12: BRANNIGAN})
        detail = order.add_group("ORM_O01_ORDER_DETAIL")
        _segment(
            detail.add_group("ORM_O01_OBRRQDRQ1RXOODSODT_SUPPGRP"),
            "OBR",
            {1: str(number), 2: placer, 4: code, 27: "^^^^^A"},
        )
        _segment(detail, "NTE", {1: "1", 3: escape(question)})
    return _bytes(m, "iso-8859-1")


CASES: dict[str, Callable[[], bytes]] = {
    "adt_a01_v251": adt_a01_v251,
    "adt_a04_v23": adt_a04_v23,
    "adt_a08_v28_utf8": adt_a08_v28_utf8,
    "adt_a01_v251_latin1": adt_a01_v251_latin1,
    "adt_a40_v251": adt_a40_v251,
    "adt_a40_v23_two": adt_a40_v23_two,
    "oru_r01_cbc_v251": oru_cbc,
    "oru_r01_cbc_v23": oru_r01_cbc_v23,
    "oru_r01_pathology_v251": oru_r01_pathology_v251,
    "oru_r01_radiology_v28": oru_r01_radiology_v28,
    "oru_r01_molecular_v251": oru_r01_molecular_v251,
    "mdm_t02_v251_text": mdm_t02_v251_text,
    "mdm_t02_v23_pdf": mdm_t02_v23_pdf,
    "mdm_t02_v28_pathology": mdm_t02_v28_pathology,
    "ref_i12_v251": ref_i12_v251,
    "ref_i12_v23": ref_i12_v23,
    "ref_i12_v28_results": ref_i12_v28_results,
    "omg_o19_v251": omg_o19_v251,
    "omg_o19_v28": omg_o19_v28,
    "orm_o01_v23": orm_o01_v23,
    "orm_o01_v251_latin1": orm_o01_v251_latin1,
}


def write_goldens(directory: Path = GOLDEN_DIR, with_json: bool = False) -> list[Path]:
    """Write <case>.hl7 for every case (and <case>.json, the mapped bundle, if asked)."""
    from mappings import map_bytes

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, build in CASES.items():
        raw = build()
        path = directory / f"{name}.hl7"
        path.write_bytes(raw)
        written.append(path)
        if with_json:
            bundle = map_bytes(raw).bundle
            target = directory / f"{name}.json"
            target.write_text(
                json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            written.append(target)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the .hl7 goldens")
    parser.add_argument("--json", action="store_true", help="also write the .json bundles")
    arguments = parser.parse_args()
    if arguments.write:
        for written_path in write_goldens(with_json=arguments.json):
            print(written_path)
    else:
        for case, builder in CASES.items():
            print(case, len(builder()), "bytes")
