"""The authorization endpoint: a person signs in, the client gets an authorization code.

Two steps, each answered with a value the HTTP layer turns into a page or a redirect:
`authorization_prompt` checks an authorize request (RFC 6749 §4.1.1) before anything is
asked of the person; `authorization_sign_in` checks it again (its parameters come back as
hidden fields), then the user name and password, and issues the code.

Where errors go (RFC 6749 §4.1.2.1): an unknown client or a redirect URI that is not the
client's is shown to the person and never followed (`RequestRefused`); every other error is
sent back to the client's redirect URI (`RedirectToClient` with error=...). Every sign-in
attempt is audited (DICOM "User Authentication" / "Login"), successful or not; the password
never is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc6749 import (
    AuthorizationCodeGrant,
    InsecureTransportError,
    InvalidScopeError,
    OAuth2Error,
)
from sqlalchemy.orm import Session, sessionmaker

from hub import codes
from hub.fhir.dates import instant, utc_now
from hub.security.audit import MINOR_FAILURE, SOURCE_TYPE, SUCCESS, write_audit_event
from hub.security.authorization_server import HubAuthorizationServer
from hub.security.scopes import narrow
from hub.security.users import LOCKOUT, SignedIn, SignInFailure, SignInResult, UserDirectory
from hub.settings import Settings
from hub.storage.repository import ResourceRepository

OAUTH_PARAMETERS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)
"""What the sign-in form carries from the authorize request to its POST."""

DICOM = "http://dicom.nema.org/resources/ontology/DCM"
USER_ID_SYSTEM = f"{codes.CANONICAL_BASE}/sid/user"
USER_NAME_HASH_SYSTEM = f"{codes.CANONICAL_BASE}/sid/user-name-sha256"

WRONG_CREDENTIALS = "The user name or the password is not right."
LOCKED = (
    f"Too many wrong passwords: this account is locked for {LOCKOUT.seconds // 60} minutes. "
    "Try again later, or ask hospital IT to set a new password."
)
DISABLED = "This account is disabled. Ask hospital IT if you still need it."
MESSAGES = {
    SignInFailure.UNKNOWN_USER: WRONG_CREDENTIALS,
    SignInFailure.WRONG_PASSWORD: WRONG_CREDENTIALS,
    SignInFailure.LOCKED: LOCKED,
    SignInFailure.DISABLED: DISABLED,
}


@dataclass(frozen=True)
class ShowSignIn:
    """A valid request: ask for the user name and password (again, with `message`)."""

    parameters: list[tuple[str, str]]
    """The OAuth parameters, for the form's hidden fields."""
    username: str = ""
    message: str | None = None

    @property
    def refused(self) -> bool:
        return self.message is not None


@dataclass(frozen=True)
class RedirectToClient:
    """Send the browser to the client: with the code, or with an RFC 6749 error."""

    location: str


@dataclass(frozen=True)
class RequestRefused:
    """An error the client cannot be told of safely: shown on a page, never redirected."""

    error: str
    description: str


AuthorizeOutcome = ShowSignIn | RedirectToClient | RequestRefused


def authorization_prompt(
    settings: Settings,
    sessions: sessionmaker[Session],
    base_url: str,
    query: list[tuple[str, str]],
) -> AuthorizeOutcome:
    """GET /auth/authorize: the sign-in form if the request is valid (blocking: DB)."""
    with sessions() as session:
        server = HubAuthorizationServer(settings, session, base_url=base_url)
        try:
            server.get_consent_grant(server.authorization_request("GET", query))
        except OAuth2Error as error:
            return _error_outcome(error, settings)
    return ShowSignIn(_carried(query))


def authorization_sign_in(
    settings: Settings,
    sessions: sessionmaker[Session],
    base_url: str,
    form: list[tuple[str, str]],
    address: str | None,
) -> AuthorizeOutcome:
    """POST /auth/authorize: the request checked again, then the password; the code."""
    fields = {name: value for name, value in form if name in ("username", "password")}
    username, password = fields.get("username", ""), fields.get("password", "")
    parameters = _carried(form)
    with sessions() as session:
        server = HubAuthorizationServer(settings, session, base_url=base_url)
        try:
            request = server.authorization_request("POST", parameters)
            grant: AuthorizationCodeGrant = server.get_consent_grant(request)
        except OAuth2Error as error:
            return _error_outcome(error, settings)
        result = UserDirectory(session).sign_in(username, password)
        repository = ResourceRepository(session)
        write_audit_event(repository, sign_in_event(result, username, address))
        session.commit()
        if not isinstance(result, SignedIn):
            return ShowSignIn(parameters, username.strip(), MESSAGES[result.reason])
        person = result.person
        granted = narrow(request.payload.scope or person.scopes, person.scopes)
        try:
            if not granted:
                raise InvalidScopeError(
                    "None of the requested scopes is one this person may be granted.",
                    redirect_uri=grant.redirect_uri,
                    state=request.payload.state,
                )
            request.scope = granted
            _, _, headers = grant.create_authorization_response(grant.redirect_uri, person)
        except OAuth2Error as error:
            return _error_outcome(error, settings)
        session.commit()
    return RedirectToClient(dict(headers)["Location"])


def sign_in_event(result: SignInResult, username: str, address: str | None) -> dict[str, Any]:
    """The AuditEvent of one sign-in attempt (DICOM 110114 User Authentication, 110122
    Login): who, from where, and how it ended. Never the password."""
    person = result.person
    if person is not None:
        who: dict[str, Any] = {
            "identifier": {"system": USER_ID_SYSTEM, "value": person.user_id},
            "display": person.username,
        }
        if person.fhir_user:
            who["reference"] = person.fhir_user
    else:
        # An unknown name is kept as a hash: people type their password into the name
        # field, and the trail must not keep it. The hash still ties repeated tries.
        digest = hashlib.sha256(username.strip().lower().encode("utf-8")).hexdigest()[:16]
        who = {
            "identifier": {"system": USER_NAME_HASH_SYSTEM, "value": digest},
            "display": "unknown user name",
        }
    agent: dict[str, Any] = {"who": who, "requestor": True}
    if address:
        agent["network"] = {"address": address, "type": "2"}
    signed_in = isinstance(result, SignedIn)
    if isinstance(result, SignedIn):
        description = "signed in"
    elif result.locked_until is not None:
        description = f"{result.reason} until {instant(result.locked_until)}"
    else:
        description = str(result.reason)
    return {
        "resourceType": "AuditEvent",
        "type": {"system": DICOM, "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": DICOM, "code": "110122", "display": "Login"}],
        "action": "E",
        "recorded": instant(utc_now()),
        "outcome": SUCCESS if signed_in else MINOR_FAILURE,
        "outcomeDesc": description,
        "agent": [agent],
        "source": {
            "site": "second-opinion-hub",
            "observer": {"display": "Second-opinion hub"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }


def _carried(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in pairs if name in OAUTH_PARAMETERS]


def _error_outcome(error: OAuth2Error, settings: Settings) -> RedirectToClient | RequestRefused:
    if error.redirect_uri:
        _, _, headers = error()
        return RedirectToClient(dict(headers)["Location"])
    if isinstance(error, InsecureTransportError):
        return RequestRefused(
            error.error,
            f"the hub is published at {settings.origin}, over plain http: signing in needs "
            "https (plain http only on a loopback address), so that no password travels "
            "in the clear.",
        )
    return RequestRefused(error.error, error.description or error.error)
