"""What the HTTP connectors (DICOMweb, FHIR REST) share: auth from configuration with
secrets from the environment, timeouts, and one retrying request loop."""

from connectors.http.auth import BasicAuth, BearerAuth, MissingSecret, NoAuth, secret
from connectors.http.policy import HttpPeer, HttpRetry, HttpTimeouts
from connectors.http.session import RETRY_STATUSES, RetryingSession, Sleep

__all__ = [
    "RETRY_STATUSES",
    "BasicAuth",
    "BearerAuth",
    "HttpPeer",
    "HttpRetry",
    "HttpTimeouts",
    "MissingSecret",
    "NoAuth",
    "RetryingSession",
    "Sleep",
    "secret",
]
