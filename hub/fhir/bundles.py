"""Building the Bundles the API answers with: searchset, history and entry responses."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from hub.fhir.dates import instant, utc_now
from hub.storage.repository import StoredResource
from hub.storage.search import SearchPage, SearchQuery

STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}


def full_url(base: str, stored: StoredResource) -> str:
    return f"{base}/{stored.reference}"


def versioned_url(base: str, stored: StoredResource) -> str:
    return f"{base}/{stored.reference}/_history/{stored.version_id}"


def response_entry(base: str, stored: StoredResource, status: int) -> dict[str, Any]:
    """Bundle.entry.response for a write or read inside a batch or transaction."""
    return {
        "status": STATUS_TEXT.get(status, str(status)),
        "location": versioned_url(base, stored),
        "etag": stored.etag,
        "lastModified": instant(stored.last_updated),
    }


def searchset(
    base: str, query: SearchQuery, params: list[tuple[str, str]], page: SearchPage
) -> dict[str, Any]:
    """A searchset Bundle with self/next/previous links that page with _count and _offset."""
    kept = [(k, v) for k, v in params if k not in ("_count", "_offset")]

    def link(relation: str, offset: int) -> dict[str, str]:
        pairs = [*kept, ("_count", str(query.count)), ("_offset", str(offset))]
        return {"relation": relation, "url": f"{base}/{query.resource_type}?{urlencode(pairs)}"}

    links = [link("self", query.offset)]
    if query.count and query.offset + query.count < page.total:
        links.append(link("next", query.offset + query.count))
    if query.count and query.offset > 0:
        links.append(link("previous", max(query.offset - query.count, 0)))
    entries = [
        {"fullUrl": full_url(base, s), "resource": s.content, "search": {"mode": "match"}}
        for s in page.matches
    ] + [
        {"fullUrl": full_url(base, s), "resource": s.content, "search": {"mode": "include"}}
        for s in page.included
    ]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(utc_now())},
        "type": "searchset",
        "total": page.total,
        "link": links,
        "entry": entries,
    }


def history(base: str, self_url: str, versions: list[StoredResource], total: int) -> dict[str, Any]:
    """A history Bundle: each version with the method that wrote it."""
    entries = []
    for version in versions:
        entry: dict[str, Any] = {
            "fullUrl": full_url(base, version),
            "request": {"method": version.method, "url": version.reference},
            "response": response_entry(base, version, 201 if version.version_id == 1 else 200),
        }
        if version.deleted:
            entry["response"]["status"] = "204 No Content"
        else:
            entry["resource"] = version.content
        entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(utc_now())},
        "type": "history",
        "total": total,
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    }
