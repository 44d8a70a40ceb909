"""Pushes to the hub's Storage SCP: one transfer per association.

The SCP calls `on_instance` from its association threads. An instance is checked there
(dicom.instances.inspect_instance) and, if good, accepted: on disk under its transfer
before the sender gets success; its rows are written in batches by the indexer's writer
(hub.imaging.indexer), in a process of its own (hub.imaging.indexer_process). A file the
hub refuses gets 0xC000 (cannot understand), with the reason in the SCP's log and in the
transfer's report (which goes to the case's events when the transfer closes); nothing of
it is kept. A database or disk failure gets 0xA700 (out of resources), so the sender
keeps the instance and retries. When the association ends, the transfer is closed once
its instances are indexed, and its studies go to attachment.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from dicom.errors import InvalidDicom
from dicom.instances import InstanceInfo, inspect_instance
from hub.imaging.importer import DicomImporter

log = logging.getLogger("hub.imaging")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


class Indexing(Protocol):
    """What a push needs of the indexer: InstanceIndexer, or IndexerProcess (the same, its
    writer in a process of its own)."""

    importer: DicomImporter

    def open_transfer(self, source: str) -> int: ...
    def accept(self, transfer_id: int, staged: Path, info: InstanceInfo) -> None: ...
    def close(self, transfer_id: int, source: str) -> None: ...


class PushIntake:
    """`on_instance` and `on_released` for connectors.dimse.StorageScp."""

    def __init__(self, indexer: Indexing) -> None:
        self.indexer = indexer
        self.importer = indexer.importer
        self._transfers: dict[str, int] = {}
        self._lock = threading.Lock()

    def on_instance(self, staged: Path, calling_ae: str, association_id: str) -> int:
        try:
            transfer_id = self._transfer(association_id, calling_ae)
            try:
                info = inspect_instance(staged)
            except InvalidDicom as exc:
                staged.unlink(missing_ok=True)
                log.warning("push from %s: instance refused: %s", calling_ae, exc.reason)
                self.importer.record_refusal(transfer_id, staged.name, exc.reason)
                return CANNOT_UNDERSTAND
            self.indexer.accept(transfer_id, staged, info)
        except (SQLAlchemyError, OSError) as exc:
            log.error("push from %s: instance not stored (%s)", calling_ae, type(exc).__name__)
            staged.unlink(missing_ok=True)
            return OUT_OF_RESOURCES
        return SUCCESS

    def on_released(self, association_id: str, calling_ae: str) -> None:
        with self._lock:
            transfer_id = self._transfers.pop(association_id, None)
        if transfer_id is not None:
            self.indexer.close(transfer_id, calling_ae)

    def _transfer(self, association_id: str, calling_ae: str) -> int:
        with self._lock:
            transfer_id = self._transfers.get(association_id)
            if transfer_id is None:
                transfer_id = self.indexer.open_transfer(calling_ae)
                self._transfers[association_id] = transfer_id
            return transfer_id
