"""Pushes to the hub's Storage SCP: one transfer per association.

The SCP calls `on_instance` from its association threads; an instance is stored and its row
committed before the sender gets success. A file the hub refuses gets 0xC000 (cannot
understand) with the reason in the transfer's report; a database or disk failure 0xA700
(out of resources), so the sender keeps the instance and retries. When the association
ends, the transfer is closed and its studies go to attachment.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from hub.imaging.importer import DicomImporter

log = logging.getLogger("hub.imaging")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


class PushIntake:
    """`on_instance` and `on_released` for connectors.dimse.StorageScp."""

    def __init__(self, importer: DicomImporter) -> None:
        self.importer = importer
        self._transfers: dict[str, int] = {}
        self._lock = threading.Lock()

    def on_instance(self, staged: Path, calling_ae: str, association_id: str) -> int:
        try:
            transfer_id = self._transfer(association_id, calling_ae)
            received = self.importer.receive(transfer_id, staged)
        except (SQLAlchemyError, OSError) as exc:
            log.error("push from %s: instance not stored (%s)", calling_ae, type(exc).__name__)
            staged.unlink(missing_ok=True)
            return OUT_OF_RESOURCES
        if not received.accepted:
            log.warning("push from %s: instance refused: %s", calling_ae, received.reason)
            return CANNOT_UNDERSTAND
        return SUCCESS

    def on_released(self, association_id: str, calling_ae: str) -> None:
        with self._lock:
            transfer_id = self._transfers.pop(association_id, None)
        if transfer_id is not None:
            summary = self.importer.close_transfer(transfer_id)
            log.info(
                "push from %s: %d stored, %d refused, %d study(ies)",
                calling_ae,
                summary.accepted,
                summary.rejected,
                len(summary.studies),
            )

    def _transfer(self, association_id: str, calling_ae: str) -> int:
        with self._lock:
            transfer_id = self._transfers.get(association_id)
            if transfer_id is None:
                transfer_id = self.importer.open_transfer("push", calling_ae)
                self._transfers[association_id] = transfer_id
            return transfer_id
