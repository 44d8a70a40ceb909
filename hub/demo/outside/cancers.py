"""The cancers a SYNTHETIC outside-EHR record can hold (data for :mod:`hub.demo.outside_record`).

One :class:`CancerProfile` per kind: diagnosis codings, body site, stage, the chemotherapy
given in cycles, pathology and molecular findings, imaging studies and procedures, each on a
day counted from the first visit (day 0).  All texts are written for this module; nothing
describes a real patient.

Codes are given only where we are sure of them: ICD-10-CM for every diagnosis, SNOMED CT
disorders and ICD-O-3 morphologies where known, RxNorm ingredients for some drugs (the others
carry their name as text, as many EHRs send them), LOINC answers for variant findings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from hub.demo.synthetic import ICD10CM

__all__ = [
    "CANCERS",
    "ICDO3",
    "RADIOTHERAPY",
    "SNOMED",
    "CancerProfile",
    "ChemoDrug",
    "Code",
    "ImagingSpec",
    "ProcedureSpec",
    "VariantFinding",
]

SNOMED: Final = "http://snomed.info/sct"
# Procedure.category of a course of radiotherapy (as mCODE's course summary has it).
RADIOTHERAPY: Final = (SNOMED, "108290001", "Radiation oncology AND/OR radiotherapy")
ICDO3: Final = "http://terminology.hl7.org/CodeSystem/icd-o-3"


@dataclass(frozen=True)
class Code:
    """One coding: system URI, code, display."""

    system: str
    code: str
    display: str


@dataclass(frozen=True)
class ChemoDrug:
    """A chemotherapy agent and the dose given on day 1 of a cycle.

    ``dose`` is per m2 of body surface area, per kg of weight, or fixed (``basis``), in the
    UCUM ``unit``; ``max_dose`` caps it.  ``rxnorm`` is the ingredient code, or None where
    the drug is sent as text only.
    """

    name: str
    rxnorm: str | None
    dose: float
    basis: Literal["m2", "kg", "fixed"]
    unit: str
    route: str
    how: str
    max_dose: float | None = None


@dataclass(frozen=True)
class ImagingSpec:
    """An imaging study: its series as (DICOM modality, description, number of instances)."""

    label: str
    day: int
    description: str
    series: tuple[tuple[str, str, int], ...]
    conclusion: str


@dataclass(frozen=True)
class ProcedureSpec:
    """A procedure; ``note`` (if any) becomes an operative or procedure note document."""

    label: str
    day: int
    text: str
    body_site: str
    kind: Literal["operative", "procedure", "radiation"]
    note: str | None = None
    snomed: Code | None = None
    end_day: int | None = None  # for a course (radiation) rather than a single day


@dataclass(frozen=True)
class VariantFinding:
    """One molecular finding: gene studied, whether the alteration is present, its text."""

    gene: str
    present: bool
    text: str


@dataclass(frozen=True)
class CancerProfile:
    """What one kind of pediatric cancer looks like in the outside record."""

    key: str
    abbreviation: str  # short token used in resource ids
    text: str
    icd10: Code
    snomed: Code | None
    morphology: Code | None  # ICD-O-3
    body_site: str
    stage: str
    clinical_status: Literal["active", "relapse"]
    history: str  # free-text Condition.note
    age_range: tuple[int, int]  # age in whole years on the record's as_of date
    drugs: tuple[ChemoDrug, ...]
    cycles: tuple[tuple[str, ...], ...]  # drug names given in each cycle
    first_cycle_day: int
    cycle_interval_days: int
    pathology: str
    molecular: tuple[VariantFinding, ...]
    imaging: tuple[ImagingSpec, ...]
    procedures: tuple[ProcedureSpec, ...]
    comorbidity: tuple[Code | None, str]  # cancer-specific comorbidity: coding, text
    plan: str
    surgeon: str  # specialty of the surgeon or proceduralist

    def drug(self, name: str) -> ChemoDrug:
        """The drug called ``name`` (KeyError if the profile has none)."""
        for drug in self.drugs:
            if drug.name == name:
                return drug
        raise KeyError(name)


def _icd(code: str, display: str) -> Code:
    return Code(ICD10CM, code, display)


def _sct(code: str, display: str) -> Code:
    return Code(SNOMED, code, display)


def _icdo(code: str, display: str) -> Code:
    return Code(ICDO3, code, display)


_BIOPSY: Final = _sct("86273004", "Biopsy")

# Drugs shared by several regimens (RxNorm ingredient codes).
_VINCRISTINE: Final = ChemoDrug(
    "vincristine", "11202", 1.5, "m2", "mg", "Intravenous", "IV push", max_dose=2.0
)
_CISPLATIN: Final = ChemoDrug(
    "cisplatin", "2555", 75.0, "m2", "mg", "Intravenous", "IV over 6 hours, hyperhydration"
)
_CYCLOPHOSPHAMIDE: Final = ChemoDrug(
    "cyclophosphamide", "3002", 1000.0, "m2", "mg", "Intravenous", "IV over 1 hour with mesna"
)
_DOXORUBICIN: Final = ChemoDrug(
    "doxorubicin", "3639", 30.0, "m2", "mg", "Intravenous", "IV over 15 minutes"
)
_ETOPOSIDE: Final = ChemoDrug("etoposide", "4179", 120.0, "m2", "mg", "Intravenous", "IV 1 hour")

CANCERS: Final[dict[str, CancerProfile]] = {
    "medulloblastoma": CancerProfile(
        key="medulloblastoma",
        abbreviation="mb",
        text="Medulloblastoma, WNT-activated, classic histology",
        icd10=_icd("C71.6", "Malignant neoplasm of cerebellum"),
        snomed=_sct("443333004", "Medulloblastoma"),
        morphology=_icdo("9470/3", "Medulloblastoma, NOS"),
        body_site="Cerebellum (inferior vermis, fourth ventricle)",
        stage="Chang M0, gross total resection: standard risk",
        clinical_status="active",
        history="Two months of morning headaches and vomiting, then ataxia. Presented to the "
        "emergency department with obstructive hydrocephalus.",
        age_range=(6, 10),
        drugs=(_CISPLATIN, _VINCRISTINE, _CYCLOPHOSPHAMIDE),
        cycles=(("cisplatin", "vincristine"), ("cyclophosphamide", "vincristine")) * 3,
        first_cycle_day=110,
        cycle_interval_days=28,
        pathology="Medulloblastoma, WNT-activated, classic histology, CNS WHO grade 4. "
        "Synaptophysin positive, nuclear beta-catenin positive.",
        molecular=(
            VariantFinding("CTNNB1", True, "CTNNB1 exon 3 missense variant (WNT activation)"),
            VariantFinding("MYC", False, "No MYC amplification"),
            VariantFinding("TP53", False, "No pathogenic TP53 variant"),
        ),
        imaging=(
            ImagingSpec(
                "mr-brain-diagnostic",
                1,
                "MRI brain with and without contrast",
                (("MR", "Ax T2 FLAIR", 32), ("MR", "Ax T1 post contrast", 176), ("MR", "DWI", 64)),
                "4.0 cm enhancing mass of the fourth ventricle with obstructive hydrocephalus.",
            ),
            ImagingSpec(
                "mr-spine-staging",
                2,
                "MRI whole spine with contrast",
                (("MR", "Sag T1 post contrast", 60), ("MR", "Ax T1 post contrast", 120)),
                "No leptomeningeal enhancement of the spine.",
            ),
            ImagingSpec(
                "mr-brain-post-op",
                5,
                "MRI brain with and without contrast, post-operative",
                (("MR", "Ax T1 post contrast", 176), ("MR", "DWI", 64)),
                "Post-surgical changes; no residual enhancing tumour.",
            ),
            ImagingSpec(
                "ct-head-shunt-check",
                30,
                "CT head without contrast",
                (("CT", "Axial 2.5 mm brain", 64),),
                "Ventricles decreased in size; no haemorrhage.",
            ),
            ImagingSpec(
                "mr-brain-follow-up",
                360,
                "MRI brain and spine with contrast, surveillance",
                (("MR", "Ax T1 post contrast", 176), ("MR", "Sag T1 spine", 60)),
                "No evidence of recurrent or metastatic disease.",
            ),
        ),
        procedures=(
            ProcedureSpec(
                "resection",
                3,
                "Suboccipital craniotomy and gross total resection of posterior fossa tumour",
                "Posterior fossa",
                "operative",
                note="Soft grey tumour filling the fourth ventricle, arising from the inferior "
                "vermis. Gross total resection under the microscope. Estimated blood loss "
                "150 mL. No complications.",
            ),
            ProcedureSpec(
                "central-line",
                20,
                "Insertion of tunnelled central venous catheter",
                "Right internal jugular vein",
                "procedure",
            ),
            ProcedureSpec(
                "craniospinal-rt",
                40,
                "Craniospinal irradiation 23.4 Gy with posterior fossa boost to 54 Gy",
                "Craniospinal axis",
                "radiation",
                snomed=_sct("1217123003", "Radiotherapy course of treatment"),
                end_day=82,
            ),
        ),
        comorbidity=(_icd("G91.1", "Obstructive hydrocephalus"), "Obstructive hydrocephalus"),
        plan="Craniospinal irradiation then six cycles of maintenance chemotherapy "
        "(cisplatin/vincristine alternating with cyclophosphamide/vincristine). Audiology "
        "before each cisplatin cycle.",
        surgeon="Pediatric neurosurgery",
    ),
    "b-all-relapsed": CancerProfile(
        key="b-all-relapsed",
        abbreviation="ball",
        text="B-cell acute lymphoblastic leukemia, first late bone marrow relapse",
        icd10=_icd("C91.02", "Acute lymphoblastic leukemia, in relapse"),
        snomed=_sct("91857003", "Acute lymphoid leukemia"),
        morphology=_icdo("9811/3", "B lymphoblastic leukemia/lymphoma, NOS"),
        body_site="Bone marrow",
        stage="Late isolated bone marrow relapse, CNS1: standard risk",
        clinical_status="relapse",
        history="Diagnosed with standard-risk B-ALL at age 4 and treated to completion. "
        "Presented 14 months off therapy with bone pain, pallor and bruising.",
        age_range=(8, 12),
        drugs=(
            _VINCRISTINE,
            ChemoDrug("dexamethasone", "3264", 10.0, "m2", "mg", "Oral", "divided twice daily"),
            ChemoDrug("pegaspargase", None, 2500.0, "m2", "[iU]", "Intravenous", "IV 1 hour"),
            ChemoDrug("methotrexate", "6851", 15.0, "fixed", "mg", "Intrathecal", "by LP"),
            ChemoDrug("cytarabine", "3041", 3000.0, "m2", "mg", "Intravenous", "IV over 3 h"),
            ChemoDrug(
                "blinatumomab", "1597258", 15.0, "m2", "ug", "Intravenous", "continuous 28 days"
            ),
            ChemoDrug("mercaptopurine", None, 75.0, "m2", "mg", "Oral", "daily at bedtime"),
        ),
        cycles=(
            ("vincristine", "dexamethasone", "pegaspargase", "methotrexate"),
            ("cytarabine", "methotrexate"),
            ("blinatumomab",),
            ("vincristine", "dexamethasone", "methotrexate"),
            ("blinatumomab",),
            ("mercaptopurine", "methotrexate"),
        ),
        first_cycle_day=6,
        cycle_interval_days=35,
        pathology="Bone marrow aspirate and trephine: 78% lymphoblasts, CD19+ CD10+ CD34+ "
        "TdT+, consistent with relapsed B-lymphoblastic leukemia. Flow MRD at day 35: 0.02%.",
        molecular=(
            VariantFinding("ETV6", True, "ETV6::RUNX1 fusion, as at first diagnosis"),
            VariantFinding("CDKN2A", True, "CDKN2A biallelic deletion (new at relapse)"),
            VariantFinding("TP53", False, "No pathogenic TP53 variant"),
        ),
        imaging=(
            ImagingSpec(
                "xr-chest",
                0,
                "Chest radiograph, two views",
                (("DX", "PA chest", 1), ("DX", "Lateral chest", 1)),
                "No mediastinal mass. Lungs clear.",
            ),
            ImagingSpec(
                "mr-brain",
                4,
                "MRI brain with and without contrast",
                (("MR", "Ax T2 FLAIR", 32), ("MR", "Ax T1 post contrast", 176)),
                "No leptomeningeal or parenchymal disease.",
            ),
            ImagingSpec(
                "ct-chest-fever",
                45,
                "CT chest without contrast (prolonged neutropenic fever)",
                (("CT", "Axial 1.25 mm lung", 240),),
                "Two 6 mm nodules in the right lower lobe, possible early fungal infection.",
            ),
            ImagingSpec(
                "ct-chest-follow-up",
                90,
                "CT chest without contrast, follow-up",
                (("CT", "Axial 1.25 mm lung", 240),),
                "Right lower lobe nodules resolved.",
            ),
        ),
        procedures=(
            ProcedureSpec(
                "bone-marrow",
                1,
                "Bone marrow aspiration and trephine biopsy, bilateral posterior iliac crests",
                "Posterior iliac crests",
                "procedure",
                note="Under general anaesthesia, aspirates and trephine cores from both "
                "posterior iliac crests. Lumbar puncture with intrathecal methotrexate in the "
                "same session. No complications.",
            ),
            ProcedureSpec(
                "central-line",
                3,
                "Insertion of implanted venous access port",
                "Left subclavian vein",
                "procedure",
            ),
            ProcedureSpec(
                "bone-marrow-mrd",
                35,
                "Bone marrow aspiration for minimal residual disease",
                "Posterior iliac crest",
                "procedure",
            ),
        ),
        comorbidity=(_icd("E88.3", "Tumor lysis syndrome"), "Tumor lysis syndrome at relapse"),
        plan="Relapse reinduction (vincristine, dexamethasone, pegaspargase, intrathecal "
        "methotrexate), consolidation with high-dose cytarabine, then two blocks of "
        "blinatumomab before maintenance.",
        surgeon="Pediatric hematology-oncology (procedures)",
    ),
    "neuroblastoma": CancerProfile(
        key="neuroblastoma",
        abbreviation="nb",
        text="Neuroblastoma of the left adrenal gland, MYCN not amplified",
        icd10=_icd("C74.12", "Malignant neoplasm of medulla of left adrenal gland"),
        snomed=_sct("432328008", "Neuroblastoma"),
        morphology=_icdo("9500/3", "Neuroblastoma, NOS"),
        body_site="Left adrenal gland",
        stage="INRG stage L2, MYCN not amplified: intermediate risk",
        clinical_status="active",
        history="Abdominal distension and irritability for three weeks; a firm left upper "
        "quadrant mass on examination. Urine catecholamines raised.",
        age_range=(3, 6),
        drugs=(
            ChemoDrug("carboplatin", "40048", 560.0, "m2", "mg", "Intravenous", "IV 1 hour"),
            _ETOPOSIDE,
            _CYCLOPHOSPHAMIDE,
            _DOXORUBICIN,
        ),
        cycles=(
            ("carboplatin", "etoposide"),
            ("carboplatin", "cyclophosphamide", "doxorubicin"),
            ("cyclophosphamide", "etoposide"),
            ("carboplatin", "cyclophosphamide", "doxorubicin"),
        ),
        first_cycle_day=12,
        cycle_interval_days=21,
        pathology="Poorly differentiated neuroblastoma, Schwannian stroma-poor, low MKI, "
        "favourable histology (International Neuroblastoma Pathology Classification).",
        molecular=(
            VariantFinding("MYCN", False, "MYCN not amplified (FISH)"),
            VariantFinding("ALK", True, "ALK F1174L activating variant"),
            VariantFinding("ATRX", False, "No ATRX deletion"),
        ),
        imaging=(
            ImagingSpec(
                "ct-abdomen",
                0,
                "CT chest, abdomen and pelvis with contrast",
                (("CT", "Axial 3 mm portal venous", 180), ("CT", "Coronal reformat", 90)),
                "7.5 cm calcified left suprarenal mass encasing the left renal artery.",
            ),
            ImagingSpec(
                "nm-mibg",
                6,
                "123I-MIBG scintigraphy with SPECT/CT",
                (("NM", "Whole body planar", 2), ("NM", "SPECT abdomen", 120)),
                "MIBG-avid left adrenal primary; no metastatic uptake (Curie score 0).",
            ),
            ImagingSpec(
                "mr-abdomen-response",
                80,
                "MRI abdomen with and without contrast, response assessment",
                (("MR", "Ax T2", 40), ("MR", "Ax T1 post contrast", 88)),
                "Primary mass reduced to 3.9 cm; renal artery still encased.",
            ),
            ImagingSpec(
                "ct-abdomen-post-op",
                150,
                "CT abdomen with contrast, post-operative",
                (("CT", "Axial 3 mm portal venous", 160),),
                "Post-surgical bed; small residual calcification only.",
            ),
        ),
        procedures=(
            ProcedureSpec(
                "biopsy",
                4,
                "Laparoscopic biopsy of left adrenal mass",
                "Left adrenal gland",
                "operative",
                note="Laparoscopic core biopsies of a firm, vascular left suprarenal mass; "
                "haemostasis with pressure. Specimens to pathology and molecular laboratory.",
                snomed=_BIOPSY,
            ),
            ProcedureSpec(
                "central-line",
                4,
                "Insertion of tunnelled central venous catheter",
                "Right internal jugular vein",
                "procedure",
            ),
            ProcedureSpec(
                "resection",
                120,
                "Laparotomy and resection of left adrenal neuroblastoma",
                "Left adrenal gland",
                "operative",
                note="Transverse laparotomy. Tumour dissected off the left renal artery and "
                "aorta; more than 90% resection. Estimated blood loss 120 mL.",
            ),
        ),
        comorbidity=(None, "Hypertension from renal artery compression, on amlodipine"),
        plan="Four cycles of intermediate-risk chemotherapy (carboplatin, etoposide, "
        "cyclophosphamide, doxorubicin), then resection; ALK inhibitor trial eligibility to "
        "be reviewed.",
        surgeon="Pediatric surgery",
    ),
    "osteosarcoma": CancerProfile(
        key="osteosarcoma",
        abbreviation="os",
        text="Conventional osteoblastic osteosarcoma of the left distal femur",
        icd10=_icd("C40.22", "Malignant neoplasm of long bones of left lower limb"),
        snomed=None,
        morphology=_icdo("9180/3", "Osteosarcoma, NOS"),
        body_site="Left distal femur (metaphysis)",
        stage="Localized, no metastases at diagnosis (Enneking IIB)",
        clinical_status="active",
        history="Three months of left knee pain at night, then swelling. Radiograph showed a "
        "sclerotic lesion of the distal femoral metaphysis with periosteal reaction.",
        age_range=(13, 17),
        drugs=(
            ChemoDrug("cisplatin", "2555", 120.0, "m2", "mg", "Intravenous", "over 2 days"),
            ChemoDrug("doxorubicin", "3639", 75.0, "m2", "mg", "Intravenous", "over 2 days"),
            ChemoDrug(
                "methotrexate",
                "6851",
                12000.0,
                "m2",
                "mg",
                "Intravenous",
                "IV over 4 hours with leucovorin rescue",
                max_dose=20000.0,
            ),
        ),
        cycles=(
            ("cisplatin", "doxorubicin"),
            ("methotrexate",),
            ("methotrexate",),
            ("cisplatin", "doxorubicin"),
            ("methotrexate",),
            ("methotrexate",),
            ("cisplatin", "doxorubicin"),
            ("methotrexate",),
        ),
        first_cycle_day=12,
        cycle_interval_days=17,
        pathology="High-grade conventional osteosarcoma, osteoblastic type. After "
        "neoadjuvant chemotherapy: 95% tumour necrosis (good response), margins clear.",
        molecular=(
            VariantFinding("TP53", True, "TP53 intron 1 structural rearrangement"),
            VariantFinding("RB1", True, "RB1 deletion"),
            VariantFinding("MYC", False, "No MYC amplification"),
        ),
        imaging=(
            ImagingSpec(
                "mr-femur",
                1,
                "MRI left femur with and without contrast",
                (("MR", "Cor T1", 24), ("MR", "Ax STIR", 40), ("MR", "Ax T1 post contrast", 40)),
                "9.5 cm distal femoral metaphyseal tumour with soft tissue mass; no skip lesion.",
            ),
            ImagingSpec(
                "ct-chest",
                2,
                "CT chest without contrast",
                (("CT", "Axial 1.25 mm lung", 240),),
                "No pulmonary nodules.",
            ),
            ImagingSpec(
                "pet-ct-staging",
                5,
                "FDG PET/CT skull base to feet",
                (("PT", "PET WB AC", 280), ("CT", "CT WB low dose", 280)),
                "Intense FDG uptake of the left distal femur primary; no distant disease.",
            ),
            ImagingSpec(
                "mr-femur-pre-op",
                66,
                "MRI left femur with contrast, pre-operative",
                (("MR", "Cor T1", 24), ("MR", "Ax T1 post contrast", 40)),
                "Soft tissue component decreased; neurovascular bundle free.",
            ),
            ImagingSpec(
                "ct-chest-surveillance",
                200,
                "CT chest without contrast, surveillance",
                (("CT", "Axial 1.25 mm lung", 240),),
                "No pulmonary metastases.",
            ),
        ),
        procedures=(
            ProcedureSpec(
                "biopsy",
                6,
                "Image-guided core needle biopsy of left distal femur",
                "Left distal femur",
                "procedure",
                note="CT-guided core biopsies through the planned resection tract, "
                "lateral approach. Five cores obtained. No complications.",
                snomed=_BIOPSY,
            ),
            ProcedureSpec(
                "central-line",
                8,
                "Insertion of implanted venous access port",
                "Right subclavian vein",
                "procedure",
            ),
            ProcedureSpec(
                "resection",
                72,
                "Limb-salvage resection of left distal femur with endoprosthetic replacement",
                "Left distal femur",
                "operative",
                note="Wide resection of the distal femur including the biopsy tract; "
                "reconstruction with a modular distal femoral endoprosthesis. Margins "
                "clear on frozen section.",
            ),
        ),
        comorbidity=(None, "High-frequency hearing loss after cisplatin"),
        plan="MAP chemotherapy (methotrexate, doxorubicin, cisplatin): 10 weeks neoadjuvant, "
        "limb-salvage surgery, then adjuvant MAP to complete 29 weeks.",
        surgeon="Orthopaedic oncology",
    ),
    "hodgkin-lymphoma": CancerProfile(
        key="hodgkin-lymphoma",
        abbreviation="hl",
        text="Classical Hodgkin lymphoma, nodular sclerosis, bulky mediastinal",
        icd10=_icd("C81.12", "Nodular sclerosis Hodgkin lymphoma, intrathoracic lymph nodes"),
        snomed=_sct("118599009", "Hodgkin's disease"),
        morphology=_icdo("9663/3", "Hodgkin lymphoma, nodular sclerosis, NOS"),
        body_site="Mediastinal and left supraclavicular lymph nodes",
        stage="Ann Arbor stage IIA with bulky mediastinal disease",
        clinical_status="active",
        history="Painless left supraclavicular lymphadenopathy for six weeks and a dry "
        "cough. No fevers, night sweats or weight loss.",
        age_range=(14, 17),
        drugs=(
            ChemoDrug(
                "brentuximab vedotin",
                "1147320",
                1.2,
                "kg",
                "mg",
                "Intravenous",
                "IV over 30 minutes",
                max_dose=120.0,
            ),
            ChemoDrug("doxorubicin", "3639", 25.0, "m2", "mg", "Intravenous", "IV push"),
            ChemoDrug("vinblastine", None, 6.0, "m2", "mg", "Intravenous", "IV push"),
            ChemoDrug("dacarbazine", None, 375.0, "m2", "mg", "Intravenous", "IV over 1 hour"),
        ),
        cycles=(("brentuximab vedotin", "doxorubicin", "vinblastine", "dacarbazine"),) * 4,
        first_cycle_day=14,
        cycle_interval_days=28,
        pathology="Classical Hodgkin lymphoma, nodular sclerosis type. Hodgkin/Reed-Sternberg "
        "cells CD30+ CD15+ PAX5 weak, CD20-, CD45-. EBER in situ hybridisation negative.",
        molecular=(
            VariantFinding("CD274", True, "9p24.1 (CD274/PDCD1LG2) copy gain"),
            VariantFinding("TP53", False, "No pathogenic TP53 variant"),
        ),
        imaging=(
            ImagingSpec(
                "pet-ct-staging",
                0,
                "FDG PET/CT skull base to mid-thigh, staging",
                (("PT", "PET WB AC", 220), ("CT", "CT WB low dose", 220)),
                "FDG-avid bulky anterior mediastinal mass (10.2 cm) and left supraclavicular "
                "nodes; no infradiaphragmatic disease.",
            ),
            ImagingSpec(
                "ct-neck-chest",
                1,
                "CT neck and chest with contrast",
                (("CT", "Axial 2 mm neck", 150), ("CT", "Axial 2 mm chest", 200)),
                "Anterior mediastinal mass 10.2 x 7.4 cm; mild tracheal narrowing.",
            ),
            ImagingSpec(
                "pet-ct-interim",
                70,
                "FDG PET/CT after two cycles (interim response)",
                (("PT", "PET WB AC", 220), ("CT", "CT WB low dose", 220)),
                "Rapid early response, Deauville score 2.",
            ),
            ImagingSpec(
                "pet-ct-end-of-therapy",
                130,
                "FDG PET/CT at end of chemotherapy",
                (("PT", "PET WB AC", 220), ("CT", "CT WB low dose", 220)),
                "Complete metabolic response, Deauville score 1.",
            ),
        ),
        procedures=(
            ProcedureSpec(
                "biopsy",
                4,
                "Excisional biopsy of left supraclavicular lymph node",
                "Left supraclavicular lymph node",
                "operative",
                note="Excision of a 2.5 cm rubbery supraclavicular node through a 3 cm "
                "incision; fresh tissue to flow cytometry and pathology. Closed in layers.",
                snomed=_BIOPSY,
            ),
            ProcedureSpec(
                "central-line",
                10,
                "Insertion of implanted venous access port",
                "Right internal jugular vein",
                "procedure",
            ),
        ),
        comorbidity=(_icd("L29.9", "Pruritus, unspecified"), "Generalised pruritus"),
        plan="Four cycles of brentuximab vedotin with doxorubicin, vinblastine and "
        "dacarbazine; response-adapted omission of radiotherapy after a complete metabolic "
        "response.",
        surgeon="Pediatric surgery",
    ),
}
