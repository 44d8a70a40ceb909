"""The configuration of one outside FHIR server (hub.yaml `fhir_sources`), validated when
it loads. Secrets never sit in it: the private key comes from a file or an environment
variable, a password or token from an environment variable."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.http import BasicAuth, BearerAuth, HttpPeer, HttpRetry, NoAuth, secret
from connectors.http.auth import ENV_NAME

DEFAULT_QUERIES = (
    "Condition?patient={patient}",
    "Observation?patient={patient}&category=laboratory",
    "Observation?patient={patient}&category=vital-signs",
    "DiagnosticReport?patient={patient}",
    "DocumentReference?patient={patient}",
    "ImagingStudy?patient={patient}",
    "Procedure?patient={patient}",
    "MedicationRequest?patient={patient}",
    "MedicationAdministration?patient={patient}",
    "AllergyIntolerance?patient={patient}",
    "CarePlan?patient={patient}",
    "Encounter?patient={patient}",
    "RelatedPerson?patient={patient}",
    "Coverage?patient={patient}",
)
"""The query set of a source without `Patient/$everything`: the record a second opinion
needs, with the encounters, the guardian and the insurance."""


class SmartBackendAuth(BaseModel):
    """SMART Backend Services: client_credentials with a signed private_key_jwt assertion.

    The private key (a JWK or PEM, RSA for RS384 or EC P-384 for ES384) is read from
    `private_key_file` or from the environment variable `private_key_env`. `token_url` is
    discovered from the source's .well-known/smart-configuration when not given.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["smart-backend"] = "smart-backend"
    client_id: str = Field(min_length=1)
    private_key_file: Path | None = None
    private_key_env: str | None = Field(default=None, pattern=ENV_NAME)
    scope: str = "system/*.rs"
    token_url: str | None = None
    renew_before_seconds: float = Field(default=60.0, ge=0)
    """A cached token is renewed this long before it expires."""

    @model_validator(mode="after")
    def _one_key_source(self) -> SmartBackendAuth:
        if (self.private_key_file is None) == (self.private_key_env is None):
            raise ValueError("set exactly one of private_key_file and private_key_env")
        return self

    def private_key(self, source: str, environ: Mapping[str, str]) -> dict[str, Any] | str:
        """The private key as a JWK (dict) or PEM text."""
        if self.private_key_env is not None:
            text = secret(source, self.private_key_env, environ)
        else:
            assert self.private_key_file is not None
            text = self.private_key_file.read_text(encoding="utf-8")
        stripped = text.strip()
        if stripped.startswith("{"):
            key: dict[str, Any] = json.loads(stripped)
            return key
        return stripped

    def describe(self) -> str:
        return f"the client id {self.client_id!r} and its registered public key"


FhirAuth = Annotated[
    NoAuth | BasicAuth | BearerAuth | SmartBackendAuth, Field(discriminator="type")
]


class FhirWriteBack(BaseModel):
    """How the opinion goes back to this source when it is the referrer's own server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    update_task: bool = True
    """Complete the referrer's Task for the referral (found by the referral's identifier)
    and point its output at the opinion."""
    notify: bool = True
    """Also create a Communication telling the referrer the opinion is there."""
    referrers: tuple[str, ...] = ()
    """The hub clients (token subjects) whose referrals this server is the way back for:
    their finished opinions are written back here by themselves."""


class FhirSource(HttpPeer):
    """One outside FHIR R4 server: where, how to authenticate, what to ask, how fast."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    auth: FhirAuth = Field(default_factory=NoAuth)
    strategy: Literal["auto", "everything", "queries", "bulk-export"] = "auto"
    """auto: Patient/$everything when the CapabilityStatement offers it, else `queries`;
    bulk-export: a patient-level Bulk Data $export (for sources that prefer it)."""
    queries: tuple[str, ...] = DEFAULT_QUERIES
    """Searches for a patient's records; {patient} is the patient's id at the source."""
    page_size: int = Field(default=200, ge=1, le=1000)
    requests_per_second: float | None = Field(default=None, gt=0)
    """At most this many requests a second to the source (a leaky bucket); none: no cap."""
    retry: HttpRetry = Field(default_factory=lambda: HttpRetry(retry_server_errors=True))
    fetch_attachments: bool = True
    """Fetch each attachment a pulled resource points to and store it as a hub Binary."""
    max_attachment_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_reference_lookups: int = Field(default=500, ge=0)
    """Referenced resources outside the pulled set are read one by one, up to this many."""
    export_poll_seconds: float = Field(default=2.0, gt=0)
    """Wait between two Bulk Data status polls when the source gives no Retry-After."""
    export_timeout_seconds: float = Field(default=3600.0, gt=0)
    write_back: FhirWriteBack | None = None
    """Set when the hub writes opinions back to this source."""

    @field_validator("queries")
    @classmethod
    def _patient_queries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for query in value:
            resource_type, _, params = query.partition("?")
            if not resource_type.isalpha() or "{patient}" not in params:
                raise ValueError(f"{query!r}: expected Type?param={{patient}}&…")
        return value
