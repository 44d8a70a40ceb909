"""The DICOMweb client against a real outside PACS (Orthanc with its DICOMweb plugin):
QIDO-RS finds what was stored, WADO-RS streams it back to staged files, STOW-RS lands in
Orthanc, credentials that do not fit fail clearly, and a broken retrieve resumes.

The last section drives our own retry and resume logic with a scripted httpx transport
(statuses and cut connections on demand); everything else talks to Orthanc.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from connectors.base import Envelope
from connectors.dicomweb import (
    BasicAuth,
    BearerAuth,
    DicomWebAuthError,
    DicomWebClient,
    DicomWebHttpError,
    DicomWebNotFound,
    DicomWebRetry,
    DicomWebSource,
    DicomWebUnavailable,
    MissingSecret,
    NoAuth,
    RetrieveInterrupted,
)
from dicom.synthetic import SyntheticPatient, make_patient, make_study, write_study
from tests.orthanc_peer import OrthancPeer

PASSWORD_ENV = "SOH_TEST_PACS_PASSWORD"
STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
STUDY_DESCRIPTION = "00081030"
PATIENT_ID = "00100020"
integration = pytest.mark.integration


# -- fixtures ---------------------------------------------------------------------------


class Staging:
    """A staging folder and the `on_instance` that collects what arrives, in order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.received: list[Path] = []
        self._numbers = itertools.count()

    def __call__(self) -> Path:
        return self.folder / f"staged-{next(self._numbers)}.part"

    async def take(self, path: Path) -> None:
        assert path.exists()
        self.received.append(path)

    def sop_uids(self) -> list[str]:
        return [str(dcmread(path).SOPInstanceUID) for path in self.received]


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    folder = tmp_path / "staging"
    folder.mkdir()
    return Staging(folder)


def source_for(orthanc: OrthancPeer, **changes: Any) -> DicomWebSource:
    fields: dict[str, Any] = {
        "name": "outside-pacs",
        "base_url": orthanc.dicomweb_url,
        "auth": BasicAuth(username=orthanc.auth[0], password_env=PASSWORD_ENV),
    }
    fields.update(changes)
    return DicomWebSource(**fields)


def client_for(orthanc: OrthancPeer, password: str | None = None, **changes: Any) -> DicomWebClient:
    secret = orthanc.auth[1] if password is None else password
    return DicomWebClient(source_for(orthanc, **changes), environ={PASSWORD_ENV: secret})


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def upload(orthanc: OrthancPeer, files: list[Path]) -> None:
    with orthanc.client() as rest:
        for path in files:
            rest.post("/instances", content=path.read_bytes()).raise_for_status()


class Uploaded:
    def __init__(self, patient: SyntheticPatient, datasets: list[Dataset], files: list[Path]):
        self.patient = patient
        self.datasets = datasets
        self.files = files
        self.study_uid = str(datasets[0].StudyInstanceUID)
        self.by_sop = {
            str(ds.SOPInstanceUID): path for ds, path in zip(datasets, files, strict=True)
        }


@pytest.fixture(scope="module")
def ct_study(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    """A CT study of two series of three slices, stored in Orthanc through its REST API."""
    patient = make_patient(920_001)
    datasets = make_study(920_001, patient, "CT", series=2, instances=3)
    files = write_study(tmp_path_factory.mktemp("ct"), datasets)
    upload(orthanc, files)
    return Uploaded(patient, datasets, files)


@pytest.fixture(scope="module")
def slide_study(orthanc: OrthancPeer, tmp_path_factory: pytest.TempPathFactory) -> Uploaded:
    """A whole-slide pyramid (VL WSI) in RLE Lossless."""
    patient = make_patient(920_002)
    datasets = make_study(
        920_002, patient, "SM", series=1, instances=3, transfer_syntax=RLELossless
    )
    files = write_study(tmp_path_factory.mktemp("sm"), datasets)
    upload(orthanc, files)
    return Uploaded(patient, datasets, files)


def dataset_bytes(path: Path) -> bytes:
    """A Part 10 file's bytes after its File Meta Information (which a PACS may rewrite)."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


# -- QIDO-RS ----------------------------------------------------------------------------


@integration
def test_qido_by_patient_id_and_issuer_finds_the_study(
    orthanc: OrthancPeer, ct_study: Uploaded
) -> None:
    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with client_for(orthanc) as pacs:
            found = await pacs.search_studies(
                patient_id=ct_study.patient.patient_id,
                issuer_of_patient_id=ct_study.patient.issuer,
                includefield=["StudyDescription"],
            )
            elsewhere = await pacs.search_studies(
                patient_id=ct_study.patient.patient_id, issuer_of_patient_id="ANOTHER-HOSPITAL"
            )
            return found, elsewhere

    found, elsewhere = run(scenario())
    assert [study[STUDY_UID]["Value"] for study in found] == [[ct_study.study_uid]]
    assert found[0][PATIENT_ID]["Value"] == [ct_study.patient.patient_id]
    assert found[0][STUDY_DESCRIPTION]["Value"] == [ct_study.datasets[0].StudyDescription]
    assert elsewhere == []


@integration
def test_qido_by_name_and_birth_date(orthanc: OrthancPeer, ct_study: Uploaded) -> None:
    patient = ct_study.patient
    birth_date = patient.birth_date.strftime("%Y%m%d")

    async def scenario() -> list[list[dict[str, Any]]]:
        async with client_for(orthanc) as pacs:
            return [
                await pacs.search_studies(
                    patient_name=f"{patient.family_name}^{patient.given_name}",
                    patient_birth_date=birth_date,
                ),
                await pacs.search_studies(
                    patient_name=f"{patient.family_name.upper()}*", patient_birth_date=birth_date
                ),
                await pacs.search_studies(
                    patient_name=f"{patient.family_name}^{patient.given_name}",
                    patient_birth_date="19000101",
                ),
            ]

    exact, wildcard, other_birthday = run(scenario())
    assert [s[STUDY_UID]["Value"][0] for s in exact] == [ct_study.study_uid]
    assert ct_study.study_uid in [s[STUDY_UID]["Value"][0] for s in wildcard]
    assert other_birthday == []


@integration
def test_qido_series_and_instances_with_filters_and_paging(
    orthanc: OrthancPeer, ct_study: Uploaded
) -> None:
    first_series = str(ct_study.datasets[0].SeriesInstanceUID)
    by_tag: dict[str, Any] = {"00100020": ct_study.patient.patient_id}

    async def scenario() -> dict[str, Any]:
        async with client_for(orthanc) as pacs:
            pages = [
                await pacs.search_instances(ct_study.study_uid, limit=4, offset=offset)
                for offset in (0, 4)
            ]
            return {
                "series": await pacs.search_series(ct_study.study_uid, Modality="CT"),
                "none": await pacs.search_series(ct_study.study_uid, Modality="MR"),
                "in_series": await pacs.search_instances(ct_study.study_uid, first_series),
                "by_tag": await pacs.search_studies(**by_tag),
                "pages": pages,
            }

    found = run(scenario())
    assert {s[SERIES_UID]["Value"][0] for s in found["series"]} == {
        str(ds.SeriesInstanceUID) for ds in ct_study.datasets
    }
    assert found["none"] == []
    assert len(found["in_series"]) == 3
    assert [s[STUDY_UID]["Value"][0] for s in found["by_tag"]] == [ct_study.study_uid]
    paged = [i[SOP_UID]["Value"][0] for page in found["pages"] for i in page]
    assert [len(page) for page in found["pages"]] == [4, 2]
    assert sorted(paged) == sorted(ct_study.by_sop)


def test_an_unknown_query_attribute_is_refused_before_sending() -> None:
    client = DicomWebClient(DicomWebSource(name="x", base_url="http://127.0.0.1:9"))
    with pytest.raises(ValueError, match="PatientNmae"):
        run(client.search_studies(PatientNmae="x"))


# -- WADO-RS ----------------------------------------------------------------------------


@integration
def test_wado_retrieve_streams_every_instance_to_staged_files(
    orthanc: OrthancPeer, ct_study: Uploaded, staging: Staging
) -> None:
    async def scenario() -> Any:
        async with client_for(orthanc) as pacs:
            return await pacs.retrieve_study(ct_study.study_uid, staging, staging.take)

    result = run(scenario())
    assert sorted(staging.sop_uids()) == sorted(ct_study.by_sop)
    assert [i.path for i in result.instances] == staging.received
    assert {i.sop_instance_uid for i in result.instances} == set(ct_study.by_sop)
    for path in staging.received:
        ds = dcmread(path)
        original = ct_study.by_sop[str(ds.SOPInstanceUID)]
        assert ds.StudyInstanceUID == ct_study.study_uid
        assert dataset_bytes(path) == dataset_bytes(original)
    assert sorted(p.name for p in staging.folder.iterdir()) == sorted(
        p.name for p in staging.received
    )


@integration
def test_wado_retrieve_of_a_series_and_an_instance(
    orthanc: OrthancPeer, ct_study: Uploaded, staging: Staging
) -> None:
    second = ct_study.datasets[3]

    async def scenario() -> None:
        async with client_for(orthanc) as pacs:
            await pacs.retrieve_series(
                ct_study.study_uid, str(second.SeriesInstanceUID), staging, staging.take
            )
            await pacs.retrieve_instance(
                ct_study.study_uid,
                str(second.SeriesInstanceUID),
                str(second.SOPInstanceUID),
                staging,
                staging.take,
            )

    run(scenario())
    received = staging.sop_uids()
    assert sorted(received[:3]) == sorted(str(ds.SOPInstanceUID) for ds in ct_study.datasets[3:])
    assert received[3:] == [second.SOPInstanceUID]


@integration
def test_whole_slide_images_come_back_as_stored(
    orthanc: OrthancPeer, slide_study: Uploaded, staging: Staging
) -> None:
    async def scenario() -> None:
        async with client_for(orthanc) as pacs:
            await pacs.retrieve_study(slide_study.study_uid, staging, staging.take)

    run(scenario())
    assert sorted(staging.sop_uids()) == sorted(slide_study.by_sop)
    for path in staging.received:
        ds = dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == RLELossless
        assert ds.SOPClassUID == slide_study.datasets[0].SOPClassUID
        assert dataset_bytes(path) == dataset_bytes(slide_study.by_sop[str(ds.SOPInstanceUID)])


@integration
def test_wado_metadata_describes_every_instance(orthanc: OrthancPeer, ct_study: Uploaded) -> None:
    async def scenario() -> list[dict[str, Any]]:
        async with client_for(orthanc) as pacs:
            return await pacs.retrieve_metadata(ct_study.study_uid)

    metadata = run(scenario())
    assert sorted(item[SOP_UID]["Value"][0] for item in metadata) == sorted(ct_study.by_sop)


@integration
def test_retrieving_an_unknown_study_is_not_found(orthanc: OrthancPeer, staging: Staging) -> None:
    async def scenario() -> None:
        async with client_for(orthanc) as pacs:
            await pacs.retrieve_study("1.2.826.0.1.3680043.8.498.1", staging, staging.take)

    with pytest.raises(DicomWebNotFound, match="HTTP 404"):
        run(scenario())
    assert list(staging.folder.iterdir()) == []


@integration
def test_a_large_instance_is_never_held_whole_in_memory(
    orthanc: OrthancPeer, staging: Staging, tmp_path: Path
) -> None:
    (ds,) = make_study(920_009, make_patient(920_009), "CT", series=1, instances=1)
    ds.Rows = ds.Columns = 2048
    ds.PixelData = random.Random(9).randbytes(2048 * 2048 * 2)  # 8 MiB
    (path,) = write_study(tmp_path, [ds])
    upload(orthanc, [path])
    size = path.stat().st_size

    async def scenario() -> None:
        async with client_for(orthanc) as pacs:
            await pacs.retrieve_study(str(ds.StudyInstanceUID), staging, staging.take)

    tracemalloc.start()
    try:
        run(scenario())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [p.stat().st_size for p in staging.received] == [size]
    assert dataset_bytes(staging.received[0]) == dataset_bytes(path)
    assert peak < size / 4, f"peak {peak} bytes for an instance of {size}"


# -- STOW-RS ----------------------------------------------------------------------------


def orthanc_instances(orthanc: OrthancPeer, study_uid: str) -> set[str]:
    """SOP Instance UIDs Orthanc holds for a study, asked through its own REST API."""
    with orthanc.client() as rest:
        found = rest.post(
            "/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
        )
    found.raise_for_status()
    return {item["MainDicomTags"]["SOPInstanceUID"] for item in found.json()}


@integration
def test_stow_lands_every_instance_in_orthanc(orthanc: OrthancPeer, tmp_path: Path) -> None:
    datasets = make_study(920_003, make_patient(920_003), "MR", series=2, instances=3)
    files = write_study(tmp_path, datasets)
    study_uid = str(datasets[0].StudyInstanceUID)

    async def scenario() -> Any:
        async with client_for(orthanc, stow_batch_size=4) as pacs:  # two requests
            return await pacs.store_instances(files)

    result = run(scenario())
    assert result.accepted, result.detail
    assert (result.code, result.failed, result.unsent) == ("200", (), ())
    assert sorted(result.stored) == sorted(str(ds.SOPInstanceUID) for ds in datasets)
    assert orthanc_instances(orthanc, study_uid) == set(result.stored)


@integration
def test_stow_of_a_whole_slide_image_and_by_envelope(orthanc: OrthancPeer, tmp_path: Path) -> None:
    datasets = make_study(
        920_004, make_patient(920_004), "SM", series=1, instances=2, transfer_syntax=RLELossless
    )
    files = write_study(tmp_path, datasets)

    async def scenario() -> tuple[Any, Any]:
        async with client_for(orthanc) as pacs:
            first = await pacs.store_instances(files[:1])
            envelope = Envelope(files[1].read_bytes(), "dicomweb", "outside-pacs")
            return first, await pacs.deliver(envelope)

    first, second = run(scenario())
    assert first.accepted and second.accepted, (first.detail, second.detail)
    assert orthanc_instances(orthanc, str(datasets[0].StudyInstanceUID)) == {
        str(ds.SOPInstanceUID) for ds in datasets
    }


@integration
def test_stow_reports_what_orthanc_refused(orthanc: OrthancPeer, tmp_path: Path) -> None:
    datasets = make_study(920_005, make_patient(920_005), "CT", series=1, instances=1)
    (good,) = write_study(tmp_path, datasets)
    not_dicom = tmp_path / "report.pdf"
    not_dicom.write_bytes(b"%PDF-1.4 not an image\n" * 20)

    async def scenario() -> tuple[Any, Any]:
        async with client_for(orthanc, stow_batch_size=1) as pacs:
            mixed = await pacs.store_instances([not_dicom, good])
            # Posted to another study's URL: Orthanc refuses it with a FailedSOPSequence.
            elsewhere = await pacs.store_instances([good], study_instance_uid="1.2.3.4")
            return mixed, elsewhere

    mixed, elsewhere = run(scenario())
    assert not mixed.accepted and not mixed.retryable
    assert mixed.stored == (str(datasets[0].SOPInstanceUID),)
    assert [f.path for f in mixed.failed] == [not_dicom]
    assert mixed.code == "400"
    assert elsewhere.code == "409" and not elsewhere.accepted
    (failure,) = elsewhere.failed
    assert failure.sop_instance_uid == datasets[0].SOPInstanceUID
    assert failure.failure_reason is not None and failure.path == good


# -- authentication and health ----------------------------------------------------------


@integration
def test_a_wrong_password_is_a_clear_auth_error(orthanc: OrthancPeer, staging: Staging) -> None:
    async def scenario() -> None:
        async with client_for(orthanc, password="not-the-password") as pacs:
            await pacs.search_studies(limit=1)

    with pytest.raises(DicomWebAuthError) as refused:
        run(scenario())
    assert refused.value.status_code == 401
    message = str(refused.value)
    assert (
        "outside-pacs" in message and PASSWORD_ENV in message and "not-the-password" not in message
    )


@integration
def test_a_refused_bearer_token_is_a_clear_auth_error(orthanc: OrthancPeer, tmp_path: Path) -> None:
    source = source_for(orthanc, auth=BearerAuth(token_env="SOH_TEST_PACS_TOKEN"))
    files = write_study(tmp_path, make_study(920_006, make_patient(920_006), "CT", 1, 1))

    async def scenario() -> None:
        async with DicomWebClient(source, environ={"SOH_TEST_PACS_TOKEN": "abc"}) as pacs:
            await pacs.store_instances(files)

    with pytest.raises(DicomWebAuthError, match=r"HTTP 401.*SOH_TEST_PACS_TOKEN"):
        run(scenario())


def test_a_missing_secret_names_its_variable() -> None:
    source = DicomWebSource(
        name="outside-pacs",
        base_url="http://127.0.0.1:9/dicom-web",
        auth=BearerAuth(token_env="SOH_TEST_UNSET_TOKEN"),
    )
    with pytest.raises(MissingSecret, match="SOH_TEST_UNSET_TOKEN"):
        DicomWebClient(source, environ={})


def test_a_secret_in_the_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="password"):
        DicomWebSource.model_validate(
            {
                "name": "x",
                "base_url": "http://pacs/dicom-web",
                "auth": {"type": "basic", "username": "u", "password": "secret"},
            }
        )


@integration
def test_health(orthanc: OrthancPeer) -> None:
    async def scenario(client: DicomWebClient) -> Any:
        async with client:
            return await client.health()

    assert run(scenario(client_for(orthanc))).healthy
    refused = run(scenario(client_for(orthanc, password="wrong")))
    assert not refused.healthy and "401" in refused.detail
    anonymous = run(scenario(client_for(orthanc, auth=NoAuth())))
    assert not anonymous.healthy and "without credentials" in anonymous.detail


# -- a broken transfer, and resuming it -------------------------------------------------


class CutStream(httpx.AsyncByteStream):
    """The first `cut` bytes of a real answer, in small chunks, then a lost connection."""

    def __init__(self, body: bytes, cut: int) -> None:
        self._body = body
        self._cut = cut

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, self._cut, 1000):
            yield self._body[start : min(start + 1000, self._cut)]
        raise httpx.ReadError("connection reset by peer")


@integration
def test_a_broken_retrieve_reports_what_was_complete_and_resumes(
    orthanc: OrthancPeer, ct_study: Uploaded, staging: Staging
) -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    with httpx.Client(auth=orthanc.auth) as plain:
        real = plain.get(
            f"{orthanc.dicomweb_url}/studies/{ct_study.study_uid}", headers={"Accept": accept}
        )
    real.raise_for_status()
    # Cut in the middle of the fourth part: three complete instances, one partial.
    starts = [i for i in range(len(real.content)) if real.content.startswith(b"\r\n--", i)]
    cut = starts[2] + (starts[3] - starts[2]) // 2

    def replay(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            headers={"content-type": real.headers["content-type"]},
            stream=CutStream(real.content, cut),
        )

    broken = DicomWebClient(
        source_for(orthanc), transport=httpx.MockTransport(replay), environ={PASSWORD_ENV: "x"}
    )
    with pytest.raises(RetrieveInterrupted, match="after 3 complete") as interrupted:
        run(broken.retrieve_study(ct_study.study_uid, staging, staging.take))
    held = interrupted.value.completed_sop_instance_uids
    assert len(held) == 3 and len(staging.received) == 3
    assert sorted(staging.folder.iterdir()) == sorted(staging.received)  # partial removed

    async def resume() -> Any:
        async with client_for(orthanc) as pacs:
            return await pacs.retrieve_missing(ct_study.study_uid, held, staging, staging.take)

    resumed = run(resume())
    fetched = {i.sop_instance_uid for i in resumed.instances}
    assert fetched == set(ct_study.by_sop) - held
    assert sorted(staging.sop_uids()) == sorted(ct_study.by_sop)


# -- our retry policy, against a scripted transport -------------------------------------


class Script:
    """Answers requests from a list of responses (or exceptions to raise), in order."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self._answers: Iterator[httpx.Response | Exception] = iter(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = next(self._answers)
        if isinstance(answer, Exception):
            raise answer
        return answer


def scripted(script: Script, slept: list[float], **retry: Any) -> DicomWebClient:
    source = DicomWebSource(
        name="scripted",
        base_url="http://pacs.test/dicom-web",
        retry=DicomWebRetry(**retry),
    )

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return DicomWebClient(source, transport=httpx.MockTransport(script), sleep=sleep)


def search(client: DicomWebClient) -> Callable[[], Any]:
    async def go() -> Any:
        async with client:
            return await client.search_studies(PatientID="A^B")

    return go


def test_retry_after_in_seconds_is_honoured() -> None:
    script = Script(
        httpx.Response(503, headers={"Retry-After": "7"}),
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(200, json=[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}]),
    )
    slept: list[float] = []
    assert run(search(scripted(script, slept))()) == [
        {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}
    ]
    assert slept == [7.0, 3.0]
    assert str(script.requests[0].url) == "http://pacs.test/dicom-web/studies?PatientID=A^B"


def test_retry_after_as_a_date_is_capped() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    script = Script(httpx.Response(503, headers={"Retry-After": later}), httpx.Response(204))
    slept: list[float] = []
    assert run(search(scripted(script, slept, max_retry_after_seconds=90))()) == []
    assert slept == [90.0]


def test_connection_errors_back_off_exponentially_then_give_up() -> None:
    script = Script(*(httpx.ConnectError("refused") for _ in range(4)))
    slept: list[float] = []
    client = scripted(script, slept, max_attempts=4, backoff_seconds=2, max_backoff_seconds=5)
    with pytest.raises(DicomWebUnavailable, match="after 4 attempt"):
        run(search(client)())
    assert len(script.requests) == 4
    # Jittered between half and all of 2, 4, then 8 capped at 5.
    for delay, ceiling in zip(slept, [2, 4, 5], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_a_busy_peer_is_an_http_error_once_attempts_are_spent() -> None:
    script = Script(httpx.Response(503), httpx.Response(503))
    slept: list[float] = []
    with pytest.raises(DicomWebHttpError) as busy:
        run(search(scripted(script, slept, max_attempts=2))())
    assert busy.value.status_code == 503 and len(slept) == 1


def test_other_errors_are_not_retried() -> None:
    script = Script(httpx.Response(400))
    slept: list[float] = []
    with pytest.raises(DicomWebHttpError, match="HTTP 400"):
        run(search(scripted(script, slept))())
    assert slept == [] and len(script.requests) == 1


def test_stow_gives_up_on_a_batch_but_says_which_files(tmp_path: Path) -> None:
    files = write_study(tmp_path, make_study(920_007, make_patient(920_007), "CT", 1, 2))
    script = Script(httpx.ConnectError("refused"), httpx.ConnectError("refused"))
    slept: list[float] = []

    async def go() -> Any:
        async with scripted(script, slept, max_attempts=2) as client:
            return await client.store_instances(files)

    result = run(go())
    assert (result.accepted, result.retryable, result.code) == (False, True, "unavailable")
    assert result.unsent == tuple(files)
    sent = script.requests[-1]
    assert int(sent.headers["content-length"]) == len(sent.content)
    assert sent.content.count(b"Content-Type: application/dicom") == len(files)


def test_a_peer_that_cannot_send_as_stored_is_asked_for_its_default(staging: Staging) -> None:
    boundary = "b0undary"
    body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\nDATA\r\n--{boundary}--\r\n"
    script = Script(
        httpx.Response(406),
        httpx.Response(
            200,
            headers={
                "content-type": f"multipart/related; type=application/dicom; boundary={boundary}"
            },
            content=body.encode(),
        ),
    )
    slept: list[float] = []

    async def go() -> Any:
        async with scripted(script, slept) as client:
            return await client.retrieve_study("1.2.3", staging, staging.take)

    result = run(go())
    assert "transfer-syntax=*" in script.requests[0].headers["accept"]
    assert "transfer-syntax" not in script.requests[1].headers["accept"]
    assert [p.read_bytes() for p in staging.received] == [b"DATA"]
    assert result.instances[0].sop_instance_uid is None  # not DICOM: the caller will say so
