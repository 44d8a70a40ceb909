"""The DIMSE client of one outside PACS: C-ECHO, study-root C-FIND, C-MOVE and C-GET.

pynetdicom is blocking and threaded, so each call runs its association in a worker thread
(`asyncio.to_thread`); the instances a C-GET brings are staged in pynetdicom's thread and
handed to the async `on_instance` on the caller's event loop, one at a time, before the
next sub-operation is answered. One association per call: PACS close idle ones anyway.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.events import Event

from connectors.base import ConnectorHealth, DeliveryResult, Envelope
from connectors.dimse.config import DimseSource
from connectors.dimse.contexts import (
    COMMON_STORAGE_SOP_CLASSES,
    STUDY_ROOT_FIND,
    STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
    TRANSFER_SYNTAXES,
    VERIFICATION,
    VERIFICATION_TRANSFER_SYNTAXES,
)
from connectors.dimse.errors import (
    AssociationFailed,
    AssociationLost,
    AssociationRejected,
    DimseError,
    QueryFailed,
    ServiceNotAccepted,
    UnsendableInstance,
)
from connectors.dimse.received import (
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    Staging,
    configure_pynetdicom,
    discard_received,
    stage_dataset,
)

logger = logging.getLogger(__name__)

OnInstance = Callable[[Path], Awaitable[None]]
"""Takes over one complete staged instance (moves, validates or deletes it)."""

PENDING = frozenset({0xFF00, 0xFF01})
# C-STORE warnings (PS3.4 B.2.3): stored, with coercion or a mismatch the peer tolerated.
STORE_WARNINGS = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
QUERY_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Returned by find_studies unless the query names them itself (PS3.4 C.6.2.1.2).
DEFAULT_STUDY_KEYS: Mapping[str, str] = {
    "StudyInstanceUID": "",
    "PatientID": "",
    "IssuerOfPatientID": "",
    "PatientName": "",
    "PatientBirthDate": "",
    "PatientSex": "",
    "StudyDate": "",
    "StudyTime": "",
    "StudyDescription": "",
    "AccessionNumber": "",
    "ModalitiesInStudy": "",
    "NumberOfStudyRelatedSeries": "",
    "NumberOfStudyRelatedInstances": "",
}

Contexts = Sequence[tuple[str, Sequence[str]]]
QueryValue = str | int | float | Sequence[str] | None


@dataclass(frozen=True)
class MoveResult:
    """How a C-MOVE (or C-GET) ended: its final status and sub-operation counts."""

    status: int
    """The final DIMSE status: 0x0000 success, 0xB000 some sub-operations failed,
    0xA701/0xA702 out of resources, 0xA801 move destination unknown, 0xFE00 cancelled,
    0xC000-0xCFFF unable to process."""
    completed: int
    failed: int
    warning: int
    failed_sop_instance_uids: tuple[str, ...] = ()

    @property
    def succeeded(self) -> bool:
        """Every sub-operation completed (warnings included)."""
        return self.status == SUCCESS and self.failed == 0


@dataclass(frozen=True)
class GetResult(MoveResult):
    """A C-GET: the counts, and the staged files handed to `on_instance`."""

    received: tuple[Path, ...] = ()


class DimseClient:
    """C-ECHO, C-FIND, C-MOVE and C-GET against one DimseSource.

    Each method opens an association, runs its service and releases it. Raises
    AssociationRejected (the peer refused us: our AE title undeclared, say),
    AssociationFailed (unreachable), ServiceNotAccepted (no context for the service) and
    AssociationLost (aborted before the final response).
    """

    def __init__(self, source: DimseSource) -> None:
        self.source = source
        self.name = source.name
        configure_pynetdicom()

    # -- Connector --------------------------------------------------------------------

    async def health(self) -> ConnectorHealth:
        """A C-ECHO: healthy when the peer answers success."""
        try:
            status = await self.echo()
        except DimseError as exc:
            return ConnectorHealth(False, str(exc))
        return ConnectorHealth(status == SUCCESS, f"C-ECHO status 0x{status:04X}")

    async def deliver(self, envelope: Envelope) -> DeliveryResult:
        """C-STORE of the envelope's payload, one Part 10 instance, in its own transfer
        syntax. The DIMSE status is the result's code ("0x0000"); an association that
        could not be made is code "association", a payload that is not Part 10 DICOM
        code "unsendable"."""
        try:
            status = await asyncio.to_thread(self._store, envelope.payload)
        except UnsendableInstance as exc:
            return DeliveryResult(False, "unsendable", str(exc))
        except (AssociationFailed, ServiceNotAccepted, AssociationLost) as exc:
            retryable = not isinstance(exc, AssociationRejected | ServiceNotAccepted)
            return DeliveryResult(False, "association", str(exc), retryable=retryable)
        return DeliveryResult(
            accepted=status == SUCCESS or status in STORE_WARNINGS,
            code=f"0x{status:04X}",
            retryable=(status & 0xFF00) == OUT_OF_RESOURCES,
        )

    # -- services ---------------------------------------------------------------------

    async def echo(self) -> int:
        """C-ECHO; the peer's status (0x0000 when it is there and willing)."""
        return await asyncio.to_thread(self._echo)

    async def find_studies(self, query: Mapping[str, QueryValue]) -> list[Dataset]:
        """Study-root C-FIND at STUDY level; the matching identifiers.

        `query` maps DICOM keywords to matching values (PS3.4 C.2.2.2: "" asks for the
        attribute back, `*` and `?` are wildcards, "20240101-20240331" a range, a list
        of UIDs a list match); the common study attributes are asked for as well.
        Raises ValueError for an unknown keyword, QueryFailed for a failure status.
        """
        identifier = _identifier({**DEFAULT_STUDY_KEYS, **query})
        return await asyncio.to_thread(self._find, identifier)

    async def move_study(self, study_instance_uid: str, destination_ae: str) -> MoveResult:
        """C-MOVE of one study to `destination_ae` (which the peer must know by that
        title: for the hub's own Storage SCP, its AE title)."""
        identifier = _identifier({"StudyInstanceUID": study_instance_uid})
        return await asyncio.to_thread(self._move, identifier, destination_ae)

    async def get_study(
        self, study_instance_uid: str, staging: Staging, on_instance: OnInstance
    ) -> GetResult:
        """C-GET of one study over one association: each instance is written as
        received to `staging()` and handed to `on_instance`, whose failure (or that of
        the staging) answers that sub-operation with a failure status and is counted in
        `failed`. Storage contexts cover COMMON_STORAGE_SOP_CLASSES."""
        loop = asyncio.get_running_loop()
        received: list[Path] = []

        def take(event: Event) -> int:
            try:
                path = stage_dataset(event, staging)
            except OSError as exc:
                discard_received(event)
                logger.error(
                    "DIMSE %s: cannot stage a C-GET instance (%s)", self.name, type(exc).__name__
                )
                return OUT_OF_RESOURCES
            try:
                asyncio.run_coroutine_threadsafe(_awaited(on_instance(path)), loop).result()
            except Exception as exc:
                logger.error(
                    "DIMSE %s: on_instance failed for a C-GET instance (%s)",
                    self.name,
                    type(exc).__name__,
                )
                path.unlink(missing_ok=True)
                return PROCESSING_FAILURE
            received.append(path)
            return SUCCESS

        identifier = _identifier({"StudyInstanceUID": study_instance_uid})
        result = await asyncio.to_thread(self._get, identifier, take)
        return GetResult(
            status=result.status,
            completed=result.completed,
            failed=result.failed,
            warning=result.warning,
            failed_sop_instance_uids=result.failed_sop_instance_uids,
            received=tuple(received),
        )

    # -- blocking work, in a worker thread ----------------------------------------------

    def _echo(self) -> int:
        with self._association([(VERIFICATION, VERIFICATION_TRANSFER_SYNTAXES)]) as assoc:
            status = _answered(assoc.send_c_echo(), "C-ECHO")
        return int(status.Status)

    def _find(self, identifier: Dataset) -> list[Dataset]:
        matches: list[Dataset] = []
        with self._association([(STUDY_ROOT_FIND, QUERY_SYNTAXES)]) as assoc:
            _require_context(assoc, STUDY_ROOT_FIND, "C-FIND")
            for status, match in assoc.send_c_find(identifier, STUDY_ROOT_FIND):
                code = int(_answered(status, "C-FIND").Status)
                if code in PENDING:
                    if match is not None:
                        matches.append(match)
                    continue
                if code != SUCCESS:
                    raise QueryFailed(
                        f"DIMSE {self.name}: C-FIND ended with status 0x{code:04X}", code
                    )
        return matches

    def _move(self, identifier: Dataset, destination: str) -> MoveResult:
        with self._association([(STUDY_ROOT_MOVE, QUERY_SYNTAXES)]) as assoc:
            _require_context(assoc, STUDY_ROOT_MOVE, "C-MOVE")
            responses = assoc.send_c_move(identifier, destination, STUDY_ROOT_MOVE)
            return _retrieve_outcome(responses, "C-MOVE")

    def _get(self, identifier: Dataset, take: Callable[[Event], int]) -> MoveResult:
        contexts: list[tuple[str, Sequence[str]]] = [(STUDY_ROOT_GET, QUERY_SYNTAXES)]
        contexts += [(uid, TRANSFER_SYNTAXES) for uid in COMMON_STORAGE_SOP_CLASSES]
        # PS3.4 C.4.3.1: we are the SCP of the C-STORE sub-operations, which the SCP/SCU
        # role selection must say for each storage SOP class.
        roles = [build_role(uid, scp_role=True) for uid in COMMON_STORAGE_SOP_CLASSES]
        handlers = [(evt.EVT_C_STORE, take)]
        with self._association(contexts, ext_neg=roles, handlers=handlers) as assoc:
            _require_context(assoc, STUDY_ROOT_GET, "C-GET")
            responses = assoc.send_c_get(identifier, STUDY_ROOT_GET)
            return _retrieve_outcome(responses, "C-GET")

    def _store(self, payload: bytes) -> int:
        try:
            ds = dcmread(io.BytesIO(payload))
            syntax = str(ds.file_meta.TransferSyntaxUID)
            sop_class = str(ds.SOPClassUID)
        except (InvalidDicomError, AttributeError, EOFError) as exc:
            raise UnsendableInstance(
                "the payload is not a DICOM Part 10 instance with a transfer syntax and a SOP class"
            ) from exc
        with self._association([(sop_class, [syntax])]) as assoc:
            _require_context(assoc, sop_class, "C-STORE")
            status = _answered(assoc.send_c_store(ds), "C-STORE")
        return int(status.Status)

    @contextmanager
    def _association(
        self,
        contexts: Contexts,
        *,
        ext_neg: list[Any] | None = None,
        handlers: list[Any] | None = None,
    ) -> Iterator[Association]:
        source = self.source
        ae = AE(ae_title=source.calling_ae)
        ae.connection_timeout = source.timeouts.connection
        ae.acse_timeout = source.timeouts.acse
        ae.dimse_timeout = source.timeouts.dimse
        ae.network_timeout = source.timeouts.network
        ae.maximum_pdu_size = source.max_pdu
        for abstract_syntax, transfer_syntaxes in contexts:
            ae.add_requested_context(abstract_syntax, list(transfer_syntaxes))
        assoc = ae.associate(
            source.host,
            source.port,
            ae_title=source.called_ae,
            max_pdu=source.max_pdu,
            ext_neg=ext_neg,
            evt_handlers=handlers,
        )
        peer = f"{source.called_ae}@{source.host}:{source.port}"
        if assoc.is_rejected:
            reason = _rejection(assoc)
            raise AssociationRejected(
                f"DIMSE {self.name}: {peer} rejected our association as "
                f"{source.calling_ae} ({reason})",
                reason,
            )
        if not assoc.is_established:
            raise AssociationFailed(f"DIMSE {self.name}: no association with {peer}")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable


def _identifier(query: Mapping[str, QueryValue]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword, value in query.items():
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"unknown DICOM keyword {keyword!r} in a query")
        setattr(ds, keyword, "" if value is None else value)
    texts = [v for v in query.values() if isinstance(v, str)]
    if any(not text.isascii() for text in texts):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _answered(status: Dataset, service: str) -> Dataset:
    # pynetdicom answers an empty Dataset when the association ended without a response.
    if "Status" not in status:
        raise AssociationLost(f"the association ended before the {service} response")
    return status


def _require_context(assoc: Association, abstract_syntax: str, service: str) -> None:
    if not any(cx.abstract_syntax == abstract_syntax for cx in assoc.accepted_contexts):
        assoc.release()
        raise ServiceNotAccepted(f"the peer accepted the association but not {service}")


def _retrieve_outcome(
    responses: Iterator[tuple[Dataset, Dataset | None]], service: str
) -> MoveResult:
    last: Dataset | None = None
    final_identifier: Dataset | None = None
    for status, identifier in responses:
        code = int(_answered(status, service).Status)
        last = status
        if code not in PENDING:
            final_identifier = identifier
            break
    if last is None or int(last.Status) in PENDING:
        raise AssociationLost(f"the association ended before the final {service} response")
    failed_uids: tuple[str, ...] = ()
    if final_identifier is not None and "FailedSOPInstanceUIDList" in final_identifier:
        value = final_identifier.FailedSOPInstanceUIDList
        failed_uids = (str(value),) if isinstance(value, str) else tuple(map(str, value))
    return MoveResult(
        status=int(last.Status),
        completed=int(last.get("NumberOfCompletedSuboperations", 0) or 0),
        failed=int(last.get("NumberOfFailedSuboperations", 0) or 0),
        warning=int(last.get("NumberOfWarningSuboperations", 0) or 0),
        failed_sop_instance_uids=tuple(uid for uid in failed_uids if uid),
    )


def _rejection(assoc: Association) -> str:
    primitive = assoc.acceptor.primitive
    if primitive is None:
        return "no reason given"
    return f"{primitive.result_str}; {primitive.source_str}; {primitive.reason_str}"
