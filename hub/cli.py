"""The `hub` command: serve, migrate, check configuration, run the demo, manage clients
and the people who sign in."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import uvicorn
from sqlalchemy.orm import Session

from hub import logs as hub_logs
from hub.cli_messages import dead_letters_app, messages_app, worker
from hub.config_check import check_config_file
from hub.errors import HubError, InvalidRequest
from hub.security.authorization_server import issue_token
from hub.security.clients import ClientRegistry, RegisteredClient, check_grants
from hub.security.users import DEFAULT_SCOPES, UserDirectory, generate_password
from hub.settings import REPO_ROOT, Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade

app = typer.Typer(help="Second-opinion integration hub.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(messages_app, name="messages")
app.add_typer(dead_letters_app, name="dead-letters")
app.command("worker")(worker)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    migrate: Annotated[bool, typer.Option(help="Upgrade the schema first.")] = True,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Run the hub's HTTP API (FHIR REST under /fhir)."""
    from hub.app import create_app

    settings = Settings()
    overrides = {"host": host, "port": port}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if migrate:
        upgrade(make_engine(settings.database_url))
    configure_logging(log_level, settings.log_format)
    # uvicorn's access log prints query strings, which can hold PHI (?name=, ?identifier=):
    # the hub logs each request itself, by route template (hub.api.middleware).
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
    )


def configure_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    """One line per event on standard error, as text or JSON (the `log_format` setting),
    each with its correlation id; never a resource, a query string or a name."""
    hub_logs.configure_logging(level, log_format)


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
    from hub.demo.people import DEMO_PEOPLE, ensure_people, routing_with_pools, specialists_pools
    from hub.demo.run import BackgroundServer, refer_synthetic_patient

    settings = Settings()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with make_session_factory(engine).begin() as session:
        people = ensure_people(session, DEMO_PEOPLE)
    engine.dispose()
    # The demo's specialist works every program, so routing gives the case to them.
    routing = routing_with_pools(
        specialists_pools(DEMO_PEOPLE, people), REPO_ROOT / "var" / "demo-routing.yaml"
    )
    settings = settings.model_copy(update={"routing_file": routing})
    server = BackgroundServer(settings)
    server.start()
    try:
        case = refer_synthetic_patient(settings, seed)
        typer.echo(f"Case opened: Task/{case.task_id} for ServiceRequest/{case.referral_id}")
        typer.echo(f"State: {case.status} ({case.business_status})")
        typer.echo(f"Record bundle: {case.record_bundle_url}")
        typer.echo("  " + ", ".join(f"{n} {t}" for t, n in case.record_bundle_counts.items()))
        typer.echo(f"\nThe web pages: {server.url}/ui/ — sign in as (passwords new each run):")
        for person in people:
            typer.echo(
                f"  {person.role:<13} {person.username:<18} {person.password}  "
                f"({person.display_name})"
            )
        if exit_after:
            return
        token = (
            ".venv/bin/hub token issue --subject demo-case-manager --role case-manager "
            "--program oncology --scope 'user/*.cruds'"
        )
        auth = "Authorization: Bearer $TOKEN"
        typer.echo(
            f"\nThe hub is serving at {server.url}/fhir (Ctrl-C stops it). Every call needs a "
            f"token; as the program's case manager (tokens last "
            f"{settings.token_lifetime_seconds} s):\n"
            f"  export TOKEN=$({token})\n"
            f"  curl -s -H \"{auth}\" '{server.url}/fhir/Task/{case.task_id}'\n"
            f"  curl -s -H \"{auth}\" '{case.record_bundle_url}'"
        )
        while server.thread.is_alive():
            server.thread.join(timeout=1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    sys.exit(0)


# --- The built-in authorization server: system clients and operator-issued tokens. ---

clients_app = typer.Typer(
    help="System clients (SMART Backend Services) of the built-in authorization server.",
    no_args_is_help=True,
)
token_app = typer.Typer(help="Access tokens signed by the hub's key.", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
app.add_typer(token_app, name="token")

RoleOption = Annotated[
    list[str], typer.Option("--role", help="admin, referrer, case-manager or specialist.")
]
ScopeOption = Annotated[
    str, typer.Option("--scope", help='SMART scopes, space separated: "user/Task.rs ...".')
]
FhirUserOption = Annotated[
    str | None, typer.Option("--fhir-user", help="The caller's resource: Practitioner/123.")
]
ProgramOption = Annotated[
    list[str] | None, typer.Option("--program", help="A program whose cases it works.")
]
ReferrerKindOption = Annotated[
    str | None, typer.Option("--referrer-kind", help="For referrers: clinician or family.")
]


@contextmanager
def _database() -> Iterator[Session]:
    """A session on the configured database (migrated first); committed on success, and a
    refusal (HubError) printed with exit status 1."""
    engine = make_engine(Settings().database_url)
    try:
        upgrade(engine)
        with make_session_factory(engine)() as session:
            yield session
            session.commit()
    except HubError as exc:
        typer.echo(f"Refused: {exc.diagnostics}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()


@contextmanager
def _client_registry() -> Iterator[ClientRegistry]:
    """The registry on the configured database (migrated first); committed on success."""
    with _database() as session:
        yield ClientRegistry(session)


@clients_app.command("add")
def clients_add(
    client_id: Annotated[str, typer.Argument(help="The client id (its assertions' iss/sub).")],
    name: Annotated[str, typer.Option("--name", help="Who the client is.")],
    role: RoleOption,
    scope: ScopeOption,
    jwks_file: Annotated[
        Path | None, typer.Option("--jwks-file", help="The client's public JWKS (JSON).")
    ] = None,
    jwks_url: Annotated[
        str | None, typer.Option("--jwks-url", help="Where the client publishes its JWKS.")
    ] = None,
    fhir_user: FhirUserOption = None,
    program: ProgramOption = None,
    referrer_kind: ReferrerKindOption = None,
) -> None:
    """Register a system client that authenticates with a JWT signed by its own key."""
    jwks = _read_jwks(jwks_file) if jwks_file is not None else None
    with _client_registry() as registry:
        client = registry.add(
            client_id,
            name=name,
            roles=role,
            scopes=scope,
            jwks=jwks,
            jwks_url=jwks_url,
            fhir_user=fhir_user,
            programs=program or (),
            referrer_kind=referrer_kind,
        )
    typer.echo(
        f"Registered {client.client_id}: roles {' '.join(sorted(client.roles))}; "
        f"scopes {client.scopes}"
    )


@clients_app.command("list")
def clients_list() -> None:
    """Every registered client: id, status, roles, scopes, name."""
    with _client_registry() as registry:
        for row in registry.list():
            status = "disabled" if row.disabled else "enabled"
            typer.echo(f"{row.client_id}\t{status}\t{row.roles}\t{row.scopes}\t{row.name}")


@clients_app.command("disable")
def clients_disable(client_id: Annotated[str, typer.Argument(help="The client id.")]) -> None:
    """Stop issuing tokens to a client (tokens already issued run out by themselves)."""
    with _client_registry() as registry:
        found = registry.disable(client_id)
    if not found:
        typer.echo(f"There is no client {client_id}.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Disabled {client_id}.")


@token_app.command("issue")
def token_issue(
    subject: Annotated[str, typer.Option("--subject", help="The person: the token's sub.")],
    role: RoleOption,
    scope: ScopeOption,
    fhir_user: FhirUserOption = None,
    program: ProgramOption = None,
    referrer_kind: ReferrerKindOption = None,
) -> None:
    """Print an access token for a person (a specialist, a case manager), signed by the hub.

    An operator's tool for scripts and tests; people sign in at /ui/login (`hub users add`).

    Whoever can run it can mint any token: it reads the hub's private key.

    Systems do not use it: they register with `hub clients add` and ask POST /auth/token.

    The token lasts token_lifetime_seconds; its sub is --subject, its client_id hub-cli.
    """
    programs = frozenset(program or ())
    try:
        if not subject.strip():
            raise InvalidRequest("The subject must not be empty.")
        check_grants(
            frozenset(role),
            scope,
            fhir_user=fhir_user,
            programs=programs,
            referrer_kind=referrer_kind,
        )
        person = RegisteredClient(
            client_id="hub-cli",
            name="hub token issue",
            roles=frozenset(role),
            scopes=scope,
            fhir_user=fhir_user,
            programs=programs,
            referrer_kind=referrer_kind,
        )
        typer.echo(issue_token(Settings(), person, scope, subject=subject))
    except HubError as exc:
        typer.echo(f"Refused: {exc.diagnostics}", err=True)
        raise typer.Exit(1) from exc


def _read_jwks(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        typer.echo(f"Cannot read a JWKS from {path}: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not isinstance(document, dict):
        typer.echo(f'{path} is not a JWKS: expected {{"keys": [...]}}.', err=True)
        raise typer.Exit(1)
    return document


# --- People who sign in to the pages (authorization code grant at /auth/authorize). ---

users_app = typer.Typer(
    help="People who sign in to the pages: specialists, case managers, hospital IT admins.",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")

_DEFAULTS = "; ".join(f"{role}: {' '.join(scopes)}" for role, scopes in DEFAULT_SCOPES.items())
UsernameArgument = Annotated[str, typer.Argument(help="The name they sign in with (any case).")]
PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from standard input (one line) rather than generate one.",
    ),
]


@users_app.command("add")
def users_add(
    username: UsernameArgument,
    name: Annotated[str, typer.Option("--name", help="Their full name, as pages show it.")],
    role: Annotated[list[str], typer.Option("--role", help="specialist, case-manager or admin.")],
    fhir_user: FhirUserOption = None,
    program: ProgramOption = None,
    scope: Annotated[
        str | None,
        typer.Option("--scope", help=f"SMART scopes instead of the roles' ({_DEFAULTS})."),
    ] = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Add a person who signs in with a user name and a password.

    A specialist needs --fhir-user Practitioner/<id> (their cases are those assigned to it);
    a case manager needs at least one --program.

    Without --password-stdin a strong password is generated and printed once.
    """
    password = _read_password() if password_stdin else generate_password()
    with _database() as session:
        person = UserDirectory(session).add(
            username,
            display_name=name,
            roles=role,
            password=password,
            scopes=scope,
            fhir_user=fhir_user,
            programs=program or (),
        )
    typer.echo(
        f"Added {person.username} (user id {person.user_id}): roles "
        f"{' '.join(sorted(person.roles))}; scopes {person.scopes}"
    )
    if not password_stdin:
        typer.echo(f"Password (shown once, not stored): {password}")


@users_app.command("list")
def users_list() -> None:
    """Every person: user name, user id, status, roles, scopes, fhirUser, programs, name."""
    now = datetime.now(UTC).replace(tzinfo=None)
    with _database() as session:
        for row in UserDirectory(session).list():
            locked = row.locked_until is not None and row.locked_until > now
            status = "disabled" if row.disabled else ("locked" if locked else "enabled")
            fields = (row.username, row.user_id, status, row.roles, row.scopes)
            extra = (row.fhir_user or "-", row.programs or "-", row.display_name)
            typer.echo("\t".join((*fields, *extra)))


@users_app.command("disable")
def users_disable(username: UsernameArgument) -> None:
    """Refuse a person's sign-ins from now on (a token already issued runs out by itself)."""
    with _database() as session:
        found = UserDirectory(session).disable(username)
    if not found:
        typer.echo(f"There is no user {username}.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Disabled {username.strip().lower()}.")


@users_app.command("enable")
def users_enable(username: UsernameArgument) -> None:
    """Allow a disabled person to sign in again."""
    with _database() as session:
        found = UserDirectory(session).disable(username, disabled=False)
    if not found:
        typer.echo(f"There is no user {username}.", err=True)
        raise typer.Exit(1)
    typer.echo(f"Enabled {username.strip().lower()}.")


@users_app.command("set-password")
def users_set_password(
    username: UsernameArgument, password_stdin: PasswordStdinOption = False
) -> None:
    """Give a person a new password (and lift a lock after wrong passwords).

    Without --password-stdin a strong password is generated and printed once.
    """
    password = _read_password() if password_stdin else generate_password()
    with _database() as session:
        found = UserDirectory(session).set_password(username, password)
    if not found:
        typer.echo(f"There is no user {username}.", err=True)
        raise typer.Exit(1)
    typer.echo(f"New password set for {username.strip().lower()}.")
    if not password_stdin:
        typer.echo(f"Password (shown once, not stored): {password}")


def _read_password() -> str:
    """One line of standard input without its line end (a password may hold spaces)."""
    return sys.stdin.readline().rstrip("\r\n")


@app.command("validate")
def validate_file(
    path: Annotated[Path, typer.Argument(help="A FHIR R4 JSON file: a Bundle or any resource.")],
) -> None:
    """Validate a FHIR JSON file against FHIR R4 and the hub's profiles; print each issue
    (severity, expression, diagnostics). Exit 0 if valid, 1 if not, 2 if unreadable."""
    from hub.fhir.validation import parse_json
    from hub.profiles import is_valid, outcome, validate_content

    try:
        content = parse_json(path.read_bytes())
    except OSError as exc:
        typer.echo(f"Cannot read {path}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from exc
    except InvalidRequest as exc:
        typer.echo(f"{path}: {exc.diagnostics}", err=True)
        raise typer.Exit(2) from exc
    if not isinstance(content, dict) or not isinstance(content.get("resourceType"), str):
        typer.echo(f"{path}: not a FHIR resource (a JSON object with a resourceType).", err=True)
        raise typer.Exit(2)
    issues = validate_content(content)
    for issue in outcome(issues)["issue"]:
        where = ", ".join(issue.get("expression", [])) or "-"
        typer.echo(f"{issue['severity']}  {where}  {issue['diagnostics']}")
    raise typer.Exit(0 if is_valid(issues) else 1)
