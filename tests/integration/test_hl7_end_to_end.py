"""HL7 v2 from end to end, on both backends: python-hl7's `mllp_send` (a peer we did not
write) sends a referring hospital's messages to the hub's MLLP listener; each is ACKed after
it is logged; the job worker maps them; the case opens; the message log tells the story."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors.hl7v2_mllp import MllpListenerConfig, frame
from hub.app import create_app
from hub.jobs.worker import JobWorker
from tests.fhir_client import bearer, path_jobs

MLLP_SEND = Path(sys.executable).parent / "mllp_send"
MRN = "MRN-77"
MESSAGES = {
    "ADT-1": "MSH|^~\\&|EHR|ST-MARY|HUB|SOH|20261101090000||ADT^A01^ADT_A01|ADT-1|P|2.5.1\r"
    "EVN|A01|20261101090000\r"
    f"PID|1||{MRN}^^^ST-MARY^MR||Testchild^Robin^J||20170302|F|||12 Oak St^^Springfield"
    "^OR^97477\r"
    "NK1|1|Testparent^Alex|MTH^Mother^HL70063|||555-0100\r"
    "PV1|1|O\r",
    "ORU-1": "MSH|^~\\&|LAB|ST-MARY|HUB|SOH|20261101120000||ORU^R01^ORU_R01|ORU-1|P|2.5.1\r"
    f"PID|1||{MRN}^^^ST-MARY^MR||Testchild^Robin||20170302|F\r"
    "OBR|1|PL-9|FI-9|58410-2^CBC panel^LN|||20261101080000\r"
    "OBX|1|NM|718-7^Hemoglobin^LN||9.1|g/dL^^UCUM|11.5-15.5|L|||F\r"
    "OBX|2|NM|6690-2^WBC^LN||1.2|10*3/uL^^UCUM|4.5-13.5|L|||F\r"
    "OBX|3|NM|777-3^Platelets^LN||88|10*3/uL^^UCUM|150-450|L|||F\r"
    "ZPI|1|site-specific\r",
    "MDM-1": "MSH|^~\\&|EHR|ST-MARY|HUB|SOH|20261101130000||MDM^T02^MDM_T02|MDM-1|P|2.5.1\r"
    "EVN|T02|20261101130000\r"
    f"PID|1||{MRN}^^^ST-MARY^MR||Testchild^Robin||20170302|F\r"
    "PV1|1|O\r"
    "TXA|1|OP^Operative note|TX|20261001100000||||||||DOC-55|||||AU\r"
    "OBX|1|TX|||Posterior fossa resection, gross total.||||||F\r",
    "REF-1": "MSH|^~\\&|EHR|ST-MARY|HUB|SOH|20261101140000||REF^I12^REF_I12|REF-1|P|2.5.1\r"
    "RF1|A|R|SO^Second opinion|||REF-900|20261101\r"
    "PRD|RP|Oncologist^Casey^^^Dr|||||1234567893^^^NPI\r"
    f"PID|1||{MRN}^^^ST-MARY^MR||Testchild^Robin||20170302|F\r"
    "DG1|1||C71.6^Malignant neoplasm of cerebellum^I10\r"
    "NTE|1||Is proton therapy an option?\r"
    "NTE|2||Are there open trials for relapsed disease?\r",
}


def mllp_send(port: int, messages: list[str], tmp_path: Path) -> list[str]:
    """Send with python-hl7's mllp_send; return the MSA segments of the ACKs it printed."""
    batch = tmp_path / "messages.hl7"
    batch.write_bytes(b"".join(frame(m.encode()) for m in messages))
    result = subprocess.run(
        [str(MLLP_SEND), "--port", str(port), "--file", str(batch), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [
        line for line in result.stdout.replace("\r", "\n").splitlines() if line.startswith("MSA|")
    ]


@pytest.fixture
def hub(settings):
    hub_settings = settings.model_copy(
        update={"mllp_listeners": [MllpListenerConfig(name="st-mary", port=0)]}
    )
    app = create_app(hub_settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        worker = JobWorker(app.state.hub.sessions, path_jobs(hub_settings))
        yield client, app.state.listeners[0].bound_port, worker, hub_settings


def test_messages_are_acked_mapped_and_open_a_case(hub, tmp_path):
    client, port, worker, settings = hub
    acks = mllp_send(port, list(MESSAGES.values()), tmp_path)
    assert [a.split("|")[1:3] for a in acks] == [["AA", control] for control in MESSAGES]
    assert worker.run_until_idle() == len(MESSAGES)

    manager = bearer(
        settings,
        subject="cm-1",
        roles=("case-manager",),
        scope="user/*.cruds",
        programs=("oncology",),
    )
    patients = client.get("/fhir/Patient", params={"identifier": MRN}, headers=manager).json()
    assert patients["total"] == 1  # four messages, one child
    child = patients["entry"][0]["resource"]
    assert child["birthDate"] == "2017-03-02"
    found = {
        t: client.get(f"/fhir/{t}", params={"patient": child["id"]}, headers=manager).json()
        for t in (
            "Observation",
            "DiagnosticReport",
            "DocumentReference",
            "ServiceRequest",
            "RelatedPerson",
            "Task",
            "Provenance",
        )
    }
    assert found["Observation"]["total"] == 3
    assert {e["resource"]["valueQuantity"]["code"] for e in found["Observation"]["entry"]} == {
        "g/dL",
        "10*3/uL",
    }
    assert found["DocumentReference"]["total"] == 1
    assert found["RelatedPerson"]["total"] == 1
    referral = found["ServiceRequest"]["entry"][0]["resource"]
    assert [n["text"] for n in referral["note"]] == [
        "Is proton therapy an option?",
        "Are there open trials for relapsed disease?",
    ]
    case = found["Task"]["entry"][0]["resource"]
    assert case["status"] == "received"
    assert case["focus"]["reference"] == f"ServiceRequest/{referral['id']}"
    sources = {
        e["resource"]["entity"][0]["what"]["display"].split()[1]
        for e in found["Provenance"]["entry"]
        if "entity" in e["resource"]
    }
    assert sources == set(MESSAGES)


def test_the_message_log_shows_each_message_its_ack_and_report(hub, tmp_path):
    client, port, worker, settings = hub
    mllp_send(port, [MESSAGES["ORU-1"]], tmp_path)
    worker.run_until_idle()
    admin = bearer(settings, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs")
    listed = client.get("/admin/messages", params={"type": "ORU^R01"}, headers=admin).json()
    assert listed["total"] == 1
    entry = listed["messages"][0]
    assert (entry["status"], entry["controlId"], entry["sender"], entry["ackCode"]) == (
        "mapped",
        "ORU-1",
        "LAB/ST-MARY",
        "AA",
    )
    shown = client.get(f"/admin/messages/{entry['id']}", headers=admin).json()
    assert shown["raw"].startswith("MSH|^~\\&|LAB|ST-MARY")
    assert "MSA|AA|ORU-1" in shown["ack"]
    assert len([p for p in shown["produced"] if p.startswith("Observation/")]) == 3
    not_mapped = json.dumps(shown["report"])
    assert "ZPI" in not_mapped  # the Z-segment is reported, not dropped quietly
    trail = client.get("/fhir/AuditEvent", headers=admin).json()
    assert any("message log entry" in e["resource"].get("outcomeDesc", "") for e in trail["entry"])


def test_a_resent_message_is_re_acked_and_not_mapped_twice(hub, tmp_path):
    client, port, worker, settings = hub
    first = mllp_send(port, [MESSAGES["ORU-1"]], tmp_path)
    worker.run_until_idle()
    again = mllp_send(port, [MESSAGES["ORU-1"]], tmp_path)
    assert worker.run_until_idle() == 0
    assert first == again
    admin = bearer(settings, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs")
    listed = client.get("/admin/messages", headers=admin).json()
    assert listed["total"] == 1 and listed["messages"][0]["duplicates"] == 1
    produced = client.get(f"/admin/messages/{listed['messages'][0]['id']}", headers=admin).json()[
        "produced"
    ]
    assert len(produced) == len(set(produced))


def test_a_batch_file_is_taken_message_by_message_with_a_report(hub):
    client, _, worker, settings = hub
    body = (
        "FHS|^~\\&|LAB|ST-MARY|||20261101\rBHS|^~\\&|LAB|ST-MARY|||20261101\r"
        + MESSAGES["ADT-1"]
        + MESSAGES["ORU-1"]
        + "BTS|2\rFTS|1\r"
    )
    admin = bearer(settings, subject="it-1", roles=("admin",), scope="system/AuditEvent.rs")
    report = client.post(
        "/admin/hl7/batch", content=body.encode(), headers={**admin, "Content-Type": "text/plain"}
    ).json()
    assert [(m["controlId"], m["outcome"]) for m in report["messages"]] == [
        ("ADT-1", "AA"),
        ("ORU-1", "AA"),
    ]
    assert report["problems"] == []
    assert worker.run_until_idle() == 2


def test_a_corrected_result_is_a_new_version_and_a_resent_one_is_not(hub, tmp_path):
    client, port, worker, settings = hub
    corrected = (
        MESSAGES["ORU-1"]
        .replace("|ORU-1|", "|ORU-2|")
        .replace("||9.1|g/dL^^UCUM|11.5-15.5|L|||F", "||9.4|g/dL^^UCUM|11.5-15.5|L|||C")
    )
    resent = MESSAGES["ORU-1"].replace("|ORU-1|", "|ORU-3|")  # same content, new control id
    # The referral opens a case, so that a case manager may read the child's results.
    mllp_send(port, [MESSAGES["REF-1"], MESSAGES["ORU-1"], corrected, resent], tmp_path)
    assert worker.run_until_idle() == 4
    manager = bearer(
        settings,
        subject="cm-1",
        roles=("case-manager",),
        scope="user/*.cruds",
        programs=("oncology",),
    )
    found = client.get("/fhir/Observation", params={"code": "718-7"}, headers=manager).json()
    assert found["total"] == 1
    hemoglobin = found["entry"][0]["resource"]
    # ORU-3 resent the first values, so they are current again: a third version.
    assert (hemoglobin["status"], hemoglobin["valueQuantity"]["value"]) == ("final", 9.1)
    history = client.get(f"/fhir/Observation/{hemoglobin['id']}/_history", headers=manager).json()
    assert [
        (e["resource"]["meta"]["versionId"], e["resource"]["status"]) for e in history["entry"]
    ] == [("3", "final"), ("2", "corrected"), ("1", "final")]
    platelets = client.get("/fhir/Observation", params={"code": "777-3"}, headers=manager).json()
    assert platelets["entry"][0]["resource"]["meta"]["versionId"] == "1"  # never changed
    reports = client.get("/fhir/DiagnosticReport", headers=manager).json()
    assert reports["total"] == 1
