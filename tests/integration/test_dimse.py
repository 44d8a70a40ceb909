"""DIMSE against peers we did not write: the client talks C-ECHO, C-FIND, C-MOVE and C-GET
to Orthanc, Orthanc answers a C-MOVE into our Storage SCP, and dcmtk's storescu and
echoscu push to it as an outside modality would."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless

from connectors.base import Envelope
from connectors.dimse import (
    OUT_OF_RESOURCES,
    VL_WHOLE_SLIDE_MICROSCOPY,
    AssociationRejected,
    DimseClient,
    DimseSource,
    ScpStateError,
    StorageScp,
    StorageScpConfig,
)
from dicom.synthetic import SyntheticPatient, make_patient, make_study, write_study
from tests.orthanc_peer import OrthancPeer

pytestmark = pytest.mark.integration

HUB_AE = "SOH_HUB"
MODALITY_AE = "SOH_MODALITY"
GUARD_SECONDS = 60.0  # against a hang, not a performance expectation
PROPOSE = {
    ExplicitVRLittleEndian: [],
    DeflatedExplicitVRLittleEndian: ["--propose-deflated"],
    RLELossless: ["--propose-rle"],
}


def dcmtk(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(arguments, capture_output=True, text=True, timeout=120, check=False)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class Hub:
    """What the hub would do with what arrives: record it, answer a status."""

    def __init__(self, folder: Path, status: int = 0) -> None:
        self.folder = folder
        self.status = status
        self.instances: list[tuple[Path, str, str]] = []
        self.released: list[tuple[str, str]] = []
        self.events: list[str] = []
        self.received_in: list[Path] = []
        self.released_event = threading.Event()
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def staging(self) -> Path:
        with self._lock:
            return self.folder / f"staged-{next(self._numbers)}.dcm"

    def on_instance(self, path: Path, calling_ae: str, association_id: str) -> int:
        assert path.is_file()
        self.received_in.append(path.parent)
        kept = self.staging()  # taken over, as the hub does: what is left there is removed
        shutil.move(path, kept)
        with self._lock:
            self.instances.append((kept, calling_ae, association_id))
            self.events.append(f"instance:{association_id}")
        return self.status

    def on_released(self, association_id: str, calling_ae: str) -> None:
        with self._lock:
            self.released.append((association_id, calling_ae))
            self.events.append(f"released:{association_id}")
        self.released_event.set()

    def wait_released(self) -> None:
        assert self.released_event.wait(GUARD_SECONDS), "no association ended"

    def sop_uids(self) -> list[str]:
        return [str(dcmread(path).SOPInstanceUID) for path, _, _ in self.instances]


@pytest.fixture
def hub(tmp_path: Path) -> Hub:
    folder = tmp_path / "staging"
    folder.mkdir()
    return Hub(folder)


@pytest.fixture
def stream_to_disk() -> bool:
    """How pynetdicom holds a dataset while it arrives (see StorageScpConfig); the tests
    of what arrives parametrize it to cover both."""
    return True


BOTH_WAYS = pytest.mark.parametrize("stream_to_disk", [True, False], ids=["to-disk", "in-memory"])


@pytest.fixture
def scp(hub: Hub, orthanc: OrthancPeer, stream_to_disk: bool) -> Iterator[StorageScp]:
    """Our Storage SCP on a free port, serving Orthanc and one modality, declared in
    Orthanc as the C-MOVE destination `HUB_AE`."""
    config = StorageScpConfig(
        ae_title=HUB_AE,
        port=0,
        allowed_calling_aes=[orthanc.aet, MODALITY_AE],
        stream_to_disk=stream_to_disk,
    )
    server = StorageScp(
        config, staging=hub.staging, on_instance=hub.on_instance, on_released=hub.on_released
    )
    with server:
        orthanc.set_modality("hub", HUB_AE, server.bound_port)
        yield server
    orthanc.remove_modality("hub")


@pytest.fixture
def client(orthanc: OrthancPeer) -> DimseClient:
    # Orthanc answers C-FIND, C-MOVE and C-GET only for declared modalities: the `scp`
    # fixture declares HUB_AE, which the client calls as.
    return DimseClient(
        DimseSource(
            name="outside-pacs",
            host=orthanc.host,
            port=orthanc.dicom_port,
            called_ae=orthanc.aet,
            calling_ae=HUB_AE,
        )
    )


def upload(orthanc: OrthancPeer, files: list[Path]) -> None:
    with orthanc.client() as rest:
        for path in files:
            rest.post("/instances", content=path.read_bytes()).raise_for_status()


class Study:
    def __init__(self, patient: SyntheticPatient, datasets: list[Dataset]) -> None:
        self.patient = patient
        self.datasets = datasets
        self.uid = str(datasets[0].StudyInstanceUID)
        self.sop_uids = sorted(str(ds.SOPInstanceUID) for ds in datasets)


@pytest.fixture(scope="module")
def mr_study(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """An MR study of two series of three slices, in Orthanc."""
    patient = make_patient(930_001)
    datasets = make_study(930_001, patient, "MR", series=2, instances=3)
    upload(orthanc, write_study(tmp_path_factory.mktemp("mr"), datasets))
    return Study(patient, datasets)


@pytest.fixture(scope="module")
def slide_study(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """A whole-slide pyramid in RLE Lossless, in Orthanc."""
    patient = make_patient(930_002)
    datasets = make_study(
        930_002, patient, "SM", series=1, instances=2, transfer_syntax=RLELossless
    )
    upload(orthanc, write_study(tmp_path_factory.mktemp("sm"), datasets))
    return Study(patient, datasets)


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's dataset as encoded, after its File Meta Information (inflated
    when deflated, since a sender may deflate it again with other settings)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")
    body = data[144 + group_length :]
    if dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == (
        DeflatedExplicitVRLittleEndian
    ):
        body = zlib.decompress(body, -zlib.MAX_WBITS)
    return body


def storescu(
    port: int, files: list[Path], syntax: UID, *extra: str
) -> subprocess.CompletedProcess[str]:
    """dcmtk's storescu as an outside modality. --required: its default list of SOP
    classes leaves out VL Whole Slide Microscopy (dcmtk 3.6.7)."""
    return dcmtk(
        "storescu",
        "--required",
        *PROPOSE[syntax],
        *extra,
        "-aet",
        MODALITY_AE,
        "-aec",
        HUB_AE,
        "127.0.0.1",
        str(port),
        *map(str, files),
    )


# -- the client against Orthanc ---------------------------------------------------------


def test_c_echo(client: DimseClient, scp: StorageScp) -> None:
    assert run(client.echo()) == 0x0000
    health = run(client.health())
    assert health.healthy and "0x0000" in health.detail


def test_an_association_to_the_wrong_ae_title_is_rejected(orthanc: OrthancPeer) -> None:
    stranger = DimseClient(
        DimseSource(
            name="outside-pacs",
            host=orthanc.host,
            port=orthanc.dicom_port,
            called_ae="NOT_ORTHANC",
            calling_ae=HUB_AE,
        )
    )
    with pytest.raises(AssociationRejected, match="NOT_ORTHANC") as rejected:
        run(stranger.echo())
    assert "Called AE" in rejected.value.reason
    assert not run(stranger.health()).healthy


def test_c_find_finds_the_study(client: DimseClient, scp: StorageScp, mr_study: Study) -> None:
    patient = mr_study.patient

    async def scenario() -> list[list[Dataset]]:
        return [
            await client.find_studies({"PatientID": patient.patient_id}),
            await client.find_studies(
                {
                    "PatientName": f"{patient.family_name}*",
                    "PatientBirthDate": patient.birth_date.strftime("%Y%m%d"),
                    "ModalitiesInStudy": "MR",
                }
            ),
            await client.find_studies({"PatientID": patient.patient_id, "ModalitiesInStudy": "CT"}),
        ]

    by_id, by_name, wrong_modality = run(scenario())
    assert [str(ds.StudyInstanceUID) for ds in by_id] == [mr_study.uid]
    assert by_id[0].PatientID == patient.patient_id
    assert int(by_id[0].NumberOfStudyRelatedInstances) == len(mr_study.datasets)
    assert mr_study.uid in [str(ds.StudyInstanceUID) for ds in by_name]
    assert wrong_modality == []


def test_c_find_refuses_an_unknown_keyword(client: DimseClient) -> None:
    with pytest.raises(ValueError, match="PatientNmae"):
        run(client.find_studies({"PatientNmae": "x"}))


@BOTH_WAYS
def test_c_move_delivers_every_instance_to_our_scp_then_releases(
    client: DimseClient, scp: StorageScp, hub: Hub, orthanc: OrthancPeer, mr_study: Study
) -> None:
    result = run(client.move_study(mr_study.uid, HUB_AE))
    assert result.succeeded, result
    assert (result.completed, result.failed, result.warning) == (len(mr_study.datasets), 0, 0)
    hub.wait_released()
    assert sorted(hub.sop_uids()) == mr_study.sop_uids
    (association_id, calling_ae), *_ = hub.released
    assert calling_ae == orthanc.aet
    assert {(calling, aid) for _, calling, aid in hub.instances} == {(orthanc.aet, association_id)}
    assert hub.events[-1] == f"released:{association_id}"


def test_c_move_reports_what_our_scp_refused(
    client: DimseClient, scp: StorageScp, hub: Hub, mr_study: Study
) -> None:
    hub.status = OUT_OF_RESOURCES
    result = run(client.move_study(mr_study.uid, HUB_AE))
    # Orthanc 1.10 gives up at the first refused sub-operation: a failure status (0xC000)
    # without counts, rather than 0xB000 with the failed count.
    assert not result.succeeded and result.status != 0x0000 and result.completed == 0
    assert 1 <= len(hub.instances) <= len(mr_study.datasets)


def test_c_move_to_an_unknown_destination(
    client: DimseClient, scp: StorageScp, mr_study: Study
) -> None:
    result = run(client.move_study(mr_study.uid, "NOBODY"))
    # PS3.4 says 0xA801 (move destination unknown); Orthanc 1.10 answers 0xC000.
    assert not result.succeeded and (result.status == 0xA801 or result.status >> 12 == 0xC)
    assert result.completed == 0


@BOTH_WAYS
def test_c_get_stages_every_instance(
    client: DimseClient, scp: StorageScp, tmp_path: Path, mr_study: Study, slide_study: Study
) -> None:
    staged = itertools.count()
    taken: list[Path] = []

    def staging() -> Path:
        return tmp_path / f"got-{next(staged)}.dcm"

    async def on_instance(path: Path) -> None:
        taken.append(path)

    async def scenario() -> list[Any]:
        return [
            await client.get_study(mr_study.uid, staging, on_instance),
            await client.get_study(slide_study.uid, staging, on_instance),
        ]

    mr, slide = run(scenario())
    assert mr.succeeded and mr.completed == len(mr_study.datasets)
    assert slide.succeeded and slide.completed == len(slide_study.datasets)
    assert list(mr.received) + list(slide.received) == taken
    received = [dcmread(path) for path in taken]
    assert sorted(str(ds.SOPInstanceUID) for ds in received) == sorted(
        mr_study.sop_uids + slide_study.sop_uids
    )
    slides = [ds for ds in received if ds.SOPClassUID == VL_WHOLE_SLIDE_MICROSCOPY]
    assert len(slides) == len(slide_study.datasets)
    assert all(len(ds.PixelData) > 0 for ds in slides)


def test_c_get_counts_what_on_instance_refused(
    client: DimseClient, scp: StorageScp, tmp_path: Path, mr_study: Study
) -> None:
    staged = itertools.count()

    async def on_instance(path: Path) -> None:
        raise RuntimeError("the store is full")

    result = run(
        client.get_study(mr_study.uid, lambda: tmp_path / f"x-{next(staged)}", on_instance)
    )
    assert not result.succeeded
    assert result.failed == len(mr_study.datasets) and result.received == ()
    assert list(tmp_path.glob("x-*")) == []


def test_c_store_delivery_to_orthanc(
    client: DimseClient, scp: StorageScp, orthanc: OrthancPeer, tmp_path: Path
) -> None:
    datasets = make_study(930_003, make_patient(930_003), "CT", series=1, instances=1)
    (path,) = write_study(tmp_path, datasets)
    result = run(client.deliver(Envelope(path.read_bytes(), "dimse", "outside-pacs")))
    assert result.accepted and result.code == "0x0000"
    with orthanc.client() as rest:
        found = rest.post(
            "/tools/find",
            json={
                "Level": "Instance",
                "Query": {"SOPInstanceUID": str(datasets[0].SOPInstanceUID)},
            },
        ).json()
    assert len(found) == 1
    refused = run(client.deliver(Envelope(b"not DICOM", "dimse", "outside-pacs")))
    assert (refused.accepted, refused.code, refused.retryable) == (False, "unsendable", False)


# -- outside modalities pushing to our Storage SCP --------------------------------------


@BOTH_WAYS
@pytest.mark.parametrize(
    ("seed", "modality", "syntax"),
    [
        (930_010, "CT", ExplicitVRLittleEndian),
        (930_011, "MR", DeflatedExplicitVRLittleEndian),
        (930_012, "SM", RLELossless),
    ],
    ids=["CT-explicit", "MR-deflated", "WSI-RLE"],
)
def test_storescu_push_arrives_byte_identical(
    scp: StorageScp, hub: Hub, tmp_path: Path, seed: int, modality: Any, syntax: UID
) -> None:
    datasets = make_study(
        seed, make_patient(seed), modality, series=1, instances=2, transfer_syntax=syntax
    )
    files = write_study(tmp_path / "sent", datasets)
    result = storescu(scp.bound_port, files, syntax)
    assert result.returncode == 0, result.stderr + result.stdout
    hub.wait_released()
    assert len(hub.instances) == len(files)
    by_uid = {str(ds.SOPInstanceUID): path for ds, path in zip(datasets, files, strict=True)}
    for staged, calling_ae, _ in hub.instances:
        received = dcmread(staged)
        assert calling_ae == MODALITY_AE
        assert received.file_meta.TransferSyntaxUID == syntax
        assert dataset_bytes(staged) == dataset_bytes(by_uid[str(received.SOPInstanceUID)])
    (association_id, calling_ae), *_ = hub.released
    assert calling_ae == MODALITY_AE
    assert {aid for _, _, aid in hub.instances} == {association_id}
    assert set(hub.received_in) == {hub.folder}  # streamed or not: made in staging, not TMPDIR


def test_a_calling_ae_not_allowed_is_refused(
    scp: StorageScp, hub: Hub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = write_study(tmp_path, make_study(930_013, make_patient(930_013), "CT", 1, 1))
    with caplog.at_level(logging.WARNING, logger="connectors.dimse.scp"):
        pushed = dcmtk(
            "storescu",
            "-aet",
            "INTRUDER",
            "-aec",
            HUB_AE,
            "127.0.0.1",
            str(scp.bound_port),
            *map(str, files),
        )
        echoed = dcmtk(
            "echoscu", "-aet", "INTRUDER", "-aec", HUB_AE, "127.0.0.1", str(scp.bound_port)
        )
    assert pushed.returncode != 0 and echoed.returncode != 0
    assert "Calling AE Title Not Recognized" in pushed.stderr + pushed.stdout
    assert hub.instances == [] and hub.released == []
    assert "INTRUDER" in caplog.text and "not in allowed_calling_aes" in caplog.text


def test_echoscu_verifies_our_scp(scp: StorageScp, hub: Hub) -> None:
    result = dcmtk("echoscu", "-aet", MODALITY_AE, "-aec", HUB_AE, "127.0.0.1", str(scp.bound_port))
    assert result.returncode == 0, result.stderr
    hub.wait_released()
    assert hub.instances == [] and hub.released[0][1] == MODALITY_AE


def test_a_failure_status_reaches_storescu(scp: StorageScp, hub: Hub, tmp_path: Path) -> None:
    hub.status = OUT_OF_RESOURCES
    files = write_study(tmp_path, make_study(930_014, make_patient(930_014), "CT", 1, 1))
    result = storescu(scp.bound_port, files, ExplicitVRLittleEndian, "-v")
    assert result.returncode != 0
    assert "Refused: OutOfResources" in result.stderr
    assert len(hub.instances) == 1


def test_scp_state_errors(hub: Hub) -> None:
    scp = StorageScp(
        StorageScpConfig(ae_title=HUB_AE, port=0), staging=hub.staging, on_instance=hub.on_instance
    )
    with pytest.raises(ScpStateError):
        _ = scp.bound_port
    with scp:
        with pytest.raises(ScpStateError):
            scp.start()
        assert scp.bound_port > 0
    assert not scp.running
    scp.stop()  # stopping twice is harmless
