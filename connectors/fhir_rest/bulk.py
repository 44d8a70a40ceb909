"""FHIR Bulk Data Access (v2) export of one patient's data: kick-off, status polling, NDJSON
downloads streamed line by line (a large export is never held in memory whole)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from connectors.fhir_rest.client import FHIR_JSON, FhirClient, JsonObject, outcome_text
from connectors.fhir_rest.errors import ExportFailed, FhirProtocolError, FhirSourceError


async def export_patient(
    client: FhirClient, patient_id: str, types: Sequence[str], since: str | None = None
) -> AsyncIterator[JsonObject]:
    """The resources of a patient-level `$export` of `patient_id`, one at a time."""
    status_url = await _kick_off(client, patient_id, types, since)
    try:
        manifest = await _wait(client, status_url)
        for output in manifest.get("output") or []:
            async for resource in _ndjson(client, str(output["url"])):
                yield resource
    finally:
        # The source may drop the files now; a failure to say so is no failure of ours.
        with contextlib.suppress(FhirSourceError):
            await client.session.send(
                "Bulk Data cleanup", "DELETE", status_url, attempts=1, answered=range(300, 600)
            )


async def _kick_off(
    client: FhirClient, patient_id: str, types: Sequence[str], since: str | None
) -> str:
    parameters: list[dict[str, Any]] = [
        {"name": "patient", "valueReference": {"reference": f"Patient/{patient_id}"}},
        {"name": "_outputFormat", "valueString": "application/fhir+ndjson"},
    ]
    if types:
        parameters.append({"name": "_type", "valueString": ",".join(types)})
    if since:
        parameters.append({"name": "_since", "valueInstant": since})
    body = json.dumps({"resourceType": "Parameters", "parameter": parameters}).encode()
    response = await client.session.send(
        "Bulk Data kick-off",
        "POST",
        f"{client.base_url}/Patient/$export",
        headers={"Content-Type": FHIR_JSON, "Prefer": "respond-async"},
        body=lambda: body,
        attempts=1,
    )
    location = response.headers.get("content-location")
    if response.status_code != 202 or not location:
        raise FhirProtocolError(
            f"FHIR source {client.name!r}: the export kick-off answered HTTP "
            f"{response.status_code} without a Content-Location to poll"
        )
    return str(location)


async def _wait(client: FhirClient, status_url: str) -> JsonObject:
    """Poll until the manifest is there (Retry-After honoured, X-Progress logged)."""
    source = client.source
    deadline = time.monotonic() + source.export_timeout_seconds
    while True:
        response = await client.session.send(
            "Bulk Data status", "GET", status_url, answered=range(400, 600)
        )
        if response.status_code == 200:
            manifest: JsonObject = response.json()
            return manifest
        if response.status_code != 202:
            raise ExportFailed(
                f"FHIR source {client.name!r}: the export failed with HTTP "
                f"{response.status_code}: {await outcome_text(response)}"
            )
        if time.monotonic() > deadline:
            raise ExportFailed(
                f"FHIR source {client.name!r}: the export did not finish within "
                f"{source.export_timeout_seconds:.0f} s"
            )
        await client.sleep(client.session.retry_after(response) or source.export_poll_seconds)


async def _ndjson(client: FhirClient, url: str) -> AsyncIterator[JsonObject]:
    response = await client.session.send(
        "Bulk Data download",
        "GET",
        url,
        headers={"Accept": "application/fhir+ndjson"},
        stream=True,
    )
    try:
        number = 0
        async for line in response.aiter_lines():
            number += 1
            if not line.strip():
                continue
            try:
                resource = json.loads(line)
            except ValueError as exc:
                raise FhirProtocolError(
                    f"FHIR source {client.name!r}: line {number} of an export file is not JSON"
                ) from exc
            yield resource
    finally:
        await response.aclose()
