"""Resolving references inside a Bundle (FHIR R4 §2.36.4.1, "Resolving references in
Bundles").

- An absolute reference (`http...`, `urn:uuid:`, `urn:oid:`) names the entry whose fullUrl it
  is.
- A relative one (`Type/id`) is read against the base of the referring entry's fullUrl
  when that is a RESTful URL (`base/Type/id`); when it is not (a `urn:uuid:` fullUrl, as a
  document's Composition often has, or none), the entry holding a `Type` whose id is `id`.
- `.../_history/N` names that entry only if its meta.versionId is N.
- `#id` names a resource contained in the referring resource (`#` the resource itself).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hub.errors import Issue
from hub.fhir.references import iter_references

JSON = dict[str, Any]
_RESTFUL = re.compile(r"^(.*)/([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
_RELATIVE = re.compile(r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})$")
_HISTORY = "/_history/"


@dataclass(frozen=True)
class Entry:
    index: int
    full_url: str | None
    resource: JSON | None
    base: str | None
    """The base of a RESTful fullUrl (`http://hub/fhir` of `http://hub/fhir/Patient/1`)."""


class BundleIndex:
    """The entries of one Bundle, by fullUrl and by type and id."""

    def __init__(self, entries: list[Any]) -> None:
        self.entries: list[Entry] = []
        self.by_url: dict[str, Entry] = {}
        self.by_type_id: dict[tuple[str, str], Entry] = {}
        self.duplicates: list[tuple[Entry, Entry]] = []
        seen: dict[tuple[str, str | None], Entry] = {}
        for index, raw in enumerate(entries):
            entry = _entry(index, raw)
            self.entries.append(entry)
            resource = entry.resource
            if entry.full_url is not None:
                self.by_url.setdefault(entry.full_url, entry)
                # bdl-7: fullUrl unique, unless the entries are other versions of it.
                key = (entry.full_url, _version(resource))
                if key in seen:
                    self.duplicates.append((seen[key], entry))
                else:
                    seen[key] = entry
            if resource is not None:
                type_id = (resource.get("resourceType"), resource.get("id"))
                if isinstance(type_id[0], str) and isinstance(type_id[1], str):
                    self.by_type_id.setdefault((type_id[0], type_id[1]), entry)

    def find(self, reference: str, referrer: Entry | None) -> Entry | None:
        """The entry `reference` (not a `#` one) names, read from `referrer`, or None."""
        plain, _, version = reference.partition(_HISTORY)
        target = self.by_url.get(plain)
        if target is None:
            relative = _RELATIVE.match(plain)
            if relative is not None:
                base = referrer.base if referrer is not None else None
                if base is not None:
                    target = self.by_url.get(f"{base}/{plain}")
                else:
                    target = self.by_type_id.get((relative.group(1), relative.group(2)))
        if target is not None and version and _version(target.resource) != version:
            return None
        return target

    def resolver(self, referrer: Entry) -> Any:
        """A `resolve(reference)` for the profiles: the resource a reference of `referrer`
        names, or None."""

        def resolve(reference: str) -> JSON | None:
            if reference.startswith("#"):
                return None
            found = self.find(reference, referrer)
            return found.resource if found is not None else None

        return resolve

    def duplicate_issues(self) -> list[Issue]:
        return [
            Issue(
                f"fullUrl '{later.full_url}' is also the fullUrl of entry {first.index} "
                "(bdl-7: a fullUrl is unique in a Bundle, unless the entries are different "
                "versions of the resource).",
                code="duplicate",
                expression=(f"Bundle.entry[{later.index}].fullUrl",),
            )
            for first, later in self.duplicates
        ]

    def reference_issues(self, entry: Entry, where: str) -> list[Issue]:
        """A `not-found` issue for each reference in the entry's resource (and in the
        resources it contains) that names nothing in the Bundle."""
        resource = entry.resource
        if resource is None:
            return []
        contained = resource.get("contained")
        contained = contained if isinstance(contained, list) else []
        local_ids = {
            c["id"] for c in contained if isinstance(c, dict) and isinstance(c.get("id"), str)
        }
        issues = self._unresolved(entry, resource, where, local_ids, "")
        for number, inner in enumerate(contained):
            if isinstance(inner, dict):
                issues += self._unresolved(
                    entry, inner, f"{where}.contained[{number}]", local_ids, "contained "
                )
        return issues

    def _unresolved(
        self, entry: Entry, node: JSON, where: str, local_ids: set[str], kind: str
    ) -> list[Issue]:
        # The fast walk builds no paths; they are found only for the few references that
        # do not resolve.
        dangling = {
            reference
            for reference in references_of(node)
            if not self._resolves(reference, entry, local_ids)
        }
        if not dangling:
            return []
        return [
            Issue(
                f"The reference '{value}' in {kind}{node.get('resourceType', 'a resource')} "
                f"does not resolve {_where_not(value)}.",
                code="not-found",
                expression=(path,),
            )
            for path, value in iter_references(node, where)
            if value in dangling
        ]

    def _resolves(self, reference: str, entry: Entry, local_ids: set[str]) -> bool:
        if reference.startswith("#"):
            return reference == "#" or reference[1:] in local_ids
        return self.find(reference, entry) is not None


def references_of(resource: JSON) -> list[str]:
    """Every Reference.reference in `resource`, not inside its contained resources.

    Unlike hub.fhir.references.references_in, it also finds a Reference held in an element
    itself named `reference` (CarePlan.activity.reference: `{"reference": {"reference":
    "MedicationRequest/1"}}`); and, comparing types exactly and pushing only objects, it
    is some three times faster (it runs on every resource of a bundle).
    """
    found: list[str] = []
    stack: list[dict[str, Any]] = [resource]
    push = stack.append
    while stack:
        for key, child in stack.pop().items():
            kind = type(child)
            if kind is str:
                if key == "reference":
                    found.append(child)
            elif kind is dict:
                if key != "contained":
                    push(child)
            elif kind is list and key != "contained":
                for item in child:
                    if type(item) is dict:
                        push(item)
    return found


def _entry(index: int, raw: Any) -> Entry:
    if not isinstance(raw, dict):
        return Entry(index, None, None, None)
    full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    resource = raw.get("resource") if isinstance(raw.get("resource"), dict) else None
    restful = _RESTFUL.match(full_url) if full_url is not None else None
    return Entry(index, full_url, resource, restful.group(1) if restful else None)


def _version(resource: JSON | None) -> str | None:
    meta = resource.get("meta") if resource is not None else None
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def _where_not(reference: str) -> str:
    if reference.startswith("#"):
        return "to a contained resource"
    if _HISTORY in reference:
        return "to an entry of the Bundle at that version"
    return "to an entry of the Bundle"
