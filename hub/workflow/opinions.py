"""The second opinion: a DiagnosticReport (code report-type|second-opinion, basedOn the
case's referral) that the case's assigned specialist writes.

- A draft (`preliminary`) is written with POST/PUT, as often as needed; the first moves
  the case to in-progress / opinion-drafted.
- `finalize` makes it `final`: the PDF is rendered into presentedForm (and a
  DocumentReference), the version is signed (a Provenance whose signature is a JWS by the
  hub's key over the version's SHA-256, naming the specialist), and its delivery queued.
- A final opinion changes only by `amend` (a new version, `amended`, with a reason in its
  signed Provenance); any other write of it is refused.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey
from sqlalchemy.orm import Session

from hub import codes
from hub.errors import IllegalTransition, InvalidRequest, Issue, NotFound, UnprocessableResource
from hub.fhir.dates import instant, utc_now
from hub.fhir.interactions import FhirInteractions
from hub.fhir.validation import validate_resource
from hub.imaging.events import record_case_event
from hub.opinions import ANSWER_URL, PLAN_ASSESSMENT_URL, OpinionContent
from hub.profiles import validate_content
from hub.security.keys import SIGNING_ALGORITHM
from hub.security.principal import Principal
from hub.storage.repository import ResourceRepository, StoredResource
from hub.storage.search import Criterion, SearchQuery, SearchRunner
from hub.workflow.opinion_rules import (
    AMENDED,
    DRAFT,
    FINAL,
    is_opinion,
    referral_reference,
    require_author,
)

# Provenance.signature.type: ASTM E1762-95 author's signature.
AUTHOR_SIGNATURE = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.1",
    "display": "Author's Signature",
}


def sign(
    repository: ResourceRepository,
    report: StoredResource,
    principal: Principal | None,
    key: dict[str, Any],
    reason: str | None = None,
) -> StoredResource:
    """A Provenance signing this version of `report`: a JWS (the hub's key) over the
    version's SHA-256, naming the specialist; `reason` for an amendment."""
    target = f"{report.reference}/_history/{report.version_id}"
    digest = hashlib.sha256(canonical_json(report.content)).hexdigest()
    payload = json.dumps({"target": target, "sha256": digest}, sort_keys=True)
    header = {"alg": SIGNING_ALGORITHM, "kid": key["kid"]}
    token = jws.serialize_compact(header, payload, RSAKey.import_key(key))
    who: dict[str, Any] = {"display": "Second-opinion hub"}
    if principal is not None:
        who = {"display": principal.subject}
        if principal.fhir_user:
            who["reference"] = principal.fhir_user
    now = instant(utc_now())
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": now,
        "activity": {
            "coding": [
                {
                    "system": codes.DATA_OPERATION_SYSTEM,
                    "code": "UPDATE" if reason else "CREATE",
                }
            ],
            "text": "Opinion amended and signed" if reason else "Opinion signed",
        },
        "agent": [{"who": who}],
        "signature": [
            {
                "type": [AUTHOR_SIGNATURE],
                "when": now,
                "who": who,
                "sigFormat": "application/jose",
                "data": base64.b64encode(token.encode("ascii")).decode("ascii"),
            }
        ],
    }
    if report.content.get("subject"):
        provenance["target"].append(report.content["subject"])
    if reason:
        provenance["reason"] = [{"text": reason}]
    return repository.create("Provenance", provenance)


def verify(report: StoredResource, provenance: dict[str, Any], key: dict[str, Any]) -> bool:
    """Whether `provenance` is a valid signature of this version of `report`."""
    public = RSAKey.import_key(key)
    for signature in provenance.get("signature") or []:
        token = base64.b64decode(signature.get("data", "")).decode("ascii")
        try:
            claims = json.loads(jws.deserialize_compact(token, public).payload or b"{}")
        except JoseError:
            return False
        expected = f"{report.reference}/_history/{report.version_id}"
        digest = hashlib.sha256(canonical_json(report.content)).hexdigest()
        return bool(claims == {"target": expected, "sha256": digest})
    return False


def canonical_json(content: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the content without `meta` (which every version sets
    itself), keys sorted, no spaces."""
    body = {key: value for key, value in content.items() if key != "meta"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


JSON = dict[str, Any]
Renderer = Callable[[JSON, StoredResource, StoredResource, JSON | None], tuple[JSON, JSON]]
"""(report content as it will be stored, referral, case, a Reference to the document it
replaces) → (presentedForm attachment, DocumentReference)."""
Deliveries = Callable[[Session, StoredResource, StoredResource, StoredResource], list[str]]
"""(session, the signed report, the referral, the case) → what was queued, for the case's
history."""


@dataclass(frozen=True)
class OpinionDesk:
    """Finalizing and amending opinions, in the caller's unit of work."""

    fhir: FhirInteractions
    key: dict[str, Any]
    render: Renderer
    deliver: Deliveries

    def finalize(self, report_id: str) -> StoredResource:
        """Sign draft DiagnosticReport/`report_id` as final and queue its delivery."""
        report, referral, case = self._opinion(report_id)
        if report.content.get("status") != DRAFT:
            raise IllegalTransition(
                f"The opinion is {report.content.get('status')}, not a draft: change it with "
                "$amend.",
                expression="DiagnosticReport.status",
            )
        return self._issue(report, referral, case, dict(report.content), FINAL, None)

    def amend(self, report_id: str, content: dict[str, Any], reason: str) -> StoredResource:
        """A new, signed version of final opinion `report_id` (status amended) with `content`
        and the `reason` for the change; delivered again."""
        report, referral, case = self._opinion(report_id)
        if report.content.get("status") not in (FINAL, AMENDED):
            raise IllegalTransition(
                "Only a final opinion is amended; a draft is changed with PUT.",
                expression="DiagnosticReport.status",
            )
        if not reason.strip():
            raise InvalidRequest("An amendment needs a reason.", expression="reason")
        for element in ("code", "basedOn", "subject"):
            if content.get(element) != report.content.get(element):
                raise InvalidRequest(
                    f"An amendment keeps the opinion's {element}.",
                    expression=f"DiagnosticReport.{element}",
                )
        return self._issue(report, referral, case, content, AMENDED, reason)

    def _opinion(self, report_id: str) -> tuple[StoredResource, StoredResource, StoredResource]:
        report = self.fhir.fetch("DiagnosticReport", report_id)
        case = self.fhir.cases.opinion_case(report.content) if is_opinion(report.content) else None
        if case is None:
            raise NotFound(f"DiagnosticReport/{report_id} is not a case's opinion.")
        require_author(case, self.fhir.principal)
        referral = self.fhir.repository.read(*_referral_key(report.content))
        return report, referral, case

    def _issue(
        self,
        report: StoredResource,
        referral: StoredResource,
        case: StoredResource,
        content: dict[str, Any],
        status: str,
        reason: str | None,
    ) -> StoredResource:
        content = {**content, "id": report.resource_id, "status": status}
        content["meta"] = {**(content.get("meta") or {}), "versionId": str(report.version_id + 1)}
        content["issued"] = instant(utc_now())
        content.pop("presentedForm", None)
        repository = self.fhir.repository
        replaced = _supersede_documents(repository, report.reference)
        attachment, document = self.render(content, referral, case, replaced)
        content["presentedForm"] = [attachment]
        _check_signable(content, referral.content)
        stored, _ = repository.update(
            "DiagnosticReport", report.resource_id, content, if_match=report.version_id
        )
        sign(repository, stored, self.fhir.principal, self.key, reason)
        repository.create("DocumentReference", document)
        queued = self.deliver(self.fhir.session, stored, referral, case)
        self.fhir.audited_export("update", [stored])
        action = "amended" if reason else "signed"
        where = "; ".join(queued) or "no delivery channel is configured for its referrer"
        record_case_event(
            self.fhir.session, case.resource_id, f"Opinion {action}: delivery to {where}."
        )
        return stored


def _check_signable(report: JSON, referral: JSON) -> None:
    """What a signed opinion must hold: a conclusion, the verdict on the current plan, an
    answer to each question of the referral (its notes), and our profile's rules."""
    content = OpinionContent.from_report(report)
    issues = []
    if not content.conclusion:
        issues.append(
            Issue("The opinion has no conclusion.", expression=("DiagnosticReport.conclusion",))
        )
    if content.plan_assessment is None:
        issues.append(
            Issue(
                "The opinion does not say whether it agrees with, modifies or disagrees with "
                f"the current plan (extension {PLAN_ASSESSMENT_URL}).",
                expression=("DiagnosticReport.extension",),
            )
        )
    for index, note in enumerate(referral.get("note") or []):
        question = str(note.get("text") or "")
        if question and content.answer_to(question) is None:
            issues.append(
                Issue(
                    f"The referral's question {index + 1} has no answer ({ANSWER_URL}).",
                    expression=("DiagnosticReport.extension",),
                )
            )
    validate_resource(report, expected_type="DiagnosticReport")
    issues += [i for i in validate_content(report, base="none") if i.severity in ("error", "fatal")]
    if issues:
        raise UnprocessableResource("The opinion cannot be signed yet.", issues=issues)


def _referral_key(report: dict[str, Any]) -> tuple[str, str]:
    target = referral_reference(report)
    assert target is not None  # opinion_case found the referral through it
    return target


def _supersede_documents(repository: ResourceRepository, report_reference: str) -> JSON | None:
    """The DocumentReference of the opinion's current version is superseded; a Reference
    to it (None for a first version)."""
    query = SearchQuery(
        "DocumentReference",
        criteria=[Criterion("related", None, (report_reference,))],
        count=100,
    )
    replaced = None
    for document in SearchRunner(repository.session).search(query, with_total=False).matches:
        if document.content.get("status") == "current":
            repository.update(
                "DocumentReference",
                document.resource_id,
                {**document.content, "status": "superseded"},
            )
            replaced = {"reference": document.reference}
    return replaced
