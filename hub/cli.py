"""The `hub` command: serve, migrate, check configuration, run the demo."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from hub.config_check import check_config_file
from hub.settings import Settings
from hub.storage.db import make_engine
from hub.storage.migrate import upgrade

app = typer.Typer(help="Second-opinion integration hub.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    migrate: Annotated[bool, typer.Option(help="Upgrade the schema first.")] = True,
) -> None:
    """Run the hub's HTTP API (FHIR REST under /fhir)."""
    from hub.app import create_app

    settings = Settings()
    if migrate:
        upgrade(make_engine(settings.database_url))
    # uvicorn's access log prints query strings, which can hold PHI (?name=, ?identifier=).
    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        access_log=False,
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the schema migrations to the configured database."""
    settings = Settings()
    upgrade(make_engine(settings.database_url), revision)
    typer.echo(f"Database at revision {revision}.")


@config_app.command("check")
def config_check(
    path: Annotated[Path | None, typer.Argument(help="Configuration file.")] = None,
) -> None:
    """Validate a configuration file; print each problem with its line."""
    target = path or Settings().config_file
    problems = check_config_file(target)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{target}: OK")


@app.command()
def demo(
    exit_after: Annotated[bool, typer.Option("--exit", help="Stop once the case is open.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic patient.")] = 7,
) -> None:
    """Start the hub, load a synthetic patient, refer it as an outside EHR would."""
    from hub.demo.run import BackgroundServer, refer_synthetic_patient

    settings = Settings()
    upgrade(make_engine(settings.database_url))
    server = BackgroundServer(settings)
    server.start()
    try:
        case = refer_synthetic_patient(f"{server.url}/fhir", seed)
        typer.echo(f"Case opened: Task/{case.task_id} for ServiceRequest/{case.referral_id}")
        typer.echo(f"State: {case.status} ({case.business_status})")
        typer.echo(f"Record bundle: {case.record_bundle_url}")
        typer.echo("  " + ", ".join(f"{n} {t}" for t, n in case.record_bundle_counts.items()))
        if exit_after:
            return
        typer.echo(
            f"\nThe hub is serving at {server.url}/fhir (Ctrl-C stops it). Try:\n"
            f"  curl -s '{server.url}/fhir/Task/{case.task_id}'\n"
            f"  curl -s '{case.record_bundle_url}'"
        )
        while server.thread.is_alive():
            server.thread.join(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    sys.exit(0)
