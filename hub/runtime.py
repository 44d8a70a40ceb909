"""What runs beside the HTTP API in one process: the job worker, the MLLP listeners and
the DICOM Storage SCP.

Embedded mode (`hub serve`) runs them all, with no broker. Scaled-out deployments switch
the worker off in the API replicas (`embedded_worker: false`) and run `hub worker`
processes instead, fed by a broker (`broker_url`, hub.jobs.dispatch) and, with
`worker_runs_listeners`, running the listeners too (ProtocolListeners).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from connectors.dimse import StorageScp, StorageScpConfig
from connectors.hl7v2_mllp import MllpListener
from dicom.store import ContentStore
from hub.imaging.accepted_lease import AcceptedFolderLease
from hub.imaging.attach import attach_study_job
from hub.imaging.importer import ATTACH_JOB, DicomImporter
from hub.imaging.indexer import InstanceIndexer
from hub.imaging.indexer_process import IndexerProcess
from hub.imaging.media import process_media_folder
from hub.imaging.pull import PULL_JOB, pull_imaging_job
from hub.imaging.push import PushIntake
from hub.jobs.dispatch import JobPublisher, celery_app
from hub.jobs.worker import JobHandler, JobWorker
from hub.messages.batch import process_folder
from hub.messages.intake import MAP_JOB, Hl7Intake
from hub.messages.mapping_job import map_hl7_message
from hub.messages.outbound import DELIVER_JOB, MllpDeliveries, deliver_hl7_job
from hub.messages.retention import start_pruning
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
    settings = state.settings
    # Case moves made through the API tell HL7 v2 referrers (order status updates).
    ReturnChannel(settings.mllp_destinations).bind_sessions(state.sessions)
    worker = (
        JobWorker(
            state.sessions,
            job_handlers(settings),
            lease_seconds=settings.job_lease_seconds,
            batch_sizes=BATCH_SIZES,
        )
        if settings.embedded_worker
        else None
    )
    app.state.worker = worker
    publisher = job_publisher(settings, state.sessions)
    listeners = ProtocolListeners(
        settings,
        state.sessions,
        on_enqueued=_announcers(worker.wake if worker else None, publisher),
    )
    app.state.intake = listeners.intake
    app.state.listeners = listeners.mllp
    if worker:
        worker.start()
    await listeners.start()
    folder = settings.hl7_batch_folder
    watcher = (
        asyncio.create_task(_every(partial(process_folder, listeners.intake, folder)))
        if folder
        else None
    )
    app.state.dicom_importer = listeners.importer
    app.state.storage_scp = listeners.scp
    app.state.dicom_indexer = listeners.indexer
    media = settings.dicom_media_folder
    media_watcher = (
        asyncio.create_task(_every(partial(process_media_folder, listeners.importer, media)))
        if media
        else None
    )
    pruner = start_pruning(settings, state.sessions)
    try:
        yield
    finally:
        for task in (watcher, media_watcher, pruner):
            if task:
                task.cancel()
        await listeners.stop()
        if worker:
            worker.stop()
        if publisher:
            await asyncio.to_thread(publisher.close)
        stop_validation_worker()


def job_publisher(settings: Settings, sessions: sessionmaker[Session]) -> JobPublisher | None:
    """With a broker: announce the jobs committed in these sessions to the `hub worker`s."""
    if settings.broker_url is None:
        return None
    publisher = JobPublisher(
        celery_app(settings.broker_url, lease_seconds=settings.job_lease_seconds)
    )
    publisher.install(sessions)
    return publisher


def _announcers(
    wake: Callable[[], None] | None, publisher: JobPublisher | None
) -> Callable[[], None] | None:
    """What the HL7 intake calls once it has committed mapping jobs."""
    calls = [call for call in (wake, publisher.nudge if publisher else None) if call]
    if len(calls) < 2:
        return calls[0] if calls else None

    def announce() -> None:
        for call in calls:
            call()

    return announce


class ProtocolListeners:
    """The MLLP listeners and the DICOM Storage SCP (with its indexer) of one process:
    `hub serve` runs them in its lifespan, `hub worker` with `worker_runs_listeners`.

    With `worker_runs_listeners` every process binds with SO_REUSEPORT, so that several
    share each port, and keeps the instances its SCP accepts in an accepted folder of its
    own (hub.imaging.accepted_lease), so that one starting never recovers what a live
    sibling is about to index. Without it, one process owns the ports, as before.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        on_enqueued: Callable[[], None] | None,
    ) -> None:
        self.settings = settings
        self.shared = settings.worker_runs_listeners
        self.intake = Hl7Intake(sessions, on_enqueued=on_enqueued)
        self.mllp = [
            MllpListener(config, self.intake, reuse_port=self.shared)
            for config in settings.mllp_listeners
        ]
        self.importer = DicomImporter(sessions, dicom_store(settings))
        self.scp: StorageScp | None = None
        self.indexer: IndexerProcess | None = None
        self._lease: AcceptedFolderLease | None = None

    async def start(self) -> None:
        """Listen on every configured port (the SCP once what was accepted is indexed)."""
        for listener in self.mllp:
            await listener.start()
        if self.settings.dicom_scp is not None:
            await asyncio.to_thread(self._start_scp, self.settings.dicom_scp)

    async def stop(self) -> None:
        """Stop listening; what the SCP accepted is indexed and what the MLLP listeners
        took is committed and answered first."""
        if self.scp:
            await asyncio.to_thread(self.scp.stop)
        if self.indexer:
            await asyncio.to_thread(self.indexer.stop)
        if self._lease:
            self._lease.release()
        for listener in self.mllp:
            await listener.stop()
        await asyncio.to_thread(self.intake.close)

    def _start_scp(self, config: StorageScpConfig) -> None:
        # What a previous process accepted and did not index is indexed before the SCP listens.
        def indexer_on(folder: Path | None) -> InstanceIndexer:
            return InstanceIndexer(
                self.importer, flush_before_success=config.flush_before_success, folder=folder
            )

        if self.shared:
            self._lease = AcceptedFolderLease.claim(self.importer.store.root, indexer_on)
            local = indexer_on(self._lease.folder)
        else:
            local = indexer_on(None)
            local.recover()
        root = logging.getLogger()
        indexer = IndexerProcess(
            local,
            database_url=self.settings.database_url,
            log_level=logging.getLevelName(root.getEffectiveLevel()),
            log_format=self.settings.log_format,
        )
        indexer.start()
        self.indexer = indexer
        push = PushIntake(indexer)
        scp = StorageScp(
            config,
            staging=self.importer.store.staging_file,
            on_instance=push.on_instance,
            on_released=push.on_released,
            reuse_port=self.shared,
        )
        try:
            scp.start()
        except BaseException:
            indexer.stop()
            raise
        self.scp = scp
        log.info("DICOM Storage SCP %s on port %d", config.ae_title, scp.bound_port)


@contextmanager
def listeners_in_thread(listeners: ProtocolListeners) -> Iterator[ProtocolListeners]:
    """Run `listeners` on an event loop in a thread of their own (`hub worker`, whose main
    thread runs the jobs), started when this enters and stopped when it leaves."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="hub-listeners", daemon=True)
    thread.start()
    starting = asyncio.run_coroutine_threadsafe(listeners.start(), loop)
    try:
        starting.result()
        yield listeners
    finally:
        if not starting.done():  # a signal came while starting: finish, then stop it all
            with contextlib.suppress(Exception):
                starting.result(60.0)
        asyncio.run_coroutine_threadsafe(listeners.stop(), loop).result(60.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def _every(process: Callable[[], int], poll_seconds: float = 2.0) -> None:
    """A drop folder: every `poll_seconds`, process what has settled there."""
    while True:
        try:
            await asyncio.to_thread(process)
        except OSError as exc:
            log.error("drop folder: %s", type(exc).__name__)
        await asyncio.sleep(poll_seconds)
