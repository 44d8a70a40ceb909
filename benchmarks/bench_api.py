"""FHIR REST API throughput under concurrent load: one Markdown table and a JSON file.

Issue #10: "FHIR REST API create and search requests/s with p50/p99 latency under
concurrent load from a second process". A `hub serve` process (its job worker on, as in
embedded mode) on a fresh database, SQLite in a temporary folder and then PostgreSQL on
loopback; locust (benchmarks/locust_fhir.py), in a process of its own, runs `--users`
referring EHRs that create Patients and search them back by identifier, with no think
time, for `--seconds` after a warm-up. The table gives each request's rate and its median
and 99th percentile latency as locust measured them (client side, so they include the
loopback round trip), the failures (any non-2xx, or a search that did not find the Patient
just created), and the hub's peak RSS (VmHWM). A failure exits non-zero.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_hl7 import HUB, RESULTS, free_port, peak_rss_mib
from benchmarks.bench_scale import fresh_database, hub_env, processes

LOCUST = Path(sys.executable).with_name("locust")
LOCUST_FILE = Path(__file__).with_name("locust_fhir.py")
READY_GUARD_SECONDS = 120
REQUESTS = ("create Patient", "search Patient?identifier")


def referrer_token(env: dict[str, str]) -> str:
    issued = subprocess.run(
        [
            str(HUB),
            *("token", "issue", "--subject", "bench-referrer", "--role", "referrer"),
            *("--referrer-kind", "clinician", "--scope", "user/Patient.crus"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return issued.stdout.strip()


def wait_ready(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_GUARD_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"hub serve exited ({server.returncode})")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("hub serve did not become ready")


def run_locust(base: str, token: str, users: int, seconds: int, prefix: Path) -> None:
    subprocess.run(
        [
            str(LOCUST),
            *("-f", str(LOCUST_FILE), "--headless", "--only-summary"),
            *("--users", str(users), "--spawn-rate", str(users)),
            *("--run-time", f"{seconds}s", "--host", base, "--csv", str(prefix)),
            "--exit-code-on-error",
            "0",
        ],
        env={**os.environ, "BENCH_TOKEN": token},
        capture_output=True,
        check=True,
        timeout=seconds + 120,
    )


def read_stats(prefix: Path) -> dict[str, dict[str, float]]:
    """locust's `<prefix>_stats.csv`: per request name, rate, p50, p99 and failures."""
    with open(f"{prefix}_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    return {
        name: {
            "requests": float(rows[name]["Request Count"]),
            "failures": float(rows[name]["Failure Count"]),
            "per_s": float(rows[name]["Requests/s"]),
            "p50_ms": float(rows[name]["50%"]),
            "p99_ms": float(rows[name]["99%"]),
        }
        for name in REQUESTS
    }


def measure(database_url: str, users: int, seconds: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp())
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The per-client rate limit protects a real hub from a runaway client; the benchmark
    # is that client, so its limit is set out of reach.
    env = hub_env(database_url, folder, port=str(port), rate_limit_per_minute="10000000")
    command = [str(HUB), "serve", "--log-level", "warning"]
    with processes([(command, env)]) as (server,):
        wait_ready(base, server)
        token = referrer_token(env)
        run_locust(base, token, users, 5, folder / "warm-up")
        run_locust(base, token, users, seconds, folder / "run")
        figures: dict[str, Any] = read_stats(folder / "run")
        figures["peak_rss_mib"] = peak_rss_mib(server.pid)
    return figures


def main(users: int, seconds: int) -> int:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    results: dict[str, dict[str, Any]] = {}
    folder = Path(tempfile.mkdtemp())
    results["SQLite"] = measure(f"sqlite:///{folder / 'hub.db'}", users, seconds)
    with fresh_database() as url:
        results["PostgreSQL"] = measure(url, users, seconds)
    table = [
        f"| {users} concurrent clients (locust) | req/s | p50 ms | p99 ms | failures |",
        "|---|---:|---:|---:|---:|",
    ]
    for backend, figures in results.items():
        for name in REQUESTS:
            row = figures[name]
            table.append(
                f"| {backend}: {name} | {row['per_s']:,.0f} | {row['p50_ms']:,.0f} "
                f"| {row['p99_ms']:,.0f} | {row['failures']:,.0f} |"
            )
        table.append(
            f"| {backend}: `hub serve` peak RSS (MiB) | {figures['peak_rss_mib']:,.0f} | | | |"
        )
    markdown = f"FHIR REST API benchmark on {machine}\n\n" + "\n".join(table) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api.md").write_text(markdown)
    (RESULTS / "api.json").write_text(
        json.dumps({"machine": machine, "users": users, "seconds": seconds, **results}, indent=2)
    )
    print(markdown)
    failed = sum(figures[name]["failures"] for figures in results.values() for name in REQUESTS)
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8, help="concurrent locust clients")
    parser.add_argument("--seconds", type=int, default=30, help="measured seconds per backend")
    arguments = parser.parse_args()
    sys.exit(main(arguments.users, arguments.seconds))
