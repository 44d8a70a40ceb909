import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from hub.errors import TooManyRequests
from hub.fhir.dates import utc_now
from hub.security.audit import audit_event
from hub.security.principal import Principal
from hub.security.rate_limit import RateLimiter
from hub.security.scopes import parse_scopes
from hub.storage.repository import StoredResource

SPECIALIST = Principal(
    subject="dr-neuro",
    client_id="web",
    roles=frozenset({"specialist"}),
    scopes=parse_scopes("user/*.rs"),
    fhir_user="Practitioner/p1",
    address="10.0.0.9",
)


def stored(resource_type: str, resource_id: str, **content) -> StoredResource:
    body = {"resourceType": resource_type, "id": resource_id, **content}
    return StoredResource(resource_type, resource_id, 1, utc_now(), False, body)


def test_an_audit_event_names_who_what_patient_and_where():
    observation = stored(
        "Observation",
        "o1",
        status="final",
        code={"text": "Hb"},
        subject={"reference": "Patient/p9"},
    )
    event = audit_event(SPECIALIST, "read", [observation])
    AuditEvent.model_validate(event)
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert event["agent"][0]["who"]["reference"] == "Practitioner/p1"
    assert event["agent"][0]["who"]["identifier"]["value"] == "dr-neuro"
    assert event["agent"][0]["network"]["address"] == "10.0.0.9"
    whats = [e["what"]["reference"] for e in event["entity"]]
    assert whats == ["Observation/o1", "Patient/p9"]
    assert event["entity"][1]["role"]["code"] == "1"


def test_a_search_audit_event_carries_its_query_and_a_failure_its_outcome():
    event = audit_event(
        SPECIALIST,
        "search-type",
        [],
        query="Observation?code=718-7",
        outcome="4",
        description="GET /fhir/Observation: 403",
    )
    AuditEvent.model_validate(event)
    assert event["action"] == "E"
    assert event["outcome"] == "4"
    assert event["entity"][0]["query"]  # base64 of the query


def test_the_rate_limiter_refuses_past_the_allowance_per_client():
    limiter = RateLimiter(per_minute=3)
    for _ in range(3):
        limiter.take("ehr-a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("ehr-a")
    assert int(refused.value.headers["Retry-After"]) >= 1
    limiter.take("ehr-b")  # another client has its own allowance
