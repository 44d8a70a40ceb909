"""People's default scopes and the checks on a new person (no database)."""

from __future__ import annotations

import pytest

from hub.errors import InvalidRequest
from hub.security.access import ROLE_PERMISSIONS
from hub.security.code_grant import WebClient, web_client_for
from hub.security.principal import Principal
from hub.security.scopes import parse_scopes
from hub.security.users import DEFAULT_SCOPES, PERSON_ROLES, check_person, default_scopes

# What each role's pages do through the API: (resource type, interaction).
NEEDS = {
    "specialist": [
        ("Task", "s"),  # the worklist
        ("Task", "u"),  # $transition of their case
        ("DiagnosticReport", "c"),  # the opinion draft
        ("DiagnosticReport", "u"),  # edit, $finalize, $amend
        ("Communication", "c"),  # a question to the case manager
        ("Patient", "r"),
        ("ImagingStudy", "r"),
    ],
    "case-manager": [
        ("Task", "s"),  # the board, turnaround
        ("Task", "u"),  # assign, $transition, record pulls
        ("ImagingStudy", "s"),  # the imaging desk
        ("ImagingStudy", "u"),  # release, reject, pull, upload a CD
        ("ServiceRequest", "c"),  # $transfer-care
        ("Communication", "c"),
        ("Practitioner", "s"),  # whom to assign
    ],
    "admin": [
        ("AuditEvent", "r"),
        ("AuditEvent", "s"),
        ("Task", "s"),  # metrics and turnaround
        ("Practitioner", "c"),  # the directory specialists are named in
        ("Practitioner", "u"),
    ],
}


def person(role: str) -> Principal:
    return Principal("u1", "hub-web", frozenset({role}), parse_scopes(default_scopes([role])))


@pytest.mark.parametrize("role", PERSON_ROLES)
def test_each_roles_default_scopes_allow_what_its_pages_do(role: str) -> None:
    principal = person(role)
    for resource_type, interaction in NEEDS[role]:
        assert principal.allows(resource_type, interaction), (resource_type, interaction)


@pytest.mark.parametrize("role", PERSON_ROLES)
def test_no_default_write_scope_is_one_the_role_may_not_use(role: str) -> None:
    permitted = ROLE_PERMISSIONS[role]
    for scope in parse_scopes(" ".join(DEFAULT_SCOPES[role])):
        if scope.resource_type == "*":
            assert set(scope.interactions) <= set("rs")  # reading only, row rules apply
            continue
        usable = "".join(
            letters for types, letters in permitted.items() if scope.resource_type in types
        )
        assert set(scope.interactions) <= set(usable), str(scope)


def test_default_scopes_of_several_roles_are_their_union_once_each() -> None:
    both = default_scopes(["specialist", "case-manager"]).split()

    assert len(both) == len(set(both))
    assert set(both) == set(DEFAULT_SCOPES["specialist"]) | set(DEFAULT_SCOPES["case-manager"])
    assert not any(s.startswith("system/") for s in default_scopes(PERSON_ROLES).split())


@pytest.mark.parametrize(
    ("username", "roles", "fhir_user", "programs", "message"),
    [
        ("has space", {"admin"}, None, set(), "user name"),
        ("", {"admin"}, None, set(), "user name"),
        ("ok", set(), None, set(), "At least one role"),
        ("ok", {"referrer"}, None, set(), "not for people"),
        ("ok", {"specialist"}, None, set(), "Practitioner/<id>"),
        ("ok", {"specialist"}, "Patient/1", set(), "Practitioner/<id>"),
        ("ok", {"case-manager"}, None, set(), "--program"),
        ("ok", {"case-manager"}, None, {"bad program"}, "Program"),
    ],
)
def test_a_person_who_could_not_work_is_refused(
    username: str, roles: set[str], fhir_user: str | None, programs: set[str], message: str
) -> None:
    scopes = default_scopes(roles) or "user/*.rs"
    with pytest.raises(InvalidRequest) as refused:
        check_person(username, "A Name", frozenset(roles), scopes, fhir_user, frozenset(programs))
    assert message in refused.value.diagnostics


def test_hub_web_accepts_only_the_callback_of_the_origin_it_was_reached_at() -> None:
    client = web_client_for("https://hub.example.org:8443/")

    assert client.check_redirect_uri("https://hub.example.org:8443/ui/callback")
    for other in (
        "http://hub.example.org:8443/ui/callback",
        "https://hub.example.org/ui/callback",
        "https://hub.example.org:8443/ui/callback/",
        "https://evil.example/ui/callback",
    ):
        assert not client.check_redirect_uri(other), other
    assert not WebClient().check_redirect_uri("https://hub.example.org:8443/ui/callback")
    assert client.check_endpoint_auth_method("none", "token")
    assert not client.check_endpoint_auth_method("private_key_jwt", "token")
    assert client.check_grant_type("authorization_code")
    assert not client.check_grant_type("client_credentials")
