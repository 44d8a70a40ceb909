"""The outside PACS a hub pulls from (configuration, validated when it loads)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.dicomweb import DicomWebSource
from connectors.dimse import DimseSource


class DimsePullSource(DimseSource):
    """An outside DICOM node the hub pulls from, and how the instances come back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retrieve: Literal["c-get", "c-move"] = "c-get"
    """C-GET brings them on the query's association; C-MOVE sends them to the hub's Storage
    SCP (the PACS must know the hub's AE title, and reach its port)."""


class ImagingSources(BaseModel):
    """The outside PACS of the hub's configuration, by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dicomweb: list[DicomWebSource] = Field(default_factory=list)
    dimse: list[DimsePullSource] = Field(default_factory=list)

    def names(self) -> list[str]:
        return [s.name for s in self.dicomweb] + [s.name for s in self.dimse]
