"""A signed opinion goes back to the referrer by the channel the referral came in on:

- a referral from an HL7 v2 message: MDM^T02 (or ORU^R01) over MLLP to the destination that
  `answers_for` its sender and has `opinions` on (the `deliver-hl7` job: ACK awaited and
  matched, retried with backoff, dead letters with replay);
- a referral from a hub client that a FHIR source's `write_back.referrers` names: the
  `write-back-fhir` job (conditional creates: a retry never makes a second report there).

Each delivery is an OpinionDeliveryRow; when every delivery of the version is confirmed
(the peer's ACK, or the write-back's 2xx), the case moves to opinion-delivered, then
completed.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors.fhir_rest.config import FhirSource
from hub.fhir.dates import utc_now
from hub.imaging.events import record_case_event
from hub.messages.order_status import referral_origin, reply_header
from hub.messages.outbound import MllpDestination, queue_outbound
from hub.records.write_back import queue_write_back
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.tables import MessageRow, OpinionDeliveryRow, ResourceRow
from hub.workflow.cases import CaseWorkflow, business_status_of
from mappings.hl7v2.outbound import opinion_to_mdm_t02, opinion_to_oru_r01


class OpinionChannels:
    """The configured ways back: FHIR sources that take write-backs, MLLP destinations."""

    def __init__(
        self, fhir_sources: Sequence[FhirSource], destinations: Sequence[MllpDestination]
    ) -> None:
        self.fhir_sources = [s for s in fhir_sources if s.write_back is not None]
        self.destinations = [d for d in destinations if d.opinions]

    def queue(
        self,
        session: Session,
        report: StoredResource,
        referral: StoredResource,
        case: StoredResource,
    ) -> list[str]:
        """Queue the deliveries of this signed version of `report` (the opinion of `case`,
        for `referral`); what was queued."""
        queued = []
        origin = referral_origin(session, referral.resource_id)
        if origin is not None:
            destination = next(
                (
                    d
                    for d in self.destinations
                    if d.answers(origin.sending_application, origin.sending_facility)
                ),
                None,
            )
            if destination is not None:
                message_id = queue_outbound(
                    session, destination, _message(session, destination, origin, report, referral)
                )
                _row(session, report, case, "hl7", destination.name, message_id)
                queued.append(f"{destination.opinion_message} to {destination.name}")
        written_by = session.scalar(
            select(ResourceRow.written_by).where(
                ResourceRow.res_type == "ServiceRequest",
                ResourceRow.res_id == referral.resource_id,
            )
        )
        for source in self.fhir_sources:
            assert source.write_back is not None
            if written_by and written_by in source.write_back.referrers:
                queue_write_back(session, report.resource_id, source.name)
                _row(session, report, case, "fhir", source.name, None)
                queued.append(f"the FHIR server {source.name}")
        return queued


def confirm_message(session: Session, message: MessageRow) -> None:
    """The `deliver-hl7` hook: an opinion's message was accepted."""
    row = session.scalar(
        select(OpinionDeliveryRow).where(OpinionDeliveryRow.message_id == message.message_id)
    )
    if row is not None:
        record_case_event(
            session,
            row.case_task_id,
            f"Opinion delivered: {message.message_type} {message.control_id} to {row.target} "
            f"acknowledged ({message.ack_code}).",
        )
        _confirmed(session, row)


def confirm_write_back(session: Session, report_id: str, source: str) -> None:
    """The `write-back-fhir` hook: the opinion's latest version reached `source`."""
    rows = session.scalars(
        select(OpinionDeliveryRow).where(
            OpinionDeliveryRow.report_id == report_id,
            OpinionDeliveryRow.channel == "fhir",
            OpinionDeliveryRow.target == source,
            OpinionDeliveryRow.status == "queued",
        )
    ).all()
    for row in rows:
        _confirmed(session, row)


def _confirmed(session: Session, row: OpinionDeliveryRow) -> None:
    row.status, row.confirmed_at = "delivered", utc_now()
    session.flush()
    waiting = session.scalar(
        select(OpinionDeliveryRow.delivery_id).where(
            OpinionDeliveryRow.report_id == row.report_id,
            OpinionDeliveryRow.report_version == row.report_version,
            OpinionDeliveryRow.status != "delivered",
        )
    )
    if waiting is not None:
        return
    workflow = CaseWorkflow(ResourceRepository(session))
    case = workflow.repository.find("Task", row.case_task_id)
    if case is None or case.content.get("status") != "in-progress":
        return  # an amendment of a completed case: delivered, nothing to move
    if business_status_of(case.content) != "opinion-delivered":
        case = workflow.transition(case.resource_id, "in-progress", "opinion-delivered", None)
    workflow.transition(case.resource_id, "completed", "opinion-delivered", None)


def _row(
    session: Session,
    report: StoredResource,
    case: StoredResource,
    channel: str,
    target: str,
    message_id: int | None,
) -> None:
    session.add(
        OpinionDeliveryRow(
            report_id=report.resource_id,
            report_version=report.version_id,
            case_task_id=case.resource_id,
            channel=channel,
            target=target,
            message_id=message_id,
            status="queued",
            created_at=utc_now(),
        )
    )


def _message(
    session: Session,
    destination: MllpDestination,
    origin: MessageRow,
    report: StoredResource,
    referral: StoredResource,
) -> bytes:
    repository = ResourceRepository(session)
    patient = repository.read(*str(report.content["subject"]["reference"]).split("/", 1))
    resources = {}
    for element in ("performer", "resultsInterpreter"):
        for who in report.content.get(element) or []:
            reference = str(who.get("reference", ""))
            if "/" in reference and (found := repository.find(*reference.split("/", 1))):
                resources[reference] = found.content
    build = opinion_to_oru_r01 if destination.opinion_message == "ORU^R01" else opinion_to_mdm_t02
    return build(
        report.content,
        patient.content,
        referral=referral.content,
        pdf=None,
        resources=resources,
        **reply_header(origin),
    )
