"""Validation of pulled resources against the FHIR R4 models, in a worker process.

The models' validation is most of the cost of a pull (about half a millisecond a resource);
in a worker process it runs on the other core while the pull goes on fetching and storing.
Chunks are pickled when submitted, so that what the worker checks is the resource as it
arrived, not as normalization later rewrites it. A worker that cannot be had or dies is no
failure: the chunks are then checked in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from hub.errors import HubError
from hub.fhir.validation import validate_resource

log = logging.getLogger("hub.records")
CHUNK = 100
HUB_WATCH_SECONDS = 1.0
JsonObject = dict[str, Any]

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def invalidity(resource: JsonObject) -> str | None:
    """Why a pulled resource is not valid FHIR R4 (with the paths), or None."""
    try:
        validate_resource(resource)
    except HubError as exc:
        paths = ", ".join(e for issue in exc.issues for e in issue.expression)
        return f"{exc.diagnostics} ({paths})" if paths else exc.diagnostics
    return None


def check_chunk(pickled: bytes) -> list[tuple[str, str]]:
    """(key, why) for each invalid resource of a pickled [(key, resource)] chunk."""
    chunk: list[tuple[str, JsonObject]] = pickle.loads(pickled)
    return [(key, why) for key, resource in chunk if (why := invalidity(resource)) is not None]


def _worker_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # forkserver, not fork: the hub's process has threads (the job worker, MLLP).
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["hub.records.validation"])
            _pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=context,
                initializer=_exit_with,
                initargs=(os.getpid(),),
            )
        return _pool


def _exit_with(hub_pid: int) -> None:
    """In the worker process: end it once the hub's process is gone. A hub killed (kill -9,
    the OOM killer) cannot shut its pool down, and the worker, its forkserver and resource
    tracker would otherwise live on as orphans, each crash adding three."""

    def watch() -> None:
        while True:
            time.sleep(HUB_WATCH_SECONDS)
            try:
                os.kill(hub_pid, 0)
            except ProcessLookupError:
                os._exit(0)

    threading.Thread(target=watch, name="exit-with-hub", daemon=True).start()


class Validation:
    """The checks of one pull: `add` as resources arrive, `problems` at the end."""

    def __init__(self, *, in_process: bool = False) -> None:
        self._in_process = in_process
        self._chunk: list[tuple[str, JsonObject]] = []
        self._submitted: list[tuple[bytes, Future[list[tuple[str, str]]] | None]] = []
        self.done_at = 0.0
        """time.perf_counter() when the last check so far ended (for the pull's report)."""

    def add(self, key: str, resource: JsonObject) -> None:
        self._chunk.append((key, resource))
        if len(self._chunk) >= CHUNK:
            self.submit()

    def problems(self) -> dict[str, str]:
        """Source `Type/id` → why it is invalid, for every resource added (waits)."""
        self.submit()
        found: dict[str, str] = {}
        for pickled, future in self._submitted:
            try:
                results = future.result() if future is not None else check_chunk(pickled)
            except BrokenProcessPool:
                log.warning("the validation worker died; checking in this process")
                _forget_pool()
                results = check_chunk(pickled)
            found.update(results)
            self.done_at = max(self.done_at, time.perf_counter() if future is None else 0.0)
        self._submitted.clear()
        return found

    def _record_end(self, _future: Future[list[tuple[str, str]]]) -> None:
        self.done_at = max(self.done_at, time.perf_counter())

    def submit(self) -> None:
        """Hand over what was added so far: to be called before the resources are changed."""
        if not self._chunk:
            return
        pickled = pickle.dumps(self._chunk, protocol=pickle.HIGHEST_PROTOCOL)
        self._chunk = []
        future = None
        if not self._in_process:
            try:
                future = _worker_pool().submit(check_chunk, pickled)
                future.add_done_callback(self._record_end)
            except (BrokenProcessPool, OSError, RuntimeError) as exc:
                log.warning("no validation worker (%s); checking in this process", exc)
                _forget_pool()
        self._submitted.append((pickled, future))


def start_worker() -> Future[list[tuple[str, str]]]:
    """Start the worker process now (its imports take a second or two), so that the first
    pull does not wait for it; the future is done once it answers."""
    return _worker_pool().submit(check_chunk, pickle.dumps([]))


def worker_pids() -> list[int]:
    """The process ids of the validation workers (for operations and benchmarks)."""
    with _pool_lock:
        processes = getattr(_pool, "_processes", None) or {}
        return sorted(processes)


def stop_worker() -> None:
    """End the worker process (at shutdown: it would outlive the hub)."""
    _forget_pool()


def _forget_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None
