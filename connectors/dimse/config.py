"""The configuration of a DIMSE peer (an outside PACS) and of the hub's Storage SCP."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# PS3.5 §6.2: an AE title is 1 to 16 characters of the default repertoire, no backslash
# or control characters; leading and trailing spaces are not significant.
_AE_TITLE = r"^[ -\[\]-~]{1,16}$"


def _ae_title(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("an AE title cannot be blank")
    return stripped


class DimseTimeouts(BaseModel):
    """Seconds: `connection` to open the TCP connection, `acse` for association
    negotiation and release, `dimse` for each DIMSE response (a C-MOVE sub-operation
    count counts as one), `network` for a silent connection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    connection: float = Field(default=10.0, gt=0)
    acse: float = Field(default=30.0, gt=0)
    dimse: float = Field(default=120.0, gt=0)
    network: float = Field(default=120.0, gt=0)


class DimseSource(BaseModel):
    """An outside DICOM node: where it listens, its AE title, and ours."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    called_ae: str = Field(pattern=_AE_TITLE)
    """The peer's AE title."""
    calling_ae: str = Field(pattern=_AE_TITLE)
    """Ours, as the peer has it declared."""
    max_pdu: int = Field(default=262_144, ge=0)
    """The largest PDU we accept (0: no limit)."""
    timeouts: DimseTimeouts = Field(default_factory=DimseTimeouts)

    _titles = field_validator("called_ae", "calling_ae")(_ae_title)


class StorageScpConfig(BaseModel):
    """The hub's Storage SCP: its AE title, where it listens and whom it serves."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ae_title: str = Field(pattern=_AE_TITLE)
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=0, le=65535)
    """0 lets the system choose a free port (see StorageScp.bound_port)."""
    allowed_calling_aes: list[str] = Field(default_factory=list)
    """Calling AE titles allowed to associate; empty allows any."""
    require_called_ae: bool = True
    """Refuse associations addressed to another AE title, as most PACS do."""
    max_pdu: int = Field(default=262_144, ge=0)
    max_associations: int = Field(default=10, ge=1)
    timeouts: DimseTimeouts = Field(default_factory=DimseTimeouts)
    stream_to_disk: bool = True
    """Have pynetdicom write each received dataset to a temporary file as it arrives
    instead of keeping it in memory (its process-wide STORE_RECV_CHUNKED_DATASET, set when
    the SCP starts; C-GET follows it too): a whole-slide image of hundreds of MB then
    never sits in memory. That file is made in the SCP's staging (the content store's), so
    the handler's move to where it belongs is a rename."""

    flush_before_success: bool = False
    """What a success status promises. Off (the default): the instance is written where the
    hub will index it from (in the page cache: a crash or kill -9 of the hub loses nothing),
    and flushed to disk with others a fraction of a second later, before it is indexed; an
    operating system crash or power cut in between can lose it, as it can in Orthanc,
    which does not flush the files it stores. A sender that must not lose what it deletes
    asks for Storage Commitment (PS3.4 Annex J), which is what that service is for. On: the
    file and its folder entry are flushed (fsync) before the answer, at the cost of that
    wait in every C-STORE's round trip."""
    poll_seconds: float = Field(default=0.005, ge=0.0001, le=0.1)
    """The longest an association's threads wait, with nothing to do, before they look at
    their timers (ARTIM, the network timeout) and at a release or an abort. They wake at
    once for what a C-STORE needs (data arriving, a DIMSE message decoded, a PDU to send),
    so this costs no throughput: only CPU, while an association stays open."""

    _title = field_validator("ae_title")(_ae_title)

    @field_validator("allowed_calling_aes")
    @classmethod
    def _titles(cls, values: list[str]) -> list[str]:
        return [_ae_title(value) for value in values]
