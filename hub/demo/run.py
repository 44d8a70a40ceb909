"""The main job on the embedded default: start the hub, load a synthetic patient, refer it.

It talks to the hub over HTTP exactly as a referring EHR would: a transaction Bundle of the
child's records, then a conditional create of the second-opinion ServiceRequest.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fhir.resources.R4B.bundle import Bundle

from hub.app import create_app
from hub.demo.synthetic import build_patient_records, build_referral, referral_identifier
from hub.settings import Settings

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


@dataclass(frozen=True)
class DemoCase:
    referral_id: str
    task_id: str
    status: str
    business_status: str
    record_bundle_url: str
    record_bundle_counts: dict[str, int]


class BackgroundServer:
    """uvicorn in a thread, so the demo can call the hub and then keep serving."""

    def __init__(self, settings: Settings) -> None:
        config = uvicorn.Config(
            create_app(settings), host=settings.host, port=settings.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://{settings.host}:{settings.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The hub did not start on {self.url}.")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def refer_synthetic_patient(fhir_base: str, seed: int = 7) -> DemoCase:
    """Load the synthetic child's records and refer them; return the case the hub opened."""
    with httpx.Client(base_url=fhir_base, headers=FHIR_JSON, timeout=60) as client:
        records = _ok(client.post("", json=build_patient_records(seed)))
        created = _locations(records)
        referral = build_referral(created["Patient"], created["Practitioner"], seed)
        system, value = referral_identifier(seed)
        stored_referral = _ok(
            client.post(
                "/ServiceRequest",
                json=referral,
                headers={"If-None-Exist": f"identifier={system}|{value}"},
            )
        )
        referral_id = stored_referral["id"]
        tasks = _ok(client.get("/Task", params={"focus": f"ServiceRequest/{referral_id}"}))
        task = tasks["entry"][0]["resource"]
        bundle_url = f"{fhir_base}/ServiceRequest/{referral_id}/$record-bundle"
        bundle = _ok(client.get(bundle_url))
    Bundle.model_validate(bundle)  # the record bundle must be a valid R4 Bundle
    counts = Counter(entry["resource"]["resourceType"] for entry in bundle["entry"])
    return DemoCase(
        referral_id=referral_id,
        task_id=task["id"],
        status=task["status"],
        business_status=task["businessStatus"]["coding"][0]["code"],
        record_bundle_url=bundle_url,
        record_bundle_counts=dict(sorted(counts.items())),
    )


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json()


def _locations(transaction_response: dict[str, Any]) -> dict[str, str]:
    """Resource type → `Type/id` of the first entry of that type in the response."""
    created: dict[str, str] = {}
    for entry in transaction_response["entry"]:
        location = entry["response"]["location"]
        resource_type, resource_id = location.split("/_history/")[0].split("/")[-2:]
        created.setdefault(resource_type, f"{resource_type}/{resource_id}")
    return created
