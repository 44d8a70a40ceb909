"""The `turnaround` section of hub.yaml: the business-day calendar and each program's promise."""

from __future__ import annotations

from datetime import date
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator, model_validator

from hub import codes
from hub.workflow.business_days import BusinessCalendar

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKEND: tuple[Weekday, ...] = ("saturday", "sunday")
URGENT_PRIORITIES = frozenset({"urgent", "asap", "stat"})
"""Task.priority codes that make a case urgent (as routing reads them)."""


class Promise(BaseModel):
    """Business days from records-complete to the opinion delivered."""

    model_config = {"extra": "forbid", "frozen": True}

    routine: float = Field(gt=0, le=60)
    urgent: float = Field(gt=0, le=60)

    @model_validator(mode="after")
    def _urgent_is_shorter(self) -> Promise:
        if self.urgent > self.routine:
            raise ValueError("an urgent case's promise cannot be longer than a routine one's")
        return self

    def days_for(self, priority: str | None) -> float:
        """The promise for a Task.priority code (urgent, asap and stat are urgent)."""
        return self.urgent if priority in URGENT_PRIORITIES else self.routine


# The second-opinion service promises 5 to 7 business days, less for urgent cases. Blood and
# marrow programs (where relapsed leukaemia goes) promise the shorter end.
DEFAULT_PROMISES: dict[str, Promise] = {
    "oncology": Promise(routine=7, urgent=3),
    "hematology": Promise(routine=5, urgent=2),
    "bmt-cellular-therapy": Promise(routine=5, urgent=2),
    "neuro-oncology": Promise(routine=7, urgent=3),
    "hemophilia-thrombosis": Promise(routine=5, urgent=2),
}


class TurnaroundSettings(BaseModel):
    """How turnaround is measured: the local calendar, the promises, when a case is at risk."""

    model_config = {"extra": "forbid"}

    time_zone: str = "UTC"
    """The programs' local time zone (an IANA zoneinfo key, e.g. America/New_York): where a
    business day begins and ends."""
    weekend: list[Weekday] = Field(default_factory=lambda: list(WEEKEND))
    holidays: list[date] = Field(default_factory=list)
    """Local dates on which the clock does not run."""
    promises: dict[str, Promise] = Field(default_factory=lambda: dict(DEFAULT_PROMISES))
    """Program → business days promised, routine and urgent. Replaces the built-in table:
    a program left out takes `default_promise`."""
    default_promise: Promise = Promise(routine=7, urgent=3)
    at_risk_fraction: float = Field(default=0.8, gt=0, le=1)
    """An open case is at risk once this share of its promise has elapsed."""
    figures_window_days: int = Field(default=90, gt=0, le=3660)
    """Median and 90th percentile are taken over the cases delivered in this many days."""

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, key: str) -> str:
        try:
            ZoneInfo(key)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"'{key}' is not a known time zone (e.g. America/Chicago)") from exc
        return key

    @field_validator("weekend")
    @classmethod
    def _a_week_has_workdays(cls, days: list[Weekday]) -> list[Weekday]:
        if len(set(days)) >= 7:
            raise ValueError("a week needs at least one business day")
        return days

    @field_validator("promises")
    @classmethod
    def _known_programs(cls, promises: dict[str, Promise]) -> dict[str, Promise]:
        unknown = sorted(set(promises) - set(codes.PROGRAMS))
        if unknown:
            raise ValueError(
                f"unknown program(s) {', '.join(unknown)} (known: {', '.join(codes.PROGRAMS)})"
            )
        return promises

    @cached_property
    def calendar(self) -> BusinessCalendar:
        return BusinessCalendar.of(self.time_zone, self.holidays, self.weekend)

    def promise_for(self, program: str, priority: str | None) -> float:
        """Business days promised to a case of `program` with Task.priority `priority`."""
        return self.promises.get(program, self.default_promise).days_for(priority)
