"""Series thumbnails for the case page, rendered from the DICOM the hub stores: the middle
instance of the series (for a whole-slide pyramid, its smallest level), windowed and scaled
to a PNG. A series the hub cannot draw (a compressed syntax without a decoder, no pixels)
gets a PNG that says so, not an error in the middle of the page."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
from fastapi import APIRouter, Request
from fastapi.responses import Response
from PIL import Image, ImageDraw
from starlette.concurrency import run_in_threadpool

from hub.api.deps import unit_of_work
from hub.api.dicomweb import dicom_store_of, stored_instances, visible_study
from hub.errors import NotFound
from hub.storage.tables import DicomInstanceRow
from hub.web.session import Person

router = APIRouter(prefix="/ui/imaging", include_in_schema=False)

SIZE = 256
WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"


@router.get("/studies/{study}/series/{series}/thumbnail.png")
async def series_thumbnail(request: Request, person: Person, study: str, series: str) -> Response:
    with unit_of_work(request, person) as fhir:
        _row, imaging = visible_study(fhir, study)
        instances = stored_instances(fhir.session, study, series)
        if not instances:
            raise NotFound("The series has no stored instances.")
        fhir.audited_export("read", [imaging])
    chosen = _representative(instances)
    path = dicom_store_of(request).path(str(chosen.digest))
    png = await run_in_threadpool(thumbnail_png, path)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def _representative(instances: list[DicomInstanceRow]) -> DicomInstanceRow:
    """The middle slice; for a whole-slide series (its levels differ in size), the smallest
    file, which is the pyramid's thumbnail level."""
    if WHOLE_SLIDE in {row.sop_class_uid for row in instances}:
        return min(instances, key=lambda row: row.size)
    return instances[len(instances) // 2]


def thumbnail_png(path: Path) -> bytes:
    try:
        dataset = pydicom.dcmread(path)
        pixels = dataset.pixel_array
    except Exception as exc:  # any decoder failure: the page says so in the picture
        return _placeholder(f"No preview: {type(exc).__name__}")
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    if frames > 1:
        pixels = pixels[frames // 2]
    if samples == 1:
        image = Image.fromarray(_windowed(dataset, pixels), mode="L")
        if str(getattr(dataset, "PhotometricInterpretation", "")) == "MONOCHROME1":
            image = Image.eval(image, lambda value: 255 - value)
    else:
        image = Image.fromarray(np.asarray(pixels, dtype=np.uint8)[..., :3], mode="RGB")
    image.thumbnail((SIZE, SIZE))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _windowed(dataset: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    values = pixels.astype(np.float64)
    slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
    intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
    values = values * slope + intercept
    center, width = _window(dataset)
    if center is None or width is None or width <= 0:
        low, high = float(values.min()), float(values.max())
    else:
        low, high = center - width / 2, center + width / 2
    scaled = (values - low) / ((high - low) or 1.0) * 255.0
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _window(dataset: pydicom.Dataset) -> tuple[float | None, float | None]:
    def first(value: object) -> float | None:
        if value is None:
            return None
        if isinstance(value, pydicom.multival.MultiValue):
            value = value[0]
        return float(value)  # type: ignore[arg-type]

    return first(getattr(dataset, "WindowCenter", None)), first(
        getattr(dataset, "WindowWidth", None)
    )


def _placeholder(text: str) -> bytes:
    image = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(image).text((8, SIZE // 2 - 6), text[:40], fill=255)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
