"""What the DICOMweb client reports: instances it retrieved, and how a STOW-RS went."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from connectors.base import DeliveryResult


@dataclass(frozen=True)
class RetrievedInstance:
    """One instance streamed to a staged file and handed to `on_instance`.

    The UIDs come from the file's header, read before the hand-over; they are None when the
    part was not readable DICOM (the caller's validation will say why).
    """

    path: Path
    """Where it was staged; `on_instance` may have moved it since."""
    size: int
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None
    study_instance_uid: str | None = None


@dataclass(frozen=True)
class RetrieveResult:
    """A WADO-RS retrieve that ran to its closing delimiter."""

    instances: tuple[RetrievedInstance, ...] = ()

    @property
    def bytes_received(self) -> int:
        return sum(instance.size for instance in self.instances)


@dataclass(frozen=True)
class StowFailure:
    """One instance the peer refused, from the STOW-RS FailedSOPSequence (0008,1198)."""

    sop_class_uid: str | None
    sop_instance_uid: str | None
    failure_reason: int | None
    """(0008,1197): 0xA700 out of resources, 0xA900 data set does not match SOP class,
    0xC000 cannot understand, 0x0110 processing failure, 0x0122 SOP class not supported,
    0xA770/0xA7xx as the peer defines (PS3.18 Table I.2-3 / PS3.4 B.2.3); None when the
    peer gave none (it refused the whole request, or did not mention the instance)."""
    path: Path | None = None
    """The file sent, when the instance was sent from one."""

    @property
    def retryable(self) -> bool:
        """Out of resources (0xA7xx) may pass later; the other reasons are about content."""
        return self.failure_reason is not None and (self.failure_reason & 0xFF00) == 0xA700


@dataclass(frozen=True)
class StowResult(DeliveryResult):
    """A STOW-RS delivery: the DeliveryResult, and which instances went where.

    `accepted` is True only when every instance was stored. `unsent` lists the files of
    requests that got no per-instance answer (an HTTP error or no connection after every
    retry): sending them again may help.
    """

    stored: tuple[str, ...] = ()
    """SOP Instance UIDs of the ReferencedSOPSequence (0008,1199)."""
    failed: tuple[StowFailure, ...] = ()
    unsent: tuple[Path, ...] = field(default_factory=tuple)
