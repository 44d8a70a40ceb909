"""Validating a whole Bundle, or any resource: `validate_bundle`, `validate_content`.

A Bundle is checked, in this order: the Bundle itself against base R4 (without its
entries' resources) and the hub's profiles that apply to it (the record-bundle profile for a
`document`); duplicate fullUrls; then each entry's resource against base R4, the hub's
profiles that apply to it (a record's first Composition: the record-composition profile)
and the resolution of every reference it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from hub.errors import HubError, Issue
from hub.fhir.validation import validate_resource
from hub.profiles.applicability import profiles_for
from hub.profiles.bundle_index import BundleIndex
from hub.profiles.canonical import RECORD_BUNDLE, RECORD_COMPOSITION
from hub.profiles.loader import definitions
from hub.profiles.validator import check_profiles

BaseValidation = Literal["models", "json", "none"]
"""How much base R4 validation each resource gets: `models`, all of it (the fhir.resources
models: about 0.3 ms a resource, most of the cost); `json`, the JSON types and required
codes only (about 0.1 ms); `none`, for resources the hub stored, which passed it when they
were written (the Bundle itself is still checked, at `json` at least)."""


def validate_bundle(
    bundle: Any, *, base: BaseValidation = "models", profiles: Sequence[str] = ()
) -> list[Issue]:
    """Every issue of `bundle`: base R4 validity of the Bundle and of each entry, the hub's
    profiles (those that apply, and `profiles` on the Bundle itself), unique fullUrls, and
    references that resolve inside the Bundle. Expressions are FHIRPath from `Bundle`
    (`Bundle.entry[3].resource.subject.reference`). Never raises.

    `base` says how much base R4 validation the entries' resources get (BaseValidation):
    `models` for content from outside; `none` for a bundle of stored resources (a record
    bundle of 5,000 then validates in about a third of a second).
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return [Issue("A Bundle was expected.", code="structure", expression=("Bundle",))]
    raw_entries = bundle.get("entry")
    entries: list[Any] = raw_entries if isinstance(raw_entries, list) else []
    shell = {key: value for key, value in bundle.items() if key != "entry"}
    if isinstance(raw_entries, list):
        # The entries' resources are validated one by one below, each with its own path.
        shell["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in raw_entries
        ]
    elif raw_entries is not None:
        shell["entry"] = raw_entries
    issues = _base_issues(shell, "Bundle", "models" if base == "models" else "json")
    index = BundleIndex(entries)
    bundle_profiles = [*profiles_for(bundle), *_extra(profiles, issues, "Bundle")]
    issues += check_profiles(bundle, "Bundle", bundle_profiles)
    issues += index.duplicate_issues()
    is_record = RECORD_BUNDLE in bundle_profiles
    for entry in index.entries:
        resource = entry.resource
        where = f"Bundle.entry[{entry.index}].resource"
        if resource is None:
            raw = entries[entry.index]
            if isinstance(raw, dict) and raw.get("resource") is not None:
                issues += _base_issues(raw["resource"], where, base)  # not an object
            continue
        issues += _base_issues(resource, where, base)
        resolve = index.resolver(entry)
        urls = profiles_for(resource, resolve)
        if is_record and entry.index == 0 and resource.get("resourceType") == "Composition":
            urls = urls if RECORD_COMPOSITION in urls else [*urls, RECORD_COMPOSITION]
        issues += check_profiles(resource, where, urls, resolve)
        issues += index.reference_issues(entry, where)
    return issues


def validate_content(
    content: Any, *, base: BaseValidation = "models", profiles: Sequence[str] = ()
) -> list[Issue]:
    """Every issue of `content`: a Bundle as `validate_bundle` checks it; any other resource
    against base R4 and the hub's profiles that apply to it (and `profiles`, canonical
    URLs asked for by the caller). Never raises."""
    if isinstance(content, dict) and content.get("resourceType") == "Bundle":
        return validate_bundle(content, base=base, profiles=profiles)
    resource_type = content.get("resourceType") if isinstance(content, dict) else None
    root = resource_type if isinstance(resource_type, str) and resource_type else "Resource"
    issues = _base_issues(content, root, base)
    if isinstance(content, dict):
        urls = [*profiles_for(content), *_extra(profiles, issues, root)]
        issues += check_profiles(content, root, list(dict.fromkeys(urls)))
    return issues


def _base_issues(resource: Any, where: str, base: BaseValidation) -> list[Issue]:
    if base == "none":
        if isinstance(resource, dict):
            return []
        return [Issue("A FHIR resource must be a JSON object.", expression=(where,))]
    try:
        validate_resource(resource, where=where, models=base == "models")
    except HubError as exc:  # InvalidRequest, UnprocessableResource: each with its issues
        return list(exc.issues)
    return []


def _extra(profiles: Sequence[str], issues: list[Issue], root: str) -> list[str]:
    """The asked-for profiles the hub knows; an issue for each it does not."""
    known = definitions().profiles
    for url in profiles:
        if url.split("|")[0] not in known:
            issues.append(
                Issue(
                    f"The profile {url} is not one of the hub's; it was not checked.",
                    code="not-supported",
                    severity="warning",
                    expression=(root,),
                )
            )
    return [url.split("|")[0] for url in profiles if url.split("|")[0] in known]
