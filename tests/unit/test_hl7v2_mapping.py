"""HL7 v2 → FHIR mapping, field by field, on the synthetic messages of tests/hl7_samples.py.

The goldens pin whole bundles; these tests say which paths matter and why: identifiers
and conditional requests, units and ranges, flags, narrative, the PDF, notes, requesters,
A40 links, validity against the R4B models, determinism, and the conversion report.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hub import codes
from mappings import (
    Location,
    MalformedMessage,
    MappingError,
    MappingTableError,
    MissingRequiredField,
    MissingRequiredSegment,
    UnsupportedMessageType,
    load_tables,
    map_bytes,
    map_message,
)
from mappings.hl7v2.tokenizer import parse_message
from tests.hl7_samples import CASES, oru_cbc, tiny_pdf

JSON = dict[str, Any]
MRN = "https://riverbend-childrens.example/fhir/sid/mrn"
NPI = "http://hl7.org/fhir/sid/us-npi"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def bundle(case: str) -> JSON:
    return map_bytes(CASES[case]()).bundle


def resources(result: JSON, resource_type: str) -> list[JSON]:
    return [
        e["resource"] for e in result["entry"] if e["resource"]["resourceType"] == resource_type
    ]


def one(result: JSON, resource_type: str) -> JSON:
    found = resources(result, resource_type)
    assert len(found) == 1, f"{len(found)} {resource_type}"
    return found[0]


def entry_of(result: JSON, resource: JSON) -> JSON:
    return next(e for e in result["entry"] if e["resource"] is resource)


def target(result: JSON, reference: JSON) -> JSON:
    return next(e["resource"] for e in result["entry"] if e["fullUrl"] == reference["reference"])


def coded(concept: JSON, system: str) -> str | None:
    return next((c["code"] for c in concept.get("coding", []) if c.get("system") == system), None)


def observation(result: JSON, local_code: str) -> JSON:
    return next(
        o for o in resources(result, "Observation") if o["code"]["coding"][0]["code"] == local_code
    )


# -- the whole set ------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_resource_is_valid_r4(case: str):
    result = bundle(case)
    get_fhir_model_class("Bundle").model_validate(result)
    for entry in result["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_entry_is_a_conditional_write_on_an_identifier_it_carries(case: str):
    result = bundle(case)
    assert result["type"] == "transaction"
    full_urls = [e["fullUrl"] for e in result["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    for entry in result["entry"]:
        resource, request = entry["resource"], entry["request"]
        assert entry["fullUrl"].startswith("urn:uuid:")
        if request["method"] == "POST":
            criteria = request["ifNoneExist"]
            assert request["url"] == resource["resourceType"]
        else:
            assert request["method"] == "PUT"
            path, _, criteria = request["url"].partition("?")
            assert path == resource["resourceType"]
        system, _, value = criteria.removeprefix("identifier=").partition("|")
        assert {"system": system, "value": value} in [
            {"system": i.get("system"), "value": i.get("value")} for i in resource["identifier"]
        ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_internal_references_resolve_within_the_bundle(case: str):
    result = bundle(case)
    full_urls = {e["fullUrl"] for e in result["entry"]}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            reference = node.get("reference")
            if isinstance(reference, str):
                assert reference in full_urls
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk([e["resource"] for e in result["entry"]])


@pytest.mark.parametrize("case", sorted(CASES))
def test_mapping_again_gives_the_same_bundle_and_report(case: str):
    raw = CASES[case]()
    first, second = map_bytes(raw), map_bytes(raw)
    assert first.bundle == second.bundle
    assert json.dumps(first.report.to_json()) == json.dumps(second.report.to_json())


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_report_accounts_for_every_field_present(case: str):
    message = parse_message(CASES[case]())
    report = map_message(message).report
    located = {str(e.location) for e in report.entries}
    sequences: dict[str, int] = {}
    for segment in message.segments:
        sequence = sequences[segment.name] = sequences.get(segment.name, 0) + 1
        for number in range(1, segment.field_count + 1):
            if segment.field(number):
                where = str(Location(segment.name, sequence, number))
                assert where in located, where
    for entry in report.entries:
        if entry.status == "not-mapped":
            assert entry.reason, entry
        if entry.status == "mapped":
            assert entry.paths, entry
    json.dumps(report.to_json())  # JSON-serialisable


# -- Patient, RelatedPerson, Coverage -------------------------------------------------------
def test_adt_patient_demographics():
    result = bundle("adt_a01_v251")
    patient = one(result, "Patient")
    mrn, other = patient["identifier"]
    assert (
        mrn["system"],
        mrn["value"],
        coded(mrn["type"], "http://terminology.hl7.org/CodeSystem/v2-0203"),
    ) == (MRN, "4821937", "MR")
    assert other["system"] == "https://cedar-hollow-childrens.example/fhir/sid/mrn"
    assert patient["name"] == [
        {"family": "Brightwater", "given": ["Nora", "June"], "use": "official"}
    ]
    assert (patient["birthDate"], patient["gender"]) == ("2017-03-15", "female")
    assert patient["address"][0] == {
        "line": ["412 Heron Point Road"],
        "city": "Riverbend",
        "state": "OR",
        "postalCode": "97123",
        "country": "US",
        "use": "home",
    }
    assert patient["telecom"] == [
        {"value": "+1 503 5550142", "use": "home", "system": "phone"},
        {"value": "+1 503 5550187", "use": "mobile", "system": "phone"},
    ]
    assert entry_of(result, patient)["request"] == {
        "method": "POST",
        "url": "Patient",
        "ifNoneExist": f"identifier={MRN}|4821937",
    }


def test_guardians_and_coverage():
    result = bundle("adt_a01_v251")
    patient_url = entry_of(result, one(result, "Patient"))["fullUrl"]
    mother, father = resources(result, "RelatedPerson")
    assert (
        coded(mother["relationship"][0], "http://terminology.hl7.org/CodeSystem/v3-RoleCode")
        == "MTH"
    )
    assert (
        coded(father["relationship"][0], "http://terminology.hl7.org/CodeSystem/v3-RoleCode")
        == "FTH"
    )
    assert mother["patient"] == {"reference": patient_url}
    assert mother["identifier"][0]["value"] == "4821937-NK1-1"
    coverage = one(result, "Coverage")
    assert coverage["beneficiary"] == {"reference": patient_url}
    assert target(result, coverage["payor"][0])["name"] == "Northwind Family Health Plan"
    assert (
        coded(
            coverage["relationship"],
            "http://terminology.hl7.org/CodeSystem/subscriber-relationship",
        )
        == "child"
    )
    assert (coverage["subscriberId"], coverage["status"]) == ("NW-884201", "active")


def test_a08_updates_the_patient_and_reads_utf8():
    result = bundle("adt_a08_v28_utf8")
    patient = one(result, "Patient")
    assert patient["name"][0]["family"] == "Wróblewska-Łęcka"
    assert {"value": "zofia.parent@example.org", "system": "email", "use": "home"} in (
        patient["telecom"]
    )
    assert entry_of(result, patient)["request"] == {
        "method": "PUT",
        "url": f"Patient?identifier={MRN}|5530881",
    }


def test_latin1_names_are_decoded_by_msh18():
    raw = CASES["adt_a01_v251_latin1"]()
    assert "Ångström".encode("iso-8859-1") in raw
    assert one(map_bytes(raw).bundle, "Patient")["name"][0] == {
        "family": "Ångström-Quillon",
        "given": ["Zoë", "Léa"],
        "use": "official",
    }


def test_a40_links_both_patients_and_deletes_nothing():
    result = bundle("adt_a40_v251")
    surviving, merged = resources(result, "Patient")
    surviving_url = entry_of(result, surviving)["fullUrl"]
    merged_url = entry_of(result, merged)["fullUrl"]
    assert surviving["link"] == [{"other": {"reference": merged_url}, "type": "replaces"}]
    assert merged["link"] == [{"other": {"reference": surviving_url}, "type": "replaced-by"}]
    assert (surviving["active"], merged["active"]) == (True, False)
    assert merged["identifier"][0]["value"] == "4821999"
    assert {e["request"]["method"] for e in result["entry"]} == {"PUT"}


def test_a40_with_two_patient_groups_links_each_pair():
    patients = resources(bundle("adt_a40_v23_two"), "Patient")
    links = {p["identifier"][0]["value"]: p["link"][0]["type"] for p in patients}
    assert links == {
        "4821937": "replaces",
        "6610452": "replaces",
        "4821998": "replaced-by",
        "6610400": "replaced-by",
    }


# -- results --------------------------------------------------------------------------------
def test_lab_results_units_ranges_flags_and_status():
    result = bundle("oru_r01_cbc_v251")
    wbc = observation(result, "WBC")
    assert coded(wbc["code"], LOINC) == "6690-2"  # by the ConceptMap riverbend-lab-to-loinc
    assert wbc["valueQuantity"] == {"value": 1.8, "unit": "K/uL", "system": UCUM, "code": "10*3/uL"}
    assert wbc["referenceRange"] == [
        {
            "low": {"value": 4.5, "unit": "K/uL", "system": UCUM, "code": "10*3/uL"},
            "high": {"value": 13.5, "unit": "K/uL", "system": UCUM, "code": "10*3/uL"},
        }
    ]
    assert coded(wbc["interpretation"][0], V3_INTERPRETATION) == "L"
    assert coded(observation(result, "ANC")["interpretation"][0], V3_INTERPRETATION) == "LL"
    assert wbc["status"] == "final"
    assert wbc["effectiveDateTime"] == "2026-10-14T07:30:00-07:00"  # offset from MSH-7
    alt = observation(result, "ALT")
    assert alt["referenceRange"] == [
        {"high": {"value": 45, "unit": "U/L", "system": UCUM, "code": "U/L"}, "text": "<45"}
    ]


def test_observation_identifiers_are_the_set_id_within_the_order():
    result = bundle("oru_r01_cbc_v251")
    values = [o["identifier"][0]["value"] for o in resources(result, "Observation")]
    assert values[:2] == ["LAB-26-300411-OBX-1", "LAB-26-300411-OBX-2"]
    assert values[-1] == "LAB-26-300412-OBX-5"
    cbc, chemistry = resources(result, "DiagnosticReport")
    assert len(cbc["result"]) == 10 and len(chemistry["result"]) == 5
    # A conditional update: the same order sent again (final, corrected) is a new version.
    assert entry_of(result, cbc)["request"] == {
        "method": "PUT",
        "url": "DiagnosticReport?identifier="
        "https://riverbend-childrens.example/fhir/sid/lab-accession|LAB-26-300411",
    }


def test_notes_on_results_and_escape_sequences():
    anc = observation(bundle("oru_r01_cbc_v251"), "ANC")
    assert anc["note"] == [
        {"text": "Critical value: called to Dr. Whitlock at 10:12\nread back & confirmed."},
        {"text": "Repeat in 48 hours."},
    ]


def test_v23_structured_numeric_bad_number_and_missing_status():
    result = bundle("oru_r01_cbc_v23")
    platelets = observation(result, "PLT")
    assert platelets["valueQuantity"]["comparator"] == "<"
    assert platelets["valueQuantity"]["value"] == 20
    assert observation(result, "ANC")["valueString"] == "see note"
    assert observation(result, "MCV")["status"] == "unknown"
    assert observation(result, "HGB")["valueQuantity"]["code"] == "g/dL"  # "g/dl" as written
    report = map_bytes(CASES["oru_r01_cbc_v23"]()).report
    assert [e.value for e in report.find("OBX[5]-11")] == ["unknown"]
    assert report.find("OBX[4]-5")[-1].status == "defaulted"


def test_pathology_narrative_escapes_and_embedded_pdf():
    report = one(bundle("oru_r01_pathology_v251"), "DiagnosticReport")
    conclusion = report["conclusion"]
    for text in (
        "blocks A1\\A4",
        "WNT-activated & classic",
        "synaptophysin + | beta-catenin",
        "Ki-67 (MIB-1) ~40%; YAP1^focal",
        "tumor board\nsee also",
    ):
        assert text in conclusion
    text_form, pdf_form = report["presentedForm"]
    assert (
        base64.b64decode(text_form["data"]).decode("utf-8").startswith("SURGICAL PATHOLOGY REPORT")
    )
    assert pdf_form["contentType"] == "application/pdf"
    assert base64.b64decode(pdf_form["data"]) == tiny_pdf("Synthetic pathology report SP-26-01452")
    assert coded(report["category"][0], "http://terminology.hl7.org/CodeSystem/v2-0074") == "SP"


def test_radiology_interpreter_from_the_narrative_and_a_measurement():
    result = bundle("oru_r01_radiology_v28")
    report = one(result, "DiagnosticReport")
    assert report["conclusion"].endswith(
        "IMPRESSION: posterior fossa tumor, medulloblastoma favored."
    )
    interpreter = target(result, report["resultsInterpreter"][0])
    assert interpreter["identifier"][0] == {
        "value": "9990001038",
        "system": NPI,
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                    "code": "NPI",
                    "display": "National provider identifier",
                }
            ]
        },
    }
    size = one(result, "Observation")
    assert size["valueQuantity"] == {
        "value": 31,
        "unit": "millimeter",
        "system": UCUM,
        "code": "mm",
    }


def test_molecular_variant_results_are_coded_observations():
    result = bundle("oru_r01_molecular_v251")
    genes = [o for o in resources(result, "Observation") if coded(o["code"], LOINC) == "48018-6"]
    assert [coded(g["valueCodeableConcept"], "http://www.genenames.org/geneId") for g in genes] == [
        "HGNC:2514",
        "HGNC:11998",
    ]
    assessments = [
        coded(o["valueCodeableConcept"], LOINC)
        for o in resources(result, "Observation")
        if coded(o["code"], LOINC) == "69548-6"
    ]
    assert assessments == ["LA9633-4", "LA9634-2"]
    assert observation(result, "48004-6")["valueString"] == "c.134C>T"
    assert "CTNNB1 exon 3" in one(result, "DiagnosticReport")["conclusion"]


# -- documents ------------------------------------------------------------------------------
def test_mdm_text_document():
    result = bundle("mdm_t02_v251_text")
    document = one(result, "DocumentReference")
    assert coded(document["type"], LOINC) == "11488-4"  # ConceptMap v2-0270-to-loinc
    assert (document["status"], document["docStatus"]) == ("current", "final")
    assert document["date"] == "2026-10-20T14:30:00-07:00"
    assert document["masterIdentifier"]["value"] == "DOC-2026-7781"
    author = target(result, document["author"][0])
    assert author["identifier"][0]["system"] == NPI
    text = base64.b64decode(document["content"][0]["attachment"]["data"]).decode("utf-8")
    assert text.splitlines()[2] == (
        "Plan: craniospinal irradiation 23.4 Gy & boost; maintenance per protocol."
    )


def test_mdm_pdf_document_and_defaulted_status():
    raw = CASES["mdm_t02_v23_pdf"]()
    result = map_bytes(raw)
    document = one(result.bundle, "DocumentReference")
    attachment = document["content"][0]["attachment"]
    assert attachment["contentType"] == "application/pdf"
    assert base64.b64decode(attachment["data"]).startswith(b"%PDF-1.4")
    assert document["status"] == "current"
    assert [e.value for e in result.report.find("TXA-19")] == ["current"]


# -- second-opinion requests ------------------------------------------------------------------
def second_opinion(request: JSON) -> bool:
    return {
        "system": codes.CASE_CATEGORY_SYSTEM,
        "code": codes.SECOND_OPINION,
        "display": "Second opinion",
    } in request["category"][0]["coding"]


def test_referral_is_a_second_opinion_request():
    result = bundle("ref_i12_v251")
    request = one(result, "ServiceRequest")
    assert second_opinion(request)
    assert (request["status"], request["intent"], request["priority"]) == (
        "active",
        "order",
        "routine",
    )
    assert request["subject"] == {"reference": entry_of(result, one(result, "Patient"))["fullUrl"]}
    assert [coded(r, "http://hl7.org/fhir/sid/icd-10-cm") for r in request["reasonCode"]][0] == (
        "C71.6"
    )
    assert [n["text"] for n in request["note"]][2] == (
        "Referrer asks: review of pathology & molecular subgrouping | second read of MRI."
    )
    requester = target(result, request["requester"])
    assert requester["identifier"] == [{"value": "9990001012", "system": NPI}]
    assert requester["name"][0]["family"] == "Whitlock"
    assert entry_of(result, request)["request"]["ifNoneExist"] == (
        "identifier=https://riverbend-childrens.example/fhir/sid/referral|REF-2026-0042"
    )


def test_minimal_v23_referral_references_the_provider_by_name():
    request = one(bundle("ref_i12_v23"), "ServiceRequest")
    assert request["requester"] == {"display": "Dr. Henrik Castellane"}
    assert request["reasonCode"] == [{"text": "Suspected ependymoma, posterior fossa"}]
    assert request["authoredOn"] == "2026-10-29"
    assert second_opinion(request)


def test_referral_with_attached_results():
    result = bundle("ref_i12_v28_results")
    request = one(result, "ServiceRequest")
    report = target(result, request["supportingInfo"][0])
    assert report["conclusion"] == "Ependymoma, PFA group (synthetic)."
    assert request["note"] == [
        {"text": "Family asks whether proton therapy is an option \\ and where."}
    ]


def test_orders_requester_priority_and_reasons():
    omg = bundle("omg_o19_v251")
    request = one(omg, "ServiceRequest")
    assert second_opinion(request) and request["priority"] == "stat"  # TQ1-9
    assert target(omg, request["requester"])["identifier"][0]["value"] == "9990001012"
    assert len(request["reasonCode"]) == 1  # OBR-31 and DG1-3 name the same code
    assert len(request["note"]) == 2
    answers = [target(omg, ref) for ref in request["supportingInfo"]]
    assert answers[0]["valueCodeableConcept"]["coding"][0]["code"] == "Y"
    from_obr16 = one(bundle("omg_o19_v28"), "ServiceRequest")
    assert from_obr16["requester"]["display"] == "Dr. Lucia Brannigan"
    assert one(bundle("orm_o01_v23"), "ServiceRequest")["priority"] == "routine"  # ORC-7.6
    orders = resources(bundle("orm_o01_v251_latin1"), "ServiceRequest")
    assert [o["priority"] for o in orders] == ["asap", "asap"]  # OBR-27.6
    assert orders[0]["note"][0]["text"] == "Revue de la pathologie, s'il vous plaît: épendymome?"


# -- the report -----------------------------------------------------------------------------
def test_report_names_z_segments_and_unknown_fields_with_reasons():
    report = map_bytes(CASES["oru_r01_radiology_v28"]()).report
    status, reason = report.segment_status("ZPI")
    assert status == "not-mapped" and "Z-segment" in (reason or "")
    assert {e.status for e in report.find("ZPI-2")} == {"not-mapped"}
    molecular = map_bytes(CASES["oru_r01_molecular_v251"]()).report
    unknown = molecular.find("OBX-26")
    assert [(e.status, e.reason) for e in unknown] == [
        ("not-mapped", "no rule for OBX-26 in resources/Observation.yaml")
    ]
    assert molecular.find("OBX[3]-5")[0].paths == ("Observation.valueString",)


def test_report_says_where_each_field_went_and_what_was_defaulted():
    report = map_bytes(oru_cbc()).report
    assert report.find("PID-3")[0].paths == ("Patient.identifier",)
    assert report.find("OBX[2]-6")[0].paths == (
        "Observation.valueQuantity",
        "Observation.referenceRange",
    )
    defaulted = report.find("OBX-14.1")
    assert [(e.status, e.value) for e in defaulted] == [("defaulted", "-07:00")]
    document = report.to_json()
    assert document["messageType"] == "ORU^R01" and document["controlId"] == "ORU-CBC-0007"
    groups = {s["group"] for s in document["segments"] if s["segment"] == "OBX"}
    assert "PATIENT_RESULT[1]/ORDER_OBSERVATION[2]/OBSERVATION[5]" in groups


def test_a_not_expected_segment_is_kept_in_the_report():
    raw = CASES["adt_a04_v23"]().replace(b"\rPV1|1|O", b"\rPV1|1|O\rTXA|1|CN")
    report = map_bytes(raw).report
    assert report.segment_status("TXA") == (
        "not-mapped",
        "TXA is not expected here in the message structure",
    )


# -- errors ---------------------------------------------------------------------------------
def test_unsupported_message_type():
    raw = CASES["adt_a04_v23"]().replace(b"ADT^A04", b"SIU^S12")
    with pytest.raises(UnsupportedMessageType) as caught:
        map_bytes(raw)
    assert caught.value.location == Location("MSH", 1, 9)
    assert str(caught.value.location) == "MSH-9"


def test_missing_patient_identifier_is_located_and_names_no_patient():
    raw = CASES["adt_a04_v23"]().replace(b"|4821937^^^RBCH^MR|", b"||")
    with pytest.raises(MissingRequiredField) as caught:
        map_bytes(raw)
    assert str(caught.value.location) == "PID-3"
    assert caught.value.location.erl() == ("PID", "1", "3", "1")
    assert "Brightwater" not in str(caught.value) and "4821937" not in str(caught.value)


def test_missing_required_segment():
    raw = b"\r".join(line for line in oru_cbc().split(b"\r") if not line.startswith(b"PID"))
    with pytest.raises(MissingRequiredSegment) as caught:
        map_bytes(raw)
    assert caught.value.location == Location("PID")


def test_missing_observation_code_names_the_obx():
    raw = oru_cbc().replace(b"|HGB^Hemoglobin^L|", b"||")
    with pytest.raises(MissingRequiredField) as caught:
        map_bytes(raw)
    assert str(caught.value.location) == "OBX[3]-3"


def test_bytes_that_are_not_hl7_are_a_mapping_error():
    with pytest.raises(MalformedMessage) as caught:
        map_bytes(b"PID|1||123")
    assert isinstance(caught.value, MappingError)


# -- tables ---------------------------------------------------------------------------------
def test_site_overrides_are_layered_over_the_default_tables(tmp_path):
    (tmp_path / "terminology").mkdir()
    (tmp_path / "terminology" / "assigning_authorities.yaml").write_text(
        "namespaces:\n  RBCH: urn:oid:2.999.1.2.3\n", encoding="utf-8"
    )
    tables = load_tables(overrides=[tmp_path])
    patient = one(map_bytes(CASES["adt_a04_v23"](), tables).bundle, "Patient")
    assert {"urn:oid:2.999.1.2.3"} <= {i["system"] for i in patient["identifier"]}
    assert tables.terminology.authorities.namespaces["NPI"] == NPI  # the rest is kept


def test_a_bad_table_is_refused_at_load_time(tmp_path):
    (tmp_path / "hl7v2" / "resources").mkdir(parents=True)
    (tmp_path / "hl7v2" / "resources" / "Patient.yaml").write_text(
        "segments:\n  PID:\n    fields:\n      3: {path: identifier, colour: blue}\n",
        encoding="utf-8",
    )
    with pytest.raises(MappingTableError, match="unknown keys"):
        load_tables(overrides=[tmp_path])


def test_compiled_tables_do_what_the_interpreter_does():
    interpreted = load_tables()
    for datatype in interpreted.datatypes.values():
        if hasattr(datatype, "read"):
            datatype.read = None  # type: ignore[union-attr]
    for resource_map in interpreted.resources.values():
        for rule_set in resource_map.segments.values():
            rule_set.apply = None
    for case, build in sorted(CASES.items()):
        raw = build()
        fast, slow = map_bytes(raw), map_bytes(raw, interpreted)
        assert fast.bundle == slow.bundle, case
        assert fast.report.to_json() == slow.report.to_json(), case
