import pytest

from hub.security.scopes import SmartScope, narrow, parse_scope, parse_scopes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("system/ServiceRequest.cu", SmartScope("system", "ServiceRequest", "cu")),
        ("user/DiagnosticReport.rs", SmartScope("user", "DiagnosticReport", "rs")),
        ("patient/*.r", SmartScope("patient", "*", "r")),
        ("system/*.cruds", SmartScope("system", "*", "cruds")),
        ("user/Observation.read", SmartScope("user", "Observation", "rs")),
        ("user/Observation.write", SmartScope("user", "Observation", "cud")),
        ("system/*.*", SmartScope("system", "*", "cruds")),
    ],
)
def test_scopes_parse(text, expected):
    assert parse_scope(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "launch",
        "openid",
        "system/Patient.",
        "system/Patient.rc",
        "system/Patient.rr",
        "system/Patient.x",
        "doctor/Patient.r",
        "system/patient.r",
        "system/Patient",
    ],
)
def test_other_strings_are_not_resource_scopes(text):
    assert parse_scope(text) is None


def test_a_scope_allows_its_interactions_on_its_types_only():
    scope = parse_scope("system/Observation.rs")
    assert scope.allows("Observation", "r") and scope.allows("Observation", "s")
    assert not scope.allows("Observation", "c")
    assert not scope.allows("Patient", "r")
    assert parse_scope("system/*.c").allows("Patient", "c")


def test_parse_scopes_skips_non_resource_scopes():
    assert [str(s) for s in parse_scopes("launch system/Patient.r openid")] == ["system/Patient.r"]


@pytest.mark.parametrize(
    ("requested", "allowed", "granted"),
    [
        ("system/ServiceRequest.cu", "system/*.cru", "system/ServiceRequest.cu"),
        ("system/ServiceRequest.cud", "system/*.cru", ""),
        ("system/*.r", "system/Patient.r", ""),
        ("system/*.r system/Patient.r", "system/Patient.rs", "system/Patient.r"),
        ("user/Patient.r", "system/Patient.r", ""),
        ("launch system/Task.u", "system/Task.cruds", "system/Task.u"),
    ],
)
def test_narrow_grants_only_what_is_covered(requested, allowed, granted):
    assert narrow(requested, allowed) == granted
