"""WADO-RS frames and pixel bulk data from the hub, on both backends: what a viewer draws,
cut from the stored files frame by frame, native and encapsulated (RLE)."""

from __future__ import annotations

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import RLELossless

from dicom.synthetic import make_study, write_study
from hub.storage.tables import DicomInstanceRow
from tests.fhir_client import assert_outcome
from tests.integration.test_dicomweb_api import Imaging, dicom_parts, imaging

__all__ = ["imaging"]  # the fixture, shared with the DICOMweb tests


def instance_url(world: Imaging, ds: Dataset) -> str:
    return (
        f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
        f"/instances/{ds.SOPInstanceUID}"
    )


def served(world: Imaging, sop_uid: str) -> Dataset:
    with world.client.app.state.hub.sessions() as session:
        digest = session.get(DicomInstanceRow, sop_uid).digest
    return dcmread(world.client.app.state.dicom_importer.store.path(digest))


def test_a_native_frame_is_the_pixel_data_of_the_stored_instance(imaging):
    ds = imaging.ct[0]
    answer = imaging.client.get(
        f"{instance_url(imaging, ds)}/frames/1", headers=imaging.headers["specialist"]
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("multipart/related")
    (part, frame), *rest = dicom_parts(answer)
    assert rest == []
    assert part["Content-Type"].startswith("application/octet-stream")
    assert frame == served(imaging, str(ds.SOPInstanceUID)).PixelData
    bulk = imaging.client.get(
        f"{instance_url(imaging, ds)}/7FE00010", headers=imaging.headers["specialist"]
    )
    assert [payload for _, payload in dicom_parts(bulk)] == [frame]


def test_encapsulated_frames_come_one_part_each(imaging):
    rle = make_study(52, imaging.child, "CT", series=1, instances=1, transfer_syntax=RLELossless)
    imaging.receive(write_study(imaging.folder / "rle", rle), imaging.task_id)
    imaging.run_jobs()
    ds = rle[0]
    answer = imaging.client.get(
        f"{instance_url(imaging, ds)}/frames/1", headers=imaging.headers["specialist"]
    )
    assert answer.status_code == 200, answer.text
    stored = served(imaging, str(ds.SOPInstanceUID))
    expected = next(generate_frames(stored.PixelData, number_of_frames=1))
    assert [payload for _, payload in dicom_parts(answer)] == [expected]


def test_a_frame_that_is_not_there_and_a_stranger_get_404(imaging):
    url = instance_url(imaging, imaging.ct[0])
    assert_outcome(
        imaging.client.get(f"{url}/frames/2", headers=imaging.headers["specialist"]), 404
    )
    assert_outcome(
        imaging.client.get(f"{url}/frames/1", headers=imaging.headers["other-manager"]), 404
    )
    assert_outcome(imaging.client.get(f"{url}/frames/1"), 401)
