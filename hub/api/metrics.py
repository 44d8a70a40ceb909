"""GET /metrics: the hub's Prometheus metrics, in the text exposition format.

Collected at scrape time from the database (custom collectors), not counted in process
memory: several API replicas share one database, and each answers with the same figures.
Add an area's metrics by adding a collector factory to COLLECTORS. The areas: case
turnaround (here), the message log (metrics_messages), the job outbox (metrics_jobs) and
the connectors (metrics_connectors).

Every API call is authenticated, a scrape too: the scraper is a registered client with the
role admin and a scope that allows searching Task (`system/Task.s`), whose access token it
sends as a bearer token (Prometheus `authorization.credentials_file`, refreshed by a
sidecar: the hub's tokens live minutes). No patient data and no case id is in a label:
only program codes, priorities, quantiles, message types, job kinds and connector names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.datastructures import State

from hub.api.deps import HubState, authenticate
from hub.api.metrics_connectors import ConnectorCollector
from hub.api.metrics_jobs import JobCollector
from hub.api.metrics_messages import MessageCollector
from hub.api.turnaround import operations_caller
from hub.security.principal import Principal
from hub.workflow.turnaround import turnaround_figures

Scraper = Annotated[Principal, Depends(operations_caller("admin"))]
router = APIRouter(tags=["Operations"], dependencies=[Depends(authenticate)])


class TurnaroundCollector:
    """Per program: cases by clock state, and the turnaround of recent deliveries."""

    def __init__(self, state: HubState) -> None:
        self.state = state

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        settings = self.state.settings
        config = settings.turnaround
        with self.state.sessions() as session:
            figures = turnaround_figures(
                session, config, None, default_program=settings.default_program
            )
        families = self._families()
        by_name = {family.name: family for family in families}
        for entry in figures:
            labels = [entry.program]
            by_name["hub_cases_open"].add_metric(labels, entry.open)
            by_name["hub_cases_awaiting_records"].add_metric(labels, entry.awaiting_records)
            by_name["hub_cases_on_time"].add_metric(labels, entry.on_time)
            by_name["hub_cases_at_risk"].add_metric(labels, entry.at_risk)
            by_name["hub_cases_overdue"].add_metric(labels, entry.overdue)
            by_name["hub_cases_delivered"].add_metric(labels, entry.delivered)
            by_name["hub_cases_delivered_late"].add_metric(labels, entry.delivered_late)
            quantiles = by_name["hub_case_turnaround_business_days"]
            for quantile, value in (
                ("0.5", entry.median_business_days),
                ("0.9", entry.p90_business_days),
            ):
                quantiles.add_metric([*labels, quantile], math.nan if value is None else value)
            promise = by_name["hub_case_turnaround_promise_business_days"]
            promise.add_metric([*labels, "routine"], entry.promise.routine)
            promise.add_metric([*labels, "urgent"], entry.promise.urgent)
        return families

    def _families(self) -> list[GaugeMetricFamily]:
        window = self.state.settings.turnaround.figures_window_days
        program = ["program"]
        return [
            GaugeMetricFamily(
                "hub_cases_open", "Open cases (neither delivered nor closed).", labels=program
            ),
            GaugeMetricFamily(
                "hub_cases_awaiting_records",
                "Open cases whose records are not complete (turnaround clock not started).",
                labels=program,
            ),
            GaugeMetricFamily(
                "hub_cases_on_time", "Open cases on the clock, within the promise.", labels=program
            ),
            GaugeMetricFamily(
                "hub_cases_at_risk",
                "Open cases past the at-risk share of their promise, not yet overdue.",
                labels=program,
            ),
            GaugeMetricFamily(
                "hub_cases_overdue", "Open cases past their promised delivery.", labels=program
            ),
            GaugeMetricFamily(
                "hub_cases_delivered",
                f"Cases whose opinion was delivered in the last {window} days.",
                labels=program,
            ),
            GaugeMetricFamily(
                "hub_cases_delivered_late",
                f"Cases delivered in the last {window} days after their promise.",
                labels=program,
            ),
            GaugeMetricFamily(
                "hub_case_turnaround_business_days",
                f"Business days from records-complete to delivered, of the cases delivered in "
                f"the last {window} days: median (0.5) and 90th percentile (0.9); NaN if none.",
                labels=[*program, "quantile"],
            ),
            GaugeMetricFamily(
                "hub_case_turnaround_promise_business_days",
                "Business days promised from records-complete to delivered.",
                labels=[*program, "priority"],
            ),
        ]


COLLECTORS: tuple[Callable[[State], Collector], ...] = (
    lambda app: TurnaroundCollector(app.hub),
    lambda app: MessageCollector(app.hub.sessions),
    lambda app: JobCollector(app.hub.sessions),
    lambda app: ConnectorCollector(
        app.hub, getattr(app, "listeners", []), getattr(app, "storage_scp", None)
    ),
)
"""Each builds a collector for one scrape, on the app's state (`app.state`: the HubState
as `hub`, and the listeners this process runs)."""


@router.get("/metrics", response_class=Response)
def metrics(request: Request, scraper: Scraper) -> Response:
    """Prometheus metrics, collected from the database now."""
    registry = CollectorRegistry()
    for make in COLLECTORS:
        registry.register(make(request.app.state))
    # The format the scraper asks for: Prometheus text 0.0.4 by default, or OpenMetrics.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})
