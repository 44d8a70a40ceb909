"""Pulled resources into the hub's id space.

Each resource gets a hub id derived from its source and its id there (the same resource
pulled again gets the same id, so a re-pull updates instead of duplicating), keeps where it
came from in `meta.source` (its URL at the source, with the version), and has its
references rewritten: to the source's patient → the case's patient; to a pulled (or already
held) resource → its hub id; to what cannot be had → the resource's absolute URL at the
source (a valid reference that dangles nowhere in the hub), reported. Contained resources
stay contained. Attachments pointing at the source (a Binary, a URL on its server) are
fetched by the caller and pointed at hub Binaries.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from connectors.fhir_rest.client import diagnostics
from hub.fhir.references import references_in
from hub.fhir.search_parameters import supported_types

JsonObject = dict[str, Any]

_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]+)?$")
ATTACHMENT_KEYS = frozenset(
    {"attachment", "presentedForm", "contentAttachment", "valueAttachment", "photo"}
)
NOT_PULLED: dict[str, str] = {
    "Task": "workflow of the source system, not a record",
    "AuditEvent": "the source's audit trail",
    "Provenance": "the hub records its own provenance of the pull",
    "Endpoint": "the source's own services",
    "Consent": "consent is recorded by the hub's case workflow, not taken from a source",
}


@dataclass(frozen=True)
class Problem:
    """One thing a pull could not take as it was: reported, never dropped silently."""

    kind: str
    """skipped | invalid | unresolved | attachment | query | warning"""
    where: str
    """The source resource (Type/id), a query, an attachment URL."""
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "detail": self.detail}


def hub_id(source: str, resource_type: str, source_id: str) -> str:
    """The hub id of `resource_type/source_id` pulled from `source` (stable, 32 hex)."""
    return hashlib.sha256(f"{source}|{resource_type}/{source_id}".encode()).hexdigest()[:32]


@dataclass
class Normalizer:
    """Collects a pull's resources (`add`), then rewrites them (`normalized`)."""

    source: str
    base_url: str
    source_patient_id: str
    hub_patient_id: str
    pulled: dict[str, JsonObject] = field(default_factory=dict)
    """Source `Type/id` → the resource as pulled."""
    problems: list[Problem] = field(default_factory=list)
    source_patient: JsonObject | None = None
    fetched: Counter[str] = field(default_factory=Counter)
    contained: Counter[str] = field(default_factory=Counter)
    """Resources the source sent contained in others (kept there, their `#id` references
    unchanged), by type."""
    unavailable: dict[str, str] = field(default_factory=dict)
    """Source `Type/id` or attachment URL → why the pull could not have it."""
    attachments: dict[str, str] = field(default_factory=dict)
    """Attachment URL → the source `Binary/id` holding its bytes."""

    def add(self, resource: JsonObject) -> str | None:
        """Take one pulled resource (the last copy of a resource seen twice wins); its source
        `Type/id` when it is to be stored, None when it is not (reported)."""
        resource_type = str(resource.get("resourceType") or "")
        source_id = str(resource.get("id") or "")
        where = f"{resource_type}/{source_id}"
        self.fetched[resource_type] += 1
        if resource_type == "OperationOutcome":
            self.problems.append(Problem("warning", "search", diagnostics(resource)))
            return None
        if not source_id or not _RELATIVE.match(where):
            self.problems.append(Problem("skipped", where, "the resource has no usable id"))
            return None
        if resource_type == "Patient":
            if source_id == self.source_patient_id:
                self.source_patient = resource
            else:
                self.problems.append(Problem("skipped", where, "another patient's record"))
            return None
        reason = NOT_PULLED.get(resource_type)
        if reason is None and resource_type not in supported_types():
            reason = "a resource type the hub does not store"
        if reason is not None:
            self.problems.append(Problem("skipped", where, reason))
            return None
        self.pulled[where] = resource
        self.contained.update(
            str(inner.get("resourceType")) for inner in resource.get("contained") or []
        )
        return where

    def reject(self, where: str, detail: str) -> None:
        """Drop a pulled resource that is not valid FHIR (references to it are rewritten
        like those to anything else the hub cannot hold)."""
        self.pulled.pop(where, None)
        self.unavailable[where] = "not valid FHIR R4 (see invalid)"
        self.problems.append(Problem("invalid", where, detail))

    def outside_targets(self) -> set[tuple[str, str]]:
        """(type, id) at the source of what pulled resources reference but the pull did
        not bring (candidates for a read, or already held from an earlier pull)."""
        wanted: set[tuple[str, str]] = set()
        for resource in self.pulled.values():
            for reference in references_in(resource):
                target = self.source_target(reference)
                key = f"{target[0]}/{target[1]}" if target else ""
                if (
                    target
                    and key not in self.pulled
                    and key not in self.unavailable
                    and target != ("Patient", self.source_patient_id)
                ):
                    wanted.add(target)
        return wanted

    def source_target(self, reference: str) -> tuple[str, str] | None:
        """(type, id) when `reference` points at a resource of the source."""
        if reference.startswith(self.base_url + "/"):
            reference = reference[len(self.base_url) + 1 :]
        match = _RELATIVE.match(reference)
        return (match.group(1), match.group(2)) if match else None

    def attachment_urls(self) -> set[str]:
        """URLs of attachments at the source that the pull has not brought as Binaries."""
        urls: set[str] = set()
        for resource in list(self.pulled.values()):
            for url in _attachment_urls(resource):
                target = self.source_target(url)
                if target is not None and f"{target[0]}/{target[1]}" in self.pulled:
                    continue
                if target is not None or url.startswith(self.base_url + "/"):
                    urls.add(url)
        return urls

    def add_attachment(self, url: str, data: bytes, content_type: str) -> None:
        """An attachment fetched from `url`, to be stored as a hub Binary."""
        target = self.source_target(url)
        source_id = target[1] if target and target[0] == "Binary" else _url_id(url)
        self.pulled[f"Binary/{source_id}"] = {
            "resourceType": "Binary",
            "id": source_id,
            "contentType": content_type,
            "data": base64.b64encode(data).decode("ascii"),
        }
        self.attachments[url] = f"Binary/{source_id}"

    def normalized(self, held: set[str]) -> Iterator[tuple[str, JsonObject]]:
        """(hub reference, resource) for every pulled resource, rewritten in place (once:
        the pulled copies are consumed). `held`: source `Type/id`s the hub already holds
        from this source (earlier pulls)."""
        available = set(self.pulled) | held
        for where, resource in self.pulled.items():
            resource_type, source_id = where.split("/")
            resource["meta"] = self._meta(resource, where)
            resource["id"] = hub_id(self.source, resource_type, source_id)
            self._rewrite(resource, where, available)
            yield f"{resource_type}/{resource['id']}", resource

    def demote(
        self, resources: list[tuple[str, JsonObject]], rejected: dict[str, str]
    ) -> list[tuple[str, JsonObject]]:
        """After `normalized`: without the `rejected` resources (source `Type/id` → why
        they are invalid), references to them pointing at the source instead, reported."""
        for key, why in rejected.items():
            self.reject(key, why)
        gone = {self.hub_reference(key): key for key in rejected}
        origin = {self.hub_reference(key): key for key in self.pulled}
        kept = [(reference, resource) for reference, resource in resources if reference not in gone]
        for reference, resource in kept:
            for node in _reference_holders(resource):
                lost = gone.get(node["reference"])
                if lost is not None:
                    node["reference"] = f"{self.base_url}/{lost}"
                    detail = f"{lost}: {self.unavailable[lost]}; kept as its URL"
                    self.problems.append(Problem("unresolved", origin[reference], detail))
        return kept

    def hub_reference(self, key: str) -> str:
        """The hub reference of the resource pulled as source `Type/id`."""
        resource_type, source_id = key.split("/")
        return f"{resource_type}/{hub_id(self.source, resource_type, source_id)}"

    def _meta(self, resource: JsonObject, where: str) -> JsonObject:
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k in _KEPT_META}
        version = (resource.get("meta") or {}).get("versionId")
        meta["source"] = f"{self.base_url}/{where}" + (f"/_history/{version}" if version else "")
        return meta

    def _rewrite(self, node: Any, where: str, available: set[str], parent: str = "") -> None:
        if isinstance(node, list):
            for child in node:
                self._rewrite(child, where, available, parent)
            return
        if not isinstance(node, dict):
            return
        reference = node.get("reference")
        if isinstance(reference, str):
            node["reference"] = self._reference(reference, where, available)
        url = node.get("url")
        if parent in ATTACHMENT_KEYS and isinstance(url, str):
            node["url"] = self._attachment(url, where)
        for key, child in node.items():
            if isinstance(child, dict | list):
                self._rewrite(child, where, available, key)

    def _attachment(self, url: str, where: str) -> str:
        target = self.source_target(url)
        key = self.attachments.get(url) or (
            f"Binary/{target[1]}" if target and target[0] == "Binary" else None
        )
        if key is not None and key in self.pulled:
            return self.hub_reference(key)
        if target is None and not url.startswith(self.base_url + "/"):
            return url  # on another server: not the source's to give
        reason = self.unavailable.get(url, "not fetched")
        self.problems.append(Problem("attachment", where, f"{url}: {reason}; kept as its URL"))
        return url if target is None else f"{self.base_url}/{target[0]}/{target[1]}"

    def _reference(self, reference: str, where: str, available: set[str]) -> str:
        if reference.startswith("#"):
            return reference
        target = self.source_target(reference)
        if target is None:
            if reference.startswith("urn:"):
                self.problems.append(
                    Problem("unresolved", where, f"{reference}: a reference into another bundle")
                )
            return reference
        resource_type, source_id = target
        if target == ("Patient", self.source_patient_id):
            return f"Patient/{self.hub_patient_id}"
        key = f"{resource_type}/{source_id}"
        if key in available:
            return self.hub_reference(key)
        reason = self.unavailable.get(key, "not available from the source")
        self.problems.append(Problem("unresolved", where, f"{key}: {reason}; kept as its URL"))
        return f"{self.base_url}/{key}"


_KEPT_META = ("profile", "security", "tag")


def _reference_holders(node: Any) -> Iterator[JsonObject]:
    """The Reference objects under `node` (contained resources included)."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str):
            yield node
        for child in node.values():
            if isinstance(child, dict | list):
                yield from _reference_holders(child)
    elif isinstance(node, list):
        for child in node:
            yield from _reference_holders(child)


def _attachment_urls(node: Any, parent: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        url = node.get("url")
        if parent in ATTACHMENT_KEYS and isinstance(url, str):
            yield url
        for key, child in node.items():
            if isinstance(child, dict | list):
                yield from _attachment_urls(child, key)
    elif isinstance(node, list):
        for child in node:
            yield from _attachment_urls(child, parent)


def _url_id(url: str) -> str:
    return "att-" + hashlib.sha256(url.encode()).hexdigest()[:40]
