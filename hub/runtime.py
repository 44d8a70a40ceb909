"""What runs beside the HTTP API in one process: the job worker and the MLLP listeners.

Embedded mode (`hub serve`) runs them all; scaled-out deployments switch the worker off in
the API replicas (`embedded_worker: false`) and run `hub worker` processes instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI

from connectors.dimse import StorageScp
from connectors.hl7v2_mllp import MllpListener
from dicom.store import ContentStore
from hub.imaging.attach import attach_study_job
from hub.imaging.importer import ATTACH_JOB, DicomImporter
from hub.imaging.indexer import InstanceIndexer
from hub.imaging.media import process_media_folder
from hub.imaging.pull import PULL_JOB, pull_imaging_job
from hub.imaging.push import PushIntake
from hub.jobs.worker import JobHandler, JobWorker
from hub.messages.batch import process_folder
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.messages.mapping_job import map_hl7_message
from hub.messages.outbound import DELIVER_JOB, MllpDeliveries, deliver_hl7_job
from hub.messages.return_channel import ReturnChannel
from hub.records.fhir_pull import PULL_RECORDS_JOB, pull_records_job
from hub.records.validation import start_worker as start_validation_worker
from hub.records.validation import stop_worker as stop_validation_worker
from hub.records.write_back import WRITE_BACK_JOB, write_back_job
from hub.settings import Settings
from hub.workflow.checklist import CHECK_RECORDS_JOB
from hub.workflow.completeness import check_records_job
from hub.workflow.opinion_delivery import confirm_message, confirm_write_back

log = logging.getLogger("hub.runtime")


# Mapping jobs run 25 to a transaction: one commit (an fsync) for all, not one each.
BATCH_SIZES = {MAP_JOB: 25}


def job_handlers(settings: Settings) -> dict[str, JobHandler]:
    """The closed table of job kinds this process runs."""
    if settings.fhir_sources:
        start_validation_worker()  # the pulls' worker process, ready before the first pull
    deliveries = MllpDeliveries(settings.mllp_destinations)
    answers = ReturnChannel(settings.mllp_destinations)
    return {
        MAP_JOB: answers.mapping_handler(
            partial(map_hl7_message, models=settings.hl7_model_validation)
        ),
        DELIVER_JOB: deliver_hl7_job(deliveries, on_delivered=confirm_message),
        ATTACH_JOB: attach_study_job(dicom_store(settings), settings.dicomweb_url),
        PULL_JOB: pull_imaging_job(
            settings.imaging_sources,
            dicom_store(settings),
            settings.dicom_scp.ae_title if settings.dicom_scp else None,
        ),
        PULL_RECORDS_JOB: pull_records_job(settings.fhir_sources),
        WRITE_BACK_JOB: write_back_job(settings.fhir_sources, on_delivered=confirm_write_back),
        CHECK_RECORDS_JOB: check_records_job(
            settings.checklist_file,
            [source.name for source in settings.fhir_sources]
            if settings.pull_missing_records
            else [],
            settings.imaging_sources.names() if settings.pull_missing_records else [],
            settings.default_program,
        ),
    }


def dicom_store(settings: Settings) -> ContentStore:
    return ContentStore(settings.dicom_store_dir)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state = app.state.hub
    # Case moves made through the API tell HL7 v2 referrers (order status updates).
    ReturnChannel(state.settings.mllp_destinations).bind_sessions(state.sessions)
    worker = (
        JobWorker(
            state.sessions,
            job_handlers(state.settings),
            lease_seconds=state.settings.job_lease_seconds,
            batch_sizes=BATCH_SIZES,
        )
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
    watcher = (
        asyncio.create_task(_every(partial(process_folder, intake, folder))) if folder else None
    )
    importer = DicomImporter(state.sessions, dicom_store(state.settings))
    app.state.dicom_importer = importer
    scp, indexer = _storage_scp(state.settings, importer)
    app.state.storage_scp = scp
    app.state.dicom_indexer = indexer
    media = state.settings.dicom_media_folder
    media_watcher = (
        asyncio.create_task(_every(partial(process_media_folder, importer, media)))
        if media
        else None
    )
    try:
        yield
    finally:
        if scp:
            scp.stop()
        if indexer:
            await asyncio.to_thread(indexer.stop)  # what the SCP accepted, indexed
        for task in (watcher, media_watcher):
            if task:
                task.cancel()
        for listener in listeners:
            await listener.stop()
        await asyncio.to_thread(intake.close)
        if worker:
            worker.stop()
        stop_validation_worker()


def _storage_scp(
    settings: Settings, importer: DicomImporter
) -> tuple[StorageScp | None, InstanceIndexer | None]:
    if settings.dicom_scp is None:
        return None, None
    # What a previous process accepted and did not index is indexed before the SCP listens.
    indexer = InstanceIndexer(
        importer, flush_before_success=settings.dicom_scp.flush_before_success
    )
    indexer.recover()
    indexer.start()
    push = PushIntake(indexer)
    scp = StorageScp(
        settings.dicom_scp,
        staging=importer.store.staging_file,
        on_instance=push.on_instance,
        on_released=push.on_released,
    )
    try:
        scp.start()
    except BaseException:
        indexer.stop()
        raise
    log.info("DICOM Storage SCP %s on port %d", settings.dicom_scp.ae_title, scp.bound_port)
    return scp, indexer


async def _every(process: Callable[[], int], poll_seconds: float = 2.0) -> None:
    """A drop folder: every `poll_seconds`, process what has settled there."""
    while True:
        try:
            await asyncio.to_thread(process)
        except OSError as exc:
            log.error("drop folder: %s", type(exc).__name__)
        await asyncio.sleep(poll_seconds)
