"""The exceptions of the FHIR REST transport.

    FhirSourceError
    ├── FhirHttpError ........... an HTTP status the call cannot use (after retries for 429,
    │   │                         503 and, for reads, other 5xx); `.status_code`, and
    │   │                         `.outcome` (the diagnostics of the source's OperationOutcome)
    │   ├── FhirAuthError ....... 401 or 403: the source refused our credentials or access
    │   ├── FhirNotFound ........ 404
    │   └── FhirGone ............ 410: deleted at the source
    ├── FhirUnavailable ......... no answer (refused, reset, timed out) on every attempt
    ├── FhirProtocolError ....... an answer that is not FHIR JSON (a broken page, after
    │                             retries), or not what the interaction returns
    ├── TokenError .............. the token endpoint refused us, or could not be found
    └── ExportFailed ............ a Bulk Data export the source ended with an error

A source whose secret is missing raises connectors.http.MissingSecret. Messages name the
source and the interaction, never a query string (it holds patient identifiers).
"""

from __future__ import annotations


class FhirSourceError(Exception):
    """Base of every exception of this package."""


class FhirHttpError(FhirSourceError):
    def __init__(self, message: str, status_code: int, outcome: str = "") -> None:
        super().__init__(f"{message}: {outcome}" if outcome else message)
        self.status_code = status_code
        self.outcome = outcome


class FhirAuthError(FhirHttpError):
    """401 or 403."""


class FhirNotFound(FhirHttpError):
    """404."""


class FhirGone(FhirHttpError):
    """410."""


class FhirUnavailable(FhirSourceError):
    """No answer on any attempt."""


class FhirProtocolError(FhirSourceError):
    """Not FHIR JSON, or not the expected resource."""


class TokenError(FhirSourceError):
    """The SMART token endpoint refused the client, or none could be discovered."""


class ExportFailed(FhirSourceError):
    """The source ended a Bulk Data export with an error."""
