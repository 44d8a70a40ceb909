"""The system clients registered with the built-in authorization server (`hub clients add`).

A client authenticates with a JWT signed by its private key (SMART Backend Services,
`private_key_jwt`); the hub keeps only its public keys: a JWKS, or the URL it is published
at. The client's roles, scopes, fhirUser, programs and referrer kind go into every access
token it is issued.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.common.security import is_secure_transport
from authlib.oauth2.rfc6749 import ClientMixin
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.errors import Conflict, InvalidRequest
from hub.security.principal import ROLES
from hub.security.scopes import narrow, parse_scope
from hub.storage.tables import OAuthClientRow

AUTH_METHOD = "private_key_jwt"
GRANT_TYPE = "client_credentials"
ASSERTION_ALGORITHMS = ("RS384", "ES384")
"""The client-assertion algorithms SMART Backend Services names."""
REFERRER_KINDS = ("clinician", "family")
MIN_RSA_BITS = 2048

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
_FHIR_USER = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9.-]{1,64}$")
_PROGRAM = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


@dataclass(frozen=True)
class RegisteredClient(ClientMixin):  # type: ignore[misc]
    """A registered system client, as authlib's grants and client authentication see it."""

    client_id: str
    name: str
    roles: frozenset[str]
    scopes: str
    """Space-separated SMART scopes the client may be granted (at most)."""
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None
    fhir_user: str | None = None
    programs: frozenset[str] = frozenset()
    referrer_kind: str | None = None

    @classmethod
    def from_row(cls, row: OAuthClientRow) -> RegisteredClient:
        return cls(
            client_id=row.client_id,
            name=row.name,
            roles=frozenset(row.roles.split()),
            scopes=row.scopes,
            jwks=json.loads(row.jwks) if row.jwks else None,
            jwks_url=row.jwks_url,
            fhir_user=row.fhir_user,
            programs=frozenset((row.programs or "").split()),
            referrer_kind=row.referrer_kind,
        )

    def get_client_id(self) -> str:
        return self.client_id

    def get_allowed_scope(self, scope: str | None) -> str | None:
        """The requested scopes the registration covers; None (invalid_scope) if none is."""
        granted = narrow(scope or "", self.scopes)
        return granted or None

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == AUTH_METHOD and endpoint == "token"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == GRANT_TYPE

    def get_default_redirect_uri(self) -> None:
        return None

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return False

    def check_response_type(self, response_type: str) -> bool:
        return False


class ClientRegistry:
    """Registered clients in the database behind `session` (the caller commits)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(
        self,
        client_id: str,
        *,
        name: str,
        roles: Iterable[str],
        scopes: str,
        jwks: dict[str, Any] | None = None,
        jwks_url: str | None = None,
        fhir_user: str | None = None,
        programs: Iterable[str] = (),
        referrer_kind: str | None = None,
    ) -> RegisteredClient:
        """Register a client; InvalidRequest says what is wrong, Conflict if it exists."""
        role_set = frozenset(roles)
        program_set = frozenset(programs)
        _check_identity(client_id, name)
        check_grants(
            role_set,
            scopes,
            fhir_user=fhir_user,
            programs=program_set,
            referrer_kind=referrer_kind,
        )
        if (jwks is None) == (jwks_url is None):
            raise InvalidRequest("Give exactly one of a JWKS (--jwks-file) or a JWKS URL.")
        if jwks is not None:
            check_public_jwks(jwks)
        if jwks_url is not None:
            check_jwks_url(jwks_url)
        if self.session.get(OAuthClientRow, client_id) is not None:
            raise Conflict(f"A client '{client_id}' is already registered.")
        row = OAuthClientRow(
            client_id=client_id,
            name=name,
            roles=" ".join(sorted(role_set)),
            scopes=" ".join(scopes.split()),
            jwks=json.dumps(jwks) if jwks is not None else None,
            jwks_url=jwks_url,
            fhir_user=fhir_user,
            programs=" ".join(sorted(program_set)),
            referrer_kind=referrer_kind,
            created_at=datetime.now(UTC).replace(tzinfo=None),
            disabled=False,
        )
        self.session.add(row)
        self.session.flush()
        return RegisteredClient.from_row(row)

    def get(self, client_id: str) -> RegisteredClient | None:
        """The enabled client `client_id`, or None."""
        row = self.session.get(OAuthClientRow, client_id)
        if row is None or row.disabled:
            return None
        return RegisteredClient.from_row(row)

    def list(self) -> Sequence[OAuthClientRow]:
        """Every registered client, disabled ones included, by client id."""
        return self.session.scalars(select(OAuthClientRow).order_by(OAuthClientRow.client_id)).all()

    def disable(self, client_id: str) -> bool:
        """Stop issuing tokens to `client_id`; False if there is no such client."""
        row = self.session.get(OAuthClientRow, client_id)
        if row is None:
            return False
        row.disabled = True
        self.session.flush()
        return True


WEB_CLIENT_ID = "hub-web"
"""The hub's own web pages: a public client built into the authorization server
(hub.security.code_grant), never a registered one."""


def is_client_id(text: str) -> bool:
    """Is `text` shaped like a client id (1 to 128 letters, digits and . _ : ~ -)?"""
    return _CLIENT_ID.fullmatch(text) is not None


def check_public_jwks(jwks: Any) -> None:
    """Refuse anything but a JWKS of public RSA (>= 2048 bits) or EC P-384 signing keys."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise InvalidRequest('A JWKS is a JSON object {"keys": [...]} with at least one key.')
    for index, key in enumerate(jwks["keys"]):
        _check_public_key(key, index)


def _check_public_key(key: Any, index: int) -> None:
    where = f"JWKS key {index}"
    if not isinstance(key, dict):
        raise InvalidRequest(f"{where} is not a JSON object.")
    private = sorted(_PRIVATE_MEMBERS.intersection(key))
    if private:
        raise InvalidRequest(
            f"{where} holds private key material ({', '.join(private)}): register only the "
            "public keys; the private key never leaves the client."
        )
    if not isinstance(key.get("kid"), str) or not key["kid"]:
        raise InvalidRequest(f"{where} has no 'kid'; SMART clients name each key.")
    if key.get("use", "sig") != "sig":
        raise InvalidRequest(f"{where} is not a signing key (use={key.get('use')!r}).")
    algorithm = key.get("alg")
    if algorithm is not None and algorithm not in ASSERTION_ALGORITHMS:
        raise InvalidRequest(f"{where} is for {algorithm}; the hub accepts RS384 and ES384.")
    try:
        if key.get("kty") == "RSA":
            rsa = RSAKey.import_key(key)
            if rsa.raw_value.key_size < MIN_RSA_BITS:
                raise InvalidRequest(f"{where} is an RSA key shorter than {MIN_RSA_BITS} bits.")
        elif key.get("kty") == "EC":
            if key.get("crv") != "P-384":
                raise InvalidRequest(f"{where} is an EC key not on P-384 (ES384 needs P-384).")
            ECKey.import_key(key)
        else:
            raise InvalidRequest(f"{where} has kty {key.get('kty')!r}; use an RSA or EC key.")
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidRequest(f"{where} is not a valid public key: {exc}") from exc


def check_jwks_url(url: str) -> None:
    if not is_secure_transport(url):
        raise InvalidRequest(f"The JWKS URL {url!r} must be https (http only on loopback).")


def check_grants(
    roles: frozenset[str],
    scopes: str,
    *,
    fhir_user: str | None = None,
    programs: frozenset[str] = frozenset(),
    referrer_kind: str | None = None,
) -> None:
    """Refuse (InvalidRequest) what no token may carry: unknown roles, scopes, references."""
    _check_roles(roles, referrer_kind)
    _check_scopes(scopes)
    if fhir_user is not None and not _FHIR_USER.fullmatch(fhir_user):
        raise InvalidRequest(f"fhirUser {fhir_user!r} is not a reference like Practitioner/123.")
    for program in programs:
        if not _PROGRAM.fullmatch(program):
            raise InvalidRequest(f"Program {program!r} is not a simple name like oncology.")


def _check_identity(client_id: str, name: str) -> None:
    if not is_client_id(client_id):
        raise InvalidRequest("A client id is 1 to 128 letters, digits and . _ : ~ - (no spaces).")
    if client_id == WEB_CLIENT_ID:
        raise InvalidRequest(f"'{WEB_CLIENT_ID}' is the hub's own web pages' client id.")
    if not name.strip() or len(name) > 255:
        raise InvalidRequest("A client needs a name of at most 255 characters.")


def _check_roles(roles: frozenset[str], referrer_kind: str | None) -> None:
    if not roles:
        raise InvalidRequest(f"At least one role is needed: {', '.join(ROLES)}.")
    unknown = sorted(roles.difference(ROLES))
    if unknown:
        raise InvalidRequest(
            f"Unknown role(s) {', '.join(unknown)}; the roles are {', '.join(ROLES)}."
        )
    if referrer_kind is not None:
        if referrer_kind not in REFERRER_KINDS:
            raise InvalidRequest(
                f"Referrer kind {referrer_kind!r} is not one of {', '.join(REFERRER_KINDS)}."
            )
        if "referrer" not in roles:
            raise InvalidRequest("A referrer kind is only for clients with the referrer role.")


def _check_scopes(scopes: str) -> None:
    parts = scopes.split()
    if not parts:
        raise InvalidRequest("At least one scope is needed, like system/Patient.rs.")
    bad = [part for part in parts if parse_scope(part) is None]
    if bad:
        raise InvalidRequest(
            f"Not a SMART resource scope: {', '.join(bad)} (e.g. system/ServiceRequest.cruds)."
        )
