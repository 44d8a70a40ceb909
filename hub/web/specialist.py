"""The specialist's pages: the worklist of assigned cases, the case, and the opinion form
(draft, PDF preview, sign and send). Every read and write goes through FhirInteractions, so
the access rules and the audit trail are those of the API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from hub.api.deps import hub_state, read_form, unit_of_work, wake_worker
from hub.api.opinions import opinion_desk
from hub.errors import InvalidRequest, NotFound
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.opinions import render_opinion_pdf
from hub.opinions.content import Answer, OpinionContent, PlanAssessment
from hub.profiles.canonical import REPORT_TYPE_SYSTEM, SECOND_OPINION_REPORT_CODE
from hub.storage.indexer import split_reference
from hub.storage.repository import StoredResource
from hub.web.case_view import CaseView, case_view, held_studies
from hub.web.lab_plot import lab_plot
from hub.web.session import Person, check_csrf, require_role
from hub.web.templating import render
from hub.web.worklist import assigned_cases, case_clock
from hub.workflow.checklist import case_program, evaluate, load_checklist
from hub.workflow.opinion_rules import DRAFT, is_opinion
from hub.workflow.record_members import case_record

router = APIRouter(prefix="/ui", include_in_schema=False)

PLAN_CHOICES: tuple[tuple[PlanAssessment, str], ...] = (
    ("agree", "Agree with the current treatment plan"),
    ("modify", "Modify the current treatment plan"),
    ("disagree", "Disagree with the current treatment plan"),
)


@router.get("/worklist")
def worklist(request: Request, person: Person, notice: str | None = None) -> Response:
    require_role(person, "specialist")
    settings = hub_state(request).settings
    with unit_of_work(request, person) as fhir:
        cases = assigned_cases(fhir, settings, person)
    return render(request, "worklist.html", {"cases": cases, "notice": notice})


@router.get("/cases/{task_id}")
def case_page(
    request: Request, person: Person, task_id: str, notice: str | None = None
) -> Response:
    require_role(person, "specialist")
    settings = hub_state(request).settings
    with unit_of_work(request, person) as fhir:
        view = _case(fhir, task_id)
        completeness = evaluate(
            fhir.searcher,
            load_checklist(settings.checklist_file),
            view.task,
            view.referral,
            case_program(view.task, settings.default_program),
            fhir.access.visible if fhir.access else None,
        )
        clock = case_clock(fhir, settings, task_id)
        held = held_studies(fhir.session, view.studies)
    plots = [
        (series, lab_plot(series, view.chemotherapy_days, f"plot-{number}"))
        for number, series in enumerate(view.labs)
        if len(series.points) > 1
    ]
    opinion = OpinionContent.from_report(view.opinion.content if view.opinion else {})
    return render(
        request,
        "case.html",
        {
            "view": view,
            "clock": clock,
            "completeness": completeness,
            "plots": plots,
            "opinion": opinion,
            "editable": view.opinion is None or opinion.status == DRAFT,
            "answers": [(q, opinion.answer_to(q) or "") for q in view.questions],
            "plan_choices": PLAN_CHOICES,
            "held": held,
            "viewer_url": settings.viewer_url,
            "dicomweb": settings.dicomweb_url,
            "notice": notice,
        },
    )


@router.post("/cases/{task_id}/opinion")
async def save_draft(request: Request, person: Person, task_id: str) -> Response:
    require_role(person, "specialist")
    form = dict(await read_form(request))
    check_csrf(request, form)
    await run_in_threadpool(_save_draft, request, person, task_id, form)
    return RedirectResponse(
        f"/ui/cases/{task_id}?notice=The+draft+opinion+is+saved.#opinion", status_code=303
    )


@router.get("/cases/{task_id}/opinion.pdf")
def preview(request: Request, person: Person, task_id: str) -> Response:
    """The letter as the referrer will get it, watermarked while it is a draft."""
    require_role(person, "specialist")
    settings = hub_state(request).settings
    with unit_of_work(request, person) as fhir:
        view = _case(fhir, task_id)
        if view.opinion is None:
            raise NotFound("There is no opinion for this case yet: save a draft first.")
        patient_key = split_reference(str(view.referral.content["subject"]["reference"]))
        patient = fhir.read(*patient_key) if patient_key else None
        fhir.audited_export("read", [view.opinion, view.referral])
        pdf = render_opinion_pdf(
            view.opinion.content,
            view.referral.content,
            patient.content if patient else {},
            specialist=_owner_name(view.task),
            program=case_program(view.task, settings.default_program),
            signed_at=view.opinion.content.get("issued"),
        )
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="opinion-{task_id}.pdf"'},
    )


@router.post("/cases/{task_id}/opinion/sign")
async def sign_and_send(request: Request, person: Person, task_id: str) -> Response:
    require_role(person, "specialist")
    form = dict(await read_form(request))
    check_csrf(request, form)
    if form.get("confirm") != "yes":
        raise InvalidRequest(
            "Tick the box confirming the opinion is complete before signing it.",
            expression="confirm",
        )
    await run_in_threadpool(_sign, request, person, task_id)
    wake_worker(request)
    return RedirectResponse(
        f"/ui/cases/{task_id}?notice=The+opinion+is+signed+and+on+its+way+to+the+referrer.",
        status_code=303,
    )


def _case(fhir: FhirInteractions, task_id: str) -> CaseView:
    task = fhir.fetch("Task", task_id)
    referral = fhir.cases.referral_of(task)
    patient = split_reference(str((referral.content.get("subject") or {}).get("reference", "")))
    if patient is None:
        raise NotFound("The case's referral names no patient on this hub.")
    record = case_record(fhir, referral, task, patient)
    members = record.members
    fhir.audited_export(
        "read", [members[key] for key in sorted(members)], patients=["/".join(patient)]
    )
    return case_view(record, task, referral)


def _save_draft(request: Request, person: Person, task_id: str, form: dict[str, str]) -> None:
    with unit_of_work(request, person) as fhir:
        task = fhir.fetch("Task", task_id)
        referral = fhir.cases.referral_of(task)
        current = _current_opinion(fhir, referral.resource_id)
        report = _report_from_form(form, referral, person.fhir_user)
        if current is None:
            fhir.create("DiagnosticReport", report)
        else:
            report["id"] = current.resource_id
            fhir.update("DiagnosticReport", current.resource_id, report)
        fhir.finish()


def _sign(request: Request, person: Person, task_id: str) -> None:
    with unit_of_work(request, person) as fhir:
        task = fhir.fetch("Task", task_id)
        referral = fhir.cases.referral_of(task)
        current = _current_opinion(fhir, referral.resource_id)
        if current is None:
            raise NotFound("There is no draft to sign: save the opinion first.")
        opinion_desk(fhir, hub_state(request).settings).finalize(current.resource_id)


def _current_opinion(fhir: FhirInteractions, referral_id: str) -> StoredResource | None:
    query = fhir.parse_search(
        "DiagnosticReport", [("based-on", f"ServiceRequest/{referral_id}"), ("_count", "50")]
    )
    opinions = [
        found
        for found in fhir.search(query).matches
        if is_opinion(found.content) and found.content.get("status") != "entered-in-error"
    ]
    return max(opinions, key=lambda found: found.last_updated, default=None)


def _report_from_form(
    form: dict[str, str], referral: StoredResource, author: str | None
) -> dict[str, Any]:
    plan = form.get("plan") or None
    if plan is not None and plan not in dict(PLAN_CHOICES):
        raise InvalidRequest(f"'{plan}' is not a plan assessment.", expression="plan")
    answers = tuple(
        Answer(question=form[f"question-{n}"], answer=form[f"answer-{n}"].strip())
        for n in range(len(referral.content.get("note") or []))
        if form.get(f"question-{n}") and form.get(f"answer-{n}", "").strip()
    )
    content = OpinionContent(
        status=DRAFT,
        plan_assessment=plan,  # checked against PLAN_CHOICES above
        recommendations=_lines(form.get("recommendations", "")),
        clinical_trials=_lines(form.get("trials", "")),
        answers=answers,
    )
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "status": DRAFT,
        "code": {
            "coding": [{"system": REPORT_TYPE_SYSTEM, "code": SECOND_OPINION_REPORT_CODE}],
            "text": "Second opinion",
        },
        "subject": referral.content["subject"],
        "basedOn": [{"reference": f"ServiceRequest/{referral.resource_id}"}],
        "effectiveDateTime": instant(utc_now()),
        "extension": content.extensions(),
    }
    if author:
        report["performer"] = [{"reference": author}]
    conclusion = form.get("conclusion", "").strip()
    if conclusion:
        report["conclusion"] = conclusion
    return report


def _lines(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _owner_name(task: StoredResource) -> str:
    owner = task.content.get("owner") or {}
    return str(owner.get("display") or owner.get("reference") or "the specialist")
