"""Five synthetic children of different cancers (issue #7), each referred and then sent
over three channels that overlap on purpose, through the hub's real ways in:

* the referral: a FHIR transaction POSTed by the outside EHR (a bearer token of the referrer role);
* FHIR: the child's record served by a real FHIR server (Medplum's, tests/fhir_peer),
  pulled by the hub when the case opens (its checklist asks the configured source) and
  again at a case manager's request (`/records/cases/{id}/$pull`);
* HL7 v2: ADT^A04, ORU^R01 and MDM^T02 sent by python-hl7's `mllp_send` to the hub's
  MLLP listener, then mapped by the job worker;
* DICOM: two studies pushed by dcmtk's `storescu` to the hub's Storage SCP, attached by
  the job worker.

Then the case's `$record-bundle` must be routed, hold every channel, keep each intended
duplicate once (and the near-duplicate twice), resolve every reference and validate.

One hub serves the five children (as a hub would), on SQLite only: the storage layer is
tested on both backends elsewhere, and this file is about the channels meeting. Each child
is delivered once (a module-scoped fixture); the tests read what came of it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmwrite
from sqlalchemy import select

from connectors.dimse import StorageScpConfig
from connectors.fhir_rest.config import FhirSource
from connectors.hl7v2_mllp import MllpListenerConfig
from connectors.http import HttpRetry
from hub import codes
from hub.app import create_app
from hub.demo.five_cases import FIVE_CANCERS, OutsideCase, build_case
from hub.jobs.worker import JobWorker
from hub.messages.mapping_job import MESSAGE_ID_SYSTEM
from hub.profiles import validate_bundle
from hub.records.fhir_pull import SOURCE_SYSTEM
from hub.runtime import job_handlers
from hub.settings import Settings
from hub.storage.db import make_engine
from hub.storage.migrate import upgrade
from hub.storage.tables import DicomStudyRow, DicomTransferRow, MessageRow, RecordPullRow
from tests.fhir_client import bearer
from tests.fhir_server_peer import FhirPeer
from tests.five_patients import (
    HL7_DERIVED,
    expected_counts,
    has_identifier,
    matches,
    near_duplicates,
    resources_of,
    unresolved_references,
)
from tests.integration.test_hl7_end_to_end import mllp_send

pytestmark = pytest.mark.integration

HUB_AE = "SOH_HUB"
PACS_AE = "LARKFIELD_PACS"
SOURCE = "larkfield-ehr"
BASE = "http://testserver/fhir"
# Where each case must go by config/routing.yaml: relapsed leukaemia (C91.02) to transplant
# and cellular therapy, urgently; the cerebellar tumour (C71.6) to neuro-oncology; the
# adrenal (C74.12), bone (C40.22) and lymph-node (C81.12) cancers to oncology.
PROGRAMS = {
    "medulloblastoma": ("neuro-oncology", "routine"),
    "b-all-relapsed": ("bmt-cellular-therapy", "urgent"),
    "neuroblastoma": ("oncology", "routine"),
    "osteosarcoma": ("oncology", "routine"),
    "hodgkin-lymphoma": ("oncology", "routine"),
}


@dataclass
class Hub:
    client: TestClient
    settings: Settings
    peer: FhirPeer
    worker: JobWorker
    mllp_port: int
    scp_port: int
    folder: Path

    @property
    def sessions(self) -> Any:
        return self.client.app.state.hub.sessions  # type: ignore[attr-defined]


@dataclass
class Delivered:
    """One case after its referral and its three channels reached the hub."""

    case: OutsideCase
    hub: Hub
    task: dict[str, Any]
    referral_id: str
    acks: list[str]
    bundle_status: int
    bundle: dict[str, Any]


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, signing_key_file: Path, fhir_peer: FhirPeer
) -> Iterator[Hub]:
    """The hub with an MLLP listener, a Storage SCP and the outside FHIR server as a source,
    on its own migrated SQLite database; its jobs run when a test drains them."""
    folder = tmp_path_factory.mktemp("five-patients")
    database_url = f"sqlite:///{folder / 'hub.db'}"
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    settings = Settings(
        database_url=database_url,
        dicom_store_dir=folder / "dicom",
        signing_key_file=signing_key_file,
        public_url="http://testserver",
        embedded_worker=False,
        mllp_listeners=[MllpListenerConfig(name="larkfield", port=0)],
        dicom_scp=StorageScpConfig(ae_title=HUB_AE, port=0),
        fhir_sources=[
            FhirSource(
                name=SOURCE,
                base_url=fhir_peer.base_url,
                retry=HttpRetry(max_attempts=3, backoff_seconds=0.05),
            )
        ],
    )
    fhir_peer.reset()
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        client.headers["Content-Type"] = "application/fhir+json"
        yield Hub(
            client=client,
            settings=settings,
            peer=fhir_peer,
            worker=JobWorker(app.state.hub.sessions, job_handlers(settings)),
            mllp_port=app.state.listeners[0].bound_port,
            scp_port=app.state.storage_scp.bound_port,
            folder=folder,
        )


def manager(settings: Settings) -> dict[str, str]:
    """A case manager of every program (routing is checked on the Task, not by access)."""
    return bearer(
        settings,
        subject="cm-five",
        roles=("case-manager",),
        scope="user/*.cruds",
        programs=tuple(codes.PROGRAMS),
    )


def refer(hub: Hub, case: OutsideCase) -> tuple[str, dict[str, Any]]:
    """POST the referral transaction as the outside EHR; (referral id, case Task)."""
    referrer = bearer(hub.settings, subject="larkfield-ehr", roles=("referrer",))
    response = hub.client.post("/fhir", json=case.referral, headers=referrer)
    assert response.status_code == 200, response.text
    ids = [
        e["response"]["location"].split("/_history/")[0].rsplit("/", 1)[1]
        for e in response.json()["entry"]
    ]
    patient_id, referral_id = ids[0], ids[2]
    tasks = hub.client.get("/fhir/Task", params={"patient": patient_id}, headers=referrer)
    assert tasks.status_code == 200, tasks.text
    return referral_id, tasks.json()["entry"][0]["resource"]


def push_studies(hub: Hub, case: OutsideCase) -> None:
    """storescu, as the outside PACS, sends both studies in one association."""
    files = []
    for uid, datasets in case.dicom.items():
        for ds in datasets:
            path = hub.folder / case.cancer / uid / f"{ds.SOPInstanceUID}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            dcmwrite(path, ds, enforce_file_format=True)
            files.append(str(path))
    sent = subprocess.run(
        ["storescu", "-aet", PACS_AE, "-aec", HUB_AE, "127.0.0.1", str(hub.scp_port), *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr


def drain(hub: Hub) -> None:
    """Run the jobs queued so far, once every DICOM transfer is closed (the SCP learns of
    the release after storescu has exited)."""
    for _ in range(300):  # a guard against a hang, not a performance expectation
        with hub.sessions() as session:
            still_open = session.scalars(
                select(DicomTransferRow).where(DicomTransferRow.status == "open")
            ).first()
        if still_open is None:
            break
        time.sleep(0.05)
    hub.worker.run_until_idle()


@pytest.fixture(scope="module", params=FIVE_CANCERS)
def delivered(request: pytest.FixtureRequest, hub: Hub) -> Delivered:
    """The case of one cancer: referred, sent over HL7 v2 and DICOM, pulled over FHIR, its
    record bundle read.

    Opening the case already asks the FHIR source (the checklist's check-records job); that
    pull is queued behind the HL7 mapping and DICOM attachment jobs, so it meets what they
    brought. The case manager's `$pull` then asks again, for what changed since: nothing.
    """
    case = build_case(request.param)
    hub.peer.load(case.record)
    referral_id, task = refer(hub, case)
    acks = mllp_send(hub.mllp_port, [m.decode("utf-8") for m in case.hl7.values()], hub.folder)
    push_studies(hub, case)
    drain(hub)
    pulled = hub.client.post(
        f"/records/cases/{task['id']}/$pull",
        json={"source": SOURCE},
        headers={**manager(hub.settings), "Content-Type": "application/json"},
    )
    assert pulled.status_code == 202, pulled.text
    drain(hub)
    response = hub.client.get(
        f"/fhir/ServiceRequest/{referral_id}/$record-bundle", headers=manager(hub.settings)
    )
    return Delivered(case, hub, task, referral_id, acks, response.status_code, response.json())


def test_every_channel_was_taken_in_whole(delivered: Delivered) -> None:
    case, hub = delivered.case, delivered.hub
    controls = [m.split(b"|")[9].decode() for m in case.hl7.values()]
    # MSH-15 AL asks for an accept acknowledgment: CA (commit accept) once it is logged.
    assert [a.split("|")[1:3] for a in delivered.acks] == [["CA", c] for c in controls]
    with hub.sessions() as session:
        messages = {
            row.control_id: (row.status, row.error)
            for row in session.scalars(
                select(MessageRow).where(MessageRow.control_id.in_(controls))
            )
        }
        studies = {
            row.study_uid: (row.status, row.hold_reason, row.case_task_id)
            for row in session.scalars(
                select(DicomStudyRow).where(DicomStudyRow.study_uid.in_(case.dicom))
            )
        }
        pull = session.scalars(
            select(RecordPullRow).where(RecordPullRow.case_task_id == delivered.task["id"])
        ).one()
    assert messages == {control: ("mapped", None) for control in controls}
    assert studies == {uid: ("attached", None, delivered.task["id"]) for uid in case.dicom}
    assert pull.status == "complete", pull.report
    assert json.loads(pull.report)["problems"] == []


def test_the_case_is_routed_to_its_program(delivered: Delivered) -> None:
    program, priority = PROGRAMS[delivered.case.cancer]
    task = delivered.task
    assert task["performerType"][0]["coding"][0]["code"] == program, task.get("note")
    assert task["priority"] == priority


def test_the_record_bundle_holds_all_three_channels(delivered: Delivered) -> None:
    case, bundle = delivered.case, delivered.bundle
    assert delivered.bundle_status == 200, bundle
    resources = resources_of(bundle)
    from_fhir = [
        r
        for r in resources
        if str((r.get("meta") or {}).get("source", "")).startswith(delivered.hub.peer.base_url)
    ]
    assert {"Condition", "Procedure", "MedicationRequest", "DocumentReference"} <= {
        r["resourceType"] for r in from_fhir
    }
    marker_report = [
        r
        for r in resources
        if r["resourceType"] == "DiagnosticReport" and has_identifier(r, *case.hl7_only)
    ]
    assert len(marker_report) == 1  # only the laboratory's HL7 feed sends it
    pacs_only = [
        r
        for r in resources
        if r["resourceType"] == "ImagingStudy"
        and has_identifier(r, "urn:dicom:uid", f"urn:oid:{case.pacs_only_study}")
    ]
    assert len(pacs_only) == 1 and pacs_only[0]["endpoint"]  # only the PACS sends it
    referral = [r for r in resources if r["resourceType"] == "ServiceRequest"]
    assert [r["id"] for r in referral] == [delivered.referral_id]


def test_each_intended_duplicate_is_kept_once(delivered: Delivered) -> None:
    """Each overlap once, holding the identifiers of every copy (an HL7 result's derived
    one too), with the Provenance of each channel that sent it (the referral's aside)."""
    resources = resources_of(delivered.bundle)
    wrong = []
    for overlap in delivered.case.overlaps:
        found = [r for r in resources if matches(r, overlap)]
        if len(found) != 1:
            wrong.append(f"{overlap.label} ({overlap.resource_type}): {len(found)} copies")
            continue
        if overlap.resource_type == "Observation" and not any(
            str(i.get("system", "")).startswith(HL7_DERIVED)
            for i in found[0].get("identifier") or []
        ):
            wrong.append(f"{overlap.label}: the HL7 copy's identifier was not kept")
        channels = set(overlap.channels) - {"referral"}
        sources = provenance_channels(resources, found[0])
        if not channels <= sources:
            wrong.append(
                f"{overlap.label}: Provenance of {sorted(sources)}, not of {sorted(channels)}"
            )
    assert not wrong, "\n".join(wrong)


def provenance_channels(resources: list[dict[str, Any]], target: dict[str, Any]) -> set[str]:
    """The channels (fhir, hl7, dicom) whose Provenance in the bundle names ``target``."""
    reference = f"{target['resourceType']}/{target['id']}"
    found = set()
    for provenance in resources:
        if provenance["resourceType"] != "Provenance":
            continue
        targets = {
            t.get("reference", "").removeprefix(f"{BASE}/").split("/_history/")[0]
            for t in provenance["target"]
        }
        if reference not in targets:
            continue
        if str((provenance.get("activity") or {}).get("text", "")).startswith("DICOM import"):
            found.add("dicom")
        for entity in provenance.get("entity") or []:
            system = ((entity.get("what") or {}).get("identifier") or {}).get("system")
            found.update({SOURCE_SYSTEM: ["fhir"], MESSAGE_ID_SYSTEM: ["hl7"]}.get(system, []))
    return found


def test_the_near_duplicate_is_not_merged(delivered: Delivered) -> None:
    """The laboratory's platelet recount (HL7) stays beside the count it looks like (FHIR):
    same code and time, another value."""
    case = delivered.case
    near = near_duplicates(resources_of(delivered.bundle), case)
    assert sorted(r["valueQuantity"]["value"] for r in near) == sorted(
        [case.near_duplicate.fhir_value, case.near_duplicate.hl7_value]
    )


def test_nothing_else_is_merged_or_lost(delivered: Delivered) -> None:
    """Records that only look alike stay apart (e.g. two genes both reported absent, with
    one LOINC code and date): each clinical type counts the FHIR part's records plus what
    one other channel alone sends."""
    wanted = expected_counts(delivered.case)
    resources = resources_of(delivered.bundle)
    held = Counter(r["resourceType"] for r in resources if r["resourceType"] in wanted)
    differences = {t: (held[t], n) for t, n in wanted.items() if held[t] != n}
    assert differences == {}, "type: (in the bundle, expected)"


def test_every_reference_resolves_in_the_bundle(delivered: Delivered) -> None:
    assert unresolved_references(delivered.bundle) == []


def test_the_record_bundle_is_a_document(delivered: Delivered) -> None:
    """A document: its Composition first, with sections; each stored record at its
    absolute URL (the Composition, made for the hand-out, may have a urn:uuid)."""
    bundle = delivered.bundle
    assert bundle.get("type") == "document"
    assert bundle["entry"][0]["resource"]["resourceType"] == "Composition"
    assert bundle["entry"][0]["resource"].get("section")
    wrong = [
        entry.get("fullUrl")
        for entry in bundle["entry"][1:]
        if entry.get("fullUrl")
        != f"{BASE}/{entry['resource']['resourceType']}/{entry['resource']['id']}"
    ]
    assert wrong == []


def test_the_record_bundle_validates_against_our_profiles(delivered: Delivered) -> None:
    issues = validate_bundle(delivered.bundle)
    errors = [issue for issue in issues if issue.severity in ("error", "fatal")]
    assert not errors, "\n".join(
        f"{i.severity} {i.code} {'/'.join(i.expression)}: {i.diagnostics}" for i in issues
    )


def test_a_study_pushed_again_updates_the_hubs_own_imaging_study(delivered: Delivered) -> None:
    """The pulled record describes one of the studies too (same Study Instance UID): a second
    push must update the ImagingStudy the hub made, not stumble on the pulled one."""
    hub, case = delivered.hub, delivered.case
    with hub.sessions() as session:
        before = {
            row.study_uid: row.imaging_study_id
            for row in session.scalars(select(DicomStudyRow)).all()
            if row.study_uid in case.dicom
        }
    assert len(before) == len(case.dicom) and all(before.values())
    push_studies(hub, case)
    drain(hub)
    with hub.sessions() as session:
        after = {
            row.study_uid: (row.status, row.hold_reason, row.imaging_study_id)
            for row in session.scalars(select(DicomStudyRow)).all()
            if row.study_uid in case.dicom
        }
    assert after == {uid: ("attached", None, before[uid]) for uid in before}
