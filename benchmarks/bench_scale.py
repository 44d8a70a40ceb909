"""How the hub scales out on PostgreSQL: one Markdown table and a JSON file.

Issue #10, "Done when": the hub with 2 workers on PostgreSQL reaches at least 1.6x the
single-worker ingest and mapping rates. Each figure runs on a fresh database of the
PostgreSQL server on loopback (scripts/ensure_postgres.sh), created and dropped here.

Each figure is the median of `--rounds` runs (3), every round shown beside it.

(m) Mapping: on a database in service (100 messages of the same children mapped before,
    PostgreSQL's statistics taken), the intake persists `--messages` ORU^R01 (15 OBX, 50
    children) with their mapping jobs; then 1, and on another database 2, `hub worker`
    processes (polling the outbox, no broker) map and store them all. The clock runs from
    the workers' start to the moment no mapping job is left pending or running; each
    worker's start-up (imports, mapping tables) is taken out by starting them before the
    jobs become due. msgs/s, the CPU per message of the workers and of PostgreSQL, and
    each worker's peak RSS (VmHWM).
(i) Ingest: 4 sender processes send ORU^R01 (3 OBX) over MLLP, each message once the
    previous is ACKed, to 1, then 2, `hub serve` replicas (job worker off: ingest alone)
    sharing one MLLP port (SO_REUSEPORT: the kernel spreads the connections). msgs/s ACKed,
    and each replica's peak RSS.

For (i) the CPU time of each party is counted over the measured run (the kernel's figures:
the replicas, every PostgreSQL process, the senders), and the machine's ceiling for ingest
is worked out from it: its cores divided by the CPU one message costs. Ingest is CPU-bound
on a small machine: when 1.6 times the single replica's rate is above that ceiling, no
number of replicas on this machine can reach it; they need cores of their own.

Every result is checked (every message stored once and mapped, no job dead); a wrong one
exits non-zero. The machine has as many cores as the table's heading says: the workers, the
senders and PostgreSQL share them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url

from benchmarks.bench_hl7 import HUB, RESULTS, free_port, oru, peak_rss_mib, send_concurrently
from connectors.base import Envelope
from hub.fhir.dates import utc_now
from hub.jobs.worker import JobWorker
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.runtime import BATCH_SIZES, job_handlers
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade
from hub.storage.tables import JobRow, MessageRow, ResourceRow

POSTGRES_URL = os.environ.get(
    "HUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
)
READY_GUARD_SECONDS = 120
IN_SERVICE = 100
"""Messages mapped before (m) is measured (see _in_service)."""
RUN_GUARD_SECONDS = 900


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new migrated database on the loopback PostgreSQL, dropped on the way out."""
    name = f"hub_bench_{uuid.uuid4().hex[:12]}"
    admin = _libpq(POSTGRES_URL)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def hub_env(database_url: str, folder: Path, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "HUB_DATABASE_URL": database_url,
        "HUB_SIGNING_KEY_FILE": str(folder / "key.json"),
        "HUB_DICOM_STORE_DIR": str(folder / "dicom"),
        **{f"HUB_{name.upper()}": value for name, value in settings.items()},
    }


@contextmanager
def processes(commands: list[tuple[list[str], dict[str, str]]]) -> Iterator[list[Any]]:
    started = [subprocess.Popen(command, env=env) for command, env in commands]
    try:
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(30)


def _jobs_left(sessions: Any) -> tuple[int, int]:
    """(mapping jobs pending or running, dead ones)."""
    with sessions() as session:
        rows = dict(
            session.execute(
                select(JobRow.status, func.count())
                .where(JobRow.kind == MAP_JOB)
                .group_by(JobRow.status)
            ).all()
        )
    return rows.get("pending", 0) + rows.get("running", 0), rows.get("dead", 0)


def _in_service(intake: Hl7Intake, sessions: Any, url: str, folder: Path) -> None:
    """The database of a hub in service: IN_SERVICE messages of the same children mapped
    beforehand (their Patients exist), and PostgreSQL's statistics taken, as autovacuum
    keeps them on a live database (on an empty one the planner would guess the search
    index empty and read it whole for each message's conditional matches)."""
    intake.receive_many([Envelope(oru(10**6 + n), "bench", "bench") for n in range(IN_SERVICE)])
    settings = Settings(database_url=url, signing_key_file=folder / "key.json")
    JobWorker(sessions, job_handlers(settings), batch_sizes=BATCH_SIZES).run_until_idle()
    with psycopg.connect(_libpq(url), autocommit=True) as connection:
        connection.execute("ANALYZE")


def mapping_rate(workers: int, messages: int) -> dict[str, Any]:
    """(m): msgs/s mapped and stored by `workers` `hub worker` processes on a fresh database."""
    folder = Path(tempfile.mkdtemp())
    with fresh_database() as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        intake = Hl7Intake(sessions)
        _in_service(intake, sessions, url, folder)
        intake.receive_many([Envelope(oru(n), "bench", "bench") for n in range(messages)])
        intake.close()
        # Not yet due: the workers start (imports, tables) before the clock does.
        with sessions.begin() as session:
            session.execute(update(JobRow).values(run_after=utc_now() + timedelta(days=1)))
        env = hub_env(url, folder)
        commands = [([str(HUB), "worker", "--log-level", "warning"], env) for _ in range(workers)]
        with processes(commands) as running:
            time.sleep(8)  # each worker imported and polling (not measured)
            for process in running:
                if process.poll() is not None:
                    raise RuntimeError(f"a worker exited ({process.returncode})")
            with sessions.begin() as session:
                session.execute(update(JobRow).values(run_after=utc_now()))
            started = time.perf_counter()
            workers_before, database_before = _cpu_seconds(running), _postgres_cpu_seconds()
            deadline = time.monotonic() + RUN_GUARD_SECONDS
            while (left := _jobs_left(sessions))[0]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{left[0]} mapping jobs left after the guard")
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            workers_cpu = _cpu_seconds(running) - workers_before
            database_cpu = _postgres_cpu_seconds() - database_before
            rss = [peak_rss_mib(process.pid) for process in running]
        dead = _jobs_left(sessions)[1]
        with sessions() as session:
            mapped = session.scalar(
                select(func.count()).select_from(MessageRow).where(MessageRow.status == "mapped")
            )
            observations = session.scalar(
                select(func.count())
                .select_from(ResourceRow)
                .where(ResourceRow.res_type == "Observation")
            )
        engine.dispose()
    problems = []
    if dead:
        problems.append(f"{dead} mapping jobs dead")
    if mapped != messages + IN_SERVICE:
        problems.append(f"{mapped} of {messages + IN_SERVICE} messages mapped")
    if observations != (messages + IN_SERVICE) * 15:
        problems.append(f"{observations} Observations, not {(messages + IN_SERVICE) * 15}")
    return {
        "msgs_per_s": messages / seconds,
        "seconds": seconds,
        "peak_rss_mib": max(rss),
        "cpu_ms_per_msg": {
            "workers": 1000 * workers_cpu / messages,
            "postgresql": 1000 * database_cpu / messages,
        },
        "problems": problems,
    }


def ingest_rate(replicas: int, per_sender: int) -> dict[str, Any]:
    """(i): msgs/s ACKed by `replicas` `hub serve` processes sharing one MLLP port."""
    folder = Path(tempfile.mkdtemp())
    port = free_port()
    with fresh_database() as url:
        env = hub_env(
            url,
            folder,
            embedded_worker="false",
            worker_runs_listeners="true",  # each replica binds the port with SO_REUSEPORT
            mllp_listeners=json.dumps([{"name": "bench", "port": port}]),
        )
        commands = [
            ([str(HUB), "serve", "--log-level", "warning"], {**env, "HUB_PORT": str(free_port())})
            for _ in range(replicas)
        ]
        with processes(commands) as running:
            _wait_listening(port, running)
            send_concurrently(port, 4, 50, 0)  # warm-up: connections, caches, writer threads
            hub_before, database_before = _cpu_seconds(running), _postgres_cpu_seconds()
            figure, senders_cpu = send_concurrently(port, 4, per_sender, 10**6)
            hub_cpu = _cpu_seconds(running) - hub_before
            database_cpu = _postgres_cpu_seconds() - database_before
            rss = [peak_rss_mib(process.pid) for process in running]
        engine = make_engine(url)
        with make_session_factory(engine)() as session:
            stored = session.scalar(select(func.count()).select_from(MessageRow))
        engine.dispose()
    expected = 4 * 51 + 4 * (per_sender + 1)
    problems = [] if stored == expected else [f"{stored} messages stored, not {expected}"]
    sent = 4 * per_sender
    return {
        "msgs_per_s": figure,
        "peak_rss_mib": max(rss),
        "cpu_ms_per_msg": {
            "hub": 1000 * hub_cpu / sent,
            "postgresql": 1000 * database_cpu / sent,
            "senders": 1000 * senders_cpu / sent,
        },
        "problems": problems,
    }


def _ticks_seconds(stat: str) -> float:
    """utime + stime of a /proc/<pid>/stat line, in seconds."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(running: list[Any]) -> float:
    return sum(_ticks_seconds(Path(f"/proc/{p.pid}/stat").read_text()) for p in running)


def _postgres_cpu_seconds() -> float:
    """The CPU seconds of every PostgreSQL process on this machine (its backends, WAL
    writer, checkpointer): the database's share of the work, as the kernel counts it."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            if stat.split(" ", 2)[1] == "(postgres)":
                total += _ticks_seconds(stat)
    return total


def _wait_listening(port: int, running: list[Any]) -> None:
    """Until every replica listens (a sender connecting to one is not enough: wait for the
    health endpoint of each would need its HTTP port; the MLLP port answering several times
    in a row after each process had time to bind is the practical sign)."""
    import socket

    deadline = time.monotonic() + READY_GUARD_SECONDS
    while time.monotonic() < deadline:
        for process in running:
            if process.poll() is not None:
                raise RuntimeError(f"a replica exited ({process.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(3)  # the others bind within the same start-up time
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the MLLP port did not open")


def median_run(run: Callable[[], dict[str, Any]], rounds: int) -> dict[str, Any]:
    """The run of median rate among `rounds` (the machine's other work varies from minute
    to minute), with every round's rate beside it; the problems of all rounds."""
    runs = sorted((run() for _ in range(rounds)), key=lambda r: float(r["msgs_per_s"]))
    middle = dict(runs[len(runs) // 2])
    middle["rounds"] = [r["msgs_per_s"] for r in runs]
    middle["problems"] = [p for r in runs for p in r["problems"]]
    return middle


def main(messages: int, per_sender: int, rounds: int) -> int:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    figures: dict[str, dict[str, Any]] = {}
    for count in (1, 2):
        figures[f"(m) mapping, {count} worker(s)"] = median_run(
            partial(mapping_rate, count, messages), rounds
        )
    for count in (1, 2):
        figures[f"(i) MLLP ingest, 4 senders, {count} replica(s)"] = median_run(
            partial(ingest_rate, count, per_sender), rounds
        )
    mapping = (
        figures["(m) mapping, 2 worker(s)"]["msgs_per_s"]
        / figures["(m) mapping, 1 worker(s)"]["msgs_per_s"]
    )
    ingest = (
        figures["(i) MLLP ingest, 4 senders, 2 replica(s)"]["msgs_per_s"]
        / figures["(i) MLLP ingest, 4 senders, 1 replica(s)"]["msgs_per_s"]
    )
    table = ["| measure (PostgreSQL) | msgs/s | peak RSS (MiB, each process) |", "|---|---:|---:|"]
    table += [
        f"| {name} (rounds: {', '.join(f'{r:,.0f}' for r in value['rounds'])}) "
        f"| {value['msgs_per_s']:,.0f} | {value['peak_rss_mib']:,.0f} |"
        for name, value in figures.items()
    ]
    one_worker = figures["(m) mapping, 1 worker(s)"]["cpu_ms_per_msg"]
    single = figures["(i) MLLP ingest, 4 senders, 1 replica(s)"]
    cpu = single["cpu_ms_per_msg"]
    ceiling = (os.cpu_count() or 1) * 1000 / sum(cpu.values())
    table += [
        f"| **2 workers / 1, mapping** (target ≥ 1.6) | **{mapping:.2f}** | |",
        f"| **2 replicas / 1, ingest** (target ≥ 1.6) | **{ingest:.2f}** | |",
        f"| (m) CPU ms per message with 1 worker: worker {one_worker['workers']:.1f}, "
        f"PostgreSQL {one_worker['postgresql']:.1f} | | |",
        f"| (i) CPU ms per message with 1 replica: hub {cpu['hub']:.2f}, PostgreSQL "
        f"{cpu['postgresql']:.2f}, senders {cpu['senders']:.2f} | | |",
        f"| (i) this machine's ingest ceiling, cores ÷ CPU per message (msgs/s) "
        f"| {ceiling:,.0f} | |",
        f"| (i) 1.6 × the 1-replica rate (msgs/s) | {1.6 * single['msgs_per_s']:,.0f} | |",
    ]
    markdown = f"Scale-out benchmark on {machine}\n\n" + "\n".join(table) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.md").write_text(markdown)
    (RESULTS / "scale.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "figures": figures,
                "ratios": {"mapping": mapping, "ingest": ingest},
            },
            indent=2,
        )
    )
    print(markdown)
    problems = [p for value in figures.values() for p in value["problems"]]
    for problem in problems:
        print("PROBLEM:", problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600, help="messages mapped per run")
    parser.add_argument("--per-sender", type=int, default=500, help="ingest messages per sender")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the median shown")
    arguments = parser.parse_args()
    sys.exit(main(arguments.messages, arguments.per_sender, arguments.rounds))
