"""The specialist's pages through the app (TestClient), on both backends: the worklist, the
case page (questions, patient, records, laboratory plot, reports, imaging thumbnails), and
the opinion form from draft to signed; who may see what; forms without their token."""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from dicom.synthetic import make_patient, make_study, write_study
from hub.app import create_app
from hub.jobs.worker import JobWorker
from hub.settings import Settings
from hub.storage.tables import ResourceRow
from tests.fhir_client import bearer, path_jobs, post, referral, token

QUESTION = "Is proton craniospinal irradiation an option?"
LAB = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
        }
    ]
}


@dataclass
class Case:
    client: TestClient
    settings: Settings
    task: str
    referral: str
    patient: str
    practitioner: str
    study_uid: str
    series_uids: list[str]

    def sign_in(
        self, practitioner: str | None = None, roles: tuple[str, ...] = ("specialist",)
    ) -> None:
        session = token(
            self.settings,
            subject="dr-web",
            roles=roles,
            scope="user/*.cruds",
            fhir_user=f"Practitioner/{practitioner or self.practitioner}",
        )
        self.client.cookies.set("hub_session", session, path="/ui")

    def csrf(self, page: str) -> str:
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found, "the page has no form token"
        return found.group(1)

    def count(self, resource_type: str) -> int:
        with self.client.app.state.hub.sessions() as session:  # type: ignore[attr-defined]
            return int(
                session.scalar(
                    select(func.count()).where(
                        ResourceRow.res_type == resource_type, ResourceRow.deleted.is_(False)
                    )
                )
                or 0
            )


@pytest.fixture
def case(settings: Settings, tmp_path: Path) -> Iterator[Case]:
    configured = settings.model_copy(update={"pull_missing_records": False})
    with TestClient(create_app(configured), raise_server_exceptions=False) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        ehr = bearer(configured, subject="ehr-1", roles=("referrer",), scope="system/*.cruds")
        manager = bearer(configured, subject="cm-1", roles=("case-manager",), scope="user/*.cruds")
        child = make_patient(61)
        patient = post(
            client,
            {
                "resourceType": "Patient",
                "name": [{"family": child.family_name, "given": [child.given_name]}],
                "birthDate": child.birth_date.isoformat(),
                "gender": {"F": "female", "M": "male"}[child.sex],
            },
            **ehr,
        )
        request = post(
            client,
            referral(f"Patient/{patient['id']}", note=[{"text": QUESTION}]),
            **ehr,
        )
        doctor = post(
            client, {"resourceType": "Practitioner", "name": [{"family": "Expert"}]}, **manager
        )
        task = client.get(
            "/fhir/Task", params={"focus": f"ServiceRequest/{request['id']}"}, headers=manager
        ).json()["entry"][0]["resource"]
        task["owner"] = {"reference": f"Practitioner/{doctor['id']}"}
        task["status"] = "accepted"
        task["businessStatus"]["coding"][0]["code"] = "assigned"
        moved = client.put(f"/fhir/Task/{task['id']}", content=json.dumps(task), headers=manager)
        assert moved.status_code == 200, moved.text
        subject = {"reference": f"Patient/{patient['id']}"}
        for day, value in (("2026-10-01", 9.1), ("2026-10-15", 7.4), ("2026-10-29", 10.2)):
            post(
                client,
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "category": [LAB],
                    "code": {
                        "coding": [
                            {"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}
                        ]
                    },
                    "subject": subject,
                    "effectiveDateTime": day,
                    "valueQuantity": {
                        "value": value,
                        "unit": "g/dL",
                        "system": "http://unitsofmeasure.org",
                        "code": "g/dL",
                    },
                    "referenceRange": [{"low": {"value": 11.5}, "high": {"value": 15.5}}],
                },
                **ehr,
            )
        pathology = "Medulloblastoma, classic histology.\nWNT negative, SHH negative."
        post(
            client,
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"text": "Surgical pathology report"},
                "subject": subject,
                "effectiveDateTime": "2026-09-20",
                "conclusion": "Medulloblastoma, group 4.",
                "presentedForm": [
                    {
                        "contentType": "text/plain",
                        "data": base64.b64encode(pathology.encode()).decode(),
                    }
                ],
            },
            **ehr,
        )
        study = make_study(61, child, "CT", series=2, instances=3)
        importer = client.app.state.dicom_importer  # type: ignore[attr-defined]
        transfer = importer.open_transfer("pull", "outside-pacs", case_task_id=task["id"])
        for path in write_study(tmp_path / "ct", study):
            staged = importer.store.staging_file()
            shutil.copyfile(path, staged)
            importer.receive(transfer, staged, name=path.name)
        importer.close_transfer(transfer)
        sessions = client.app.state.hub.sessions  # type: ignore[attr-defined]
        JobWorker(sessions, path_jobs(configured)).run_until_idle()
        yield Case(
            client,
            configured,
            task["id"],
            request["id"],
            patient["id"],
            doctor["id"],
            str(study[0].StudyInstanceUID),
            sorted({str(ds.SeriesInstanceUID) for ds in study}),
        )


def test_without_a_session_a_page_sends_the_browser_to_sign_in(case: Case) -> None:
    answer = case.client.get(f"/ui/cases/{case.task}", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/ui/login?next=/ui/cases/{case.task}"


def test_the_worklist_shows_the_assigned_case_with_its_clock_and_records(case: Case) -> None:
    case.sign_in()
    page = case.client.get("/ui/worklist")
    assert page.status_code == 200
    assert f'href="/ui/cases/{case.task}"' in page.text
    assert "Routine" in page.text
    assert re.search(r"\d+ of \d+ required", page.text)
    assert "default-src 'none'" in page.headers["content-security-policy"]

    case.sign_in(practitioner="someone-else")
    other = case.client.get("/ui/worklist")
    assert other.status_code == 200
    assert case.task not in other.text
    assert "No cases are assigned to you" in other.text


def test_the_case_page_shows_questions_records_plot_and_imaging(case: Case) -> None:
    case.sign_in()
    audits_before = case.count("AuditEvent")
    page = case.client.get(f"/ui/cases/{case.task}")
    assert page.status_code == 200, page.text
    text = page.text
    assert text.index(QUESTION) < text.index("Laboratory values over time")
    assert "Medulloblastoma, group 4." in text
    assert "WNT negative, SHH negative." in text  # the attachment, readable in the page
    assert "9.1 g/dL" in text and "10.2 g/dL" in text
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in text
    assert "<polyline" in text and "2026-10-01: 9.1; 2026-10-15: 7.4; 2026-10-29: 10.2" in text
    for series in case.series_uids:
        assert f"/ui/imaging/studies/{case.study_uid}/series/{series}/thumbnail.png" in text
    assert f"/dicomweb/studies/{case.study_uid}" in text
    assert case.count("AuditEvent") > audits_before

    thumbnail = case.client.get(
        f"/ui/imaging/studies/{case.study_uid}/series/{case.series_uids[0]}/thumbnail.png"
    )
    assert thumbnail.status_code == 200
    assert thumbnail.headers["content-type"] == "image/png"
    assert thumbnail.content.startswith(b"\x89PNG")


def test_another_specialist_gets_not_found_for_the_case_and_its_images(case: Case) -> None:
    case.sign_in(practitioner="someone-else")
    page = case.client.get(f"/ui/cases/{case.task}")
    assert page.status_code == 404
    assert "Not found" in page.text and "text/html" in page.headers["content-type"]
    image = case.client.get(
        f"/ui/imaging/studies/{case.study_uid}/series/{case.series_uids[0]}/thumbnail.png"
    )
    assert image.status_code == 404


def test_a_case_manager_is_refused_the_specialist_pages(case: Case) -> None:
    case.sign_in(roles=("case-manager",))
    page = case.client.get("/ui/worklist")
    assert page.status_code == 403
    assert "specialist" in page.text


def test_the_opinion_goes_from_draft_to_preview_to_signed(case: Case) -> None:
    case.sign_in()
    page = case.client.get(f"/ui/cases/{case.task}").text
    form = {
        "csrf": case.csrf(page),
        "conclusion": "Agree with the diagnosis; proton therapy is preferable.",
        "plan": "modify",
        "question-0": QUESTION,
        "answer-0": "Yes, with a reduced dose.",
        "recommendations": "Proton craniospinal irradiation.\nRepeat spine MRI.",
        "trials": "NCT00000000 (synthetic)",
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    saved = case.client.post(
        f"/ui/cases/{case.task}/opinion", data=form, headers=headers, follow_redirects=False
    )
    assert saved.status_code == 303, saved.text
    reports = case.client.get(
        "/fhir/DiagnosticReport",
        params={"based-on": f"ServiceRequest/{case.referral}"},
        headers=bearer(
            case.settings, subject="cm-1", roles=("case-manager",), scope="user/*.cruds"
        ),
    ).json()
    (draft,) = [e["resource"] for e in reports["entry"]]
    assert draft["status"] == "preliminary"
    assert draft["conclusion"] == form["conclusion"]
    assert draft["performer"] == [{"reference": f"Practitioner/{case.practitioner}"}]
    again = case.client.get(f"/ui/cases/{case.task}").text
    assert "Yes, with a reduced dose." in again and "Repeat spine MRI." in again

    preview = case.client.get(f"/ui/cases/{case.task}/opinion.pdf")
    assert preview.status_code == 200
    assert preview.headers["content-type"] == "application/pdf"
    assert preview.content.startswith(b"%PDF")

    unconfirmed = case.client.post(
        f"/ui/cases/{case.task}/opinion/sign", data={"csrf": form["csrf"]}, headers=headers
    )
    assert unconfirmed.status_code == 400
    assert "Tick the box" in unconfirmed.text
    signed = case.client.post(
        f"/ui/cases/{case.task}/opinion/sign",
        data={"csrf": form["csrf"], "confirm": "yes"},
        headers=headers,
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text
    final = case.client.get(f"/ui/cases/{case.task}").text
    assert "Status: <strong>final</strong>" in final
    assert 'action="/ui/cases/' + case.task + '/opinion"' not in final  # no longer editable


def test_a_form_without_its_token_is_refused_and_changes_nothing(case: Case) -> None:
    case.sign_in()
    before = case.count("DiagnosticReport")
    answer = case.client.post(
        f"/ui/cases/{case.task}/opinion",
        data={"conclusion": "Forged."},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400
    assert "did not come from the hub" in answer.text
    assert case.count("DiagnosticReport") == before
