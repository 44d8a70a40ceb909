"""Typed settings: config/hub.yaml, overridden by HUB_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from connectors.dimse import StorageScpConfig
from connectors.fhir_rest.config import FhirSource
from connectors.hl7v2_mllp import MllpListenerConfig
from hub.imaging.sources import ImagingSources
from hub.messages.outbound import MllpDestination
from hub.workflow.checklist import load_checklist
from hub.workflow.routing import load_routing
from hub.workflow.turnaround_config import TurnaroundSettings

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "config" / "hub.yaml"


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the `hub:` section of the YAML file named by HUB_CONFIG (default config/hub.yaml)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path.is_file():
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            self._data = dict(document.get("hub") or {})
            problems = secrets_in(self._data)
            if problems:
                raise ValueError(f"{path}: " + "; ".join(problems.values()))

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in self._data.items() if value is not None}


def secrets_in(section: dict[str, Any]) -> dict[str, str]:
    """Key → problem, for each secret written into the configuration file itself."""
    url = section.get("database_url")
    if isinstance(url, str) and make_url_password(url):
        return {
            "database_url": "the database password must come from HUB_DATABASE_URL "
            "(environment) or a file, not from the configuration file"
        }
    return {}


def make_url_password(url: str) -> str | None:
    try:
        return make_url(url).password
    except ArgumentError:
        return None


class TrustedIssuer(BaseModel):
    """An identity provider whose RFC 9068 JWT access tokens the hub accepts."""

    model_config = {"extra": "forbid"}

    issuer: str
    jwks_file: Path | None = None
    """A JSON Web Key Set file with the issuer's public keys."""
    jwks_url: str | None = None
    """Where to fetch the issuer's JWKS (cached); used when jwks_file is not set."""


class Settings(BaseSettings):
    """Everything the hub reads at start-up. Environment variables win over the YAML file."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="forbid")

    config_file: Path = Field(default=DEFAULT_CONFIG_FILE, alias="HUB_CONFIG")
    database_url: str = f"sqlite:///{REPO_ROOT / 'var' / 'hub.db'}"
    base_url: str | None = None
    """Public base of the FHIR API (https://hub.example.org/fhir); else from the request."""
    max_request_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    default_page_size: int = Field(default=50, gt=0)
    max_page_size: int = Field(default=500, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, gt=0, lt=65536)
    public_url: str | None = None
    """The hub's origin as clients reach it (https://hub.example.org); else http://host:port."""
    signing_key_file: Path = REPO_ROOT / "var" / "keys" / "hub-signing-key.json"
    """Private JWK the built-in authorization server signs tokens with; made if absent."""
    trusted_issuers: list[TrustedIssuer] = Field(default_factory=list)
    token_lifetime_seconds: int = Field(default=300, ge=60, le=3600)
    user_token_lifetime_seconds: int = Field(default=3600, ge=300, le=43200)
    """How long a person's token from the sign-in lasts: the length of a session on the
    pages (no refresh tokens; signing in again gives a new one)."""
    clock_skew_seconds: int = Field(default=60, ge=0, le=300)
    cors_origins: list[str] = Field(default_factory=list)
    """Web origins (e.g. https://viewer.hospital.example, an OHIF viewer) whose pages may
    call the API and the DICOMweb service from the browser. None by default."""
    viewer_url: str | None = None
    """A DICOMweb viewer's address for one study, `{study}` standing for its Study Instance
    UID (e.g. https://ohif.hospital.example/viewer?StudyInstanceUIDs={study}); the case
    page links each study to it. Without it the page gives the study's DICOMweb URL."""
    rate_limit_per_minute: int = Field(default=1200, gt=0)
    job_lease_seconds: float = Field(default=120.0, gt=0)
    """How long a claimed job is a worker's; after a crash it is retried when this runs out."""
    embedded_worker: bool = True
    """Run outbox jobs (mapping, deliveries) in the API process; off in API-only replicas."""
    # --- scale-out (issue #10) ---
    broker_url: str | None = None
    """A Celery broker (redis://host:6379/0 or amqp://...): the outbox's job ids are
    dispatched through it to `hub worker` processes. None: workers poll the database."""
    worker_runs_listeners: bool = False
    """`hub worker` also runs the MLLP listeners and the DICOM Storage SCP (several workers
    share each port, SO_REUSEPORT)."""
    # --- operations (issue #10) ---
    log_format: Literal["text", "json"] = "text"
    """json: one JSON object a line, with the correlation id of the message being handled."""
    message_retention_days: int | None = Field(default=None, gt=0)
    """Messages (and their ACKs) older than this are pruned from the log; None keeps all."""
    mllp_listeners: list[MllpListenerConfig] = Field(default_factory=list)
    """HL7 v2 MLLP listeners: name, host, port, allowed_senders, limits, optional TLS."""
    hl7_model_validation: bool = False
    """Validate each mapped HL7 v2 message's resources against the FHIR R4 models before
    they are stored. Off by default: the mapping tables' output is validated against the
    models by the test suite (every sample message variant and golden file), and every
    message's JSON types, required codes and references are still checked when stored."""
    hl7_batch_folder: Path | None = None
    dicom_store_dir: Path = REPO_ROOT / "var" / "dicom"
    """The content-addressed file store of DICOM instances (and its staging folder)."""
    imaging_sources: ImagingSources = Field(default_factory=ImagingSources)
    """Outside PACS the hub pulls a case's studies from: `dicomweb` (base_url, auth with
    the secret from an environment variable) and `dimse` (host, port, AE titles, c-get or
    c-move) lists."""
    max_media_bytes: int = Field(default=16 * 1024**3, gt=0)
    """The largest patient CD (zip) `POST /imaging/media` takes: a DVD holds 8.5 GB."""
    dicom_media_folder: Path | None = None
    """A watched folder for patient CDs: a zip or a copied CD folder dropped here is
    imported, then moved to done/ or failed/ with its report."""
    dicom_scp: StorageScpConfig | None = None
    """The hub's Storage SCP (AE title, host, port, allowed calling AEs): pushes from
    outside PACS and modalities, and the destination of the hub's C-MOVEs."""
    """A folder watched for HL7 batch files (FHS/BHS … BTS/FTS); done/ and failed/ beside."""
    mllp_destinations: list[MllpDestination] = Field(default_factory=list)
    """HL7 v2 peers the hub delivers to (opinions, status updates), by name."""
    fhir_sources: list[FhirSource] = Field(default_factory=list)
    """Outside FHIR servers the hub pulls a case's records from (and, with `write_back`,
    sends opinions to): base URL, auth (SMART Backend Services with the private key from a
    file or the environment, bearer, basic), strategy, queries, limits."""
    routing_file: Path = REPO_ROOT / "config" / "routing.yaml"
    """How a new case finds its program, urgency, due date and specialist."""
    checklist_file: Path = REPO_ROOT / "config" / "checklist.yaml"
    """What a case's records must hold before review, and who can fetch what is missing."""
    pull_missing_records: bool = True
    """A case missing required records pulls them from every configured FHIR and imaging
    source that can fetch them (once per source and case); off: only explicit pulls."""
    default_program: str = "oncology"
    """The program a new case belongs to until routing assigns one."""
    turnaround: TurnaroundSettings = Field(default_factory=TurnaroundSettings)
    """The business-day clock from records-complete to delivered: time zone, weekend,
    holidays, each program's promise (routine, urgent), the at-risk share."""

    @field_validator("routing_file", "checklist_file")
    @classmethod
    def _table_loads(cls, path: Path, info: ValidationInfo) -> Path:
        """A routing table or checklist that does not load fails at startup, not at the
        first case (and `hub config check` reports it)."""
        load = load_routing if info.field_name == "routing_file" else load_checklist
        try:
            load(path)
        except OSError as exc:
            raise ValueError(f"{path}: cannot be read: {exc.strerror}") from exc
        except (ValueError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return path

    @property
    def origin(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def issuer(self) -> str:
        """The built-in authorization server's issuer identifier."""
        return f"{self.origin}/auth"

    @property
    def token_url(self) -> str:
        return f"{self.issuer}/token"

    @property
    def audience(self) -> str:
        """The `aud` every access token must carry: the FHIR base URL."""
        return (self.base_url or f"{self.origin}/fhir").rstrip("/")

    @property
    def dicomweb_url(self) -> str:
        """The hub's own DICOMweb service (QIDO-RS, WADO-RS) for what it holds."""
        return f"{self.origin}/dicomweb"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        import os

        path = Path(os.environ.get("HUB_CONFIG", str(DEFAULT_CONFIG_FILE)))
        return (
            init_settings,
            env_settings,
            _YamlSource(settings_cls, path),
            file_secret_settings,
        )
