"""schemathesis drives every operation of the OpenAPI schema with generated input, as a
caller with a valid token: whatever it sends, the hub never answers 500."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from hub.app import create_app
from hub.settings import Settings
from hub.storage.db import make_engine
from hub.storage.migrate import upgrade
from tests.fhir_client import bearer

EXAMPLES_PER_OPERATION = 30

# A patient CD upload is a zip: the fuzzer sends whatever bytes it makes as one.
schemathesis.serializer.alias("application/zip", "application/octet-stream")


@pytest.fixture(scope="module")
def hub_settings(tmp_path_factory, signing_key_file) -> Settings:
    database = tmp_path_factory.mktemp("fuzz") / "hub.db"
    hub = Settings(
        database_url=f"sqlite:///{database}",
        signing_key_file=signing_key_file,
        public_url="http://testserver",
        rate_limit_per_minute=100_000,
        dicom_store_dir=tmp_path_factory.mktemp("dicom"),
    )
    upgrade(make_engine(hub.database_url))
    return hub


def test_no_operation_answers_500(hub_settings):
    # schemathesis' pytest plugin does not load under this pytest; its strategies do.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(hub_settings))
    headers = bearer(hub_settings)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def never_500(case) -> None:
            response = case.call(headers=headers)
            assert response.status_code < 500, (
                case.method,
                case.formatted_path,
                response.status_code,
                response.text[:300],
            )

        never_500()
