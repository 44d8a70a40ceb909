"""hub.fhir.dates: FHIR date, dateTime and instant values as [low, high) ranges in naive UTC."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from hub.fhir.dates import LATEST, date_range, instant, utc_now


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2024", datetime(2024, 1, 1), datetime(2025, 1, 1)),
        ("2024-03", datetime(2024, 3, 1), datetime(2024, 4, 1)),
        ("2024-02", datetime(2024, 2, 1), datetime(2024, 3, 1)),
        ("2024-12", datetime(2024, 12, 1), datetime(2025, 1, 1)),
        ("2024-02-29", datetime(2024, 2, 29), datetime(2024, 3, 1)),
        ("2024-12-31", datetime(2024, 12, 31), datetime(2025, 1, 1)),
        ("2024-03-05T10:30Z", datetime(2024, 3, 5, 10, 30), datetime(2024, 3, 5, 10, 31)),
        (
            "2024-03-05T10:30:15Z",
            datetime(2024, 3, 5, 10, 30, 15),
            datetime(2024, 3, 5, 10, 30, 16),
        ),
        (
            "2024-03-05T10:30:15.5Z",
            datetime(2024, 3, 5, 10, 30, 15, 500000),
            datetime(2024, 3, 5, 10, 30, 15, 500001),
        ),
        (
            "2024-03-05T10:30:15.123456789Z",
            datetime(2024, 3, 5, 10, 30, 15, 123456),
            datetime(2024, 3, 5, 10, 30, 15, 123457),
        ),
    ],
    ids=[
        "year",
        "month",
        "february",
        "december",
        "leap-day",
        "last-day",
        "minute",
        "second",
        "fraction",
        "nanoseconds-truncated",
    ],
)
def test_precision_gives_the_range(value: str, low: datetime, high: datetime) -> None:
    assert date_range(value) == (low, high)


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("2024-03-05T10:30:00Z", datetime(2024, 3, 5, 10, 30)),
        ("2024-03-05T10:30:00+00:00", datetime(2024, 3, 5, 10, 30)),
        ("2024-03-05T10:30:00+02:00", datetime(2024, 3, 5, 8, 30)),
        ("2024-03-05T10:30:00-05:30", datetime(2024, 3, 5, 16, 0)),
        ("2024-01-01T01:00:00+02:00", datetime(2023, 12, 31, 23, 0)),
        ("2024-12-31T22:00:00-03:00", datetime(2025, 1, 1, 1, 0)),
        ("2024-03-05T10:30:00", datetime(2024, 3, 5, 10, 30)),
    ],
    ids=[
        "z",
        "zero-offset",
        "east",
        "west-half-hour",
        "back-over-new-year",
        "forward-over-new-year",
        "no-zone-is-utc",
    ],
)
def test_time_zones_convert_to_utc(value: str, utc: datetime) -> None:
    low, high = date_range(value)
    assert (low, high) == (utc, utc + timedelta(seconds=1))
    assert low.tzinfo is None


def test_surrounding_whitespace_is_ignored() -> None:
    assert date_range(" 2024-03 ") == date_range("2024-03")


def test_the_last_representable_day_and_year_do_not_overflow() -> None:
    assert date_range("9999") == (datetime(9999, 1, 1), LATEST)
    assert date_range("9999-12") == (datetime(9999, 12, 1), LATEST)
    assert date_range("9999-12-31") == (datetime(9999, 12, 31), LATEST)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "24",
        "20240305",
        "2024-3-05",
        "2024-13",
        "2024-00",
        "2023-02-29",
        "2024-04-31",
        "2024-03-05T25:00Z",
        "2024-03-05T10:60Z",
        "2024-03-05T10:30:61Z",
        "2024-03-05T10",
        "2024-03-05 10:30:00Z",
        "2024-03-05T10:30:00+2:00",
        "2024-03-05T10:30:00+15:00",
        "2024-03-05T10:30:00+05:75",
        "2024-03-05T10:30:00.Z",
        "0000",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:00:00-02:00",
        "yesterday",
        "2024-03-05Z",
    ],
)
def test_invalid_values_raise_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        date_range(value)


def test_instant_round_trips_through_date_range() -> None:
    moment = datetime(2024, 3, 5, 10, 30, 15, 42)
    text = instant(moment)
    assert text == "2024-03-05T10:30:15.000042Z"
    assert date_range(text) == (moment, moment + timedelta(microseconds=1))


def test_utc_now_is_naive_and_round_trips() -> None:
    now = utc_now()
    assert now.tzinfo is None
    assert date_range(instant(now))[0] == now
