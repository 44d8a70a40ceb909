"""Every synthetic sample message (tests/hl7_samples.py: each type, version and variant)
goes through the intake and the mapping job into the FHIR store, on both backends."""

from __future__ import annotations

import json

import pytest

from connectors.base import Envelope
from hub.jobs.worker import JobWorker
from hub.messages.intake import Hl7Intake
from hub.storage.db import make_engine, make_session_factory
from hub.storage.tables import MessageRow
from tests.fhir_client import path_jobs
from tests.hl7_samples import CASES


@pytest.fixture
def pipeline(settings):
    engine = make_engine(settings.database_url)
    sessions = make_session_factory(engine)
    yield Hl7Intake(sessions), JobWorker(sessions, path_jobs(settings)), sessions
    engine.dispose()


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_sample_is_mapped_and_stored(pipeline, case):
    intake, worker, sessions = pipeline
    result = intake.receive(Envelope(CASES[case](), transport="test", channel="samples"))
    assert worker.run_until_idle() == 1
    with sessions() as session:
        row = session.get(MessageRow, result.message_id)
        assert (row.status, row.error) == ("mapped", None)
        assert json.loads(row.produced)
        assert json.loads(row.report)
