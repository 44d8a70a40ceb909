"""The three tables of the FHIR store: current resources, every version, and the search index."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ResourceRow(Base):
    """The current version of each resource (a deleted one keeps its row, flagged)."""

    __tablename__ = "fhir_resource"

    res_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    res_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    content: Mapped[str] = mapped_column(Text)
    written_by: Mapped[str | None] = mapped_column(String(255), nullable=True, index=True)
    """The client (token subject) that created the resource: a referrer reads what it sent."""


class ResourceVersionRow(Base):
    """Every version ever written, deletions included: the resource's full history."""

    __tablename__ = "fhir_resource_version"

    res_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    res_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_updated: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    method: Mapped[str] = mapped_column(String(8))
    content: Mapped[str] = mapped_column(Text)
    written_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """Who wrote this version (token subject), as Provenance and AuditEvent also record."""


class SearchIndexRow(Base):
    """One searchable value of the current version of a resource.

    token: system + value (code); string: value (normalised); reference: system = target
    type, value = target id; date: low (inclusive) and high (exclusive), naive UTC.
    """

    __tablename__ = "fhir_search_index"

    row_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    res_type: Mapped[str] = mapped_column(String(64))
    res_id: Mapped[str] = mapped_column(String(64))
    param: Mapped[str] = mapped_column(String(64))
    system: Mapped[str | None] = mapped_column(String(255), nullable=True)
    value: Mapped[str | None] = mapped_column(String(255), nullable=True)
    low: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)
    high: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)

    __table_args__ = (
        Index("ix_fhir_search_index_owner", "res_type", "res_id"),
        # value first: an equality lookup (identifier, code) must not scan a whole type.
        Index("ix_fhir_search_index_lookup", "value", "res_type", "param"),
        Index("ix_fhir_search_index_target", "param", "system", "value"),
        Index("ix_fhir_search_index_date", "res_type", "param", "low", "high"),
    )


class OAuthClientRow(Base):
    """A system client registered by hospital IT (`hub clients add`)."""

    __tablename__ = "oauth_client"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    roles: Mapped[str] = mapped_column(Text)
    """Space-separated roles: admin, referrer, case-manager, specialist."""
    scopes: Mapped[str] = mapped_column(Text)
    """Space-separated SMART scopes the client may be granted."""
    jwks: Mapped[str | None] = mapped_column(Text, nullable=True)
    jwks_url: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    fhir_user: Mapped[str | None] = mapped_column(String(255), nullable=True)
    programs: Mapped[str] = mapped_column(Text, default="")
    referrer_kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """For referrers: `clinician` (an EHR) or `family` (needs a guardian's consent)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class UsedAssertionRow(Base):
    """The `jti` of every client assertion accepted, so that a replay is refused."""

    __tablename__ = "oauth_used_assertion"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)


class MessageRow(Base):
    """The message log: every HL7 v2 message in or out, raw, with its ACK and its fate."""

    __tablename__ = "message_log"

    message_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    direction: Mapped[str] = mapped_column(String(3))
    """`in` or `out`."""
    channel: Mapped[str] = mapped_column(String(128))
    peer: Mapped[str] = mapped_column(String(255), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)
    sending_application: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sending_facility: Mapped[str | None] = mapped_column(String(255), nullable=True)
    control_id: Mapped[str | None] = mapped_column(String(199), nullable=True)
    message_type: Mapped[str] = mapped_column(String(32), default="", index=True)
    version: Mapped[str] = mapped_column(String(16), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    """in: accepted, mapped, failed, rejected; out: queued, delivered, failed, dead."""
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    ack: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    ack_code: Mapped[str | None] = mapped_column(String(2), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    report: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The conversion report (JSON): what was mapped, defaulted, or not mapped and why."""
    produced: Mapped[str | None] = mapped_column(Text, nullable=True)
    """JSON list of the references of the FHIR resources the message produced."""
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The id on every log line about this message, from receipt to the resources it made."""

    __table_args__ = (
        # Covering the metrics' count by type and outcome (hub.api.metrics_messages).
        Index("ix_message_log_counts", "direction", "message_type", "status", "ack_code"),
        # The same sender never has two messages with one control id (HL7 v2 §2.10.1):
        # a second arrival is a duplicate, re-ACKed and not processed again.
        Index(
            "uq_message_log_sender_control",
            "direction",
            "sending_application",
            "sending_facility",
            "control_id",
            unique=True,
        ),
    )


class JobRow(Base):
    """The transactional outbox: work to do after a commit (map a message, deliver one)."""

    __tablename__ = "job"

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(255))
    """What the job works on, e.g. the message id."""
    status: Mapped[str] = mapped_column(String(16))
    """pending, running, done, dead."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=8)
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    partition_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Jobs of one kind and key run one at a time, oldest first (hub.jobs.outbox); None
    for jobs that may run in any order, side by side."""

    __table_args__ = (
        Index("ix_job_due", "status", "run_after"),
        # The claim's test "is another job of this partition running or older?".
        Index("ix_job_partition", "kind", "partition_key", "status"),
        # The metrics' latency of recently finished jobs (hub.api.metrics_jobs).
        Index("ix_job_finished", "status", "updated_at", "kind"),
    )


class DicomTransferRow(Base):
    """One arrival of DICOM: a push association, a pull from a PACS, an uploaded CD. Its
    studies stay invisible until it is closed (complete), then they are attached or held."""

    __tablename__ = "dicom_transfer"

    transfer_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    """push (Storage SCP), pull (C-MOVE, C-GET, WADO-RS), media (DICOMDIR, zip)."""
    source: Mapped[str] = mapped_column(String(255))
    """The calling AE, the configured source's name, the uploaded file's name."""
    case_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    """open, closed, failed."""
    accepted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[str] = mapped_column(Text, default="[]")
    """JSON list, one entry per rejected file: its name and the reason."""
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)


class DicomStudyRow(Base):
    """A study the hub holds: which case it belongs to and whether it is attached to it."""

    __tablename__ = "dicom_study"

    study_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    """receiving, held (for a case manager), attached (ImagingStudy made), rejected."""
    case_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    """The hub's Patient the study was reconciled to."""
    outside_patient_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    outside_issuer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    hold_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    imaging_study_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_transfer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))


class DicomInstanceRow(Base):
    """One instance: the file as received and, once reconciled, the file the hub serves."""

    __tablename__ = "dicom_instance"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    received_digest: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The reconciled file's digest: set when the study is attached."""
    size: Mapped[int] = mapped_column(BigInteger)
    info: Mapped[str] = mapped_column(Text)
    """The instance's InstanceInfo (JSON): what QIDO-RS and the ImagingStudy are made from."""
    transfer_id: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))


class RecordPullRow(Base):
    """A case's records at one outside FHIR source: where the patient is there, how the
    last pull went and what it could not bring (its report)."""

    __tablename__ = "record_pull"
    __table_args__ = (UniqueConstraint("case_task_id", "source", name="uq_record_pull_case"),)

    pull_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_task_id: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    """queued, complete, incomplete (stored, with what is missing reported), held (the
    patient is ambiguous at the source: a case manager chooses), not-found, failed."""
    source_patient_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    since: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """The source's time at the start of the last complete pull: the next one asks only for
    what changed after it (_lastUpdated, _since)."""
    stored: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    report: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))


class OpinionDeliveryRow(Base):
    """One signed version of an opinion on its way to the referrer by one channel: the
    case is opinion-delivered once every delivery of the version is confirmed."""

    __tablename__ = "opinion_delivery"
    __table_args__ = (
        UniqueConstraint(
            "report_id", "report_version", "channel", "target", name="uq_opinion_delivery"
        ),
    )

    delivery_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    report_id: Mapped[str] = mapped_column(String(64), index=True)
    report_version: Mapped[int] = mapped_column(Integer)
    case_task_id: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(8))
    """fhir (write-back to a FHIR source) or hl7 (MDM^T02 / ORU^R01 over MLLP)."""
    target: Mapped[str] = mapped_column(String(64))
    """The FHIR source's or MLLP destination's name."""
    message_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    """The outbound message (hl7)."""
    status: Mapped[str] = mapped_column(String(16))
    """queued, delivered."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)


class UserRow(Base):
    """A person who signs in to the pages (`hub users add`): a specialist, a case manager,
    a hospital IT admin. Only a hash of the password is kept."""

    __tablename__ = "hub_user"
    __table_args__ = (UniqueConstraint("username", name="uq_hub_user_username"),)

    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """Short, random, never reused: the `sub` of the person's tokens and the audit trail's
    who."""
    username: Mapped[str] = mapped_column(String(128))
    """Stored lower-case: names are matched case-insensitively."""
    display_name: Mapped[str] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(String(255))
    """Argon2id, in its PHC string form (parameters and salt included)."""
    roles: Mapped[str] = mapped_column(Text)
    """Space-separated roles: admin, case-manager, specialist."""
    scopes: Mapped[str] = mapped_column(Text)
    """Space-separated SMART scopes the person's tokens may carry (at most)."""
    fhir_user: Mapped[str | None] = mapped_column(String(255), nullable=True)
    """Practitioner/123 for a specialist: the cases assigned to that Practitioner."""
    programs: Mapped[str] = mapped_column(Text, default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=False))
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    """Wrong passwords in a row since the last sign-in or lock."""
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)


class AuthorizationCodeRow(Base):
    """An authorization code issued at sign-in (RFC 6749 §4.1.2), kept for its one
    exchange at the token endpoint. Only a hash of the code is kept, so that a read of the
    table gives nothing to exchange."""

    __tablename__ = "hub_authorization_code"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the code, hex."""
    client_id: Mapped[str] = mapped_column(String(128))
    redirect_uri: Mapped[str] = mapped_column(String(1024))
    user_id: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(Text)
    """The scopes granted: the requested ones narrowed to the person's."""
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=False), index=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
