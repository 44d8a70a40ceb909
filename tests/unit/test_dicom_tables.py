"""The code tables of dicom/tables/ agree with the DICOM standard's CIDs as pydicom ships
them (generated from PS3.16), and cover what the synthetic studies and our cases use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydicom.sr.codedict import Collection, codes

from dicom._tables import body_site, is_acquisition_modality, modality

TABLES = Path(__file__).resolve().parents[2] / "dicom" / "tables"


def _table(name: str) -> dict[str, Any]:
    with (TABLES / name).open(encoding="utf-8") as stream:
        data: dict[str, Any] = yaml.safe_load(stream)
    return data


def test_every_body_part_code_is_the_snomed_concept_pydicom_names() -> None:
    table = _table("body_parts.yaml")
    assert table["system"] == "http://snomed.info/sct"
    for term, row in table["codes"].items():
        concept = getattr(codes.SCT, row["keyword"])
        assert (row["code"], row["display"]) == (concept.value, concept.meaning), term
        assert term == term.upper() and " " not in term and len(term) <= 16  # a CS value


def test_every_modality_is_in_cid_29_or_cid_33_with_its_meaning() -> None:
    table = _table("modalities.yaml")
    assert table["system"] == "http://dicom.nema.org/resources/ontology/DCM"
    cid29, cid33 = Collection("CID29").concepts.values(), Collection("CID33").concepts.values()
    acquisition = {code.value for code in cid29}
    meanings = {code.value: code.meaning for code in [*cid29, *cid33]}
    every = set(meanings)
    assert set(table["codes"]) == every
    for code, row in table["codes"].items():
        assert row["display"] == meanings[code]
        assert row["acquisition"] == (code in acquisition), code


@pytest.mark.parametrize(
    ("body_part", "code"),
    [
        ("HEAD", "69536005"),
        ("BRAIN", "12738006"),
        ("CHEST", "816094009"),
        ("ABDOMEN", "818981001"),
        ("PELVIS", "816092008"),
        ("CHESTABDPELVIS", "416775004"),
        ("SPINE", "421060004"),
        ("WHOLEBODY", "38266002"),
        ("KIDNEY", "64033007"),
        ("knee ", "72696002"),
    ],
)
def test_body_sites_our_cases_image(body_part: str, code: str) -> None:
    site = body_site(body_part)
    assert site is not None and site.code == code and site.system == "http://snomed.info/sct"


def test_modality_lookups() -> None:
    assert modality("mr").coding() == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "MR",
        "display": "Magnetic Resonance",
    }
    assert modality("XX").coding() == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "XX",
    }
    assert is_acquisition_modality("SM") and is_acquisition_modality("PT")
    assert not is_acquisition_modality("SEG") and not is_acquisition_modality("XX")
    assert body_site("NOTAPART") is None
