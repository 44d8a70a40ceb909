"""What the five SYNTHETIC cases add to the outside record of each cancer (data for
:mod:`hub.demo.five_cases`).

Per cancer: the tumour marker drawn with the last blood count (a LOINC lab test, sure codes
only), the study the outside PACS sends again over DICOM (an ImagingStudy of the outside
record, by its label), the study only the PACS sends, and the referral's priority and
questions.  Every text is written for this module; nothing describes a real patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from hub.demo.outside.visits import Analyte

__all__ = ["CASE_EXTRAS", "CaseExtras", "PacsStudy"]


@dataclass(frozen=True)
class PacsStudy:
    """A study only the outside PACS sends (the EHR has no ImagingStudy of it yet)."""

    modality: Literal["CT", "MR", "PT"]
    description: str
    days_before_as_of: int


@dataclass(frozen=True)
class CaseExtras:
    """What one case adds to :func:`hub.demo.outside_record.build_outside_record`."""

    marker: Analyte
    resent_study: str
    """Label of the outside record's ImagingSpec that the PACS also pushes (CT, MR or PT)."""
    pacs_study: PacsStudy
    priority: Literal["routine", "urgent"]
    questions: tuple[tuple[str, str], ...]
    """(author, text) of the referral's notes; empty: keep build_referral's own."""


# (LOINC, display, UCUM unit, pediatric reference range, decimals, typical value, spread)
_AFP: Final = Analyte(
    "1834-1", "Alpha-1-Fetoprotein [Mass/volume] in Serum or Plasma", "ng/mL",
    0.0, 10.0, 1, 2.4, 0.8,
)  # fmt: skip
_LDH: Final = Analyte(
    "2532-0", "Lactate dehydrogenase [Enzymatic activity/volume] in Serum or Plasma", "U/L",
    120.0, 300.0, 0, 235.0, 40.0,
)  # fmt: skip
_FERRITIN: Final = Analyte(
    "2276-4", "Ferritin [Mass/volume] in Serum or Plasma", "ng/mL",
    7.0, 140.0, 0, 88.0, 25.0,
)  # fmt: skip
_ESR: Final = Analyte(
    "4537-7", "Erythrocyte sedimentation rate by Westergren method", "mm/h",
    0.0, 20.0, 0, 11.0, 4.0,
)  # fmt: skip

_ONCOLOGIST: Final = "Referring oncologist"
_PARENT: Final = "Parent/guardian"

CASE_EXTRAS: Final[dict[str, CaseExtras]] = {
    "medulloblastoma": CaseExtras(
        marker=_AFP,
        resent_study="mr-brain-diagnostic",
        pacs_study=PacsStudy("MR", "MRI brain with contrast, outside surveillance", 3),
        priority="routine",
        questions=(),  # build_referral's questions are about medulloblastoma already
    ),
    "b-all-relapsed": CaseExtras(
        marker=_LDH,
        resent_study="mr-brain",
        pacs_study=PacsStudy("CT", "CT chest without contrast, before consolidation", 4),
        priority="urgent",
        questions=(
            (
                _ONCOLOGIST,
                "With a CDKN2A deletion new at relapse and day-35 MRD of 0.02%, is "
                "blinatumomab consolidation enough, or should we proceed to allogeneic "
                "transplant in second remission?",
            ),
            (
                _PARENT,
                "If the MRD does not clear, is CAR T-cell therapy an option, and where could "
                "our child receive it?",
            ),
        ),
    ),
    "neuroblastoma": CaseExtras(
        marker=_FERRITIN,
        resent_study="ct-abdomen",
        pacs_study=PacsStudy("CT", "CT abdomen with contrast, outside follow-up", 5),
        priority="routine",
        questions=(
            (
                _ONCOLOGIST,
                "With an ALK F1174L variant in intermediate-risk L2 disease, would you add an "
                "ALK inhibitor or keep to standard chemotherapy and surgery?",
            ),
            (
                _PARENT,
                "The renal artery was encased: is some residual tumour acceptable, or should "
                "there be a second operation?",
            ),
        ),
    ),
    "osteosarcoma": CaseExtras(
        marker=_LDH,
        resent_study="mr-femur",
        pacs_study=PacsStudy("CT", "CT chest without contrast, outside surveillance", 6),
        priority="routine",
        questions=(
            (
                _ONCOLOGIST,
                "After a good histological response (95% necrosis), do you agree with "
                "completing MAP unchanged despite the high-frequency hearing loss?",
            ),
            (
                _PARENT,
                "How often should the chest be scanned after treatment, and for how long?",
            ),
        ),
    ),
    "hodgkin-lymphoma": CaseExtras(
        marker=_ESR,
        resent_study="ct-neck-chest",
        pacs_study=PacsStudy("PT", "FDG PET/CT, outside three-month follow-up", 7),
        priority="routine",
        questions=(
            (
                _ONCOLOGIST,
                "After a complete metabolic response (Deauville 1) of bulky mediastinal "
                "disease, do you agree with omitting radiotherapy?",
            ),
            (
                _PARENT,
                "What are the long-term heart and fertility risks of this treatment, and "
                "which follow-up do they need?",
            ),
        ),
    ),
}
