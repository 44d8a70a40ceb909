"""JSON responses in the FHIR media type, with the headers FHIR clients rely on."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

from hub.fhir.bundles import versioned_url
from hub.storage.repository import StoredResource

FHIR_JSON = "application/fhir+json"


class FhirResponse(Response):
    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        if content is None:
            return b""
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def resource_response(
    stored: StoredResource, base: str, *, status: int = 200, prefer: str | None = None
) -> FhirResponse:
    """A resource with ETag, Last-Modified and (for writes) Location; honours Prefer: return=."""
    headers = {
        "ETag": stored.etag,
        "Last-Modified": stored.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    if status in (200, 201) and stored.method in ("POST", "PUT"):
        headers["Location"] = versioned_url(base, stored)
    body: Any = stored.content
    if prefer and "return=minimal" in prefer:
        body = None
    elif prefer and "return=OperationOutcome" in prefer:
        body = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": f"{stored.reference} stored as version {stored.version_id}.",
                }
            ],
        }
    return FhirResponse(body, status_code=status, headers=headers)
