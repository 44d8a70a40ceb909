"""`hub messages`, `hub dead-letters` and `hub worker`: hospital IT's tools at the console."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from hub.jobs.dispatch import SWEEP_SECONDS
from hub.jobs.outbox import dead_letters, replay
from hub.messages.log import (
    MessageQuery,
    detail,
    get_message,
    replay_message,
    search_messages,
    summary,
)
from hub.messages.retention import prune_messages
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory

messages_app = typer.Typer(help="The HL7 v2 message log.", no_args_is_help=True)
dead_letters_app = typer.Typer(help="Jobs that failed every attempt.", no_args_is_help=True)


def _sessions() -> sessionmaker[Session]:
    return make_session_factory(make_engine(Settings().database_url))


@messages_app.command("list")
def messages_list(
    status: Annotated[str | None, typer.Option(help="accepted, mapped, failed, ...")] = None,
    type: Annotated[str | None, typer.Option(help="ORU^R01, ...")] = None,  # noqa: A002
    sender: Annotated[str | None, typer.Option(help="MSH-3[/MSH-4]")] = None,
    control_id: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """List messages, newest first (no content)."""
    query = MessageQuery(
        status=status, message_type=type, sender=sender, control_id=control_id, count=limit
    )
    with _sessions()() as session:
        rows, total = search_messages(session, query)
        for row in rows:
            s = summary(row)
            typer.echo(
                f"{s['id']}\t{s['receivedAt']}\t{s['direction']}\t{s['type']}\t"
                f"{s['sender']}\t{s['controlId']}\t{s['status']}\t{s['ackCode']}"
            )
        typer.echo(f"{len(rows)} of {total}")


@messages_app.command("show")
def messages_show(message_id: int) -> None:
    """One message: raw, ACK, conversion report, resources produced (JSON)."""
    with _sessions()() as session:
        typer.echo(json.dumps(detail(get_message(session, message_id)), indent=2))


@messages_app.command("replay")
def messages_replay(message_id: int) -> None:
    """Map an inbound message again."""
    with _sessions().begin() as session:
        replay_message(session, message_id)
    typer.echo(f"Message {message_id} queued for mapping.")


@messages_app.command("prune")
def messages_prune(
    older_than_days: Annotated[
        int | None,
        typer.Option(min=1, help="Default: the message_retention_days setting."),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            help="PostgreSQL: VACUUM FULL, which returns the space to the OS but locks the "
            "message log while it runs (the MLLP intake waits)."
        ),
    ] = False,
) -> None:
    """Delete finished messages older than the retention, then free the space."""
    days = older_than_days or Settings().message_retention_days
    if days is None:
        typer.echo("No --older-than-days and no message_retention_days setting.", err=True)
        raise typer.Exit(2)
    result = prune_messages(_sessions(), days, full=full)
    typer.echo(
        f"{result.messages} messages and {result.jobs} jobs older than {days} days deleted; "
        f"{result.bytes_before} bytes before, {result.bytes_after} after, "
        f"{result.bytes_freed} freed."
    )


@dead_letters_app.command("list")
def dead_letters_list() -> None:
    """Dead jobs: id, kind, subject, attempts, last error."""
    with _sessions()() as session:
        for row in dead_letters(session):
            typer.echo(f"{row.job_id}\t{row.kind}\t{row.subject}\t{row.attempts}\t{row.last_error}")


@dead_letters_app.command("replay")
def dead_letters_replay(job_id: int) -> None:
    """Put a dead job back in the queue with fresh attempts."""
    with _sessions().begin() as session:
        if not replay(session, job_id):
            typer.echo(f"Job {job_id} is not a dead letter.", err=True)
            raise typer.Exit(1)
    typer.echo(f"Job {job_id} queued again.")


def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, help="Jobs run at once (threads) with a broker.")
    ] = 4,
    sweep_seconds: Annotated[
        float,
        typer.Option(min=0.1, help="With a broker: how often overdue jobs are swept up."),
    ] = SWEEP_SECONDS,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run outbox jobs (mapping, deliveries) until stopped: for scaled-out deployments.

    Without `broker_url` it polls the database; with it, it consumes the broker's job
    messages and sweeps the outbox for what they missed. With `worker_runs_listeners` it
    also runs the MLLP listeners and the DICOM Storage SCP, sharing their ports."""
    from hub.jobs.dispatch import Sweeper, run_celery_worker, worker_app
    from hub.jobs.worker import JobWorker
    from hub.logs import configure_logging
    from hub.runtime import (
        BATCH_SIZES,
        ProtocolListeners,
        job_handlers,
        job_publisher,
        listeners_in_thread,
    )
    from hub.workflow.routing import use_routing_file

    # Until the job loop installs its own (Celery's, or _wait_for_signal's), a TERM unwinds
    # the start-up: the listeners stop and give their accepted folder back.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    settings = Settings()
    configure_logging(log_level, settings.log_format)
    use_routing_file(settings.routing_file)
    sessions = _sessions()
    job_worker = JobWorker(
        sessions,
        job_handlers(settings),
        lease_seconds=settings.job_lease_seconds,
        batch_sizes=BATCH_SIZES,
    )
    publisher = job_publisher(settings, sessions)
    with contextlib.ExitStack() as running:
        if publisher:  # closed last: what the listeners commit as they stop is announced
            running.callback(publisher.close)
        if settings.worker_runs_listeners:
            listeners = ProtocolListeners(
                settings,
                sessions,
                on_enqueued=publisher.nudge if publisher else job_worker.wake,
            )
            running.enter_context(listeners_in_thread(listeners))
        if settings.broker_url is None:
            job_worker.start()
            running.callback(job_worker.stop)
            _wait_for_signal()
            return
        sweeper = Sweeper(job_worker, sweep_seconds)
        sweeper.start()
        running.callback(sweeper.stop)
        exit_code = run_celery_worker(  # until SIGTERM or SIGINT (Celery's warm shutdown)
            worker_app(settings.broker_url, job_worker),
            concurrency=concurrency,
            hostname=f"hub-worker-{os.getpid()}@{socket.gethostname()}",
            log_level=log_level,
        )
        if exit_code:
            raise typer.Exit(exit_code)


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def _wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT."""
    stop = threading.Event()

    def _stop(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
