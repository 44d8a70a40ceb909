"""The people who sign in to the pages (`hub users add`): specialists, case managers and
hospital IT admins.

A person signs in with a user name and a password at /auth/authorize (the authorization
code grant, hub.security.code_grant). The hub keeps an Argon2id hash of the password only
(argon2-cffi's default parameters, RFC 9106's second recommended profile); a hash made with
other parameters is replaced at the next successful sign-in. Five wrong passwords in a row
lock the account for fifteen minutes. A person's roles, scopes, fhirUser and programs go
into every access token the person is issued, as a system client's do.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.errors import Conflict, InvalidRequest
from hub.security.clients import check_grants
from hub.storage.tables import UserRow

PERSON_ROLES = ("admin", "case-manager", "specialist")
"""Referrers are systems (an EHR, the family portal): `hub clients add`, not a person."""

# role → the SMART scopes a person of that role gets unless others are given: what the
# role's pages do through the API. Reading is broad (`user/*.rs`) because the row-level
# rules (hub.security.access) already limit a person to their own cases; writing is only
# what the role's work needs.
DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    # Draft and sign opinions, ask and answer questions, move their cases.
    "specialist": (
        "user/*.rs",
        "user/DiagnosticReport.cru",
        "user/Communication.cr",
        "user/Task.ru",
    ),
    # Assign and move cases, pull records and imaging (Task.u), decide on held studies
    # (ImagingStudy.u), hand care over (a new ServiceRequest), write to the referrer.
    "case-manager": (
        "user/*.rs",
        "user/Task.cru",
        "user/ServiceRequest.cru",
        "user/Communication.cr",
        "user/ImagingStudy.u",
    ),
    # The audit trail, the message log, metrics (Task.s), and the directory the other
    # roles are named in (a specialist's Practitioner).
    "admin": (
        "user/*.rs",
        "user/Practitioner.cru",
        "user/Organization.cru",
    ),
}

MAX_FAILED_SIGN_INS = 5
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 256
GENERATED_PASSWORD_BYTES = 18
"""24 URL-safe characters: 144 random bits."""

_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,127}$")
PASSWORD_HASHER = PasswordHasher()
"""Argon2id with argon2-cffi's defaults (RFC 9106's low-memory profile: 64 MiB, t=3, p=4)."""


class SignInFailure(StrEnum):
    """Why a sign-in was refused (for the audit trail; the page says less)."""

    UNKNOWN_USER = "unknown user name"
    WRONG_PASSWORD = "wrong password"
    LOCKED = "account locked"
    DISABLED = "account disabled"


@dataclass(frozen=True)
class Person:
    """A signed-in person, as authlib's code grant and the token generator see them."""

    user_id: str
    username: str
    display_name: str
    roles: frozenset[str]
    scopes: str
    fhir_user: str | None = None
    programs: frozenset[str] = frozenset()

    @classmethod
    def from_row(cls, row: UserRow) -> Person:
        return cls(
            user_id=row.user_id,
            username=row.username,
            display_name=row.display_name,
            roles=frozenset(row.roles.split()),
            scopes=row.scopes,
            fhir_user=row.fhir_user,
            programs=frozenset((row.programs or "").split()),
        )

    def get_user_id(self) -> str:
        return self.user_id


@dataclass(frozen=True)
class SignedIn:
    person: Person


@dataclass(frozen=True)
class SignInRefused:
    reason: SignInFailure
    person: Person | None = None
    """Who the name belongs to (None for an unknown name)."""
    locked_until: datetime | None = None


SignInResult = SignedIn | SignInRefused


class UserDirectory:
    """The people in the database behind `session` (the caller commits)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        username: str,
        *,
        display_name: str,
        roles: Iterable[str],
        password: str,
        scopes: str | None = None,
        fhir_user: str | None = None,
        programs: Iterable[str] = (),
    ) -> Person:
        """Add a person; scopes default to their roles' (DEFAULT_SCOPES). InvalidRequest
        says what is wrong, Conflict if the user name is taken."""
        name = normalize_username(username)
        role_set = frozenset(roles)
        program_set = frozenset(programs)
        granted = " ".join(scopes.split()) if scopes is not None else default_scopes(role_set)
        check_person(name, display_name, role_set, granted, fhir_user, program_set)
        check_password(password)
        if self._row(name) is not None:
            raise Conflict(f"There is already a user '{name}'.")
        row = UserRow(
            user_id=secrets.token_hex(6),
            username=name,
            display_name=display_name.strip(),
            password_hash=PASSWORD_HASHER.hash(password),
            roles=" ".join(sorted(role_set)),
            scopes=granted,
            fhir_user=fhir_user,
            programs=" ".join(sorted(program_set)),
            disabled=False,
            created_at=_now(),
            failed_logins=0,
            locked_until=None,
        )
        self.session.add(row)
        self.session.flush()
        return Person.from_row(row)

    def get(self, user_id: str) -> Person | None:
        """The enabled person `user_id`, or None."""
        row = self.session.get(UserRow, user_id)
        if row is None or row.disabled:
            return None
        return Person.from_row(row)

    def find(self, username: str) -> UserRow | None:
        """The person with this user name (any case), disabled or not."""
        return self._row(normalize_username(username))

    def list(self) -> Sequence[UserRow]:
        """Every person, disabled ones included, by user name."""
        return self.session.scalars(select(UserRow).order_by(UserRow.username)).all()

    def disable(self, username: str, disabled: bool = True) -> bool:
        """Refuse the person's sign-ins from now on (or, `disabled` False, allow them
        again); False if there is no such user. Tokens already issued run out by
        themselves (user_token_lifetime_seconds)."""
        row = self.find(username)
        if row is None:
            return False
        row.disabled = disabled
        self.session.flush()
        return True

    def set_password(self, username: str, password: str) -> bool:
        """Replace the password (and lift a lock); False if there is no such user."""
        check_password(password)
        row = self.find(username)
        if row is None:
            return False
        row.password_hash = PASSWORD_HASHER.hash(password)
        row.failed_logins = 0
        row.locked_until = None
        self.session.flush()
        return True

    def sign_in(self, username: str, password: str) -> SignInResult:
        """Check a user name and password; count a failure towards the lock."""
        now = _now()
        row = self._row(normalize_username(username), for_update=True)
        if row is None:
            # The same work as for a known name: the time taken tells no name apart.
            _verify(_decoy_hash(PASSWORD_HASHER), password)
            return SignInRefused(SignInFailure.UNKNOWN_USER)
        person = Person.from_row(row)
        if row.locked_until is not None and row.locked_until > now:
            return SignInRefused(SignInFailure.LOCKED, person, row.locked_until)
        if not _verify(row.password_hash, password):
            row.failed_logins = (row.failed_logins or 0) + 1
            if row.failed_logins >= MAX_FAILED_SIGN_INS:
                row.failed_logins = 0
                row.locked_until = now + LOCKOUT
                return SignInRefused(SignInFailure.LOCKED, person, row.locked_until)
            return SignInRefused(SignInFailure.WRONG_PASSWORD, person)
        row.failed_logins = 0
        row.locked_until = None
        if row.disabled:
            # Said only to whoever knows the password: the name alone tells nothing.
            return SignInRefused(SignInFailure.DISABLED, person)
        if PASSWORD_HASHER.check_needs_rehash(row.password_hash):
            row.password_hash = PASSWORD_HASHER.hash(password)
        return SignedIn(person)

    def _row(self, username: str, *, for_update: bool = False) -> UserRow | None:
        statement = select(UserRow).where(UserRow.username == username)
        if for_update:
            statement = statement.with_for_update()
        return self.session.scalars(statement).first()


def default_scopes(roles: Iterable[str]) -> str:
    """The scopes of DEFAULT_SCOPES for `roles`, each once, in the table's order."""
    chosen: list[str] = []
    for role in PERSON_ROLES:
        if role in roles:
            chosen.extend(s for s in DEFAULT_SCOPES[role] if s not in chosen)
    return " ".join(chosen)


def normalize_username(username: str) -> str:
    return username.strip().lower()


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def check_person(
    username: str,
    display_name: str,
    roles: frozenset[str],
    scopes: str,
    fhir_user: str | None,
    programs: frozenset[str],
) -> None:
    """Refuse (InvalidRequest) a person no token could be issued to, or whose role
    could not work: a specialist without a Practitioner, a case manager without a program."""
    if not _USERNAME.fullmatch(username):
        raise InvalidRequest(
            "A user name is 1 to 128 letters, digits and . _ @ - (no spaces), "
            "starting with a letter or digit."
        )
    if not display_name.strip() or len(display_name) > 255:
        raise InvalidRequest("A user needs a name (--name) of at most 255 characters.")
    not_people = sorted(roles.difference(PERSON_ROLES))
    if roles and not_people:
        raise InvalidRequest(
            f"The role(s) {', '.join(not_people)} are not for people; "
            f"a person is {', '.join(PERSON_ROLES)}. Referring systems: hub clients add."
        )
    check_grants(roles, scopes, fhir_user=fhir_user, programs=programs)
    if "specialist" in roles and not (fhir_user or "").startswith("Practitioner/"):
        raise InvalidRequest(
            "A specialist needs --fhir-user Practitioner/<id>: their cases are the ones "
            "assigned to that Practitioner."
        )
    if "case-manager" in roles and not programs:
        raise InvalidRequest(
            "A case manager needs at least one --program: the programs whose cases they work."
        )


def check_password(password: str) -> None:
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(
            f"A password is {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long."
        )


def _verify(password_hash: str, password: str) -> bool:
    try:
        return PASSWORD_HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _decoy_hash(hasher: PasswordHasher) -> str:
    """A hash of nothing anyone knows, with the hasher's parameters (so the same cost)."""
    return hasher.hash(secrets.token_urlsafe(GENERATED_PASSWORD_BYTES))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
