"""The consent gate: a family's own referral must name a legally authorized representative
(a RelatedPerson with a relationship to the child) who gave an active Consent."""

from __future__ import annotations

from hub.storage.indexer import split_reference
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.search import Criterion, SearchQuery, SearchRunner

AWAITING_CONSENT = (
    "Awaiting consent: a referral that does not come from a clinician's system must be "
    "requested by a legally authorized representative (RelatedPerson with a relationship "
    "to the child) who gave an active Consent for the review."
)


def consent_problem(repository: ResourceRepository, referral: StoredResource) -> str | None:
    """Why the referral cannot proceed without consent, or None if the consent is there."""
    subject = (referral.content.get("subject") or {}).get("reference", "")
    requester = split_reference((referral.content.get("requester") or {}).get("reference", ""))
    if requester is None or requester[0] != "RelatedPerson":
        return AWAITING_CONSENT
    representative = repository.find(*requester)
    if representative is None or not representative.content.get("relationship"):
        return AWAITING_CONSENT
    if split_reference(representative.content.get("patient", {}).get("reference", "")) != (
        split_reference(subject)
    ):
        return AWAITING_CONSENT
    consents = SearchQuery(
        "Consent",
        criteria=[
            Criterion("patient", None, (subject,)),
            Criterion("status", None, ("active",)),
            Criterion("consentor", None, (f"RelatedPerson/{requester[1]}",)),
        ],
        count=1,
    )
    if not SearchRunner(repository.session).search(consents).matches:
        return AWAITING_CONSENT
    return None
