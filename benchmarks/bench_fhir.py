"""FHIR REST pull figures of the hub on this machine: one Markdown table and a JSON file.

Issue #6, "Tests and figures": resources/s pulled and normalized for a 5,000-resource
patient over loopback, and the peak RSS (target: >= 1,000 resources/s, peak RSS under
250 MB). "Pulled and normalized": found, fetched (every page, the referenced resources, the
attachments), validated against the FHIR R4 models (in the worker process, beside the
fetching: done when both are) and rewritten into the hub's id space; the whole job's rate,
which adds storing every resource with its search index rows, Provenance and the commit, is
shown beside it.

The outside server is Medplum's FHIR router in Node (tests/fhir_peer, the integration
tests' peer) holding a synthetic 5,000-resource record (hub.demo.outside_record). For each
strategy (the query set, Patient/$everything, a Bulk Data $export) a hub database (SQLite in
a temporary folder, or --database-url) gets a case for the child, then a fresh process runs
the `pull-fhir-records` job to its end: the patient found by identifier, every resource
fetched, validated against the FHIR R4 models, normalized and stored with its index rows,
Provenance and the report, committed. Its wall time gives the rate (resources stored / s),
its VmHWM the peak RSS (the validation worker process, which checks each resource against
the FHIR R4 models beside the fetching, is reported on its own); the pull's own report splits
the time into fetching and storing (what is left: the commit). Every result is checked
(status complete, nothing reported, every resource of the record stored); a wrong one exits
non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from connectors.fhir_rest.config import FhirSource
from hub import codes
from hub.demo.outside_record import build_outside_record, counts
from hub.fhir.interactions import FhirInteractions
from hub.jobs.worker import JobWorker
from hub.records.fhir_pull import PULL_RECORDS_JOB, pull_records_job, queue_record_pull
from hub.records.validation import start_worker, worker_pids
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade
from hub.storage.tables import RecordPullRow, ResourceRow

RESULTS = Path(__file__).resolve().parent / "results"
RESOURCES = 5000
RATE_TARGET = 1000.0  # resources/s
RSS_TARGET_MIB = 250.0
STRATEGIES = ("queries", "everything", "bulk-export")
SOURCE = "bench-ehr"


def open_case(database_url: str, outside_patient: dict[str, Any]) -> str:
    """A migrated database with the child referred (her MRN among her identifiers); the case
    Task id."""
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        interactions = FhirInteractions(session)
        patient, _ = interactions.create(
            "Patient",
            {
                "resourceType": "Patient",
                "name": outside_patient["name"],
                "birthDate": outside_patient["birthDate"],
                "identifier": [
                    {k: v for k, v in i.items() if k != "assigner"}
                    for i in outside_patient["identifier"]
                ],
            },
        )
        interactions.create(
            "ServiceRequest",
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "category": [
                    {
                        "coding": [
                            {"system": codes.CASE_CATEGORY_SYSTEM, "code": codes.SECOND_OPINION}
                        ]
                    }
                ],
                "subject": {"reference": patient.reference},
            },
        )
        [task] = interactions.finish()
        session.commit()
    engine.dispose()
    return task.resource_id


def run_pull(database_url: str, base_url: str, strategy: str, task_id: str) -> dict[str, Any]:
    """In this (fresh) process: the pull job to its end; its figures."""
    source = FhirSource(name=SOURCE, base_url=base_url, strategy=strategy)  # type: ignore[arg-type]
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    with sessions() as session:
        queue_record_pull(session, task_id, SOURCE)
        session.commit()
    worker = JobWorker(sessions, {PULL_RECORDS_JOB: pull_records_job([source])})
    start_worker().result()  # as in a running hub, which starts it with its job worker
    started = time.perf_counter()
    worker.run_until_idle()
    seconds = time.perf_counter() - started
    with sessions() as session:
        row = session.scalar(select(RecordPullRow))
        assert row is not None
        held = session.scalar(
            select(func.count()).where(
                ResourceRow.res_type != "Provenance", ResourceRow.content.contains(base_url)
            )
        )
        figures = {
            "status": row.status,
            "stored": row.stored,
            "held": held,
            "report": json.loads(row.report),
        }
    engine.dispose()
    workers = sum(status_kib("VmHWM", pid) for pid in worker_pids())
    return {**figures, "seconds": seconds, "peak_kib": status_kib("VmHWM"), "worker_kib": workers}


def status_kib(field: str, pid: int | str = "self") -> int:
    found = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found, field
    return int(found.group(1))


def main(resources: int, database_url: str | None, strategies: list[str]) -> int:
    from tests.fhir_server_peer import running_fhir_peer  # the parent's only

    folder = Path(tempfile.mkdtemp(prefix="bench-fhir-"))
    record = build_outside_record(resources=resources, cancer="medulloblastoma", seed=7)
    expected = sum(counts(record).values()) - 1  # the patient is the hub's own
    outside = next(
        e["resource"] for e in record["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    results: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    try:
        (folder / "peer").mkdir()
        with running_fhir_peer(folder / "peer") as peer:
            peer.load(record)
            # The export's first status poll has the manifest: the source's own pacing
            # (202 with Retry-After) is not the hub's speed.
            peer.set_capabilities(export_polls=0)
            for strategy in strategies:
                url = database_url or f"sqlite:///{folder / (strategy + '.db')}"
                task_id = open_case(url, outside)
                child = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.bench_fhir",
                        "--child",
                        url,
                        peer.base_url,
                        strategy,
                        task_id,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if child.returncode != 0:
                    problems.append(f"{strategy}: the pull process failed:\n{child.stderr[-3000:]}")
                    continue
                result = json.loads(child.stdout.strip().splitlines()[-1])
                results[strategy] = result
                if result["status"] != "complete" or result["report"]["problems"]:
                    problems.append(
                        f"{strategy}: {result['status']}, {result['report']['problems'][:3]}"
                    )
                if result["held"] != expected:
                    problems.append(
                        f"{strategy}: {result['held']} resources stored, not {expected}"
                    )
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    backend = "PostgreSQL" if database_url and database_url.startswith("postgresql") else "SQLite"
    rows = []
    for strategy, r in results.items():
        stages = r["report"].get("seconds", {})
        # Validation runs beside fetching and normalizing: done when the later of them is.
        ready = max(stages["fetch"] + stages["normalize"], stages["validated"])
        pulled = r["held"] / ready
        stored = r["held"] / r["seconds"]
        peak = r["peak_kib"] / 1024
        rows.append(
            f"| {strategy} | {r['held']:,} | {stages['fetch']:.2f} + {stages['normalize']:.2f} | "
            f"{stages['validated']:.2f} | "
            f"{pulled:,.0f} ({'met' if pulled >= RATE_TARGET else 'NOT met'}) | "
            f"{r['seconds']:.2f} | {stored:,.0f} | {stages['validation wait']:.2f} | "
            f"{peak:.0f} ({'met' if peak < RSS_TARGET_MIB else 'NOT met'}) | "
            f"{r['worker_kib'] / 1024:.0f} |"
        )
    markdown = (
        f"FHIR REST pull of a {resources:,}-resource synthetic patient from Medplum's FHIR router "
        f"(Node, loopback) into the hub on {backend}, on {machine}. Targets: pulled and "
        f"normalized >= {RATE_TARGET:,.0f} resources/s, peak RSS < {RSS_TARGET_MIB:.0f} MiB.\n\n"
        "| strategy | resources | fetch + normalize s | validation done at s "
        "| pulled, validated and normalized /s "
        "| whole job s (stored, indexed, committed) | whole job /s | waited for validation s "
        "| peak RSS MiB | validation worker peak RSS MiB |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(rows)
        + "\n"
        + ("".join(f"\nPROBLEM: {p}" for p in problems) + "\n" if problems else "")
    )
    RESULTS.mkdir(exist_ok=True)
    suffix = (
        "" if resources == RESOURCES and database_url is None else f"-{resources}-{backend.lower()}"
    )
    (RESULTS / f"fhir{suffix}.md").write_text(markdown)
    (RESULTS / f"fhir{suffix}.json").write_text(
        json.dumps({"machine": machine, "backend": backend, "results": results}, indent=2)
    )
    print(markdown)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(run_pull(*sys.argv[2:6])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=RESOURCES)
    parser.add_argument("--database-url", help="a PostgreSQL URL instead of SQLite files")
    parser.add_argument("--strategy", action="append", choices=STRATEGIES)
    arguments = parser.parse_args()
    sys.exit(
        main(arguments.resources, arguments.database_url, arguments.strategy or list(STRATEGIES))
    )
