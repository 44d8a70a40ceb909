"""The case managers' imaging desk on both backends: the held studies, a transfer's report,
and a person's decision on a held study (release it to the case, or reject it)."""

from __future__ import annotations

import json
from typing import Any

from hub.imaging.attach import HUB_ISSUER
from tests.fhir_client import assert_outcome, bearer
from tests.integration.test_dicomweb_api import Imaging, audit_trail, imaging, values

__all__ = ["imaging"]  # the fixture, shared with the DICOMweb tests


def release(world: Imaging, study: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return world.client.post(
        f"/imaging/studies/{study}/$release",
        content=body if isinstance(body, str) else json.dumps(body),
        headers=headers or world.headers["manager"],
    )


def reject(world: Imaging, study: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    return world.client.post(
        f"/imaging/studies/{study}/$reject",
        content=body if isinstance(body, str) else json.dumps(body),
        headers=headers or world.headers["manager"],
    )


def listed(world: Imaging, headers: dict[str, str], **params: str) -> dict[str, Any]:
    response = world.client.get("/imaging/studies", params=params, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_case_manager_sees_the_held_study_and_why(imaging):
    held = listed(imaging, imaging.headers["manager"])
    assert held["total"] == 1
    (study,) = held["studies"]
    assert study["studyInstanceUid"] == imaging.mr_uid
    assert study["status"] == "held"
    assert (study["outsidePatientId"], study["outsideIssuer"]) == (
        imaging.child.patient_id,
        imaging.child.issuer,
    )
    assert "birth date differs" in study["reason"]
    assert study["case"] == f"Task/{imaging.task_id}"
    assert study["instances"] == 2
    assert study["receivedAt"].endswith("Z")

    attached = listed(imaging, imaging.headers["manager"], status="attached")
    assert [s["studyInstanceUid"] for s in attached["studies"]] == [imaging.ct_uid]
    assert attached["studies"][0]["patient"] == f"Patient/{imaging.patient_id}"
    assert listed(imaging, imaging.headers["other-manager"])["total"] == 0  # another program


def test_the_desk_is_for_case_managers_only(imaging):
    client = imaging.client
    assert_outcome(client.get("/imaging/studies"), 401)
    # Hold reasons quote names and birth dates: no clinical data for hospital IT.
    it = bearer(imaging.settings, subject="it-1", roles=("admin",), scope="system/ImagingStudy.rs")
    assert_outcome(client.get("/imaging/studies", headers=it), 403)
    for who in ("specialist", "ehr"):
        assert_outcome(client.get("/imaging/studies", headers=imaging.headers[who]), 403)
        refused = release(
            imaging, imaging.mr_uid, {"case": f"Task/{imaging.task_id}"}, imaging.headers[who]
        )
        assert_outcome(refused, 403)
    no_scope = bearer(
        imaging.settings,
        subject="cm-1",
        roles=("case-manager",),
        scope="user/ImagingStudy.rs",
        programs=("oncology",),
    )
    assert_outcome(release(imaging, imaging.mr_uid, {"case": "x"}, no_scope), 403)
    assert imaging.status(imaging.mr_uid) == "held"
    assert_outcome(client.get("/imaging/studies", params={"status": "lost"}, headers=no_scope), 400)


def test_the_transfer_report_lists_the_refused_file_and_why(imaging):
    client, manager = imaging.client, imaging.headers["manager"]
    response = client.get(f"/imaging/transfers/{imaging.mr_transfer}", headers=manager)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["kind"], report["status"], report["case"]) == (
        "pull",
        "closed",
        f"Task/{imaging.task_id}",
    )
    assert (report["accepted"], report["rejected"]) == (2, 1)
    (refused,) = report["refused"]
    assert refused["file"] == "notes.txt"
    assert refused["reason"]
    assert report["studies"] == [
        {"studyInstanceUid": imaging.mr_uid, "instances": 2, "status": "held"}
    ]
    for url, headers in (
        ("/imaging/transfers/999999", manager),
        (f"/imaging/transfers/{imaging.mr_transfer}", imaging.headers["other-manager"]),
    ):
        assert_outcome(client.get(url, headers=headers), 404)


def test_a_released_study_is_attached_to_the_case_and_served(imaging):
    client = imaging.client
    before = audit_trail(imaging)
    response = release(imaging, imaging.mr_uid, {"case": f"Task/{imaging.task_id}"})
    assert response.status_code == 202, response.text
    assert (response.json()["status"], response.json()["reason"]) == ("released", None)
    assert response.json()["case"] == f"Task/{imaging.task_id}"
    decisions = [
        e
        for e in audit_trail(imaging)
        if e not in before and e["subtype"][0]["code"] == "operation"
    ]
    assert [e["agent"][0]["who"]["identifier"]["value"] for e in decisions] == ["cm-1"]

    assert imaging.run_jobs() == 1
    assert imaging.status(imaging.mr_uid) == "attached"
    specialist = imaging.headers["specialist"]
    found = client.get(
        "/dicomweb/studies", params={"PatientID": imaging.patient_id}, headers=specialist
    ).json()
    assert {values(s, "0020000D")[0] for s in found} == {imaging.ct_uid, imaging.mr_uid}
    metadata = client.get(f"/dicomweb/studies/{imaging.mr_uid}/metadata", headers=specialist)
    for model in metadata.json():
        assert values(model, "00100020") == [imaging.patient_id]
        assert values(model, "00100021") == [HUB_ISSUER]
        assert values(model, "00100030") == [imaging.child.birth_date.strftime("%Y%m%d")]

    again = release(imaging, imaging.mr_uid, {"case": f"Task/{imaging.task_id}"})
    assert_outcome(again, 409)


def test_a_rejected_study_stays_out(imaging):
    response = reject(imaging, imaging.mr_uid, {"reason": "Another child's MR"})
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["reason"]) == (
        "rejected",
        "Another child's MR",
    )
    assert imaging.status(imaging.mr_uid) == "rejected"
    rejected = listed(imaging, imaging.headers["manager"], status="rejected")
    assert [s["studyInstanceUid"] for s in rejected["studies"]] == [imaging.mr_uid]
    assert listed(imaging, imaging.headers["manager"])["total"] == 0
    assert_outcome(release(imaging, imaging.mr_uid, {"case": f"Task/{imaging.task_id}"}), 409)
    assert_outcome(reject(imaging, imaging.mr_uid, {"reason": "twice"}), 409)
    assert imaging.run_jobs() == 0
    served = imaging.client.get(
        f"/dicomweb/studies/{imaging.mr_uid}/metadata", headers=imaging.headers["specialist"]
    )
    assert_outcome(served, 404)


def test_only_a_held_study_can_be_decided(imaging):
    case = {"case": f"Task/{imaging.task_id}"}
    assert_outcome(release(imaging, imaging.ct_uid, case), 409)
    assert_outcome(reject(imaging, imaging.ct_uid, {"reason": "no"}), 409)
    assert imaging.status(imaging.ct_uid) == "attached"


def test_bad_requests_are_refused_with_where(imaging):
    mr = imaging.mr_uid
    for body, status, where in (
        ({"case": "Patient/1"}, 400, "case"),
        ({}, 400, "case"),
        ({"case": 7}, 400, "case"),
        ("[]", 400, None),
        ("not json", 400, None),
        ({"case": "Task/no-such-case"}, 404, "case"),
    ):
        assert_outcome(release(imaging, mr, body), status, expression=where)
    for body, where in (({"reason": ""}, "reason"), ({"reason": "x" * 1001}, "reason")):
        assert_outcome(reject(imaging, mr, body), 400, expression=where)
    assert_outcome(release(imaging, "1.2.3.4", {"case": f"Task/{imaging.task_id}"}), 404)
    other = release(
        imaging, mr, {"case": f"Task/{imaging.task_id}"}, imaging.headers["other-manager"]
    )
    assert_outcome(other, 404)  # a study of another program's case is not theirs to see
    wrong_type = imaging.client.post(
        f"/imaging/studies/{mr}/$reject",
        content=b"reason=no",
        headers={**imaging.headers["manager"], "Content-Type": "text/plain"},
    )
    assert_outcome(wrong_type, 415)
    assert imaging.status(mr) == "held"
