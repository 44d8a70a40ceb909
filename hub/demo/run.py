"""The main job on the embedded default: start the hub, load a synthetic patient, refer it.

It talks to the hub over HTTP exactly as a referring EHR would: a transaction Bundle of the
child's records, then a conditional create of the second-opinion ServiceRequest.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fhir.resources.R4B.bundle import Bundle
from joserfc.jwk import RSAKey

from connectors.fhir_rest.smart_auth import fetch_backend_token
from hub.app import create_app
from hub.demo.synthetic import build_patient_records, build_referral, referral_identifier
from hub.security.clients import ClientRegistry
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
DEMO_CLIENT = "demo-referring-ehr"
DEMO_SCOPES = "system/*.crus"


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


def demo_client_key(settings: Settings) -> dict[str, Any]:
    """Register the demo's referring EHR (once) and return its private key.

    What hospital IT does with `hub clients add` for a real referring system.
    """
    key_file = settings.signing_key_file.with_name(f"{DEMO_CLIENT}.json")
    if not key_file.exists():
        key = RSAKey.generate_key(2048, parameters={"alg": "RS384", "use": "sig"})
        private = key.as_dict(private=True) | {"kid": key.thumbprint()}
        key_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(private, handle)
    private = json.loads(key_file.read_text(encoding="utf-8"))
    public = RSAKey.import_key(private).as_dict(private=False) | {
        "kid": private["kid"],
        "alg": "RS384",
        "use": "sig",
    }
    sessions = make_session_factory(make_engine(settings.database_url))
    with sessions.begin() as session:
        registry = ClientRegistry(session)
        if registry.get(DEMO_CLIENT) is None:
            registry.add(
                DEMO_CLIENT,
                name="Demo referring EHR",
                roles=["referrer"],
                scopes=DEMO_SCOPES,
                jwks={"keys": [public]},
                referrer_kind="clinician",
            )
    return dict(private)


def refer_synthetic_patient(settings: Settings, seed: int = 7) -> DemoCase:
    """As a referring EHR: get a token (SMART Backend Services), load the synthetic child's
    records and refer them; return the case the hub opened."""
    fhir_base = settings.audience
    token = fetch_backend_token(
        settings.token_url, DEMO_CLIENT, demo_client_key(settings), DEMO_SCOPES
    )
    headers = {**FHIR_JSON, "Authorization": f"Bearer {token['access_token']}"}
    with httpx.Client(base_url=fhir_base, headers=headers, timeout=60) as client:
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
