"""The opinion's PDF (hub.opinions) for OpinionDesk: the letter rendered from the report,
its referral and patient, as the report's presentedForm and a DocumentReference."""

from __future__ import annotations

from hub.opinions import opinion_attachments, person_name, render_opinion_pdf
from hub.storage.repository import ResourceRepository, StoredResource
from hub.workflow.checklist import case_program
from hub.workflow.opinions import JSON, Renderer


def opinion_renderer(repository: ResourceRepository, default_program: str) -> Renderer:
    def render(
        report: JSON, referral: StoredResource, case: StoredResource, replaces: JSON | None
    ) -> tuple[JSON, JSON]:
        subject = str((report.get("subject") or {}).get("reference", ""))
        patient = repository.read(*subject.split("/", 1)) if "/" in subject else None
        pdf = render_opinion_pdf(
            report,
            referral.content,
            patient.content if patient else {},
            specialist=_specialist(repository, report, case),
            program=case_program(case, default_program),
            # The version's own time: rendering it again gives the same bytes.
            signed_at=report.get("issued"),
        )
        return opinion_attachments(report, pdf, replaces=replaces)

    return render


def _specialist(repository: ResourceRepository, report: JSON, case: StoredResource) -> str:
    """The name the letter is signed with: the report's performer, else the case's owner."""
    for who in [*(report.get("performer") or []), case.content.get("owner") or {}]:
        if who.get("display"):
            return str(who["display"])
        reference = str(who.get("reference", ""))
        found = repository.find(*reference.split("/", 1)) if "/" in reference else None
        if found is not None and (name := person_name(found.content)):
            return name
    return "The reviewing specialist"
