"""DIMSE (PS3.7) with pynetdicom: a client of outside PACS (C-ECHO, C-FIND, C-MOVE,
C-GET) and the hub's Storage SCP.

from connectors.dimse import DimseClient, DimseSource, StorageScp, StorageScpConfig
"""

from __future__ import annotations

from connectors.dimse.client import DimseClient, GetResult, MoveResult, OnInstance
from connectors.dimse.config import DimseSource, DimseTimeouts, StorageScpConfig
from connectors.dimse.contexts import (
    COMMON_STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VL_WHOLE_SLIDE_MICROSCOPY,
    all_storage_sop_classes,
)
from connectors.dimse.errors import (
    AssociationFailed,
    AssociationLost,
    AssociationRejected,
    DimseError,
    QueryFailed,
    ScpStateError,
    ServiceNotAccepted,
    UnsendableInstance,
)
from connectors.dimse.received import (
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
    Staging,
)
from connectors.dimse.scp import InstanceHandler, ReleaseHandler, StorageScp

__all__ = [
    "COMMON_STORAGE_SOP_CLASSES",
    "OUT_OF_RESOURCES",
    "PROCESSING_FAILURE",
    "SUCCESS",
    "TRANSFER_SYNTAXES",
    "VL_WHOLE_SLIDE_MICROSCOPY",
    "AssociationFailed",
    "AssociationLost",
    "AssociationRejected",
    "DimseClient",
    "DimseError",
    "DimseSource",
    "DimseTimeouts",
    "GetResult",
    "InstanceHandler",
    "MoveResult",
    "OnInstance",
    "QueryFailed",
    "ReleaseHandler",
    "ScpStateError",
    "ServiceNotAccepted",
    "Staging",
    "StorageScp",
    "StorageScpConfig",
    "UnsendableInstance",
    "all_storage_sop_classes",
]
