"""What runs beside the HTTP API in one process: the job worker and the MLLP listeners.

Embedded mode (`hub serve`) runs them all; scaled-out deployments switch the worker off in
the API replicas (`embedded_worker: false`) and run `hub worker` processes instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from connectors.hl7v2_mllp import MllpListener
from hub.jobs.worker import JobHandler, JobWorker
from hub.messages.batch import process_folder
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.messages.mapping_job import map_hl7_message
from hub.messages.outbound import DELIVER_JOB, MllpDeliveries, deliver_hl7_job
from hub.messages.return_channel import ReturnChannel
from hub.settings import Settings

log = logging.getLogger("hub.runtime")


# Mapping jobs run 25 to a transaction: one commit (an fsync) for all, not one each.
BATCH_SIZES = {MAP_JOB: 25}


def job_handlers(settings: Settings) -> dict[str, JobHandler]:
    """The closed table of job kinds this process runs."""
    deliveries = MllpDeliveries(settings.mllp_destinations)
    answers = ReturnChannel(settings.mllp_destinations)
    return {
        MAP_JOB: answers.mapping_handler(
            partial(map_hl7_message, models=settings.hl7_model_validation)
        ),
        DELIVER_JOB: deliver_hl7_job(deliveries),
    }


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state.hub
    # Case moves made through the API tell HL7 v2 referrers (order status updates).
    ReturnChannel(state.settings.mllp_destinations).bind_sessions(state.sessions)
    worker = (
        JobWorker(state.sessions, job_handlers(state.settings), batch_sizes=BATCH_SIZES)
        if state.settings.embedded_worker
        else None
    )
    app.state.worker = worker
    intake = Hl7Intake(state.sessions, on_enqueued=worker.wake if worker else None)
    app.state.intake = intake
    listeners = [MllpListener(config, intake) for config in state.settings.mllp_listeners]
    app.state.listeners = listeners
    if worker:
        worker.start()
    for listener in listeners:
        await listener.start()
    folder = state.settings.hl7_batch_folder
    watcher = asyncio.create_task(_watch(intake, folder)) if folder else None
    try:
        yield
    finally:
        if watcher:
            watcher.cancel()
        for listener in listeners:
            await listener.stop()
        if worker:
            worker.stop()


async def _watch(intake: Hl7Intake, folder: Path, poll_seconds: float = 2.0) -> None:
    """The batch-file drop folder: every `poll_seconds`, process what has settled there."""
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            await asyncio.to_thread(process_folder, intake, folder)
        except OSError as exc:
            log.error("batch folder %s: %s", folder, type(exc).__name__)
        await asyncio.sleep(poll_seconds)
