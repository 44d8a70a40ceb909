"""The DICOM JSON model (PS3.18 F.2) of a dataset's header, as QIDO-RS and WADO-RS metadata
answer it.

Bulk data (pixel data, large binary values, values pydicom left in the file) is given as a
BulkDataURI when the caller says where the instance's bulk data is served, and left out
otherwise; small binary values are inline (base64).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from dicom._part10 import PIXEL_DATA_TAGS

__all__ = ["INLINE_BINARY_LIMIT", "PixelDataRef", "dicom_json"]

INLINE_BINARY_LIMIT = 1024  # bytes before base64
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# PS3.18 Table F.2.3-1: the VRs whose value may be given as a BulkDataURI.
_BULK_VRS = _BINARY_VRS | frozenset(
    ["DS", "FL", "FD", "IS", "LT", "SL", "SS", "ST", "SV", "UC", "UL", "UR", "US", "UT", "UV"]
)
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)


@dataclass(frozen=True)
class PixelDataRef:
    """The pixel data element of an instance read without it (`read_instance` stops
    before the pixels): enough to announce it with a BulkDataURI."""

    tag: int = 0x7FE00010
    vr: str = "OW"


def dicom_json(
    ds: Dataset,
    *,
    bulk_data_uri: str | None = None,
    pixel_data: PixelDataRef | None = None,
    inline_binary_limit: int = INLINE_BINARY_LIMIT,
) -> dict[str, Any]:
    """The DICOM JSON model of `ds` (file meta and group lengths left out).

    `bulk_data_uri` is where this instance's bulk data is served; an element's URI is it
    followed by the element's path, `<bulk_data_uri>/7FE00010` at the top level and
    `<bulk_data_uri>/00520001/0/00282000` inside the first item of a sequence (items
    counted from 0). Without it, bulk data is left out. `pixel_data` announces the pixel
    data of a header read without it (`InstanceInfo.pixel_data`). Binary values up to
    `inline_binary_limit` bytes are inline; a sequence left in the file (over the read's
    defer size) is read from it, so the file must still be where it was read.
    """
    base = bulk_data_uri.rstrip("/") if bulk_data_uri is not None else None
    model = _dataset(ds, base, "", inline_binary_limit)
    if pixel_data is not None and base is not None:
        key = f"{pixel_data.tag:08X}"
        model.setdefault(key, {"vr": pixel_data.vr, "BulkDataURI": f"{base}/{key}"})
        model = dict(sorted(model.items()))
    return model


def _dataset(ds: Dataset, base: str | None, prefix: str, limit: int) -> dict[str, Any]:
    model: dict[str, Any] = {}
    for tag in sorted(ds.keys()):
        if tag.element == 0:
            continue  # group lengths are not part of the model
        key = f"{int(tag):08X}"
        path = f"{prefix}{key}"
        raw = ds.get_item(tag, keep_deferred=True)
        if _is_deferred(raw):
            vr = _plain_vr(raw.VR or _dictionary_vr(tag))
            if vr in _BULK_VRS:
                if base is not None:
                    model[key] = {"vr": vr, "BulkDataURI": f"{base}/{path}"}
                continue
        element = ds[tag]
        encoded = _element(element, int(tag), base, path, limit)
        if encoded is not None:
            model[key] = encoded
    return model


def _element(
    element: DataElement, tag: int, base: str | None, path: str, limit: int
) -> dict[str, Any] | None:
    vr = _plain_vr(element.VR)
    if vr == "SQ":
        items: list[dict[str, Any]] = [
            _dataset(item, base, f"{path}/{index}/", limit)
            for index, item in enumerate(element.value)
        ]
        return {"vr": vr, "Value": items} if items else {"vr": vr}
    if element.is_empty:
        return {"vr": vr}
    if vr in _BINARY_VRS or tag in PIXEL_DATA_TAGS:
        value = element.value
        if tag in PIXEL_DATA_TAGS or not isinstance(value, bytes) or len(value) > limit:
            return {"vr": vr, "BulkDataURI": f"{base}/{path}"} if base is not None else None
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    if vr == "PN":
        names = element.value if element.VM > 1 else [element.value]
        return {"vr": vr, "Value": [_person_name(name) for name in names]}
    return _plain(element, vr)


def _plain(element: DataElement, vr: str) -> dict[str, Any]:
    try:
        encoded = element.to_json_dict(None, 0)
    except (ValueError, TypeError):
        # A number pydicom cannot read as one (IS "1.5"): keep the text rather than lose it.
        values = element.value if element.VM > 1 else [element.value]
        encoded = {"vr": vr, "Value": [str(value) for value in values]}
    encoded["vr"] = vr
    if vr in _STRING_VRS and "Value" in encoded:
        # PS3.18 F.2.5: an empty value among several is null.
        encoded["Value"] = [value if value != "" else None for value in encoded["Value"]]
    return encoded


def _person_name(name: object) -> dict[str, str] | None:
    if not isinstance(name, PersonName):
        name = PersonName(str(name))
    groups = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), name.components, strict=False))
    present = {group: text for group, text in groups.items() if text}
    return present or None


def _is_deferred(raw: DataElement | RawDataElement) -> bool:
    return isinstance(raw, RawDataElement) and raw.value is None and raw.length > 0


def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


def _plain_vr(vr: str | None) -> str:
    # An ambiguous VR pydicom could not settle ("US or SS", "OB or OW"): the model needs one.
    if not vr:
        return "UN"
    return vr.split(" or ")[0]
