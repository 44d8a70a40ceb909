"""The message log's metrics: HL7 v2 messages in and out, by type and outcome.

Counted from the log at each scrape (one GROUP BY over the covering index
ix_message_log_counts), so they are what the log holds now: pruning (hub.messages.retention)
lowers them. They are gauges for that reason, although named `..._total` as the issue asks:
use `delta()` rather than `rate()`, and expect a drop when old messages are pruned.
Labels hold message types (MSH-9) and outcome codes only.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.storage.tables import MessageRow

NO_VALUE = "none"
"""The label value where the log has none: an unparsable message's type, a missing ACK."""


class MessageCollector:
    """hub_messages_total{direction, type, result} and hub_messages_in_status{type, status}.

    `result`: inbound, the ACK code the hub answered (AA, AE, AR, or CA, CE, CR in enhanced
    mode); outbound, the delivery's state (queued, delivered, dead; a failed attempt is
    queued again until the job gives up). `status` of inbound messages: accepted (waiting
    to be mapped), mapped, failed (the mapping failed), rejected (not accepted at all).
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        statement = select(
            MessageRow.direction,
            MessageRow.message_type,
            MessageRow.status,
            MessageRow.ack_code,
            func.count(),
        ).group_by(
            MessageRow.direction, MessageRow.message_type, MessageRow.status, MessageRow.ack_code
        )
        with self.sessions() as session:
            rows = session.execute(statement).all()
        totals: dict[tuple[str, str, str], int] = {}
        statuses: dict[tuple[str, str], int] = {}
        for direction, message_type, status, ack_code, count in rows:
            kind = message_type or NO_VALUE
            result = (ack_code or NO_VALUE) if direction == "in" else status
            labels = (direction, kind, result)
            totals[labels] = totals.get(labels, 0) + count
            if direction == "in":
                statuses[(kind, status)] = statuses.get((kind, status), 0) + count
        total, in_status = self._families()
        for key, count in sorted(totals.items()):
            total.add_metric(list(key), count)
        for pair, count in sorted(statuses.items()):
            in_status.add_metric(list(pair), count)
        return [total, in_status]

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "hub_messages_total",
                "HL7 v2 messages in the message log, by direction, type (MSH-9) and result: "
                "in, the ACK code sent; out, the delivery state. Lowered by pruning.",
                labels=["direction", "type", "result"],
            ),
            GaugeMetricFamily(
                "hub_messages_in_status",
                "Inbound HL7 v2 messages in the message log by type and status "
                "(accepted: waiting to be mapped, mapped, failed, rejected).",
                labels=["type", "status"],
            ),
        ]
