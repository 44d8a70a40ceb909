"""The load of bench_api: a referring EHR's calls on the FHIR REST API, run by locust in a
process of its own (gevent), never imported by the hub or the tests.

Each simulated client creates Patients (POST /fhir/Patient, a new identifier each) and
searches them back by identifier and by family name, as a referring EHR does before it
sends a referral. The bearer token comes from the environment (BENCH_TOKEN)."""

from __future__ import annotations

import itertools
import json
import os
import uuid

from locust import FastHttpUser, constant, task

_numbers = itertools.count()
IDENTIFIER_SYSTEM = "https://st-mary.example/mrn"


def _patient(mrn: str) -> str:
    return json.dumps(
        {
            "resourceType": "Patient",
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": mrn}],
            "name": [{"family": f"Benchchild{int(mrn[-2:], 16) % 40}", "given": ["Robin"]}],
            "birthDate": "2017-03-02",
            "gender": "female",
        }
    )


class ReferringEhr(FastHttpUser):  # type: ignore[misc]
    wait_time = constant(0)

    def on_start(self) -> None:
        self.headers = {
            "Authorization": f"Bearer {os.environ['BENCH_TOKEN']}",
            "Content-Type": "application/fhir+json",
            "Accept": "application/fhir+json",
        }
        self.mrns: list[str] = []

    @task(1)
    def create(self) -> None:
        mrn = f"MRN-{next(_numbers)}-{uuid.uuid4().hex[:8]}"
        with self.client.post(
            "/fhir/Patient",
            data=_patient(mrn),
            headers=self.headers,
            name="create Patient",
            catch_response=True,
        ) as response:
            if response.status_code != 201:
                response.failure(f"status {response.status_code}")
            else:
                self.mrns.append(mrn)

    @task(2)
    def search(self) -> None:
        if not self.mrns:
            return
        mrn = self.mrns[-1]
        with self.client.get(
            f"/fhir/Patient?identifier={IDENTIFIER_SYSTEM}|{mrn}",
            headers=self.headers,
            name="search Patient?identifier",
            catch_response=True,
        ) as response:
            if response.status_code != 200 or response.json().get("total", 1) < 1:
                response.failure(f"status {response.status_code} or nothing found")
