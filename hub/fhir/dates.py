"""FHIR date, dateTime and instant values as ranges of naive UTC datetimes.

A FHIR date is imprecise: `2024-03` means all of March. Both the index and the search
compare ranges [low, high), the way FHIR R4 search §3.1.1.5.3 describes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

EARLIEST = datetime(1, 1, 1)
LATEST = datetime(9999, 12, 31, 23, 59, 59)

_PATTERN = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def date_range(value: str) -> tuple[datetime, datetime]:
    """The [low, high) range of naive UTC datetimes that `value` covers.

    Raises ValueError for a string that is not a FHIR date, dateTime or instant.
    """
    match = _PATTERN.match(value.strip())
    if not match:
        raise ValueError(f"'{value}' is not a FHIR date or dateTime")
    parts = match.groupdict()
    year = int(parts["year"])
    if parts["month"] is None:
        return datetime(year, 1, 1), _add_years(year)
    month = int(parts["month"])
    if parts["day"] is None:
        low = datetime(year, month, 1)
        return low, (_add_years(year) if month == 12 else datetime(year, month + 1, 1))
    day = int(parts["day"])
    if parts["hour"] is None:
        low = datetime(year, month, day)
        return low, _after(low, timedelta(days=1))
    fraction = parts["fraction"] or ""
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    local = datetime(
        year,
        month,
        day,
        int(parts["hour"]),
        int(parts["minute"]),
        int(parts["second"] or 0),
        micro,
    )
    low = _to_utc(local, parts["tz"])
    if fraction:
        step = timedelta(microseconds=1)
    elif parts["second"] is not None:
        step = timedelta(seconds=1)
    else:
        step = timedelta(minutes=1)
    return low, _after(low, step)


def _after(low: datetime, step: timedelta) -> datetime:
    """`low + step`, or LATEST where that would pass the end of the datetime range."""
    return low + step if low <= LATEST - step else max(low, LATEST)


def _add_years(year: int) -> datetime:
    return datetime(year + 1, 1, 1) if year < 9999 else LATEST


def _to_utc(local: datetime, tz: str | None) -> datetime:
    if tz is None or tz == "Z":
        return local
    sign = 1 if tz[0] == "+" else -1
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    if minutes > 59 or hours * 60 + minutes > 14 * 60:
        raise ValueError(f"'{tz}' is not a time-zone offset")
    try:
        return local - sign * timedelta(hours=hours, minutes=minutes)
    except OverflowError as exc:
        raise ValueError(f"{local.isoformat()}{tz} is outside the supported range") from exc


def utc_now() -> datetime:
    """Now, as the naive UTC datetime the database columns hold."""
    return datetime.now(UTC).replace(tzinfo=None)


def instant(moment: datetime) -> str:
    """A naive UTC datetime as a FHIR instant."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
