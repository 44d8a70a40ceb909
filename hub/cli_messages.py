"""`hub messages`, `hub dead-letters` and `hub worker`: hospital IT's tools at the console."""

from __future__ import annotations

import json
import signal
import time
from typing import Annotated

import typer
from sqlalchemy.orm import Session, sessionmaker

from hub.jobs.outbox import dead_letters, replay
from hub.messages.log import (
    MessageQuery,
    detail,
    get_message,
    replay_message,
    search_messages,
    summary,
)
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


def worker() -> None:
    """Run outbox jobs (mapping, deliveries) until stopped: for scaled-out deployments."""
    from hub.jobs.worker import JobWorker
    from hub.runtime import BATCH_SIZES, job_handlers
    from hub.workflow.routing import use_routing_file

    settings = Settings()
    use_routing_file(settings.routing_file)
    job_worker = JobWorker(
        _sessions(),
        job_handlers(settings),
        lease_seconds=settings.job_lease_seconds,
        batch_sizes=BATCH_SIZES,
    )
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop:
        if not job_worker.run_once():
            time.sleep(job_worker.poll_seconds)
