"""HL7 v2 throughput on this machine, in one run: a Markdown table and a JSON file.

(a) MLLP send → persisted → ACK over loopback, 1 and 4 concurrent senders, against a
    `hub serve` process (SQLite, mapping off so that ingest alone is measured);
(b) ORU^R01 with 15 OBX: parse + map + store as FHIR (the mapping job), per core, with and
    without the FHIR model validation (the `hl7_model_validation` setting);
(b0) the floor under (b)'s storing: the rows (b) left in the FHIR store's tables, written
    into a fresh database by the sqlite3 module alone, in as many transactions;
(b') parse + map without storing;
(c) the `hl7` package's `hl7.parse` alone, and (d) hl7apy's parse alone, on the same messages.
Peak RSS (VmHWM): of the `hub serve` process of (a), and of a fresh process for each (b).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from connectors.base import Envelope
from connectors.hl7v2_mllp import MllpSender
from hub.jobs.worker import JobWorker
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.runtime import BATCH_SIZES, job_handlers
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade
from mappings.engine import map_message
from mappings.hl7v2.tokenizer import parse_message

RESULTS = Path(__file__).resolve().parent / "results"
HUB = Path(sys.executable).with_name("hub")


def oru(number: int, observations: int = 15) -> bytes:
    """A synthetic ORU^R01 with `observations` OBX (a CBC with differential, roughly)."""
    obx = "".join(
        f"OBX|{i}|NM|{718 + i}-7^Analyte {i}^LN||{9 + i / 10:.1f}|g/dL^^UCUM|11.5-15.5|L|||F\r"
        for i in range(1, observations + 1)
    )
    return (
        f"MSH|^~\\&|LAB|ST-MARY|HUB|SOH|20261101120000||ORU^R01^ORU_R01|B-{number}|P|2.5.1\r"
        f"PID|1||MRN-{number % 50}^^^ST-MARY^MR||Testchild^Robin||20170302|F\r"
        f"OBR|1|PL-{number}|FI-{number}|58410-2^CBC panel^LN|||20261101080000\r" + obx
    ).encode()


def rate(count: int, run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _send_all(port: int, messages: list[bytes], ready: Callable[[], None]) -> None:
    """Send the messages one by one, each once the previous one is ACKed."""
    async with MllpSender("127.0.0.1", port, ack_timeout=60) as sender:
        result = await sender.send(messages[0])  # connected, before the clock starts
        assert result.accepted, result
        ready()
        for message in messages[1:]:
            result = await sender.send(message)
            assert result.accepted, result


def _sender(port: int, messages: list[bytes], ready: Any, start: Any, finished: Any) -> None:
    """One sender process: its own connection, its messages one by one, each ACKed."""

    cpu_at_start = 0.0

    def connected() -> None:
        nonlocal cpu_at_start
        ready.release()
        start.wait()
        cpu_at_start = time.process_time()

    acked = 0
    try:
        asyncio.run(_send_all(port, messages, connected))
        acked = len(messages) - 1
    finally:
        finished.put((acked, time.process_time() - cpu_at_start))


def send_concurrently(port: int, senders: int, per_sender: int, offset: int) -> tuple[float, float]:
    """Messages ACKed per second, from `senders` processes sending at once, and the CPU
    seconds the senders spent meanwhile (their own share of the machine).

    Processes, not tasks in this one: real senders are separate systems, and a shared
    interpreter would add its own queueing to the hub's round trips. The clock runs from
    the moment all are connected until the last ACK (not until the processes have exited);
    the messages are made beforehand.
    """
    context = multiprocessing.get_context("spawn")
    ready, start, finished = context.Semaphore(0), context.Event(), context.Queue()
    processes = [
        context.Process(
            target=_sender,
            args=(
                port,
                [oru(offset + i * (per_sender + 1) + n, 3) for n in range(per_sender + 1)],
                ready,
                start,
                finished,
            ),
        )
        for i in range(senders)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            assert ready.acquire(timeout=120), "a sender could not connect"
        started = time.perf_counter()
        start.set()
        # Each sender reports when its last message is ACKed (not when it has exited,
        # which takes a spawned interpreter long enough to skew the figure).
        reports = [finished.get(timeout=600) for _ in processes]
        elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    acked = sum(int(report[0]) for report in reports)
    assert acked == senders * per_sender, "a message was not ACKed"
    return acked / elapsed, sum(float(report[1]) for report in reports)


def mllp_ingest(per_sender: int) -> tuple[dict[str, float], float]:
    """(a): msgs/s ACKed with 1 and 4 senders, and the `hub serve` process's peak RSS."""
    folder = Path(tempfile.mkdtemp())
    port = free_port()
    env = {
        **os.environ,
        "HUB_DATABASE_URL": f"sqlite:///{folder / 'hub.db'}",
        "HUB_PORT": str(free_port()),
        "HUB_SIGNING_KEY_FILE": str(folder / "key.json"),
        "HUB_EMBEDDED_WORKER": "false",
        "HUB_MLLP_LISTENERS": json.dumps([{"name": "bench", "port": port}]),
    }
    server = subprocess.Popen([str(HUB), "serve", "--log-level", "warning"], env=env)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        send_concurrently(port, 4, 50, 0)  # warm-up: first connections, caches, the writer thread
        figures = {
            f"{senders} sender(s)": send_concurrently(port, senders, per_sender, senders * 10**6)[0]
            for senders in (1, 4)
        }
        return figures, peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(30)


def peak_rss_mib(pid: int | str = "self") -> float:
    """VmHWM, the kernel's peak resident set size of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _map_and_store_alone(count: int, models: bool, folder: Path, answer: Any) -> None:
    answer.put((map_and_store(count, folder, models=models), peak_rss_mib()))


def map_and_store_process(count: int, folder: Path, *, models: bool = False) -> tuple[float, float]:
    """(b) in a fresh process of its own, on a database in `folder`: msgs/s and that
    process's peak RSS."""
    context = multiprocessing.get_context("spawn")
    answer = context.Queue()
    process = context.Process(target=_map_and_store_alone, args=(count, models, folder, answer))
    process.start()
    try:
        figures: tuple[float, float] = answer.get(timeout=900)
    finally:
        process.join(60)
    return figures


def store_floor(mapped_database: Path, count: int) -> dict[str, float]:
    """(b0) The floor under (b)'s storing: the rows that mapping `count` messages left in
    the FHIR store's tables (current resources, versions, search index) written again into
    a fresh database of the same schema with the sqlite3 module alone (no hub code, no
    SQLAlchemy), in as many transactions as the mapping job commits (BATCH_SIZES), each a
    few executemany. Messages/s, and the rows and bytes of one message."""
    import sqlite3

    tables = ("fhir_resource", "fhir_resource_version", "fhir_search_index")
    source = sqlite3.connect(mapped_database)
    rows = {table: source.execute(f"SELECT * FROM {table}").fetchall() for table in tables}  # noqa: S608
    columns = {
        table: len(source.execute(f"SELECT * FROM {table} LIMIT 0").description)  # noqa: S608
        for table in tables
    }
    source.close()
    target_path = mapped_database.with_name("floor.db")
    upgrade(make_engine(f"sqlite:///{target_path}"))  # the same tables and indexes
    target = sqlite3.connect(target_path, isolation_level=None)
    target.execute("PRAGMA journal_mode=WAL")  # as hub.storage.db
    transactions = -(-count // BATCH_SIZES[MAP_JOB])
    started = time.perf_counter()
    for number in range(transactions):
        target.execute("BEGIN IMMEDIATE")
        for table in tables:
            share = rows[table][
                len(rows[table]) * number // transactions : len(rows[table])
                * (number + 1)
                // transactions
            ]
            marks = ", ".join("?" * columns[table])
            target.executemany(f"INSERT INTO {table} VALUES ({marks})", share)  # noqa: S608
        target.execute("COMMIT")
    seconds = time.perf_counter() - started
    target.close()
    content = sum(len(str(row)) for table in tables[:2] for row in rows[table])
    return {
        "msgs_per_s": count / seconds,
        "resources_per_msg": len(rows["fhir_resource"]) / count,
        "index_rows_per_msg": len(rows["fhir_search_index"]) / count,
        "kib_per_msg": content / count / 1024,
    }


def map_and_store(count: int, folder: Path, *, models: bool = False) -> float:
    settings = Settings(
        database_url=f"sqlite:///{folder / 'hub.db'}",
        signing_key_file=folder / "key.json",
        hl7_model_validation=models,
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    Hl7Intake(sessions).receive_many([Envelope(oru(n), "bench", "bench") for n in range(count)])
    worker = JobWorker(sessions, job_handlers(settings), batch_sizes=BATCH_SIZES)
    return rate(count, worker.run_until_idle)


def main() -> None:
    import hl7  # type: ignore[import-untyped]
    from hl7apy.parser import parse_message as hl7apy_parse

    messages = [oru(n) for n in range(300)]
    texts = [m.decode() for m in messages]
    figures: dict[str, float] = {}
    figures["(c) hl7.parse alone"] = rate(len(texts), lambda: [hl7.parse(t) for t in texts])
    few = texts[:30]
    figures["(d) hl7apy parse alone"] = rate(len(few), lambda: [hl7apy_parse(t) for t in few])
    map_message(parse_message(messages[0]))  # the tables load once per process, not per message
    figures["(b') our parse + map"] = rate(
        len(messages), lambda: [map_message(parse_message(m)) for m in messages]
    )
    peak_rss: dict[str, float] = {}
    name = "(b) our parse + map + store (SQLite)"
    with tempfile.TemporaryDirectory() as folder:
        figures[name], peak_rss[name] = map_and_store_process(200, Path(folder))
        floor = store_floor(Path(folder) / "hub.db", 200)
    figures["(b0) floor: (b)'s rows written by sqlite3 alone, no hub code"] = floor["msgs_per_s"]
    name = "(b) the same, with FHIR model validation on"
    with tempfile.TemporaryDirectory() as folder:
        figures[name], peak_rss[name] = map_and_store_process(200, Path(folder), models=True)
    ingest, peak_rss["(a) MLLP ingest: `hub serve`"] = mllp_ingest(per_sender=500)
    for name, value in ingest.items():
        figures[f"(a) MLLP send → persist → ACK, {name}"] = value

    RESULTS.mkdir(exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    table = ["| measure (ORU^R01, 15 OBX; (a) 3 OBX) | msgs/s |", "|---|---:|"]
    table += [f"| {name} | {value:,.0f} |" for name, value in figures.items()]
    table += [f"| peak RSS (MiB), {name} | {value:,.0f} |" for name, value in peak_rss.items()]
    table.append(
        f"| (b)'s rows for one message: resources (each stored twice, current and version) "
        f"· search index rows · KiB of resource rows | {floor['resources_per_msg']:.0f} · "
        f"{floor['index_rows_per_msg']:.0f} · {floor['kib_per_msg']:.0f} |"
    )
    markdown = f"HL7 v2 benchmark on {machine}\n\n" + "\n".join(table) + "\n"
    (RESULTS / "hl7.md").write_text(markdown)
    (RESULTS / "hl7.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "msgs_per_s": figures,
                "peak_rss_mib": peak_rss,
                "store_floor": floor,
            },
            indent=2,
        )
    )
    print(markdown)


if __name__ == "__main__":
    main()
