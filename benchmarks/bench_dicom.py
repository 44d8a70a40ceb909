"""DICOM figures of the hub on this machine, in one run: one Markdown table and a JSON file.

Issue #5, "Tests and figures": instances/s of C-STORE into the hub and of WADO-RS retrieve
from Orthanc, with Orthanc's own ingest of the same files as the anchor (target: the hub
ingests at 80% of Orthanc's rate or more) and the hub's peak RSS; and item 6: "a 2 GB study
moves with peak RSS under 300 MB".

Rates, on small instances: 4 synthetic CT studies x 2 series x 40 instances of one patient
(dicom.synthetic: 64 x 64 16-bit slices, about 9 KiB a file), written to disk once.
(a) dcmtk's storescu sends them on one association, as a modality sends a study, to a real
    Orthanc (with its DICOMweb plugin) on loopback: the anchor.
(b) The same storescu command sends them to the Storage SCP of a `hub serve` process
    (SQLite and the content store in a temporary folder, the job worker off so that ingest
    alone is measured). Two times, from the same start: until storescu returns (every
    instance acknowledged, which the hub does once the instance is checked and written
    where it is indexed from), and until the hub has indexed every instance and closed the
    push's transfer (its rows are written in batches behind the acknowledgements, by the
    hub's indexer process, hub.imaging.indexer_process): the rate and the target are judged
    on the later. The peak RSS (VmHWM) of `hub serve` and of its child processes (the
    indexer's and multiprocessing's resource tracker), summed, is read before it is
    stopped. Then the same into a third `hub serve`
    with StorageScpConfig.flush_before_success on (each instance flushed to disk before its
    success; off by default), reported beside it.
(b0) The floor under (b): the same storescu command into the hub's StorageScp alone, in a
    process of its own, whose handler deletes each staged instance and answers success
    (pynetdicom and the staging, none of the hub's checks, storage or indexing).
(a), (b0) and (b) run side by side in rounds (`--rounds`, 3 by default; Orthanc emptied
    before each): the other work on a shared machine changes from minute to minute, so
    each rate is the median of its rounds and the ratio the median of the rounds' ratios.
    Each receiver first takes one instance of another patient on an association of its
    own (a warm-up: a hub in service is not cold).
(a', b') The same with Nagle's algorithm on. This dcmtk (3.6.7) leaves it on unless the
    environment says TCP_NODELAY=1, in storescu and in Orthanc's dcmtk-based DICOM server
    alike; with it on, each C-STORE waits out TCP delayed ACKs (about 40 ms, twice) and
    both rates measure those timers, not the receivers (a strace of storescu shows the
    gaps). (a) and (b) therefore run with TCP_NODELAY=1 in storescu and in Orthanc (the
    hub's pynetdicom sends each PDU in one write and has no such switch); the target is
    judged on them, and (a', b') are reported as what a default dcmtk modality sees.
(c) A fresh process runs the hub's pull path against that Orthanc (a case for the patient,
    `queue_pull`, the job worker: QIDO-RS, WADO-RS streamed into the content store, a row
    committed per instance), then the attach job; then DicomWebClient.retrieve_study alone
    on the same studies, each file discarded, to tell the transport from the hub's own work.
    The records check (`check-records`) that opening the case and each attached study
    queue is not part of either path: it runs after them, untimed, and must succeed too;
    `pull_missing_records` is off so that the one pull is the one queued here.

The 2 GiB study (peak RSS): Orthanc holds a synthetic CT study of 16 instances of 128 MiB
each, sent by storescu; a fresh process runs the same pull path and reports its peak RSS
(VmHWM, the kernel's figure) and wall times. `--skip-large` leaves it out.

Every result is checked (counts in Orthanc and in the hub, studies attached, ImagingStudy
counts); a wrong one exits non-zero. Every file is removed at the end, on failure too.

`--trace` adds tracemalloc snapshots in the measured pull processes (slow).
`--profile-hub timers` wraps the stages of a C-STORE in the `hub serve` of (b) with wall
clocks and adds their cost per instance to the table; `--profile-hub cprofile` runs cProfile
on each of its threads and adds cumulative times and the functions of most own time. Such
runs write files of their own: their rates are not the real ones.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import importlib
import io
import itertools
import json
import os
import platform
import pstats
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import dcmwrite
from pydicom.dataset import Dataset
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from connectors.dicomweb import BasicAuth, DicomWebClient, DicomWebSource
from dicom.synthetic import SyntheticPatient, make_patient, make_study, write_study
from hub import codes
from hub.fhir.interactions import FhirInteractions
from hub.fhir.transactions import process_bundle
from hub.imaging.pull import queue_pull
from hub.imaging.sources import ImagingSources
from hub.jobs.worker import JobWorker
from hub.runtime import job_handlers
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade
from hub.storage.repository import ResourceRepository
from hub.storage.tables import (
    DicomInstanceRow,
    DicomStudyRow,
    DicomTransferRow,
    JobRow,
    ResourceRow,
)
from hub.workflow.checklist import CHECK_RECORDS_JOB

if TYPE_CHECKING:
    from tests.orthanc_peer import OrthancPeer

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
HUB = Path(sys.executable).with_name("hub")
MIB = 1024 * 1024
SIDE = 512
FRAMES = 256  # 512 x 512 x 16 bits x 256 frames = 128 MiB of pixel data per instance
SERIES, PER_SERIES = 2, 8
SEED = 5006
TARGET_MIB = 300  # issue #5: a 2 GB study moves with peak RSS under 300 MB
SMALL_STUDIES, SMALL_SERIES, SMALL_PER_SERIES = 4, 2, 40
SMALL_SEED = 5107
INGEST_TARGET = 0.80  # issue #5: hub ingest >= 80% of Orthanc's rate
HUB_AET = "SOH_BENCH"
MODALITY_AET = "OUTSIDE_CT"
SOURCE = "bench"
PASSWORD_ENV = "SOH_BENCH_ORTHANC_PASSWORD"
# Guards against a hang, not performance expectations.
UPLOAD_GUARD_SECONDS = 1800
PULL_GUARD_SECONDS = 3600
READY_GUARD_SECONDS = 120
STOP_GUARD_SECONDS = 60


# -- outside modalities: dcmtk ---------------------------------------------------------------
def dcmtk(program: str) -> str:
    """dcmtk's `program` (storescu, echoscu). pynetdicom installs namesakes in this
    virtualenv's bin folder, so that folder is skipped on PATH."""
    own = (Path(sys.prefix) / "bin").resolve()
    folders = [f for f in os.environ.get("PATH", "").split(os.pathsep) if f]
    others = [f for f in folders if Path(f).resolve() != own]
    found = shutil.which(program, path=os.pathsep.join([*others, "/usr/bin"]))
    if found is None:
        raise RuntimeError(f"dcmtk's {program} is missing: run scripts/ensure_dicom_peers.sh")
    return found


def storescu(host: str, port: int, called_aet: str, files: list[Path], *, nagle: bool) -> float:
    """C-STORE `files` to `called_aet` on one association, as a modality sends a study
    (dcmtk's storescu); the seconds until storescu returns, every instance answered.

    `nagle` False sets dcmtk's TCP_NODELAY=1 (see (a', b') above)."""
    command = [dcmtk("storescu"), "-aet", MODALITY_AET, "-aec", called_aet, host, str(port)]
    started = time.perf_counter()
    sent = subprocess.run(
        [*command, *map(str, files)],
        capture_output=True,
        text=True,
        env=dcmtk_env(nagle=nagle),
        timeout=UPLOAD_GUARD_SECONDS,
        check=False,
    )
    seconds = time.perf_counter() - started
    if sent.returncode != 0:
        raise RuntimeError(f"storescu failed ({sent.returncode}): {sent.stderr[-2000:]}")
    return seconds


def dcmtk_env(*, nagle: bool) -> dict[str, str]:
    """This environment with dcmtk's TCP_NODELAY switch: "0" leaves Nagle's algorithm on
    (this dcmtk's default), "1" turns it off on the sockets dcmtk opens or accepts."""
    return {**os.environ, "TCP_NODELAY": "0" if nagle else "1"}


def wait_for_echo(
    host: str, port: int, called_aet: str, server: subprocess.Popen[bytes] | None = None
) -> None:
    """C-ECHO until `called_aet` answers (which also opens its first association).
    Raises RuntimeError if `server` exits first or nothing answers in time."""
    command = [dcmtk("echoscu"), "-aet", MODALITY_AET, "-aec", called_aet, host, str(port)]
    deadline = time.monotonic() + READY_GUARD_SECONDS
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}) before answering")
        echo = subprocess.run(command, capture_output=True, timeout=30, check=False)
        if echo.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{called_aet} did not answer C-ECHO in {READY_GUARD_SECONDS} s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def status_kib(field: str, pid: int | str = "self") -> int:
    """A figure of /proc/<pid>/status in KiB: VmRSS now, VmHWM the peak so far."""
    found = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found, field
    return int(found.group(1))


def tree_kib(field: str, pid: int) -> int:
    """`status_kib` of a process plus that of each of its children (any thread's)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            children.update(int(child) for child in (task / "children").read_text().split())
    total = status_kib(field, pid)
    for child in children:
        with contextlib.suppress(OSError, AssertionError):  # a child that just ended
            total += status_kib(field, child)
    return total


# -- the studies -----------------------------------------------------------------------------
def build_small_set(folder: Path) -> tuple[list[str], list[Path]]:
    """SMALL_STUDIES CT studies of the patient make_patient(SMALL_SEED), written as Part 10
    files: their UIDs and the files."""
    patient = make_patient(SMALL_SEED)
    study_uids: list[str] = []
    files: list[Path] = []
    for study in range(SMALL_STUDIES):
        datasets = make_study(
            SMALL_SEED + study, patient, "CT", series=SMALL_SERIES, instances=SMALL_PER_SERIES
        )
        study_uids.append(str(datasets[0].StudyInstanceUID))
        files += write_study(folder / f"study-{study}", datasets)
    return study_uids, files


def write_instance(path: Path, template: Dataset, frames: int, seed: int) -> int:
    """`template`'s header with `frames` frames of SIDE x SIDE 16-bit pixels, the pixel
    data element appended in 1 MiB chunks (Explicit VR Little Endian, PS3.5 7.1.2). Returns
    the file's size."""
    ds = template
    ds.Rows = ds.Columns = SIDE
    ds.NumberOfFrames = frames
    del ds.PixelData
    dcmwrite(path, ds, enforce_file_format=True)
    length = SIDE * SIDE * 2 * frames  # a whole number of MiB for any `frames`
    block = random.Random(seed).randbytes(MIB)
    with path.open("ab") as out:
        out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length))
        for _ in range(length // MIB):
            out.write(block)
    return path.stat().st_size


def build_large_study(folder: Path, frames: int) -> tuple[str, list[Path]]:
    """The study's UID and its files (one per instance), of the patient make_patient(SEED)."""
    templates = make_study(SEED, make_patient(SEED), "CT", series=SERIES, instances=PER_SERIES)
    files = []
    for index, template in enumerate(templates):
        path = folder / f"{index:02d}.dcm"
        write_instance(path, template, frames, SEED + index)
        files.append(path)
    return str(templates[0].StudyInstanceUID), files


def orthanc_instances(peer: OrthancPeer) -> int:
    """How many instances Orthanc holds (GET /statistics)."""
    with peer.client() as client:
        statistics = client.get("/statistics")
        statistics.raise_for_status()
        return int(statistics.json()["CountInstances"])


# -- (b) C-STORE into `hub serve` ------------------------------------------------------------
def hub_ingest(
    folder: Path,
    files: list[Path],
    warm_up: Path,
    *,
    nagle: bool,
    instrument: tuple[str, Path] | None,
    scp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`files` C-STOREd by storescu into the Storage SCP of a `hub serve` process (SQLite,
    worker off; `scp`: StorageScpConfig fields other than its defaults), after `warm_up` on
    an association of its own; the figures, and the problems found in its database
    afterwards."""
    folder.mkdir()
    scp_port = free_port()
    database_url = f"sqlite:///{folder / 'hub.db'}"
    env = {
        **os.environ,
        "HUB_CONFIG": str(folder / "absent.yaml"),  # nothing from config/hub.yaml
        "HUB_DATABASE_URL": database_url,
        "HUB_PORT": str(free_port()),
        "HUB_SIGNING_KEY_FILE": str(folder / "key.json"),
        "HUB_EMBEDDED_WORKER": "false",
        "HUB_DICOM_STORE_DIR": str(folder / "store"),
        "HUB_DICOM_SCP": json.dumps({"ae_title": HUB_AET, "port": scp_port, **(scp or {})}),
    }
    command = [str(HUB), "serve", "--log-level", "warning"]
    if instrument is not None:
        mode, out = instrument
        command = [sys.executable, "-m", "benchmarks.bench_dicom", "--serve-" + mode, str(out)]
    log_path = folder / "serve.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    engine = make_engine(database_url)
    try:
        wait_for_echo("127.0.0.1", scp_port, HUB_AET, server)
        storescu("127.0.0.1", scp_port, HUB_AET, [warm_up], nagle=nagle)
        wait_closed(engine, 1)
        ready_kib = tree_kib("VmRSS", server.pid)
        started = time.perf_counter()
        acked_seconds = storescu("127.0.0.1", scp_port, HUB_AET, files, nagle=nagle)
        wait_closed(engine, 2)
        indexed_seconds = time.perf_counter() - started
        peak_kib = tree_kib("VmHWM", server.pid)
        problems = check_push(database_url, [1, len(files)])
        if instrument is not None:
            time.sleep(2)  # the association's threads end and write what they measured
    except Exception:
        print(log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        engine.dispose()
        server.terminate()  # uvicorn stops cleanly on SIGTERM
        try:
            server.wait(STOP_GUARD_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(STOP_GUARD_SECONDS)
    return {
        "acked_seconds": acked_seconds,
        "indexed_seconds": indexed_seconds,
        "ready_kib": ready_kib,
        "peak_kib": peak_kib,
        "problems": problems,
    }


def wait_closed(engine: Engine, transfers: int) -> None:
    """Poll the hub's database (every millisecond, on a connection opened before: the
    wait adds little to the time measured) until `transfers` transfers are closed: the
    hub closes a push's transfer once it has indexed every instance it acknowledged on
    it. Raises RuntimeError after READY_GUARD_SECONDS."""
    closed_transfers = (
        select(func.count()).select_from(DicomTransferRow).where(DicomTransferRow.status != "open")
    )
    deadline = time.monotonic() + READY_GUARD_SECONDS
    with engine.connect() as connection:
        while time.monotonic() < deadline:
            closed = connection.scalar(closed_transfers)
            connection.rollback()  # a new snapshot for the next look
            if closed is not None and closed >= transfers:
                return
            time.sleep(0.001)
    raise RuntimeError(f"the hub did not close {transfers} transfer(s) in time")


def check_push(database_url: str, pushes: list[int]) -> list[str]:
    """What is wrong in the hub's database after the pushes of `pushes` instances each,
    their transfers closed: every instance has its row and each push's transfer closed with
    all of its instances, none refused."""
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    problems: list[str] = []
    try:
        with sessions() as session:
            stored = session.scalar(
                select(func.count())
                .select_from(DicomInstanceRow)
                .where(DicomInstanceRow.received_digest.is_not(None))
            )
        if stored != sum(pushes):
            problems.append(f"hub: {stored} of {sum(pushes)} pushed instances stored")
        deadline = time.monotonic() + READY_GUARD_SECONDS  # on_released closes a transfer
        transfers: list[tuple[str, int, int]] = []
        while time.monotonic() < deadline:
            with sessions() as session:
                transfers = [
                    (t.status, t.accepted, t.rejected)
                    for t in session.scalars(
                        select(DicomTransferRow).order_by(DicomTransferRow.transfer_id)
                    )
                ]
            if len(transfers) == len(pushes) and all(t[0] != "open" for t in transfers):
                break
            time.sleep(0.1)
        if transfers != [("closed", count, 0) for count in pushes]:
            problems.append(f"hub: push transfers (status, accepted, refused) {transfers}")
    finally:
        engine.dispose()
    return problems


# -- `hub serve` instrumented: where a C-STORE's time goes -------------------------------------
# Stage timers: (module, attribute, label). Each is wrapped with a wall clock in the served
# process; a function bound by name in a module (read_instance in the importer) is wrapped
# where it is looked up.
TIMED = (
    ("connectors.dimse.scp", "StorageScp._store", "StorageScp._store: our whole C-STORE handler"),
    ("connectors.dimse.scp", "stage_dataset", "stage_dataset: pynetdicom's temp file → staging"),
    ("hub.imaging.push", "inspect_instance", "inspect_instance: one walk + checks"),
    (
        "hub.imaging.indexer_process",
        "IndexerProcess.accept",
        "IndexerProcess.accept: into accepted/, and told to the indexer process",
    ),
    (
        "hub.imaging.indexer",
        "InstanceIndexer.keep",
        "InstanceIndexer.keep: the rename (and fsyncs if flush_before_success)",
    ),
)
# cProfile: (file suffix, function, label); the largest match counts.
PROFILED = (
    ("connectors/dimse/scp.py", "run", "DUL thread (reads, decodes, spools), whole life"),
    ("pynetdicom/association.py", "run_reactor", "association thread, whole life"),
    ("~", "<built-in method select.select>", "select.select (DUL naps)"),
    ("pynetdicom/service_class.py", "SCP", "StorageServiceClass.SCP (one C-STORE)"),
    ("connectors/dimse/scp.py", "_store", "StorageScp._store (our handler)"),
    ("connectors/dimse/received.py", "stage_dataset", "stage_dataset"),
    ("dicom/instances.py", "inspect_instance", "inspect_instance (one walk + checks)"),
    ("hub/imaging/indexer_process.py", "accept", "IndexerProcess.accept (rename, tell)"),
)


def instrumented_serve(mode: str, folder: str) -> None:
    """`hub serve` with stage timers (mode "timers", their totals written to `folder` as
    each association ends) or cProfile on every thread (mode "cprofile", each thread's
    profile written to `folder` when it ends: cProfile alone sees only the main thread,
    and the SCP's work is in pynetdicom's association and DUL threads)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if mode == "timers":
        _install_timers(out)
    else:
        # pynetdicom's threads run their own targets; every thread goes through
        # _bootstrap_inner, a private method, which is acceptable in a benchmark.
        bootstrap = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

        def profiled(thread: threading.Thread) -> None:
            profile = cProfile.Profile()
            profile.enable()
            try:
                bootstrap(thread)
            finally:
                profile.disable()
                profile.dump_stats(out / f"thread-{uuid.uuid4().hex}.prof")

        threading.Thread._bootstrap_inner = profiled  # type: ignore[attr-defined]
    from hub.cli import app

    app(["serve", "--log-level", "warning"], standalone_mode=False)


def _install_timers(out: Path) -> None:
    totals: dict[str, list[float]] = {label: [0, 0.0] for _, _, label in TIMED}
    lock = threading.Lock()

    def timed(label: str, function: Any) -> Any:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    totals[label][0] += 1
                    totals[label][1] += time.perf_counter() - started

        return wrapper

    for module_name, attribute, label in TIMED:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, timed(label, getattr(owner, name)))

    from hub.imaging.indexer_process import IndexerProcess

    close = IndexerProcess.close
    ended = [0]

    def closed(self: IndexerProcess, transfer_id: int, source: str) -> None:
        close(self, transfer_id, source)
        with lock:  # the totals so far, once per association ended (the warm-up's, then all)
            ended[0] += 1
            (out / f"timers-{ended[0]}.json").write_text(json.dumps(totals))

    IndexerProcess.close = closed  # type: ignore[method-assign]


def instrumented_rows(mode: str, folder: Path, instances: int) -> tuple[list[tuple[str, str]], str]:
    """The table's rows for an instrumented `hub serve`, and text to print below it."""
    if mode == "timers":
        # Written as each push's transfer closes (the warm-up's, the push's): the push's
        # share is the last totals less the ones before.
        dumps = sorted(folder.glob("timers-*.json"), key=lambda p: int(p.stem.split("-")[1]))
        if len(dumps) < 2:
            return [], "(the timers were not written)"
        warm_up, last = (json.loads(dumps[i].read_text()) for i in (-2, -1))
        rows = []
        for _, _, label in TIMED:
            calls = last[label][0] - warm_up[label][0]
            seconds = last[label][1] - warm_up[label][1]
            rows.append((label, f"{calls:,} calls, {seconds * 1000 / instances:.2f} ms/instance"))
        return rows, ""
    stats = pstats.Stats()
    for path in sorted(folder.glob("*.prof")):
        # A daemon thread stopped at exit may have left its profile half written.
        with contextlib.suppress(EOFError, ValueError):
            stats.add(str(path))
    if not stats.stats:  # type: ignore[attr-defined]
        return [], "(no profile was written)"
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]]
    table = stats.stats  # type: ignore[attr-defined]
    rows = []
    for suffix, function, label in PROFILED:
        found = [
            (cumulative, calls)
            for (filename, _, name), (_, calls, _, cumulative, _) in table.items()
            if name == function and filename.replace(os.sep, "/").endswith(suffix)
        ]
        cumulative, calls = max(found, default=(0.0, 0))
        rows.append((label, f"{calls:,} calls, {cumulative:.2f} s"))
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.strip_dirs().sort_stats("tottime").print_stats(30)
    return rows, out.getvalue()


# -- the measured pull process ---------------------------------------------------------------
def open_case(session: Any, child: SyntheticPatient) -> str:
    """A Patient and a second-opinion ServiceRequest through the FHIR layer, as a
    referring EHR would send them; the id of the case Task this opens."""
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "https://outside.example/mrn", "value": child.patient_id}],
        "name": [{"family": child.family_name, "given": [child.given_name]}],
        "birthDate": child.birth_date.isoformat(),
        "gender": {"F": "female", "M": "male"}[child.sex],
    }
    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [
            {"coding": [{"system": codes.CASE_CATEGORY_SYSTEM, "code": codes.SECOND_OPINION}]}
        ],
        "subject": {"reference": "urn:uuid:5e0c1d2a-0000-4000-8000-000000005006"},
        "note": [{"text": "Benchmark: second opinion on staging CT."}],
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5e0c1d2a-0000-4000-8000-000000005006",
                "resource": patient,
                "request": {"method": "POST", "url": "Patient"},
            },
            {"resource": referral, "request": {"method": "POST", "url": "ServiceRequest"}},
        ],
    }
    process_bundle(FhirInteractions(session), bundle, base="")  # opens the case, a Task
    return str(
        session.scalars(select(ResourceRow.res_id).where(ResourceRow.res_type == "Task")).one()
    )


def _top_growth(before: tracemalloc.Snapshot | None, title: str) -> tracemalloc.Snapshot:
    """Print the Python allocations that grew since `before`; a snapshot of now."""
    after = tracemalloc.take_snapshot()
    if before is None:
        return after
    print(f"-- tracemalloc, {title}: largest growth by line", file=sys.stderr)
    for stat in after.compare_to(before, "lineno")[:15]:
        print(f"   {stat}", file=sys.stderr)
    current, peak = tracemalloc.get_traced_memory()
    print(f"   traced now {current / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB", file=sys.stderr)
    tracemalloc.reset_peak()
    return after


def check_study(session: Session, study_uid: str, expected: int) -> list[str]:
    """What is wrong with one pulled study: not attached, instances missing, an
    ImagingStudy that does not count them all."""
    problems: list[str] = []
    study = session.get(DicomStudyRow, study_uid)
    instances = session.scalar(
        select(func.count())
        .select_from(DicomInstanceRow)
        .where(DicomInstanceRow.study_uid == study_uid)
        .where(DicomInstanceRow.digest.is_not(None))
    )
    imaging = None
    if study is not None and study.imaging_study_id:
        found = ResourceRepository(session).find("ImagingStudy", study.imaging_study_id)
        imaging = found.content if found else None
    if study is None or study.status != "attached":
        reason = f" ({study.hold_reason})" if study is not None and study.hold_reason else ""
        problems.append(f"study {'missing' if study is None else study.status}{reason}")
    if instances != expected:
        problems.append(f"{instances} of {expected} instances reconciled")
    count = imaging.get("numberOfInstances") if imaging else None
    if count != expected or not imaging or imaging.get("subject") is None:
        problems.append(f"ImagingStudy numberOfInstances {count}")
    return problems


async def retrieve_alone(source: DicomWebSource, study_uids: list[str], folder: Path) -> int:
    """WADO-RS of each study by DicomWebClient.retrieve_study, each file deleted as it
    completes: the transport without the hub's work. The number of instances received."""
    folder.mkdir(parents=True, exist_ok=True)
    received = 0

    async def discard(path: Path) -> None:
        nonlocal received
        received += 1
        path.unlink()

    async with DicomWebClient(source) as client:
        for study_uid in study_uids:
            await client.retrieve_study(
                study_uid, lambda: folder / f"{uuid.uuid4().hex}.part", discard
            )
    return received


def measured(spec: dict[str, Any]) -> dict[str, Any]:
    """The hub's pull path, in this (fresh) process; its figures and check results."""
    after_imports_kib = status_kib("VmRSS")
    folder = Path(spec["folder"])
    source = DicomWebSource(
        name=SOURCE,
        base_url=spec["dicomweb_url"],
        auth=BasicAuth(username=spec["username"], password_env=PASSWORD_ENV),
    )
    settings = Settings(
        database_url=f"sqlite:///{folder / 'hub.db'}",
        signing_key_file=folder / "key.json",
        dicom_store_dir=folder / "store",
        embedded_worker=False,
        imaging_sources=ImagingSources(dicomweb=[source]),
        pull_missing_records=False,  # the one pull measured is the one queued below
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = make_session_factory(engine)
    with sessions() as session:
        task_id = open_case(session, make_patient(spec["patient_seed"]))
        session.commit()
    handlers = job_handlers(settings)
    # The pull and attach paths alone: the records checks they queue run after, untimed.
    worker = JobWorker(
        sessions, {kind: run for kind, run in handlers.items() if kind != CHECK_RECORDS_JOB}
    )
    trace = bool(spec["trace"])
    snapshot = None
    if trace:
        tracemalloc.start(10)
        snapshot = tracemalloc.take_snapshot()
    ready_kib = status_kib("VmRSS")

    pull_started = time.perf_counter()
    with sessions() as session:
        queue_pull(session, task_id, SOURCE)
        session.commit()
    pulled_jobs = worker.run_once()  # the pull-imaging job (the only one queued)
    pulled = time.perf_counter()
    pull_peak_kib = status_kib("VmHWM")
    if trace:
        snapshot = _top_growth(snapshot, "the pull")
    attach_jobs = worker.run_until_idle()  # attach-dicom-study, one per study
    finished = time.perf_counter()
    peak_kib = status_kib("VmHWM")
    if trace:
        _top_growth(snapshot, "the attach")

    study_uids: list[str] = spec["study_uids"]
    per_study = spec["instances"] // len(study_uids)
    problems: list[str] = []
    if pulled_jobs != 1 or attach_jobs != len(study_uids):
        problems.append(f"jobs run: pull {pulled_jobs}, attach {attach_jobs}")
    JobWorker(sessions, handlers).run_until_idle()  # the records checks; every job done
    with sessions() as session:
        accepted = sum(t.accepted for t in session.scalars(select(DicomTransferRow)))
        problems += [
            f"job not done: {job.kind}: {job.status} ({job.last_error})"
            for job in session.scalars(select(JobRow).where(JobRow.status != "done"))
        ]
        for number, study_uid in enumerate(study_uids, 1):
            found = check_study(session, study_uid, per_study)
            problems += [f"study {number}: {problem}" for problem in found]
    if accepted != spec["instances"]:
        problems.append(f"{accepted} of {spec['instances']} instances received")
    engine.dispose()

    retrieve_seconds = None
    if spec["retrieve_alone"]:
        started = time.perf_counter()
        retrieved = asyncio.run(retrieve_alone(source, study_uids, folder / "discarded"))
        retrieve_seconds = time.perf_counter() - started
        if retrieved != spec["instances"]:
            problems.append(f"retrieve alone: {retrieved} of {spec['instances']} instances")
    return {
        "after_imports_kib": after_imports_kib,
        "ready_kib": ready_kib,
        "pull_peak_kib": pull_peak_kib,
        "peak_kib": peak_kib,
        "pull_seconds": pulled - pull_started,
        "attach_seconds": finished - pulled,
        "retrieve_seconds": retrieve_seconds,
        "problems": problems,
    }


def run_measured(spec: dict[str, Any], password: str) -> dict[str, Any]:
    """`measured(spec)` in a fresh interpreter, so that the peak RSS is the hub's alone."""
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_dicom", "--measured", json.dumps(spec)],
        env={**os.environ, PASSWORD_ENV: password},
        stdout=subprocess.PIPE,
        text=True,
        timeout=PULL_GUARD_SECONDS,
        check=False,
        cwd=ROOT,
    )
    if run.returncode != 0:
        raise RuntimeError(f"the measured process failed ({run.returncode}); see its stderr")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


# -- the run ---------------------------------------------------------------------------------
def ingest_rounds(
    orthanc: OrthancPeer,
    folder: Path,
    files: list[Path],
    warm_up: Path,
    *,
    nagle: bool,
    instrument: tuple[str, Path] | None,
    rounds: int = 1,
    extras: bool = False,
) -> dict[str, Any]:
    """(a) and (b) with one setting of Nagle's algorithm, `rounds` times side by side:
    storescu of `files` into Orthanc (emptied first), then into a fresh `hub serve`, each
    receiver warmed up by `warm_up` first; with `extras`, also into the floor (b0) and into
    a `hub serve` with StorageScpConfig.flush_before_success on. Each rate is the median of
    its rounds, the ratio the median of the rounds' ratios: the other work on the machine
    changes from one minute to the next, and a round measures the receivers a minute apart
    at most. Peak RSS is the highest of the rounds'."""
    count = len(files)
    problems: list[str] = []
    measured: list[dict[str, float]] = []
    peaks: list[int] = []
    ready: list[int] = []
    for number in range(rounds):
        empty_orthanc(orthanc)
        wait_for_echo(orthanc.host, orthanc.dicom_port, orthanc.aet)
        storescu(orthanc.host, orthanc.dicom_port, orthanc.aet, [warm_up], nagle=nagle)
        orthanc_seconds = storescu(
            orthanc.host, orthanc.dicom_port, orthanc.aet, files, nagle=nagle
        )
        held = orthanc_instances(orthanc)
        if held != count + 1:
            problems.append(f"Orthanc, round {number + 1}: {held} of {count + 1} instances")
        figures = {"orthanc_per_s": count / orthanc_seconds}
        if extras:
            figures["floor_per_s"] = count / floor_ingest(
                folder / f"floor-{number}", files, warm_up
            )
        pushed = hub_ingest(
            folder / f"round-{number}",
            files,
            warm_up,
            nagle=nagle,
            instrument=instrument if number == 0 else None,
        )
        problems += pushed["problems"]
        peaks.append(pushed["peak_kib"])
        ready.append(pushed["ready_kib"])
        figures |= {
            "hub_acked_per_s": count / pushed["acked_seconds"],
            "hub_per_s": count / pushed["indexed_seconds"],
        }
        if extras:
            flushing = hub_ingest(
                folder / f"round-{number}-flush",
                files,
                warm_up,
                nagle=nagle,
                instrument=None,
                scp={"flush_before_success": True},
            )
            problems += flushing["problems"]
            peaks.append(flushing["peak_kib"])
            figures |= {
                "hub_flushed_acked_per_s": count / flushing["acked_seconds"],
                "hub_flushed_per_s": count / flushing["indexed_seconds"],
            }
        for name in ("hub", "hub_flushed", "floor"):
            if f"{name}_per_s" in figures:
                figures[f"{name}_over_orthanc"] = (
                    figures[f"{name}_per_s"] / figures["orthanc_per_s"]
                )
        measured.append(figures)
    result: dict[str, Any] = {
        name: statistics.median(figures[name] for figures in measured) for name in measured[0]
    }
    return {
        **result,
        "rounds": measured,
        "hub_serve_ready_kib": max(ready),
        "hub_serve_peak_kib": max(peaks),
        "problems": problems,
    }


def empty_orthanc(peer: OrthancPeer) -> None:
    """Delete every patient Orthanc holds: a push is then stored, not found stored."""
    with peer.client() as client:
        patients = client.get("/patients")
        patients.raise_for_status()
        for patient in patients.json():
            client.delete(f"/patients/{patient}").raise_for_status()


def floor_ingest(folder: Path, files: list[Path], warm_up: Path) -> float:
    """(b0): the seconds storescu takes to send `files` to the hub's StorageScp alone, in a
    process of its own, whose handler deletes each staged instance and answers success:
    pynetdicom and the staging, none of the hub's work. The floor under (b)."""
    folder.mkdir()
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.bench_dicom", "--serve-floor", str(folder)]
    server = subprocess.Popen(
        [*command, str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_echo("127.0.0.1", port, HUB_AET, server)
        storescu("127.0.0.1", port, HUB_AET, [warm_up], nagle=False)
        return storescu("127.0.0.1", port, HUB_AET, files, nagle=False)
    finally:
        server.terminate()
        try:
            server.wait(STOP_GUARD_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(STOP_GUARD_SECONDS)


def serve_floor(folder: str, port: int) -> None:
    """The floor's server (see floor_ingest), until terminated."""
    import signal

    from connectors.dimse import StorageScp, StorageScpConfig

    staged = Path(folder)
    numbers = itertools.count()

    def discard(path: Path, calling_ae: str, association_id: str) -> int:
        path.unlink()
        return 0x0000

    scp = StorageScp(
        StorageScpConfig(ae_title=HUB_AET, port=port),
        staging=lambda: staged / f"{next(numbers)}.part",
        on_instance=discard,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    with scp:
        stopped.wait()


def small_part(
    orthanc: OrthancPeer,
    orthanc_with_nagle: OrthancPeer,
    folder: Path,
    trace: bool,
    instrument: tuple[str, Path] | None,
    rounds: int,
) -> dict[str, Any]:
    """(a), (b) and (c) on the small instances: their figures and problems. `orthanc` runs
    with dcmtk's TCP_NODELAY=1, `orthanc_with_nagle` with this dcmtk's default."""
    study_uids, files = build_small_set(folder / "small")
    warm_up = write_study(
        folder / "warm-up", make_study(SMALL_SEED - 1, make_patient(SMALL_SEED - 1), "CT", 1, 1)
    )[0]
    (folder / "hub-push").mkdir()
    ingest = ingest_rounds(
        orthanc,
        folder / "hub-push",
        files,
        warm_up,
        nagle=False,
        instrument=instrument,
        rounds=1 if instrument else rounds,
        extras=instrument is None,
    )
    (folder / "hub-push-nagle").mkdir()
    with_nagle = ingest_rounds(
        orthanc_with_nagle, folder / "hub-push-nagle", files, warm_up, nagle=True, instrument=None
    )
    problems: list[str] = ingest.pop("problems") + with_nagle.pop("problems")
    spec = {
        "folder": str(folder / "hub-pull"),
        "dicomweb_url": orthanc.dicomweb_url,
        "username": orthanc.auth[0],
        "patient_seed": SMALL_SEED,
        "study_uids": study_uids,
        "instances": len(files),
        "trace": trace,
        "retrieve_alone": True,
    }
    pulled = run_measured(spec, orthanc.auth[1])
    problems += pulled.pop("problems")
    count = len(files)
    return {
        "instances": count,
        "studies": len(study_uids),
        "file_kib": sum(path.stat().st_size for path in files) / count / 1024,
        "ingest": ingest,
        "ingest_rounds": len(ingest["rounds"]),
        "ingest_with_nagle": with_nagle,
        "target_ratio": INGEST_TARGET,
        "pull_seconds": pulled["pull_seconds"],
        "pull_per_s": count / pulled["pull_seconds"],
        "attach_seconds": pulled["attach_seconds"],
        "attach_per_s": count / pulled["attach_seconds"],
        "retrieve_alone_seconds": pulled["retrieve_seconds"],
        "retrieve_alone_per_s": count / pulled["retrieve_seconds"],
        "pull_process_peak_kib": pulled["peak_kib"],
        "problems": problems,
    }


def large_part(peer: OrthancPeer, folder: Path, trace: bool, frames: int) -> dict[str, Any]:
    """The 2 GiB study: storescu into Orthanc, then the pull process's figures."""
    (folder / "study").mkdir()
    study_uid, files = build_large_study(folder / "study", frames)
    study_bytes = sum(path.stat().st_size for path in files)
    upload_seconds = storescu(peer.host, peer.dicom_port, peer.aet, files, nagle=False)
    shutil.rmtree(folder / "study")  # Orthanc holds it now: 2 GiB less on disk
    spec = {
        "folder": str(folder / "hub-large"),
        "dicomweb_url": peer.dicomweb_url,
        "username": peer.auth[0],
        "patient_seed": SEED,
        "study_uids": [study_uid],
        "instances": len(files),
        "trace": trace,
        "retrieve_alone": False,
    }
    result = run_measured(spec, peer.auth[1])
    result.pop("retrieve_seconds")
    if result["problems"]:
        log = peer.log_path.read_text(errors="replace").splitlines()
        print("-- Orthanc's log, its end:", *log[-40:], sep="\n", file=sys.stderr)
    return {
        **result,
        "study_bytes": study_bytes,
        "instances": len(files),
        "instance_mib": study_bytes / len(files) / MIB,
        "upload_seconds": upload_seconds,
        "target_peak_rss_mib": TARGET_MIB,
    }


@contextmanager
def environment(name: str, value: str) -> Iterator[None]:
    """`name`=`value` in this process's environment (what a child started inside inherits),
    restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _checked(problems: list[str]) -> str:
    return "yes" if not problems else "**NO**: " + "; ".join(problems)


def small_rows(small: dict[str, Any]) -> list[tuple[str, str]]:
    ingest, nagle = small["ingest"], small["ingest_with_nagle"]
    ratio = ingest["hub_over_orthanc"]
    rounds = ingest["rounds"]
    each = ", ".join(f"{r['hub_over_orthanc']:.0%}" for r in rounds)
    rows = [
        (
            f"**small instances**: {small['studies']} CT studies x {SMALL_SERIES} series x "
            f"{SMALL_PER_SERIES} (64 x 64 x 16 bits, {small['file_kib']:.1f} KiB a file)",
            f"{small['instances']}",
        ),
        (
            f"(a) anchor: storescu → Orthanc, one association (instances/s; median of "
            f"{len(rounds)} round(s), as below)",
            f"{ingest['orthanc_per_s']:,.0f}",
        ),
    ]
    if "floor_per_s" in ingest:
        rows.append(
            (
                "(b0) floor: storescu → the hub's StorageScp alone, discarding each instance "
                "(pynetdicom and staging, none of the hub's work; instances/s)",
                f"{ingest['floor_per_s']:,.0f} ({ingest['floor_over_orthanc']:.0%} of (a))",
            )
        )
    rows += [
        (
            "(b) storescu → hub Storage SCP (`hub serve`, SQLite), until storescu returns: "
            "each acknowledged, written to accepted/ (instances/s)",
            f"{ingest['hub_acked_per_s']:,.0f}",
        ),
        (
            "**(b) the same, until every instance is indexed and the transfer closed "
            "(instances/s; the target is judged on this)**",
            f"**{ingest['hub_per_s']:,.0f}**",
        ),
        (
            f"**hub ingest / Orthanc ingest** (median of the rounds' ratios: {each})",
            f"**{ratio:.0%}**",
        ),
        (
            f"target: hub ingest ≥ {INGEST_TARGET:.0%} of Orthanc's",
            "met" if ratio >= INGEST_TARGET else "**NOT met**",
        ),
    ]
    if "hub_flushed_per_s" in ingest:
        rows += [
            (
                "(b) with `flush_before_success` on (each instance flushed to disk before "
                "its success): until storescu returns / until indexed (instances/s)",
                f"{ingest['hub_flushed_acked_per_s']:,.0f} / {ingest['hub_flushed_per_s']:,.0f}",
            ),
            (
                "(b) with `flush_before_success` on, until indexed / Orthanc ingest",
                f"{ingest['hub_flushed_over_orthanc']:.0%}",
            ),
        ]
    rows += [
        (
            "`hub serve` RSS before the push, with its child processes (MiB)",
            f"{ingest['hub_serve_ready_kib'] / 1024:.0f}",
        ),
        (
            "**`hub serve` peak RSS, with its child processes (VmHWM summed, MiB; the highest "
            "of the rounds)**",
            f"**{ingest['hub_serve_peak_kib'] / 1024:.0f}**",
        ),
        (
            "(a') with Nagle on (dcmtk's default): storescu → Orthanc (instances/s)",
            f"{nagle['orthanc_per_s']:,.0f}",
        ),
        (
            "(b') with Nagle on (dcmtk's default): storescu → hub, until indexed (instances/s)",
            f"{nagle['hub_per_s']:,.0f}",
        ),
        (
            "(b') / (a'): bound by TCP delayed ACKs, not by either receiver",
            f"{nagle['hub_over_orthanc']:.0%}",
        ),
        (
            "(c) WADO-RS pull from Orthanc into the hub (QIDO-RS + WADO-RS + store, "
            "committed; instances/s)",
            f"{small['pull_per_s']:,.0f}",
        ),
        (
            "(c) WADO-RS retrieve alone (DicomWebClient.retrieve_study, files discarded; "
            "instances/s)",
            f"{small['retrieve_alone_per_s']:,.0f}",
        ),
        ("(c) attach (reconcile + ImagingStudy; instances/s)", f"{small['attach_per_s']:,.0f}"),
        ("(c) pull process peak RSS (MiB)", f"{small['pull_process_peak_kib'] / 1024:.0f}"),
        ("small instances: result checked (counts, studies attached)", small["checked"]),
    ]
    return rows


def large_rows(figures: dict[str, Any]) -> list[tuple[str, str]]:
    size_mib = figures["study_bytes"] / MIB
    seconds = figures["pull_seconds"] + figures["attach_seconds"]
    peak_mib = figures["peak_kib"] / 1024
    return [
        (
            f"**2 GiB study**: size (MiB), CT, {SERIES} series, "
            f"{figures['instances']} instances of {figures['instance_mib']:.0f} MiB",
            f"{size_mib:,.0f}",
        ),
        ("storescu → Orthanc, wall time (s)", f"{figures['upload_seconds']:.1f}"),
        (
            "pull (QIDO-RS + WADO-RS into the store), wall time (s)",
            f"{figures['pull_seconds']:.1f}",
        ),
        ("attach (reconcile + ImagingStudy), wall time (s)", f"{figures['attach_seconds']:.1f}"),
        ("pull + attach, wall time (s)", f"{seconds:.1f}"),
        ("pull + attach (MiB/s of study)", f"{size_mib / seconds:,.1f}"),
        ("hub process RSS after imports (MiB)", f"{figures['after_imports_kib'] / 1024:.0f}"),
        ("hub process RSS with the case open (MiB)", f"{figures['ready_kib'] / 1024:.0f}"),
        (
            "hub process peak RSS by the end of the pull (MiB)",
            f"{figures['pull_peak_kib'] / 1024:.0f}",
        ),
        ("**hub process peak RSS (MiB)**", f"**{peak_mib:.0f}**"),
        (
            f"target: peak RSS < {TARGET_MIB} MiB",
            "met" if peak_mib < TARGET_MIB else "**NOT met**",
        ),
        ("2 GiB study: result checked (attached, ImagingStudy counts all)", figures["checked"]),
    ]


def main(trace: bool, frames: int, skip_large: bool, profile_hub: str | None, rounds: int) -> int:
    from tests.orthanc_peer import running_orthanc  # the parent's only: pytest comes with it

    folder = Path(tempfile.mkdtemp(prefix="bench-dicom-"))
    instrument = (profile_hub, folder / "instrument") if profile_hub else None
    large: dict[str, Any] | None = None
    try:
        (folder / "orthanc").mkdir()
        (folder / "orthanc-nagle").mkdir()
        with ExitStack() as peers:
            # Orthanc's DICOM server is dcmtk's: it reads TCP_NODELAY from its environment.
            with environment("TCP_NODELAY", "1"):
                orthanc = peers.enter_context(running_orthanc(folder / "orthanc"))
            with environment("TCP_NODELAY", "0"):
                with_nagle = peers.enter_context(running_orthanc(folder / "orthanc-nagle"))
            small = small_part(orthanc, with_nagle, folder, trace, instrument, rounds)
            if not skip_large:
                large = large_part(orthanc, folder, trace, frames)
        stages, top = instrumented_rows(*instrument, small["instances"]) if instrument else ([], "")
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    problems: list[str] = small.pop("problems")
    small["checked"] = _checked(problems)
    rows = small_rows(small)
    if large is not None:
        large_problems: list[str] = large.pop("problems")
        large["checked"] = _checked(large_problems)
        problems += large_problems
        rows += large_rows(large)
    rows += [(f"`hub serve` {profile_hub}: {label}", value) for label, value in stages]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    table = ["| measure | value |", "|---|---:|"] + [f"| {m} | {v} |" for m, v in rows]
    markdown = (
        "DICOM benchmark (Orthanc and dcmtk on loopback, hub on SQLite) "
        f"on {machine}\n"
        + ("(with tracemalloc on: pull times and RSS are inflated)\n" if trace else "")
        + (
            f"(`hub serve` instrumented ({profile_hub}): its ingest rate is not the real one)\n"
            if profile_hub
            else ""
        )
        + "\n"
        + "\n".join(table)
        + "\n"
        + (f"\n```\n{top}```\n" if top else "")
    )
    RESULTS.mkdir(exist_ok=True)
    # A traced, profiled or partial run does not replace the figures of the real one.
    suffix = (
        ("-traced" if trace else "")
        + (f"-{profile_hub}" if profile_hub else "")
        + ("-small" if skip_large else "")
        + ("" if skip_large or frames == FRAMES else f"-{frames}-frames")
    )
    (RESULTS / f"dicom{suffix}.md").write_text(markdown)
    document = {"machine": machine, "small_instances": small, "large_study": large}
    (RESULTS / f"dicom{suffix}.json").write_text(json.dumps(document, indent=2))
    print(markdown)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="only the small instances")
    parser.add_argument("--trace", action="store_true", help="tracemalloc snapshots (slow)")
    parser.add_argument(
        "--profile-hub",
        choices=("timers", "cprofile"),
        help="time the stages of the push's `hub serve`, or cProfile its threads",
    )
    parser.add_argument(
        "--frames", type=int, default=FRAMES, help="frames of 512 KiB per instance (256: 128 MiB)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of (a), (b0), (b) side by side; each rate is the median of its rounds",
    )
    parser.add_argument("--measured", help=argparse.SUPPRESS)  # the fresh process's part
    parser.add_argument("--serve-floor", nargs=2, help=argparse.SUPPRESS)  # (b0)
    for mode in ("timers", "cprofile"):  # `hub serve`, instrumented
        parser.add_argument(f"--serve-{mode}", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    for mode in ("timers", "cprofile"):
        if getattr(arguments, f"serve_{mode}"):
            instrumented_serve(mode, getattr(arguments, f"serve_{mode}"))
            sys.exit(0)
    if arguments.serve_floor:
        serve_floor(arguments.serve_floor[0], int(arguments.serve_floor[1]))
        sys.exit(0)
    if arguments.measured:
        print(json.dumps(measured(json.loads(arguments.measured))))
        sys.exit(0)
    sys.exit(
        main(
            arguments.trace,
            arguments.frames,
            arguments.skip_large,
            arguments.profile_hub,
            max(1, arguments.rounds),
        )
    )
