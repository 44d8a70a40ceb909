"""Named functions the YAML tables may call, and the primitive v2 types.

A table names a function (`function: reference_range`); the loader resolves the name here
once. Each function takes the value read so far, the `Context` (where in the message, the
terminology, the way to note a default) and the rule's `params`; it returns the new value,
or None for nothing. Functions hold the little logic data cannot: date arithmetic, the
shape of a reference range, base64. What is mapped where stays in the tables.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mappings.tables import Function, Primitive

if TYPE_CHECKING:
    from mappings.context import Context

__all__ = ["FUNCTIONS", "PRIMITIVES"]

JSON = dict[str, Any]
Params = Mapping[str, Any]
UCUM = "http://unitsofmeasure.org"

_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_RANGE = re.compile(
    r"^\s*(?P<low>[+-]?\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(?P<high>[+-]?\d+(?:\.\d+)?)\s*$"
)
_BOUND = re.compile(r"^\s*(?P<op><=|>=|<|>)\s*(?P<value>[+-]?\d+(?:\.\d+)?)\s*$")
_COMPARATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">="}


# -- primitives ---------------------------------------------------------------------------
def _text(raw: str, ctx: Context) -> str | None:
    if raw == '""':
        ctx.note_not_mapped('an explicit null ("") is not carried into FHIR')
        return None
    value = ctx.text(raw)
    return value if value.strip() else None


def _string(raw: str, ctx: Context) -> str | None:
    if raw == '""':
        ctx.note_not_mapped('an explicit null ("") is not carried into FHIR')
        return None
    if ctx.escape in raw:
        raw = ctx.text(raw)
    return raw.strip() or None


def _number(raw: str, ctx: Context) -> int | float | None:
    text = _string(raw, ctx)
    if text is None:
        return None
    if not _NUMBER.match(text):
        ctx.note_not_mapped("not a decimal number")
        return None
    return _decimal(text)


def _decimal(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _integer(raw: str, ctx: Context) -> int | None:
    text = _string(raw, ctx)
    if text is None:
        return None
    if not text.lstrip("+-").isdigit():
        ctx.note_not_mapped("not an integer")
        return None
    return int(text)


def _datetime(raw: str, ctx: Context) -> str | None:
    """HL7 DTM → FHIR dateTime, keeping the sender's precision (a year stays a year).

    A time without a UTC offset takes MSH-7's (else the sender's, senders.yaml): FHIR needs
    one. That default is reported. Conversions are cached per message: one OBX-14 repeated
    over fifteen OBX is read once.
    """
    key = ("DTM", raw)
    found = ctx.cache.get(key)
    if found is None:
        found = ctx.cache[key] = _convert_datetime(raw.strip(), ctx.utc_offset)
    value, defaulted, problem = found
    if problem:
        ctx.note_not_mapped(problem)
    elif defaulted:
        ctx.note_default(defaulted, f"the time has no UTC offset; took {ctx.offset_source}'s")
    return value


def _convert_datetime(text: str, default_offset: str) -> tuple[str | None, str | None, str]:
    """(FHIR dateTime, the offset supplied by default, why it is not a date)."""
    if not text or text == '""':
        return None, None, ""
    match = _DTM.match(text)
    if match is None:
        return None, None, "not an HL7 date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])"
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        dt.date(int(year), int(month or 1), int(day or 1))
        if hour is not None and (int(hour) > 23 or int(minute or 0) > 59 or int(second or 0) > 59):
            raise ValueError(text)
    except ValueError:
        return None, None, "not a valid calendar date or time"
    date = (
        year if month is None else f"{year}-{month}" if day is None else (f"{year}-{month}-{day}")
    )
    if hour is None:
        return date, None, ""
    defaulted = None
    if offset is None:
        zone = defaulted = default_offset
    else:
        zone = f"{offset[:3]}:{offset[3:]}"
    return f"{date}T{hour}:{minute or '00'}:{second or '00'}{fraction or ''}{zone}", defaulted, ""


def _date(raw: str, ctx: Context) -> str | None:
    text = raw.strip()[:8]
    return _datetime(text, ctx) if text else None


PRIMITIVES: dict[str, Primitive] = {
    "ST": Primitive("ST", _string, text=True),
    "TX": Primitive("TX", _text, text=True),
    "FT": Primitive("FT", _text, text=True),
    "ID": Primitive("ID", _string, text=False),
    "IS": Primitive("IS", _string, text=False),
    "SI": Primitive("SI", _integer, text=False),
    "NM": Primitive("NM", _number, text=False),
    "DT": Primitive("DT", _date, text=False),
    "DTM": Primitive("DTM", _datetime, text=False),
}


# -- dates -----------------------------------------------------------------------------
def to_date(value: Any, ctx: Context, params: Params) -> str | None:
    """A FHIR dateTime → its date (birthDate)."""
    return str(value)[:10] if value else None


def to_instant(value: Any, ctx: Context, params: Params) -> str | None:
    """A FHIR dateTime → an instant, which needs seconds and an offset."""
    text = str(value)
    if "T" not in text:
        ctx.note_not_mapped("an instant needs a time of day; the value holds a date only")
        return None
    return text


# -- identifiers ----------------------------------------------------------------------------
def identifier_system(value: Any, ctx: Context, params: Params) -> str | None:
    """Identifier.system from the assigning authority (an HD component, or EI's HD parts).

    params: `value` (the component holding the id; nothing without it), `authority` (one
    component holding an HD, or [namespace, universal id, type] components), `type` (the
    identifier type code component, for type-keyed systems such as NPI).
    """
    wanted = params.get("value", 1)
    if not any(ctx.raw_part(int(n)) for n in (wanted if isinstance(wanted, list) else [wanted])):
        return None
    authority = params.get("authority")
    if isinstance(authority, list):
        namespace, universal, kind = (ctx.part(int(n)) for n in authority)
    elif authority is not None:
        raw = ctx.raw_part(int(authority))
        pieces = [ctx.text(p) for p in raw.split(ctx.subcomponent_separator)] + ["", "", ""]
        namespace, universal, kind = pieces[0], pieces[1], pieces[2]
    else:
        namespace = universal = kind = ""
    identifier_type = ctx.part(int(params["type"])) if "type" in params else ""
    authorities = ctx.terminology.authorities
    system, known = authorities.system(namespace, universal, kind, identifier_type)
    if system is not None:
        if not known:
            ctx.note_default(
                system,
                "assigning authority not in assigning_authorities.yaml; "
                "derived the system from its namespace id",
            )
        return system
    facility = ctx.facility
    system = authorities.unknown_template.format(authority=_slug(facility or "unknown"))
    ctx.note_default(
        system, "no assigning authority; derived the system from the sending facility (MSH-4)"
    )
    return system


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def clean_identifiers(value: Any, ctx: Context, params: Params) -> Any:
    """Drop identifiers without a value (a type or system alone identifies nothing)."""
    identifiers = value.get("identifier")
    if identifiers:
        kept = [i for i in identifiers if i.get("value")]
        if kept:
            value["identifier"] = kept
        else:
            del value["identifier"]
    return value


# -- coded values -----------------------------------------------------------------------------
def coding_system(value: Any, ctx: Context, params: Params) -> str | None:
    """Coding.system from a CWE coding-system name (table 0396); local codes get the
    sender's local system for this kind of code (senders.yaml)."""
    if not ctx.raw_part(int(params.get("code", 1))):
        return None
    name = str(value or "")
    systems = ctx.terminology.coding_systems
    if name and not systems.is_local(name):
        standard = systems.system(name)
        if standard:
            return standard
        ctx.note_not_mapped("coding system name not in coding_systems.yaml; kept as local")
    key = ("local", ctx.local_kind)
    local: str | None = ctx.cache.get(key)
    if local is None:
        local = ctx.cache[key] = ctx.terminology.senders.local_system(
            ctx.facility, ctx.local_kind, ctx.application
        )
    return local


def codeable_concept(value: Any, ctx: Context, params: Params) -> Any:
    """Tidy a CodeableConcept and translate its codings by the ConceptMaps."""
    index = ctx.terminology.concept_maps.index
    codings = value.get("coding")
    if codings is not None and len(codings) == 1:  # the common case: one code
        coding = codings[0]
        code = coding.get("code")
        if code:
            for target in index.get((coding.get("system", ""), code), ()):
                codings.append(dict(target))
            return value
    codings = [c for c in value.get("coding", []) if c]
    kept = []
    for coding in codings:
        if coding.get("code"):
            kept.append(coding)
        elif coding.get("display") and "text" not in value:
            value["text"] = coding["display"]
    concept_maps = ctx.terminology.concept_maps
    for coding in list(kept):
        system = coding.get("system")
        if system:
            for target in concept_maps.translate(system, coding["code"]):
                if target not in kept:
                    kept.append(dict(target))
    if kept:
        value["coding"] = kept
    else:
        value.pop("coding", None)
    return value if value else None


def concept_code(value: Any, ctx: Context, params: Params) -> str | None:
    """The first code of a CodeableConcept (Coverage.class.value)."""
    if isinstance(value, dict):
        for coding in value.get("coding", []):
            if coding.get("code"):
                return str(coding["code"])
        return None
    return str(value) if value else None


def choose_one(value: Any, ctx: Context, params: Params) -> Any:
    """Finalize: of a choice element's variants (`keys`), keep the first present."""
    found = False
    for key in params["keys"]:
        if key in value:
            if found:
                del value[key]
            found = True
    return value


def concept_text(value: Any, ctx: Context, params: Params) -> str | None:
    """The words of a CodeableConcept: its text, else its first display, else its code."""
    if not isinstance(value, dict):
        return str(value) if value else None
    if value.get("text"):
        return str(value["text"])
    for coding in value.get("coding", []):
        if coding.get("display"):
            return str(coding["display"])
    codings = value.get("coding", [])
    return str(codings[0]["code"]) if codings else None


def ucum_units(value: Any, ctx: Context, params: Params) -> JSON | None:
    """Units (a CodeableConcept from CWE) → Quantity.unit/system/code, UCUM when known."""
    if not isinstance(value, dict):
        return None
    codings = value.get("coding", [])
    unit = codings[0]["code"] if codings else value.get("text")
    if not unit:
        return None
    declared = any(c.get("system") == UCUM for c in codings)
    code = ctx.terminology.units.ucum_code(unit, declared)
    shown = codings[0].get("display", unit) if codings else unit
    if code is None:
        ctx.note_not_mapped("unit not recognised as UCUM (units.yaml); kept as Quantity.unit")
        return {"unit": shown}
    return {"unit": shown if declared else unit, "system": UCUM, "code": code}


def _units(ctx: Context, raw: str, params: Params) -> JSON:
    """OBX-6 read once per message and distinct value (OBX-5 and OBX-7 both need it)."""
    key = ("units", raw)
    found = ctx.cache.get(key)
    if found is None:
        found = ctx.cache[key] = ucum_units(ctx.evaluate("CWE", raw), ctx, params) or {}
    return dict(found)


def units(value: Any, ctx: Context, params: Params) -> JSON | None:
    """Quantity.unit/system/code from a units CWE (the raw component being read)."""
    raw = ctx.raw_part(2) if ctx.parts else ""
    return _units(ctx, raw, params) or None if raw else None


def quantity(value: Any, ctx: Context, params: Params) -> Any:
    """Finish a Quantity: it needs a value."""
    return value if isinstance(value, dict) and "value" in value else None


def structured_numeric(value: Any, ctx: Context, params: Params) -> JSON | None:
    """OBX-5 as SN (comparator ^ num1 ^ separator ^ num2) with OBX-6 units → value[x]."""
    parts: list[str] = value
    components = [ctx.text(p) for p in parts[0].split(ctx.component_separator)] + [""] * 4
    comparator, first, separator, second = (c.strip() for c in components[:4])
    units: JSON = {}
    if len(parts) > 1 and parts[1]:
        units = _units(ctx, parts[1], params)
    if not _NUMBER.match(first or "x"):
        ctx.note_not_mapped("SN without a first number")
        return None
    if separator in ("-", "+") and second and _NUMBER.match(second) and not comparator:
        return {
            "valueRange": {
                "low": {"value": _decimal(first), **units},
                "high": {"value": _decimal(second), **units},
            }
        }
    if separator in (":", "/") and second and _NUMBER.match(second):
        return {
            "valueRatio": {
                "numerator": {"value": _decimal(first)},
                "denominator": {"value": _decimal(second)},
            }
        }
    result: JSON = {"value": _decimal(first), **units}
    if comparator in _COMPARATORS:
        result["comparator"] = _COMPARATORS[comparator]
    elif comparator and comparator != "=":
        ctx.note_not_mapped("SN comparator not expressible as Quantity.comparator")
    return {"valueQuantity": result}


def reference_range(value: Any, ctx: Context, params: Params) -> JSON | None:
    """OBX-7 (`3.5-5.0`, `<0.5`, `>10`, or words) with OBX-6 units → referenceRange."""
    parts: list[str] = value
    key = ("range", "\x00".join(parts))
    cached = ctx.cache.get(key)
    if cached is None:
        cached = ctx.cache[key] = _reference_range(parts, ctx, params)
    return _copy(cached) if cached is not None else None


def _copy(value: JSON) -> JSON:
    """A reference range read from the cache: two levels of dicts."""
    return {key: dict(item) if isinstance(item, dict) else item for key, item in value.items()}


def _reference_range(parts: list[str], ctx: Context, params: Params) -> JSON | None:
    text = ctx.text(parts[0]).strip()
    if not text:
        return None
    units: JSON = {}
    if len(parts) > 1 and parts[1]:
        saved = ctx.record
        ctx.record = None  # the units are reported with OBX-5
        units = _units(ctx, parts[1], params)
        ctx.record = saved
    match = _RANGE.match(text)
    if match:
        return {
            "low": {"value": _decimal(match["low"]), **units},
            "high": {"value": _decimal(match["high"]), **units},
        }
    bound = _BOUND.match(text)
    if bound:
        side = "high" if bound["op"].startswith("<") else "low"
        return {side: {"value": _decimal(bound["value"]), **units}, "text": text}
    return {"text": text}


# -- telecom, names ---------------------------------------------------------------------------
def telecom_value(value: Any, ctx: Context, params: Params) -> str | None:
    """ContactPoint.value from XTN: e-mail (XTN.4), unformatted (XTN.12), the parts
    (XTN.5-8), or the formatted XTN.1 of older versions."""
    equipment = ctx.part(3).upper()
    email = ctx.part(4)
    if email and (equipment in ("INTERNET", "X.400", "NET") or not ctx.part(7)):
        return email
    unformatted = ctx.part(12)
    if unformatted:
        return unformatted
    local = ctx.part(7)
    if local:
        words = []
        if ctx.part(5):
            words.append(f"+{ctx.part(5).lstrip('+')}")
        if ctx.part(6):
            words.append(ctx.part(6))
        words.append(local)
        text = " ".join(words)
        if ctx.part(8):
            text = f"{text} ext. {ctx.part(8)}"
        return text
    return ctx.part(1) or None


def contact_point(value: Any, ctx: Context, params: Params) -> Any:
    """A ContactPoint needs a system when it has a value (cpt-2): phone unless an e-mail."""
    if "value" not in value:
        return None
    if "system" not in value:
        value["system"] = "email" if "@" in value["value"] else "phone"
    return value


def name_text(value: Any, ctx: Context, params: Params) -> str | None:
    """A person's name as words (Annotation.authorString, Coverage.subscriber.display)."""
    if isinstance(value, dict):
        names = value.get("name")
        name = names[0] if isinstance(names, list) and names else value
        words = [*name.get("prefix", []), *name.get("given", [])]
        if name.get("family"):
            words.append(name["family"])
        return " ".join(words) or None
    return str(value) if value else None


def hl7_boolean(value: Any, ctx: Context, params: Params) -> bool | None:
    """Table 0136 yes/no indicator → boolean."""
    text = str(value).upper()
    if text in ("Y", "YES", "TRUE", "T"):
        return True
    if text in ("N", "NO", "FALSE", "F"):
        return False
    ctx.note_not_mapped("not a yes/no indicator (table 0136)")
    return None


# -- attachments ------------------------------------------------------------------------------
def mime_type(value: Any, ctx: Context, params: Params) -> str | None:
    """Attachment.contentType from ED.2 (type of data) and ED.3 (subtype)."""
    if not ctx.raw_part(5):
        return None
    mime_types = ctx.terminology.mime_types
    subtype, kind = ctx.part(3), ctx.part(2)
    if "/" in subtype:
        return subtype.lower()
    found = mime_types.get(subtype.upper()) or mime_types.get(kind.upper())
    if found is None:
        found = "application/octet-stream"
        ctx.note_default(found, "ED.2/ED.3 not in mime_types.yaml")
    return found


def ed_data(value: Any, ctx: Context, params: Params) -> str | None:
    """Attachment.data (base64) from ED.5, by its encoding ED.4 (Base64, Hex, A = text)."""
    raw = ctx.raw_part(5)
    if not raw:
        return None
    encoding = ctx.part(4).upper()
    if encoding in ("BASE64", "B64"):
        data = "".join(ctx.text(raw).split())
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            ctx.note_not_mapped("ED.5 is not valid base64")
            return None
        return data
    if encoding == "HEX":
        try:
            return base64.b64encode(bytes.fromhex(ctx.text(raw))).decode("ascii")
        except ValueError:
            ctx.note_not_mapped("ED.5 is not valid hex")
            return None
    return base64.b64encode(ctx.text(raw).encode("utf-8")).decode("ascii")


def text_attachment(value: Any, ctx: Context, params: Params) -> Any:
    """Finalize: put the narrative gathered at `source` into a text/plain attachment at
    `target` (presentedForm of a report, content of a document), base64 UTF-8."""
    source = str(params["source"])
    text = value.get(source)
    if not text:
        return value
    attachment: JSON = {
        "contentType": "text/plain; charset=utf-8",
        "data": base64.b64encode(str(text).encode("utf-8")).decode("ascii"),
    }
    if params.get("title"):
        attachment["title"] = params["title"]
    element: JSON = {"attachment": attachment} if params.get("wrap") else attachment
    items = value.setdefault(str(params["target"]), [])
    items.insert(0, element)
    if params.get("conclusion"):
        comments = value.get("conclusion")
        value["conclusion"] = f"{text}\n{comments}" if comments else text
    if source.startswith("_"):
        del value[source]
    return value


FUNCTIONS: dict[str, Function] = {
    "to_date": to_date,
    "to_instant": to_instant,
    "identifier_system": identifier_system,
    "clean_identifiers": clean_identifiers,
    "coding_system": coding_system,
    "codeable_concept": codeable_concept,
    "concept_text": concept_text,
    "concept_code": concept_code,
    "choose_one": choose_one,
    "ucum_units": ucum_units,
    "quantity": quantity,
    "units": units,
    "structured_numeric": structured_numeric,
    "reference_range": reference_range,
    "telecom_value": telecom_value,
    "contact_point": contact_point,
    "name_text": name_text,
    "hl7_boolean": hl7_boolean,
    "mime_type": mime_type,
    "ed_data": ed_data,
    "text_attachment": text_attachment,
}
