"""The three tables of the FHIR store: current resources, every version, and the search index."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Text,
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
        Index("ix_fhir_search_index_value", "res_type", "param", "value"),
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
