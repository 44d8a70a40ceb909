"""The file store fills up: the hub's DICOM store (dicom_store_dir: staging, accepted
instances, the content-addressed objects) on a 1 MiB tmpfs, most of it taken by other data.

dcmtk's storescu pushes a study to the hub's Storage SCP until the filesystem is full.
Proves: an instance that could not be stored is refused with a DIMSE failure status the
sender can act on (0xA7xx out of resources: keep it, send it later), never a success and
never a processing failure; nothing is half-stored (every index row has its complete
object, no object or staged/accepted file without a row); and once space is freed the
same study sent again is stored whole, each instance exactly once.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from connectors.dimse import StorageScpConfig
from dicom.synthetic import make_patient, make_study, write_study
from hub.app import create_app
from hub.imaging.indexer import ACCEPTED_FOLDER
from hub.settings import Settings
from hub.storage.tables import DicomInstanceRow, DicomTransferRow
from tests.reliability.conftest import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

HUB_AE = "SOH_QUOTA"
QUOTA = "1m"
BALLAST_BYTES = 700 * 1024  # other data on the volume: what the admin frees later
INSTANCES = 60  # about 10 kB each: more than the room left beside the ballast
# dcmtk's verbose log: "I: Sending file: <path>" then "I: Received Store Response (<status>)"
_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((.+)\)")


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of QUOTA mounted for the test, unmounted after; skipped where this process
    may not mount (not root, no CAP_SYS_ADMIN), with the reason."""
    mount_point = tmp_path / "store"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={QUOTA},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a {QUOTA} tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def storescu(port: int, files: list[Path]) -> dict[str, str]:
    """Push `files` on one association, going on after a refusal; each file's path → the
    response status dcmtk reported (its text, e.g. "Success", "Refused: OutOfResources")."""
    sent = subprocess.run(
        [
            "storescu",
            "-v",
            "--no-halt",
            "-aet",
            "OUTSIDE_CT",
            "-aec",
            HUB_AE,
            "127.0.0.1",
            str(port),
        ]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    statuses: dict[str, str] = {}
    sending = ""
    for line in (sent.stdout + sent.stderr).splitlines():
        if found := _SENDING.search(line):
            sending = found.group(1).strip()
        elif (found := _RESPONSE.search(line)) and sending:
            statuses[sending] = found.group(1)
    assert len(statuses) == len(files), sent.stdout + sent.stderr
    return statuses


def indexed(app: object) -> list[DicomInstanceRow]:
    """Every instance row, once no transfer is open (the SCP closes a transfer once the
    association's instances are indexed)."""
    sessions = app.state.hub.sessions  # type: ignore[attr-defined]

    def settled() -> bool:
        with sessions() as session:
            return (
                session.scalars(
                    select(DicomTransferRow).where(DicomTransferRow.status == "open")
                ).first()
                is None
            )

    wait_for(settled, "every transfer closed", every=0.1)
    with sessions() as session:
        rows = list(session.scalars(select(DicomInstanceRow)))
        session.expunge_all()
        return rows


def assert_nothing_half_stored(store: Path, rows: list[DicomInstanceRow]) -> None:
    """Each row's object is whole (its size and sha256), each object has a row, and no
    staged or accepted file is left behind."""
    objects = {p.name: p for p in (store / "objects").rglob("*") if p.is_file()}
    for row in rows:
        digest = row.received_digest  # the file as received (nothing is attached here)
        assert digest in objects, f"an index row without its file: {row.sop_instance_uid}"
        data = objects[digest].read_bytes()
        assert len(data) == row.size and hashlib.sha256(data).hexdigest() == digest
    assert set(objects) == {row.received_digest for row in rows}, "an object without a row"
    assert [p for p in (store / "staging").iterdir()] == []
    assert [p for p in (store / ACCEPTED_FOLDER).rglob("*") if p.is_file()] == []


def test_a_full_file_store_refuses_instances_cleanly_and_takes_them_when_freed(
    small_volume: Path, new_database, signing_key_file, tmp_path: Path
):
    """Fill the volume with a push, check the refusals and what was kept, free space,
    push the whole study again."""
    ballast = small_volume / "other-data.bin"
    ballast.write_bytes(b"\0" * BALLAST_BYTES)
    settings = Settings(
        database_url=new_database("postgresql"),
        dicom_store_dir=small_volume,
        dicom_scp=StorageScpConfig(ae_title=HUB_AE, port=0),
        signing_key_file=signing_key_file,
        public_url="http://testserver",
        embedded_worker=False,
    )
    datasets = make_study(91, make_patient(91), "CT", series=1, instances=INSTANCES)
    files = write_study(tmp_path / "study", datasets)
    uid_of = {str(path): str(ds.SOPInstanceUID) for path, ds in zip(files, datasets, strict=True)}
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False):
        port = app.state.storage_scp.bound_port
        first = storescu(port, files)
        rows = indexed(app)
        stored = {uid_of[f] for f, status in first.items() if status == "Success"}
        refused = Counter(status for status in first.values() if status != "Success")
        assert stored and refused, f"the volume did not fill: {Counter(first.values())}"
        assert set(refused) == {"Refused: OutOfResources"}, refused  # 0xA7xx, nothing else
        assert {row.sop_instance_uid for row in rows} == stored  # what got success is indexed
        assert_nothing_half_stored(small_volume, rows)

        ballast.unlink()  # the admin frees space
        again = storescu(port, files)  # the sender sends the study again, whole
        rows = indexed(app)
    assert set(again.values()) == {"Success"}
    assert sorted(row.sop_instance_uid for row in rows) == sorted(uid_of.values())  # each once
    assert_nothing_half_stored(small_volume, rows)
