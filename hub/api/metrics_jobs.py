"""The job outbox's metrics: queue depth, dead letters, and how long jobs take.

Counted from the job table at each scrape: one GROUP BY over the unfinished and dead jobs
(index ix_job_due), one over the jobs finished in the last LATENCY_WINDOW (ix_job_finished).
Labels hold job kinds only (never a subject: it can name a case).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import ColumnElement, Float, case, cast, func, select
from sqlalchemy.orm import Session, sessionmaker

from hub.fhir.dates import utc_now
from hub.imaging.importer import ATTACH_JOB
from hub.imaging.pull import PULL_JOB
from hub.messages.intake import MAP_JOB
from hub.messages.outbound import DELIVER_JOB
from hub.records.fhir_pull import PULL_RECORDS_JOB
from hub.records.write_back import WRITE_BACK_JOB
from hub.storage.tables import JobRow
from hub.workflow.checklist import CHECK_RECORDS_JOB

KNOWN_KINDS = (
    MAP_JOB,
    DELIVER_JOB,
    ATTACH_JOB,
    PULL_JOB,
    PULL_RECORDS_JOB,
    WRITE_BACK_JOB,
    CHECK_RECORDS_JOB,
)
"""Reported with 0 when they have no job, so that an alert on them has a series to watch."""
QUEUED = ("pending", "running")
LATENCY_WINDOW = timedelta(hours=1)
"""The latency histogram covers the jobs that finished (done) in this last stretch of time."""
LATENCY_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Upper bounds in seconds: from a mapping (well under a second) to a pull that waits on a
slow source or a delivery retried with backoff."""


class JobCollector:
    """hub_jobs_queue_depth{kind, status}, hub_jobs_dead_letters{kind} and
    hub_job_latency_seconds{kind} (a gauge histogram of enqueue → done, over the window)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        with self.sessions() as session:
            counts = session.execute(
                select(JobRow.kind, JobRow.status, func.count())
                .where(JobRow.status.in_((*QUEUED, "dead")))
                .group_by(JobRow.kind, JobRow.status)
            ).all()
            seconds = _job_seconds(session)
            latencies = session.execute(
                select(
                    JobRow.kind,
                    func.count(),
                    func.sum(seconds),
                    *(func.sum(case((seconds <= bound, 1), else_=0)) for bound in LATENCY_BUCKETS),
                )
                .where(JobRow.status == "done", JobRow.updated_at >= utc_now() - LATENCY_WINDOW)
                .group_by(JobRow.kind)
            ).all()
        depth, dead, latency = self._families()
        found = {(kind, status): count for kind, status, count in counts}
        kinds = sorted({*KNOWN_KINDS, *(kind for kind, _ in found)})
        for kind in kinds:
            for status in QUEUED:
                depth.add_metric([kind, status], found.get((kind, status), 0))
            dead.add_metric([kind], found.get((kind, "dead"), 0))
        for kind, count, total, *cumulative in latencies:
            buckets = [
                (str(float(b)), int(n or 0))
                for b, n in zip(LATENCY_BUCKETS, cumulative, strict=True)
            ]
            latency.add_metric(
                [kind], [*buckets, ("+Inf", int(count))], gsum_value=float(total or 0.0)
            )
        return [depth, dead, latency]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeHistogramMetricFamily]:
        window = int(LATENCY_WINDOW.total_seconds())
        return (
            GaugeMetricFamily(
                "hub_jobs_queue_depth",
                "Jobs waiting (pending) or being run (running), by kind.",
                labels=["kind", "status"],
            ),
            GaugeMetricFamily(
                "hub_jobs_dead_letters",
                "Jobs that failed every attempt and wait for a replay, by kind.",
                labels=["kind"],
            ),
            GaugeHistogramMetricFamily(
                "hub_job_latency_seconds",
                f"Seconds from enqueue to done of the jobs finished in the last {window} s, "
                "by kind (a gauge histogram: read it as is, no rate()).",
                labels=["kind"],
            ),
        )


def _job_seconds(session: Session) -> ColumnElement[float]:
    """A job's seconds from created to last updated, in the dialect's date arithmetic."""
    start, end = JobRow.created_at, JobRow.updated_at
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return cast(func.extract("epoch", end - start), Float)
