"""The hub's Storage SCP: outside PACS and modalities push instances to it (C-STORE), and
PACS answer the hub's C-MOVE through it.

pynetdicom's threaded server runs it, one thread per association; `on_instance` and
`on_released` are called from those threads, possibly at the same time for different
associations, and must be thread-safe. Each C-STORE's dataset is written as received to a
file in `staging` (by pynetdicom as it arrives when it streams to disk, else after), then
`on_instance(path, calling_ae, association_id)` takes it over and its return value is the
DIMSE status the sender gets.
When an association ends (released, aborted, or its connection dropped),
`on_released(association_id, calling_ae)` tells the hub that no more instances will come
on it. C-ECHO is answered too.

Each association runs on two threads of pynetdicom's, woken by what they wait for rather
than polling as pynetdicom's own do (_PromptAssociation).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import queue
import select
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from connectors.dimse.config import StorageScpConfig
from connectors.dimse.contexts import (
    TRANSFER_SYNTAXES,
    VERIFICATION,
    VERIFICATION_TRANSFER_SYNTAXES,
    all_storage_sop_classes,
)
from connectors.dimse.errors import ScpStateError
from connectors.dimse.received import (
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    Staging,
    configure_pynetdicom,
    discard_received,
    received_file,
    stage_dataset,
)

logger = logging.getLogger(__name__)

InstanceHandler = Callable[[Path, str, str], int]
"""(received file, calling AE title, association id) -> DIMSE status of the C-STORE:
0x0000 success, 0xA700 out of resources, 0xA900 data set does not match SOP class,
0xC000 cannot understand; B000/B007/B006 warnings. It owns the file from then on and
must move it before it returns to keep it: pynetdicom removes its temporary file then."""
ReleaseHandler = Callable[[str, str], None]
"""(association id, calling AE title), once per association that was established."""


class StorageScp:
    """A Storage (and Verification) SCP on `config.host`:`config.port`.

    `staging()` gives each instance a fresh path. `start()` binds and serves in the
    background; `stop()` stops accepting, aborts associations still open and waits for
    their threads. Also a context manager. `reuse_port` binds with SO_REUSEPORT, so that
    the SCPs of several processes share the port (the kernel spreads associations).
    """

    def __init__(
        self,
        config: StorageScpConfig,
        *,
        staging: Staging,
        on_instance: InstanceHandler,
        on_released: ReleaseHandler | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.config = config
        self._reuse_port = reuse_port
        self._staging = staging
        self._on_instance = on_instance
        self._on_released = on_released
        self._server: ThreadedAssociationServer | None = None
        self._ae: AE | None = None
        self._associations: dict[Association, tuple[str, str]] = {}
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def bound_port(self) -> int:
        """The port it listens on (the chosen one when configured with port 0)."""
        if self._server is None:
            raise ScpStateError("the Storage SCP is not started")
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in background threads. Raises ScpStateError if already started
        and OSError when the address cannot be bound."""
        if self._server is not None:
            raise ScpStateError("the Storage SCP is already started")
        config = self.config
        configure_pynetdicom(stream_to_disk=config.stream_to_disk, staging=self._staging)
        ae = _ScpAE(ae_title=config.ae_title, reuse_port=self._reuse_port)
        ae.maximum_pdu_size = config.max_pdu
        ae.maximum_associations = config.max_associations
        ae.acse_timeout = config.timeouts.acse
        ae.dimse_timeout = config.timeouts.dimse
        ae.network_timeout = config.timeouts.network
        ae.require_calling_aet = list(config.allowed_calling_aes)
        ae.require_called_aet = config.require_called_ae
        for sop_class in all_storage_sop_classes():
            ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(VERIFICATION, list(VERIFICATION_TRANSFER_SYNTAXES))
        handlers: list[EventHandlerType] = [
            (evt.EVT_ESTABLISHED, self._established),
            (evt.EVT_C_STORE, self._store),
            (evt.EVT_RELEASED, self._ended),
            (evt.EVT_ABORTED, self._ended),
            (evt.EVT_CONN_CLOSE, self._ended),
            (evt.EVT_REJECTED, self._rejected),
        ]
        server = ae.start_server((config.host, config.port), block=False, evt_handlers=handlers)
        assert server is not None  # start_server returns the server when not blocking
        server.contexts = _ContextsCopiedCheaply(server.contexts)
        self._ae, self._server = ae, server
        logger.info(
            "Storage SCP %s listening on %s:%d", config.ae_title, config.host, self.bound_port
        )

    def stop(self) -> None:
        """Stop accepting, abort the associations still open, wait for their threads."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        # After shutdown no association can start, so this list is the last word.
        associations = list(server.active_associations)
        for assoc in associations:
            if assoc.is_alive():
                assoc.abort()
        for assoc in associations:
            assoc.join(self.config.timeouts.acse)
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None

    def __enter__(self) -> StorageScp:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- event handlers, in pynetdicom's association threads ----------------------------

    def _established(self, event: Event) -> None:
        # pynetdicom's own name for it, read on every nap (see _PromptAssociation).
        event.assoc.dul._run_loop_delay = self.config.poll_seconds
        calling = _calling_ae(event)
        association_id = uuid.uuid4().hex
        with self._lock:
            self._associations[event.assoc] = (association_id, calling)
        logger.info("Storage SCP: association %s from %s", association_id, calling)

    def _store(self, event: Event) -> int:
        with self._lock:
            association_id, calling = self._associations.get(
                event.assoc, ("unknown", _calling_ae(event))
            )
        try:
            # The file pynetdicom streamed the dataset into, else the dataset written to
            # staging now; the handler puts it where it belongs.
            path = received_file(event) or stage_dataset(event, self._staging)
        except OSError as exc:
            discard_received(event)
            logger.error(
                "Storage SCP: cannot stage an instance from %s on %s (%s): out of resources",
                calling,
                association_id,
                type(exc).__name__,
            )
            return OUT_OF_RESOURCES
        try:
            status = int(self._on_instance(path, calling, association_id))
        except Exception as exc:
            # The handler's own failure, not the sender's: a processing failure it may
            # retry. Only the type is logged; a message could quote the dataset (PHI).
            logger.error(
                "Storage SCP: on_instance failed for an instance from %s on %s (%s)",
                calling,
                association_id,
                type(exc).__name__,
            )
            path.unlink(missing_ok=True)
            return PROCESSING_FAILURE
        if status != 0:
            logger.warning(
                "Storage SCP: an instance from %s on %s answered with status 0x%04X",
                calling,
                association_id,
                status,
            )
        return status

    def _ended(self, event: Event) -> None:
        with self._lock:
            known = self._associations.pop(event.assoc, None)
        if known is None:
            return  # never established, or already reported
        association_id, calling = known
        logger.info("Storage SCP: association %s from %s ended", association_id, calling)
        if self._on_released is None:
            return
        try:
            self._on_released(association_id, calling)
        except Exception as exc:
            logger.error(
                "Storage SCP: on_released failed for %s (%s)", association_id, type(exc).__name__
            )

    def _rejected(self, event: Event) -> None:
        calling = _calling_ae(event)
        requested = event.assoc.requestor.primitive
        called = str(getattr(requested, "called_ae_title", "")).strip()
        allowed = self.config.allowed_calling_aes
        if allowed and calling not in allowed:
            reason = "its calling AE title is not in allowed_calling_aes"
        elif self.config.require_called_ae and called != self.config.ae_title:
            reason = f"it called {called!r}, not {self.config.ae_title!r}"
        else:
            reason = f"already {self.config.max_associations} associations open"
        logger.warning(
            "Storage SCP rejected an association from %s at %s: %s",
            calling,
            event.assoc.requestor.address,
            reason,
        )


def _calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


class _PromptAssociation(Association):
    """An acceptor association whose threads wake when there is something to do.

    pynetdicom's reactors poll. `Association._run_reactor` sleeps a hard-coded 1 ms before
    each look for a DIMSE message, and the DUL's reactor `_run_loop_delay` before each look
    at the connection and at the PDUs to send. A sender that waits for each C-STORE's
    answer before the next, as a modality does, waits out those naps on every instance:
    about a third of the round trip on small instances, and each wake-up takes the
    interpreter from the thread doing the work. These are the same loops, in the same
    order, whose naps end at once when a message is decoded (the association's) or when
    data arrives or a PDU is queued to send (the DUL's, _PromptDUL); timers (ARTIM, the
    network timeout) and a release or abort are still noticed within a nap.
    """

    def _run_reactor(self) -> None:
        messages = self.dimse.msg_queue
        self._is_paused = False
        while not self._kill:
            with messages.not_empty:  # the queue's own condition, notified by each put
                if not messages.queue:
                    messages.not_empty.wait(self.dul._run_loop_delay)
            # Paused while the association sends a request of its own (see the library's).
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, message = self.dimse.get_msg(block=False)
            if message:
                self._serve_request(message, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                logger.warning("Storage SCP: network timeout on an association; aborting it")
                self.abort()
                self.kill()
                return


class _PromptDUL(DULServiceProvider):
    """The DUL of a _PromptAssociation: its reactor naps in select() on the connection
    and on a pipe that `send_pdu` writes to, instead of sleeping."""

    _wake_read: int
    _wake_write: int

    def open_wake_pipe(self) -> None:
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
            os.write(self._wake_write, b"!")

    def run(self) -> None:
        # The thread's body (pynetdicom's __init__ bound its own reactor as the target).
        try:
            self._react()
        finally:
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _react(self) -> None:
        self._idle_timer.start()
        nap = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if nap:
                self._nap()
            if self._kill_thread:
                break
            if self.artim_timer.expired:  # queued ahead of any other event of this loop
                self.event_queue.put("Evt18")
            try:
                # Either send one queued PDU or read one received, per loop (as pynetdicom).
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                # As pynetdicom: past the state machine, an A-ABORT, and both reactors end.
                logger.error("Storage SCP: DUL failure (%s); aborting", type(exc).__name__)
                abort = A_ABORT_RQ()
                abort.source = 0x02
                abort.reason_diagnostic = 0x00
                cast(AssociationSocket, self.socket).send(abort.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                nap = True
                continue
            self.state_machine.do_action(event)
            nap = False

    def _nap(self) -> None:
        watched: list[Any] = [self._wake_read]
        connection = self.socket.socket if self.socket is not None else None
        if connection is not None and connection.fileno() >= 0:
            watched.append(connection)
        try:
            ready, _, _ = select.select(watched, [], [], self._run_loop_delay)
        except (OSError, ValueError):  # the connection closed under us: the loop finds out
            return
        if self._wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)


class _ContextsCopiedCheaply(list[PresentationContext]):
    """The server's presentation contexts, which pynetdicom deep-copies for each association
    it accepts: 170 storage SOP classes x 16 transfer syntaxes took 23 ms of every
    association's start. Negotiation only reads them; a copy of each context and of its
    list of transfer syntaxes, sharing the UIDs (immutable strings), takes 0.5 ms."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            duplicate = copy.copy(context)
            duplicate._transfer_syntax = list(context._transfer_syntax)
            copies.append(duplicate)
        return copies


class _PromptRequestHandler(RequestHandler):
    def _create_association(self) -> Association:
        association = super()._create_association()
        # They add no state but the pipe, only methods: the objects pynetdicom made and
        # set up, retyped, rather than copies of its 30 lines of setup.
        association.__class__ = _PromptAssociation
        association.dul.__class__ = _PromptDUL
        cast(_PromptDUL, association.dul).open_wake_pipe()
        return association


class _SharedPortServer(ThreadedAssociationServer):
    """An association server whose socket is bound with SO_REUSEPORT."""

    def server_bind(self) -> None:
        if self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


class _ScpAE(AE):
    """An AE whose non-blocking `start_server` serves with _PromptAssociation, on a socket
    bound with SO_REUSEPORT when `reuse_port` (pynetdicom chooses the server class and the
    request handler in `make_server`; its own server binds with SO_REUSEADDR only)."""

    def __init__(self, *, ae_title: str, reuse_port: bool) -> None:
        super().__init__(ae_title=ae_title)
        self._reuse_port = reuse_port

    def make_server(self, *args: Any, **kwargs: Any) -> Any:
        if self._reuse_port:
            kwargs["server_class"] = _SharedPortServer
        kwargs["request_handler"] = _PromptRequestHandler
        return super().make_server(*args, **kwargs)
