"""The business-day clock: weekends, holidays, month and year ends, daylight-saving changes,
starts on days off, fractions; and the `turnaround` settings that configure it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hub.workflow.business_days import BusinessCalendar
from hub.workflow.turnaround import percentile
from hub.workflow.turnaround_config import Promise, TurnaroundSettings

NEW_YORK = ZoneInfo("America/New_York")
US_HOLIDAYS = frozenset(
    {
        date(2026, 1, 1),  # Thursday
        date(2026, 1, 19),  # Martin Luther King Jr. Day, Monday
        date(2026, 5, 25),  # Memorial Day, Monday
        date(2026, 11, 26),  # Thanksgiving, Thursday
        date(2026, 11, 27),  # the Friday after
        date(2026, 12, 25),  # Friday
        date(2027, 1, 1),  # Friday
    }
)
CALENDAR = BusinessCalendar(NEW_YORK, US_HOLIDAYS)


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK)


def between(start: datetime, end: datetime) -> float:
    return CALENDAR.business_days_between(start, end)


# -- weekends ------------------------------------------------------------------------------
def test_friday_afternoon_to_tuesday_morning_is_under_two_business_days() -> None:
    # Friday 16:00 → 8 of 24 hours; Monday whole; Tuesday to 10:00 → 10 of 24.
    assert between(ny(2026, 3, 13, 16), ny(2026, 3, 17, 10)) == pytest.approx(1.75)
    assert CALENDAR.add_business_days(ny(2026, 3, 13, 16), 1.75) == ny(2026, 3, 17, 10)


def test_a_weekend_adds_nothing() -> None:
    assert between(ny(2026, 3, 14, 0), ny(2026, 3, 16, 0)) == 0  # Saturday, Sunday
    assert between(ny(2026, 3, 13, 12), ny(2026, 3, 16, 12)) == pytest.approx(1)
    assert between(ny(2026, 3, 13, 12), ny(2026, 3, 20, 12)) == pytest.approx(5)


def test_whole_days_land_on_the_same_time_of_day_skipping_the_weekend() -> None:
    start = ny(2026, 3, 11, 9, 30)  # Wednesday
    assert CALENDAR.add_business_days(start, 1) == ny(2026, 3, 12, 9, 30)
    assert CALENDAR.add_business_days(start, 3) == ny(2026, 3, 16, 9, 30)  # Monday
    assert CALENDAR.add_business_days(start, 7) == ny(2026, 3, 20, 9, 30)
    assert CALENDAR.add_business_days(start, 0) == start


def test_long_spans_count_whole_weeks() -> None:
    # 2026-02-02 (Monday) to 2026-04-27 (Monday): 12 weeks, no holidays in between.
    assert between(ny(2026, 2, 2, 8), ny(2026, 4, 27, 8)) == pytest.approx(60)
    # The whole of 2026 from New Year's Day: 261 weekdays, 6 holidays on weekdays.
    assert between(ny(2026, 1, 1), ny(2027, 1, 1)) == pytest.approx(261 - 6)


def test_another_weekend() -> None:
    calendar = BusinessCalendar.of("Asia/Dubai", weekend=["saturday", "sunday"])
    assert calendar.weekend == {5, 6}
    friday_weekend = BusinessCalendar.of("Asia/Riyadh", weekend=["friday", "saturday"])
    riyadh = ZoneInfo("Asia/Riyadh")
    thursday = datetime(2026, 3, 12, 12, tzinfo=riyadh)
    assert friday_weekend.add_business_days(thursday, 1) == datetime(
        2026, 3, 15, 12, tzinfo=riyadh
    )  # Sunday
    with pytest.raises(ValueError, match="business day"):
        BusinessCalendar(NEW_YORK, weekend=frozenset(range(7)))


# -- holidays ------------------------------------------------------------------------------
def test_a_holiday_adds_nothing() -> None:
    # Wednesday before Thanksgiving, noon → the Monday after, noon: Wednesday half, then
    # Thursday and Friday are holidays, the weekend, Monday half.
    assert between(ny(2026, 11, 25, 12), ny(2026, 11, 30, 12)) == pytest.approx(1)
    assert CALENDAR.add_business_days(ny(2026, 11, 25, 12), 2) == ny(2026, 12, 1, 12)


def test_a_long_weekend_with_a_monday_holiday() -> None:
    # Friday before Martin Luther King Jr. Day, 16:00 → Tuesday 10:00.
    assert between(ny(2026, 1, 16, 16), ny(2026, 1, 20, 10)) == pytest.approx(0.75)
    assert CALENDAR.add_business_days(ny(2026, 1, 16, 16), 1) == ny(2026, 1, 20, 16)
    assert CALENDAR.add_business_days(ny(2026, 1, 16, 16), 2) == ny(2026, 1, 21, 16)


def test_a_holiday_on_a_weekend_changes_no_count() -> None:
    saturday = date(2026, 7, 4)
    with_it = BusinessCalendar(NEW_YORK, US_HOLIDAYS | {saturday})
    start, end = ny(2026, 6, 29), ny(2026, 7, 13)
    assert with_it.business_days_between(start, end) == between(start, end) == 10


# -- month and year ends -------------------------------------------------------------------
def test_across_month_ends() -> None:
    # Friday 30 January 2026, 14:00, + 3 → Wednesday 4 February, 14:00.
    assert CALENDAR.add_business_days(ny(2026, 1, 30, 14), 3) == ny(2026, 2, 4, 14)
    # February's end in a common year: Friday 27th → Tuesday 3 March.
    assert CALENDAR.add_business_days(ny(2026, 2, 27, 9), 2) == ny(2026, 3, 3, 9)
    # A 31-day month: Thursday 30 April → Monday 4 May.
    assert between(ny(2026, 4, 30, 18), ny(2026, 5, 4, 6)) == pytest.approx(6 / 24 + 1 + 6 / 24)
    # Leap year: Friday 28 February 2028 is followed by Tuesday 29 February.
    leap = BusinessCalendar(NEW_YORK)
    assert leap.add_business_days(ny(2028, 2, 25, 12), 2) == ny(2028, 2, 29, 12)


def test_across_the_year_end_and_new_years_day() -> None:
    # Thursday 31 December 2026, noon; Friday 1 January 2027 is a holiday; then the weekend.
    assert CALENDAR.add_business_days(ny(2026, 12, 31, 12), 1) == ny(2027, 1, 4, 12)
    assert between(ny(2026, 12, 31, 12), ny(2027, 1, 4, 12)) == pytest.approx(1)
    # Christmas (Friday) to New Year's Day: the four days between.
    assert between(ny(2026, 12, 24, 0), ny(2027, 1, 4, 0)) == pytest.approx(1 + 4)
    # The last instant of a business day is the next day's midnight.
    assert CALENDAR.add_business_days(ny(2026, 12, 31, 0), 1) == ny(2027, 1, 1, 0)


# -- daylight-saving changes ---------------------------------------------------------------
def test_a_weekend_dst_change_does_not_move_the_time_of_day() -> None:
    # US clocks go forward on Sunday 8 March 2026 and back on Sunday 1 November 2026.
    assert CALENDAR.add_business_days(ny(2026, 3, 6, 10), 1) == ny(2026, 3, 9, 10)
    assert between(ny(2026, 3, 6, 10), ny(2026, 3, 9, 10)) == pytest.approx(1)
    assert CALENDAR.add_business_days(ny(2026, 10, 30, 10), 1) == ny(2026, 11, 2, 10)
    # 71 and 73 real hours, each one business day.
    assert ny(2026, 3, 9, 10) - ny(2026, 3, 6, 10) == timedelta(days=3)  # wall clock
    assert (ny(2026, 3, 9, 10).astimezone(UTC) - ny(2026, 3, 6, 10).astimezone(UTC)) == timedelta(
        hours=71
    )


def test_a_23_and_a_25_hour_business_day_each_count_one() -> None:
    # Sunday is a business day here: weekend is Saturday only.
    calendar = BusinessCalendar(NEW_YORK, weekend=frozenset({5}))
    spring, autumn = date(2026, 3, 8), date(2026, 11, 1)
    for day in (spring, autumn):
        midnight = datetime.combine(day, datetime.min.time(), tzinfo=NEW_YORK)
        after = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=NEW_YORK)
        assert calendar.business_days_between(midnight, after) == pytest.approx(1)
        assert calendar.add_business_days(midnight, 1) == after
    # Noon on the short day: 11 real hours have passed of 23.
    spring_noon = ny(2026, 3, 8, 12)
    assert calendar.business_days_between(ny(2026, 3, 8), spring_noon) == pytest.approx(11 / 23)
    assert calendar.add_business_days(ny(2026, 3, 8), 0.5) == datetime(
        2026, 3, 8, 16, 30, tzinfo=UTC
    )  # 11.5 real hours after 05:00 UTC midnight
    # Noon on the long day: 13 of 25.
    assert calendar.business_days_between(ny(2026, 11, 1), ny(2026, 11, 1, 12)) == (
        pytest.approx(13 / 25)
    )


# -- starts on days off, edges, inputs -----------------------------------------------------
def test_a_clock_started_on_a_weekend_or_holiday_runs_from_the_next_business_day() -> None:
    saturday = ny(2026, 3, 14, 15)
    assert CALENDAR.add_business_days(saturday, 1) == ny(2026, 3, 17, 0)  # Monday whole
    assert CALENDAR.add_business_days(saturday, 0.5) == ny(2026, 3, 16, 12)
    assert between(saturday, ny(2026, 3, 16, 18)) == pytest.approx(0.75)
    thanksgiving = ny(2026, 11, 26, 9)
    assert CALENDAR.add_business_days(thanksgiving, 1) == ny(2026, 12, 1, 0)


def test_fractions_and_the_empty_span() -> None:
    monday = ny(2026, 3, 16, 6)
    assert between(monday, ny(2026, 3, 16, 12)) == pytest.approx(0.25)
    assert between(monday, monday) == 0
    assert between(ny(2026, 3, 17), monday) == 0  # end before start
    assert CALENDAR.add_business_days(monday, 0.25) == ny(2026, 3, 16, 12)
    assert CALENDAR.add_business_days(monday, 2.5) == ny(2026, 3, 18, 18)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            CALENDAR.add_business_days(monday, bad)


def test_naive_moments_are_utc() -> None:
    naive = datetime(2026, 3, 16, 14)  # 10:00 in New York (EDT)
    assert CALENDAR.add_business_days(naive, 1) == ny(2026, 3, 17, 10)
    assert between(naive, ny(2026, 3, 16, 16)) == pytest.approx(0.25)


@given(
    start=st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)),
    days=st.fractions(min_value=0, max_value=30, max_denominator=96),
)
def test_adding_then_counting_gives_the_days_back(start: datetime, days: object) -> None:
    end = CALENDAR.add_business_days(start, float(days))  # type: ignore[arg-type]
    assert CALENDAR.business_days_between(start, end) == pytest.approx(float(days), abs=1e-9)  # type: ignore[arg-type]


# -- the settings --------------------------------------------------------------------------
def test_the_settings_build_the_calendar_and_promises() -> None:
    config = TurnaroundSettings(
        time_zone="America/Chicago",
        holidays=[date(2026, 12, 25)],
        promises={"oncology": Promise(routine=6, urgent=2)},
    )
    assert config.calendar.time_zone == ZoneInfo("America/Chicago")
    assert not config.calendar.is_business_day(date(2026, 12, 25))
    assert config.promise_for("oncology", "routine") == 6
    assert config.promise_for("oncology", "stat") == 2
    assert config.promise_for("hematology", None) == 7  # not listed: the default promise
    defaults = TurnaroundSettings()
    assert defaults.promise_for("hematology", "urgent") == 2
    assert all(5 <= p.routine <= 7 and p.urgent < p.routine for p in defaults.promises.values())


@pytest.mark.parametrize(
    "bad",
    [
        {"time_zone": "Mars/Olympus_Mons"},
        {"promises": {"dermatology": {"routine": 5, "urgent": 2}}},
        {"promises": {"oncology": {"routine": 3, "urgent": 5}}},
        {"weekend": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]},
        {"at_risk_fraction": 0},
        {"holidays": ["not a date"]},
    ],
)
def test_bad_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TurnaroundSettings.model_validate(bad)


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.9) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 0.9) == (
        pytest.approx(9.1)
    )
