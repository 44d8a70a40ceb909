"""The exceptions of the DIMSE transport.

DIMSE statuses are outcomes, returned as values (`MoveResult.status`, the int a C-STORE
handler returns); these exceptions mean that an operation could not run at all. None of
them carries an identifier's content (PHI); AE titles, addresses and statuses are fine.

    DimseError
    ├── AssociationFailed ....... no association: the peer is unreachable, timed out, or
    │   │                         aborted during negotiation
    │   └── AssociationRejected . the peer refused the association (A-ASSOCIATE-RJ), e.g.
    │                             our calling AE title is not declared there
    ├── ServiceNotAccepted ...... the peer accepted the association but not the
    │                             presentation context the service needs
    ├── AssociationLost ......... the association ended before the final response
    ├── QueryFailed ............. a C-FIND ended with a failure status (`.status`)
    ├── UnsendableInstance ...... bytes to C-STORE that are not Part 10 DICOM (also
    │                             ValueError)
    └── ScpStateError ........... the Storage SCP is not in the state the call needs
"""

from __future__ import annotations


class DimseError(Exception):
    """Base of every exception of this package."""


class AssociationFailed(DimseError):
    """No association could be established with the peer."""


class AssociationRejected(AssociationFailed):
    """The peer sent A-ASSOCIATE-RJ; `reason` is pynetdicom's reading of it."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ServiceNotAccepted(DimseError):
    """The peer accepted none of the presentation contexts the service needs."""


class AssociationLost(DimseError):
    """The association was aborted or timed out before the final response arrived."""


class QueryFailed(DimseError):
    """A C-FIND answered with a failure status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class UnsendableInstance(DimseError, ValueError):
    """A payload to send that is not a Part 10 instance with its SOP class and transfer
    syntax."""


class ScpStateError(DimseError):
    """start() twice, or bound_port before start()."""
