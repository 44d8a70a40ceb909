"""Pulled resources into the hub's id space (hub.records.normalize)."""

from hub.records.normalize import Normalizer, hub_id

BASE = "https://ehr.example/fhir"


def normalizer() -> Normalizer:
    return Normalizer("outside", BASE, "p1", "hub-patient")


def observation(obs_id: str, **extra: object) -> dict:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "meta": {"versionId": "3", "lastUpdated": "2026-01-01T00:00:00Z", "tag": [{"code": "x"}]},
        "status": "final",
        "code": {"text": "Hb"},
        "subject": {"reference": "Patient/p1"},
        **extra,
    }


def test_ids_are_stable_per_source_and_differ_between_sources():
    assert hub_id("outside", "Observation", "1") == hub_id("outside", "Observation", "1")
    assert hub_id("outside", "Observation", "1") != hub_id("other", "Observation", "1")
    assert len(hub_id("outside", "Observation", "1")) == 32


def test_references_to_the_patient_and_to_pulled_resources_are_rewritten():
    n = normalizer()
    n.add({"resourceType": "Patient", "id": "p1", "identifier": [{"value": "MRN1"}]})
    n.add({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Osler"}]})
    n.add(observation("o1", performer=[{"reference": f"{BASE}/Practitioner/dr"}]))
    stored = dict(n.normalized(set()))
    practitioner = stored[f"Practitioner/{hub_id('outside', 'Practitioner', 'dr')}"]
    obs = stored[f"Observation/{hub_id('outside', 'Observation', 'o1')}"]
    assert obs["subject"] == {"reference": "Patient/hub-patient"}
    assert obs["performer"] == [{"reference": f"Practitioner/{practitioner['id']}"}]
    assert obs["meta"] == {"tag": [{"code": "x"}], "source": f"{BASE}/Observation/o1/_history/3"}
    assert n.source_patient is not None and n.problems == []


def test_what_cannot_be_had_is_kept_as_its_url_and_reported():
    n = normalizer()
    n.add(observation("o1", performer=[{"reference": "Practitioner/gone"}]))
    n.unavailable["Practitioner/gone"] = "HTTP 410"
    [(_, obs)] = n.normalized(set())
    assert obs["performer"] == [{"reference": f"{BASE}/Practitioner/gone"}]
    [problem] = n.problems
    assert (problem.kind, problem.where) == ("unresolved", "Observation/o1")
    assert "HTTP 410" in problem.detail


def test_held_resources_from_an_earlier_pull_resolve():
    n = normalizer()
    n.add(observation("o1", performer=[{"reference": "Practitioner/dr"}]))
    assert n.outside_targets() == {("Practitioner", "dr")}
    [(_, obs)] = n.normalized({"Practitioner/dr"})
    assert (
        obs["performer"][0]["reference"]
        == f"Practitioner/{hub_id('outside', 'Practitioner', 'dr')}"
    )


def test_contained_references_stay_and_skipped_types_are_reported():
    n = normalizer()
    n.add(
        {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "status": "active",
            "intent": "order",
            "contained": [{"resourceType": "Medication", "id": "med"}],
            "medicationReference": {"reference": "#med"},
            "subject": {"reference": "Patient/p1"},
        }
    )
    n.add({"resourceType": "Task", "id": "t1"})
    n.add({"resourceType": "Patient", "id": "sibling"})
    n.add({"resourceType": "OperationOutcome", "issue": [{"diagnostics": "partial result"}]})
    [(_, request)] = n.normalized(set())
    assert request["medicationReference"] == {"reference": "#med"}
    assert [(p.kind, p.where) for p in n.problems] == [
        ("skipped", "Task/t1"),
        ("skipped", "Patient/sibling"),
        ("warning", "search"),
    ]


def test_attachments_at_the_source_become_hub_binaries():
    n = normalizer()
    document = {
        "resourceType": "DocumentReference",
        "id": "d1",
        "status": "current",
        "subject": {"reference": "Patient/p1"},
        "content": [
            {"attachment": {"url": "Binary/b1", "contentType": "application/pdf"}},
            {"attachment": {"url": f"{BASE}/files/note.txt"}},
            {"attachment": {"url": "https://elsewhere.example/x.pdf"}},
        ],
    }
    n.add(document)
    assert n.attachment_urls() == {"Binary/b1", f"{BASE}/files/note.txt"}
    n.add_attachment("Binary/b1", b"%PDF-1.4", "application/pdf")
    n.unavailable[f"{BASE}/files/note.txt"] = "HTTP 404"
    stored = dict(n.normalized(set()))
    binary_ref = f"Binary/{hub_id('outside', 'Binary', 'b1')}"
    assert stored[binary_ref]["data"] == "JVBERi0xLjQ="
    urls = [
        c["attachment"]["url"] for c in stored[n.hub_reference("DocumentReference/d1")]["content"]
    ]
    assert urls == [binary_ref, f"{BASE}/files/note.txt", "https://elsewhere.example/x.pdf"]
    assert [(p.kind, "HTTP 404" in p.detail) for p in n.problems] == [("attachment", True)]


def test_a_rejected_resource_is_reported_and_references_to_it_dangle_nowhere():
    n = normalizer()
    n.add(observation("o1"))
    n.add(observation("o2", hasMember=[{"reference": "Observation/o1"}]))
    n.reject("Observation/o1", "Observation.status: required")
    [(_, obs)] = n.normalized(set())
    assert obs["hasMember"] == [{"reference": f"{BASE}/Observation/o1"}]
    assert [p.kind for p in n.problems] == ["invalid", "unresolved"]


def test_demote_drops_what_validation_refused_after_normalization():
    n = normalizer()
    n.add(observation("o1"))
    n.add(observation("o2", hasMember=[{"reference": "Observation/o1"}]))
    kept = n.demote(list(n.normalized(set())), {"Observation/o1": "status: required"})
    assert [reference for reference, _ in kept] == [n.hub_reference("Observation/o2")]
    assert kept[0][1]["hasMember"] == [{"reference": f"{BASE}/Observation/o1"}]
    assert [(p.kind, p.where) for p in n.problems] == [
        ("invalid", "Observation/o1"),
        ("unresolved", "Observation/o2"),
    ]
