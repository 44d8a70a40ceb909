"""A business-day calendar: weekends and holidays excluded, in one local time zone.

Business days are counted as elapsed time, in fractions: each business day is the whole
local calendar day (midnight to midnight, 23 or 25 hours on a daylight-saving change) and
counts 1; a weekend day or a holiday counts 0. A case whose records became complete on a
Friday at 16:00 and whose opinion went out on the Tuesday at 10:00 took
8/24 + 1 + 10/24 = 1.75 business days. Fractions keep the clock honest at the edges (a case
that arrives late on a Friday does not lose a whole day) and make the due moment of a
promise of n days exactly n business days later, at the same local time of day.

Moments may be naive (taken as UTC, as the database holds them) or aware.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from fractions import Fraction
from functools import cached_property
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
"""Day names, in the order of `date.weekday()` (Monday 0)."""

_ONE_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class BusinessCalendar:
    """Which local days are business days, and how many of them lie between two moments.

    `weekend` holds `date.weekday()` numbers (Saturday 5, Sunday 6); it may not hold all
    seven days. `holidays` are local dates.
    """

    time_zone: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    holidays: frozenset[date] = frozenset()
    weekend: frozenset[int] = frozenset({5, 6})

    def __post_init__(self) -> None:
        if not self.weekend < frozenset(range(7)):
            raise ValueError("A week needs at least one business day (weekend days are 0-6).")

    @classmethod
    def of(
        cls, time_zone: str, holidays: Iterable[date] = (), weekend: Iterable[str] = ()
    ) -> BusinessCalendar:
        """A calendar from configuration: a zoneinfo key, dates, day names (default the
        Saturday and Sunday)."""
        days = frozenset(WEEKDAYS.index(name.lower()) for name in weekend) or frozenset({5, 6})
        return cls(ZoneInfo(time_zone), frozenset(holidays), days)

    def is_business_day(self, day: date) -> bool:
        return day.weekday() not in self.weekend and day not in self.holidays

    def business_days_between(self, start: datetime, end: datetime) -> float:
        """The business days elapsed from `start` to `end` (0 when `end` is not later)."""
        return float(self._between(_utc(start), _utc(end)))

    def add_business_days(self, start: datetime, days: float) -> datetime:
        """The earliest moment `days` business days after `start`, in the calendar's zone.

        From a weekend day or a holiday the clock starts at the next business day's
        midnight; a whole number of days from a business-day moment lands on the same share
        of the day, the same local time but on a daylight-saving day. Raises ValueError for
        a negative or non-finite `days`.
        """
        if not days >= 0 or days == float("inf"):
            raise ValueError(f"Cannot add {days} business days.")
        remaining = Fraction(days)
        cursor = _utc(start)
        if remaining == 0:
            return cursor.astimezone(self.time_zone)
        day = cursor.astimezone(self.time_zone).date()
        if self.is_business_day(day):  # the rest of the first day
            low, high = self._bounds(day)
            length = _micros(high - low)
            available = Fraction(_micros(high - cursor), length)
            if remaining <= available:
                return self._at(cursor, remaining, length)
            remaining -= available
        whole = math.ceil(remaining) - 1  # business days passed whole, each counting 1
        while True:
            day += _ONE_DAY
            if self.is_business_day(day):
                if whole == 0:  # the day it ends in: the rest, in (0, 1]
                    low, high = self._bounds(day)
                    return self._at(low, remaining - math.ceil(remaining) + 1, _micros(high - low))
                whole -= 1

    # -- internals -----------------------------------------------------------------------
    def _between(self, start: datetime, end: datetime) -> Fraction:
        if end <= start:
            return Fraction(0)
        first = start.astimezone(self.time_zone).date()
        last = end.astimezone(self.time_zone).date()
        if first == last:
            return self._part_of(first, start, end)
        total = self._part_of(first, start, end) + self._part_of(last, start, end)
        return total + self._whole_days(first + _ONE_DAY, last)

    def _part_of(self, day: date, start: datetime, end: datetime) -> Fraction:
        """The share of local `day` that lies in [start, end), if it is a business day."""
        if not self.is_business_day(day):
            return Fraction(0)
        low, high = self._bounds(day)
        overlap = min(end, high) - max(start, low)
        if overlap <= timedelta(0):
            return Fraction(0)
        return Fraction(_micros(overlap), _micros(high - low))

    def _whole_days(self, first: date, stop: date) -> int:
        """The business days in [first, stop): whole weeks at once, then the rest."""
        if stop <= first:
            return 0
        span = (stop - first).days
        weeks, rest = divmod(span, 7)
        count = weeks * (7 - len(self.weekend))
        tail = first + timedelta(days=weeks * 7)
        count += sum((tail + timedelta(days=d)).weekday() not in self.weekend for d in range(rest))
        on_workdays = self._sorted_holidays
        lo = bisect.bisect_left(on_workdays, first)
        hi = bisect.bisect_left(on_workdays, stop)
        return count - (hi - lo)

    def _bounds(self, day: date) -> tuple[datetime, datetime]:
        """Local `day`'s midnight and the next, as UTC moments."""
        bounds = self._bounds_of.get(day)
        if bounds is None:
            low = datetime.combine(day, time(0), tzinfo=self.time_zone).astimezone(UTC)
            high = datetime.combine(day + _ONE_DAY, time(0), tzinfo=self.time_zone)
            bounds = self._bounds_of[day] = (low, high.astimezone(UTC))
        return bounds

    def _at(self, moment: datetime, days: Fraction, length: int) -> datetime:
        """`days` of a day `length` microseconds long after `moment`, in the local zone."""
        return (moment + timedelta(microseconds=round(days * length))).astimezone(self.time_zone)

    @cached_property
    def _bounds_of(self) -> dict[date, tuple[datetime, datetime]]:
        """Each day's bounds, once computed (a scrape asks for the same days many times)."""
        return {}

    @cached_property
    def _sorted_holidays(self) -> list[date]:
        """The holidays that fall on weekdays, sorted (the others change no count)."""
        return sorted(day for day in self.holidays if day.weekday() not in self.weekend)


def _utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime (a naive one is UTC already)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _micros(span: timedelta) -> int:
    return span // _MICROSECOND
