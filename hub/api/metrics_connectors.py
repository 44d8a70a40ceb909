"""The connectors' metrics: the same health the IT page shows (hub.web.it_connectors),
worked out from the same sources (message log, job outbox, record pulls, DICOM transfers).

Labels hold the connector's configured name and its kind only. Whether a listener runs is
this process's view: a replica that runs no listener reports them down.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from hub.api.deps import HubState
from hub.web.it_connectors import Event, connector_statuses

FAILING = frozenset({"failing", "down"})


class ConnectorCollector:
    """hub_connector_errors{connector, kind} (1 while the IT page shows it Failing or Not
    running, else 0), and the time of each connector's newest success and failure."""

    def __init__(self, state: HubState, listeners: list[Any], storage_scp: Any) -> None:
        self.state = state
        self.listeners = listeners
        self.storage_scp = storage_scp

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self.state.sessions() as session:
            statuses = connector_statuses(
                session, self.state.settings, self.listeners, self.storage_scp
            )
        errors, success, failure = self._families()
        for status in statuses:
            labels = [status.name, status.kind]
            errors.add_metric(labels, 1 if status.health in FAILING else 0)
            for family, event in ((success, status.last_success), (failure, status.last_failure)):
                if event is not None:
                    family.add_metric(labels, _epoch(event))
        return [errors, success, failure]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        labels = ["connector", "kind"]
        return (
            GaugeMetricFamily(
                "hub_connector_errors",
                "1 while the connector's newest event is a failure, or it should listen and "
                "does not (the IT page's Failing or Not running); else 0.",
                labels=labels,
            ),
            GaugeMetricFamily(
                "hub_connector_last_success_timestamp_seconds",
                "When the connector last succeeded (Unix time); absent if never.",
                labels=labels,
            ),
            GaugeMetricFamily(
                "hub_connector_last_failure_timestamp_seconds",
                "When the connector last failed (Unix time); absent if never.",
                labels=labels,
            ),
        )


def _epoch(event: Event) -> float:
    """The event's naive UTC moment (as the hub stores them) as Unix time."""
    moment: datetime = event.at
    return moment.replace(tzinfo=UTC).timestamp()
