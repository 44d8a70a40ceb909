"""What the page walks find in the hub: two specialists' Practitioners and a routing table
that pools them (both written before the hub starts, since the hub reads its routing table
once), three synthetic cases referred through the FHIR API as outside EHRs send them, and
the people who sign in (added with `hub users add`).

Who sees what:

* Dr Ada Lindqvist (`ada`, specialist, Practitioner `practitioners["ada"]`) owns two cases:
  ``"demo-child"``, the `hub demo` child with the whole record (46 resources; its referral
  carries no code, so the hub's default program, oncology) and ``"b-all-relapsed"``
  (transplant and cellular therapy, urgent: a referral only).
* Dr Ben Okafor (`ben`, specialist, Practitioner `practitioners["ben"]`) owns
  ``"medulloblastoma"`` (neuro-oncology: a referral only) and must see neither of Ada's.
* Carla Mendes (`carla`, case manager of oncology and transplant and cellular therapy) sees
  Ada's two cases on the board, not Ben's.
* Ivan Petrov (`ivan`, admin): hospital IT.

A case can also come over every channel of the referring hospital (deliver_outside_case):
its record on the referring EHR's own FHIR server, which the hub pulls and writes the
opinion back to, HL7 v2 over MLLP and DICOM over C-STORE; `send_consent` is what the
referring EHR does during a walk, outside the pages.

Nothing here is real patient data (hub.demo generates every child).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydicom import dcmwrite
from typer.testing import CliRunner

from connectors.hl7v2_mllp import frame
from hub import codes
from hub.cli import app as hub_cli
from hub.demo.five_cases import OutsideCase, build_case
from hub.demo.run import refer_synthetic_patient
from hub.demo.synthetic import DEFAULT_SEED
from hub.settings import Settings
from hub.storage.db import make_engine, make_session_factory
from hub.storage.migrate import upgrade
from hub.storage.repository import ResourceRepository
from hub.workflow.routing import DEFAULT_TABLE
from tests.fhir_client import bearer
from tests.fhir_server_peer import FhirPeer

HUB = Path(sys.executable).with_name("hub")
REFERRER = "larkfield-ehr"
"""The referring EHR's client id at the hub (the subject of its token), and the name of its
FHIR server among the hub's sources: the way back for the opinions of its referrals."""
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}

SPECIALISTS = {
    "ada": {"family": "Lindqvist", "given": ["Ada"], "prefix": ["Dr."]},
    "ben": {"family": "Okafor", "given": ["Ben"], "prefix": ["Dr."]},
}
POOLS = {
    "oncology": ("ada",),
    "bmt-cellular-therapy": ("ada",),
    "neuro-oncology": ("ben",),
}
"""Program → the specialists (keys of SPECIALISTS) routing gives its new cases to."""


@dataclass(frozen=True)
class HubHome:
    """The files of the hub under test: its SQLite database, signing key, routing table."""

    folder: Path
    database_url: str
    signing_key_file: Path
    routing_file: Path
    practitioners: dict[str, str]
    """Specialist key ("ada", "ben") → the id of their Practitioner at the hub."""

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a `hub` command on this hub (none of the caller's HUB_*)."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
        return {
            **inherited,
            "HUB_DATABASE_URL": self.database_url,
            "HUB_SIGNING_KEY_FILE": str(self.signing_key_file),
            "HUB_ROUTING_FILE": str(self.routing_file),
            "HUB_DICOM_STORE_DIR": str(self.folder / "dicom"),
            **extra,
        }

    def cli_env(self) -> dict[str, str | None]:
        """The same, as the changes to this process's environment that typer's CliRunner
        makes while a command runs (None unsets)."""
        mine = self.env()
        return {
            **{k: None for k in os.environ if k.startswith("HUB_")},
            **{k: v for k, v in mine.items() if k.startswith("HUB_")},
        }

    def settings(self, port: int) -> Settings:
        """The hub's settings as the test process needs them (tokens, the FHIR base)."""
        return Settings(
            database_url=self.database_url,
            port=port,
            signing_key_file=self.signing_key_file,
            routing_file=self.routing_file,
            dicom_store_dir=self.folder / "dicom",
        )


def prepare_home(folder: Path) -> HubHome:
    """A migrated database holding the specialists' Practitioners, and a routing table (the
    repository's, with POOLS) that gives new cases to them."""
    database_url = f"sqlite:///{folder / 'hub.db'}"
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with make_session_factory(engine).begin() as session:
            repository = ResourceRepository(session)
            practitioners = {
                key: repository.create(
                    "Practitioner", {"resourceType": "Practitioner", "active": True, "name": [name]}
                ).resource_id
                for key, name in SPECIALISTS.items()
            }
    finally:
        engine.dispose()
    table = yaml.safe_load(DEFAULT_TABLE.read_text(encoding="utf-8"))
    table["routing"]["pools"] = {
        program: [practitioners[key] for key in keys] for program, keys in POOLS.items()
    }
    routing_file = folder / "routing.yaml"
    routing_file.write_text(yaml.safe_dump(table), encoding="utf-8")
    return HubHome(
        folder=folder,
        database_url=database_url,
        signing_key_file=folder / "keys" / "hub-signing-key.json",
        routing_file=routing_file,
        practitioners=practitioners,
    )


@dataclass(frozen=True)
class SeededCase:
    """One referred case as the hub opened it."""

    key: str
    task_id: str
    """The case: its Task id (the page /ui/cases/{task_id})."""
    referral_id: str
    patient_id: str
    patient_name: str
    """The child's name as the referral gave it ("Mira Skelding"): what a worklist shows."""
    program: str
    priority: str
    owner: str | None
    """"Practitioner/{id}" of the specialist routing chose."""


@dataclass(frozen=True)
class Seed:
    cases: dict[str, SeededCase]
    """"demo-child", "b-all-relapsed", "medulloblastoma" → the case."""
    practitioners: dict[str, str] = field(default_factory=dict)

    def owned_by(self, specialist: str) -> list[SeededCase]:
        """The cases of a specialist key ("ada", "ben")."""
        owner = f"Practitioner/{self.practitioners[specialist]}"
        return [case for case in self.cases.values() if case.owner == owner]


EXPECTED_OWNERS = {"demo-child": "ada", "b-all-relapsed": "ada", "medulloblastoma": "ben"}


def seed_cases(home: HubHome, settings: Settings) -> Seed:
    """Refer the three cases through the running hub's FHIR API; the Seed says who got what.

    The demo child as `hub demo` refers it (its referring EHR signs in with SMART Backend
    Services, sends the child's records in a transaction, then the referral), then two
    outside referrals (a transaction of child, referring oncologist and referral)."""
    demo = refer_synthetic_patient(settings)
    with httpx.Client(base_url=settings.audience, timeout=60) as client:
        cases = {"demo-child": _case(client, _reader(settings), "demo-child", demo.task_id)}
    for cancer in ("b-all-relapsed", "medulloblastoma"):
        cases[cancer] = refer_outside_case(settings, cancer)
    for key, specialist in EXPECTED_OWNERS.items():
        wanted = f"Practitioner/{home.practitioners[specialist]}"
        if cases[key].owner != wanted:
            raise RuntimeError(f"{key} went to {cases[key].owner}, not {specialist} ({wanted})")
    return Seed(cases=cases, practitioners=dict(home.practitioners))


def refer_outside_case(settings: Settings, cancer: str, seed: int = DEFAULT_SEED) -> SeededCase:
    """Refer one of hub.demo.five_cases' children (`cancer`: medulloblastoma,
    b-all-relapsed, neuroblastoma, osteosarcoma, hodgkin-lymphoma; another `seed`, another
    child) as the outside EHR does: its referral transaction, with a referrer's token.
    Routing (POOLS) gives oncology and transplant cases to Ada, neuro-oncology to Ben. The
    same cancer and seed twice are the same referral (a conditional create): the same case.
    """
    referrer = {**FHIR_JSON, **bearer(settings, subject=REFERRER, roles=("referrer",))}
    reader = _reader(settings)
    with httpx.Client(base_url=settings.audience, timeout=60) as client:
        referral = build_case(cancer, seed=seed).referral
        answer = _ok(client.post("", json=referral, headers=referrer))
        patient = answer["entry"][0]["response"]["location"].split("/_history/")[0]
        tasks = _ok(client.get("/Task", params={"patient": patient}, headers=reader))
        key = cancer if seed == DEFAULT_SEED else f"{cancer}-{seed}"
        return _case(client, reader, key, tasks["entry"][0]["resource"]["id"])


def _reader(settings: Settings) -> dict[str, str]:
    """A case manager of every program: reads any case."""
    manager = bearer(
        settings,
        subject="browser-seed",
        roles=("case-manager",),
        scope="user/*.rs",
        programs=tuple(codes.PROGRAMS),
    )
    return {**FHIR_JSON, **manager}


def _case(client: httpx.Client, headers: dict[str, str], key: str, task_id: str) -> SeededCase:
    task = _ok(client.get(f"/Task/{task_id}", headers=headers))
    referral_id = task["focus"]["reference"].split("/")[-1]
    patient_id = task["for"]["reference"].split("/")[-1]
    patient = _ok(client.get(f"/Patient/{patient_id}", headers=headers))
    name = patient["name"][0]
    return SeededCase(
        key=key,
        task_id=task_id,
        referral_id=referral_id,
        patient_id=patient_id,
        patient_name=" ".join([*name.get("given", []), name["family"]]),
        program=task["performerType"][0]["coding"][0]["code"],
        priority=task.get("priority", "routine"),
        owner=(task.get("owner") or {}).get("reference"),
    )


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} answered "
            f"{response.status_code}: {response.text[:500]}"
        )
    return response.json()


@dataclass(frozen=True)
class Account:
    """A person who signs in to the pages (added with `hub users add`)."""

    username: str
    password: str
    name: str
    roles: tuple[str, ...]
    fhir_user: str | None = None
    programs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Users:
    specialist: Account
    """Ada: owns "demo-child" and "b-all-relapsed"."""
    other_specialist: Account
    """Ben: owns "medulloblastoma"; must see neither of Ada's cases."""
    case_manager: Account
    """Carla: oncology and transplant and cellular therapy (Ada's programs)."""
    admin: Account
    """Ivan: hospital IT."""


def add_account(home: HubHome, account: Account) -> Account:
    """`hub users add USERNAME --name ... --role ... [--fhir-user ...] [--program ...]
    --password-stdin` on the hub's database, the password on standard input.

    The command runs in this process (typer's CliRunner), not as a child process: the same
    arguments, parsing and checks, without the seconds each start of `hub` costs."""
    command = ["users", "add", account.username, "--name", account.name]
    for role in account.roles:
        command += ["--role", role]
    if account.fhir_user:
        command += ["--fhir-user", account.fhir_user]
    for program in account.programs:
        command += ["--program", program]
    command.append("--password-stdin")
    result = CliRunner().invoke(hub_cli, command, input=account.password + "\n", env=home.cli_env())
    if result.exit_code != 0:
        raise RuntimeError(
            f"`hub users add {account.username}` failed ({result.exit_code}): {result.output}"
        ) from result.exception
    return account


def the_people(home: HubHome) -> Users:
    """The four accounts of the walks (their passwords are only good for this test hub)."""
    return Users(
        specialist=Account(
            username="ada",
            password="ada-reads-the-record-1",
            name="Dr Ada Lindqvist",
            roles=("specialist",),
            fhir_user=f"Practitioner/{home.practitioners['ada']}",
            programs=("oncology", "bmt-cellular-therapy"),
        ),
        other_specialist=Account(
            username="ben",
            password="ben-reads-the-record-2",
            name="Dr Ben Okafor",
            roles=("specialist",),
            fhir_user=f"Practitioner/{home.practitioners['ben']}",
            programs=("neuro-oncology",),
        ),
        case_manager=Account(
            username="carla",
            password="carla-runs-the-board-3",
            name="Carla Mendes",
            roles=("case-manager",),
            programs=("oncology", "bmt-cellular-therapy"),
        ),
        admin=Account(
            username="ivan",
            password="ivan-keeps-it-running-4",
            name="Ivan Petrov",
            roles=("admin",),
        ),
    )


# --- a case over every channel of the referring hospital ------------------------------------

MLLP_SEND = Path(sys.executable).with_name("mllp_send")
"""python-hl7's MLLP client: the referring hospital's interface engine."""
HUB_AE = "SOH_HUB"
PACS_AE = "LARKFIELD_PACS"
ARRIVAL_SECONDS = 60
"""A guard against a hang while the hub takes a case in, not a performance expectation."""


@dataclass(frozen=True)
class Channels:
    """How the referring hospital reaches the hub: its own FHIR server (the hub's source
    REFERRER), the hub's MLLP listener and Storage SCP; `folder` for the files sent."""

    fhir: FhirPeer
    mllp_port: int
    scp_port: int
    folder: Path


@dataclass(frozen=True)
class DeliveredCase:
    """A case the referring hospital sent over every channel, taken in by the hub."""

    case: SeededCase
    outside: OutsideCase
    studies: tuple[str, ...]
    """The StudyInstanceUIDs its PACS pushed (attached to the case)."""
    acks: tuple[str, ...]
    """The MSA segment of each HL7 message's ACK, in the order sent."""


def deliver_outside_case(
    settings: Settings, channels: Channels, cancer: str, seed: int
) -> DeliveredCase:
    """One of hub.demo.five_cases' children as its hospital sends it: its record on the
    referring EHR's FHIR server (which the hub pulls when the case opens), the referral
    (refer_outside_case), its ADT^A04, ORU^R01 and MDM^T02 to the MLLP listener
    (python-hl7's mllp_send) and its two studies to the Storage SCP (dcmtk's storescu).
    Returns once the hub pulled the record, mapped the messages and attached the studies."""
    outside = build_case(cancer, seed=seed)
    channels.fhir.load(outside.record)
    case = refer_outside_case(settings, cancer, seed)
    acks = _send_hl7(channels, outside)
    _push_studies(channels, outside)
    _wait_until_taken_in(settings, case, outside)
    return DeliveredCase(case, outside, tuple(outside.dicom), acks)


def _send_hl7(channels: Channels, outside: OutsideCase) -> tuple[str, ...]:
    batch = channels.folder / f"{outside.cancer}-{outside.seed}.hl7"
    batch.write_bytes(b"".join(frame(message) for message in outside.hl7.values()))
    sent = subprocess.run(
        [str(MLLP_SEND), "--port", str(channels.mllp_port), "--file", str(batch), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=ARRIVAL_SECONDS,
        check=True,
    )
    lines = sent.stdout.replace("\r", "\n").splitlines()
    return tuple(line for line in lines if line.startswith("MSA|"))


def _push_studies(channels: Channels, outside: OutsideCase) -> None:
    files = []
    for uid, datasets in outside.dicom.items():
        for dataset in datasets:
            path = channels.folder / outside.cancer / uid / f"{dataset.SOPInstanceUID}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            dcmwrite(path, dataset, enforce_file_format=True)
            files.append(str(path))
    sent = subprocess.run(
        ["storescu", "-aet", PACS_AE, "-aec", HUB_AE, "127.0.0.1", str(channels.scp_port), *files],
        capture_output=True,
        text=True,
        timeout=ARRIVAL_SECONDS,
        check=False,
    )
    if sent.returncode != 0:
        raise RuntimeError(f"storescu failed ({sent.returncode}): {sent.stderr[-2000:]}")


def _wait_until_taken_in(settings: Settings, case: SeededCase, outside: OutsideCase) -> None:
    """Poll the hub's API, as a case manager and as IT, until the studies are attached
    (QIDO-RS finds them), the messages are mapped and the record is pulled (the child's
    diagnosis, which only the record holds, is on file)."""
    reader = _reader(settings)
    admin = bearer(settings, subject="browser-seed-it", roles=("admin",))
    controls = {message.split(b"|")[9].decode() for message in outside.hl7.values()}
    deadline = time.monotonic() + ARRIVAL_SECONDS
    with httpx.Client(base_url=settings.origin, timeout=30) as client:
        while True:
            attached = {uid for uid in outside.dicom if _found_study(client, reader, uid)}
            log = client.get("/admin/messages", params={"count": 100}, headers=admin)
            mapped = {
                m["controlId"] for m in _ok(log)["messages"] if m["status"] == "mapped"
            } & controls
            pulled = _ok(
                client.get("/fhir/Condition", params={"patient": case.patient_id}, headers=reader)
            ).get("entry")
            if attached == set(outside.dicom) and mapped == controls and pulled:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{case.key} was not taken in within {ARRIVAL_SECONDS} s: studies "
                    f"attached {sorted(attached)}, messages mapped {sorted(mapped)} of "
                    f"{sorted(controls)}, record pulled: {bool(pulled)}"
                )
            time.sleep(0.2)


def _found_study(client: httpx.Client, headers: dict[str, str], uid: str) -> bool:
    found = client.get(
        "/dicomweb/studies",
        params={"StudyInstanceUID": uid},
        headers={**headers, "Accept": "application/dicom+json"},
    )
    return found.status_code == 200 and bool(found.content) and bool(found.json())


# --- what the others do during a walk: the referring EHR answers, a case manager accepts ----

THO = "http://terminology.hl7.org/CodeSystem"


def send_consent(settings: Settings, case: SeededCase) -> str:
    """The referring EHR sends the family's consent for the review (the record a case
    manager asks for: no FHIR source can fetch it); the Consent's id at the hub."""
    referrer = {**FHIR_JSON, **bearer(settings, subject=REFERRER, roles=("referrer",))}
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": f"{THO}/consentscope", "code": "treatment"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{case.patient_id}"},
    }
    with httpx.Client(base_url=settings.audience, timeout=30) as client:
        return str(_ok(client.post("/Consent", json=consent, headers=referrer))["id"])


def case_status(settings: Settings, case: SeededCase) -> tuple[str, str]:
    """(Task.status, businessStatus code) of the case, as a case manager reads it."""
    with httpx.Client(base_url=settings.audience, timeout=30) as client:
        task = _ok(client.get(f"/Task/{case.task_id}", headers=_reader(settings)))
    return task["status"], task["businessStatus"]["coding"][0]["code"]


def opinion_id(settings: Settings, case: SeededCase) -> str:
    """The id at the hub of the case's opinion (the identifier it carries to the referrer)."""
    with httpx.Client(base_url=settings.audience, timeout=30) as client:
        found = _ok(
            client.get(
                "/DiagnosticReport",
                params={"based-on": f"ServiceRequest/{case.referral_id}"},
                headers=_reader(settings),
            )
        )
    return str(found["entry"][0]["resource"]["id"])
