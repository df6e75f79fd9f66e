# -*- test-case-name: tests.test_frequencies -*-
"""The local-time cron string of a BTU Task Schedule whose `run_frequency` is not `Cron Style`.

BTU stores Hourly/Daily/Weekly/Monthly/Yearly schedules as structured fields (`minute`, `hour`,
`day_of_week`, `day_of_month`, `month`) plus a `cron_string` that BTU <= 15.1.0 converted to UTC
with the offset of the day it was saved (so it drifts by an hour across DST) and BTU 15.1.1+ writes
in local time. Deriving the cron from the fields makes rows of both generations fire at the wall
time the user entered, in the schedule's zone (DESIGN §4).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

CRON_STYLE = "Cron Style"
# BTU's Select options (btu_task_schedule.json, v13 to v15), with their cron numbers.
DAYS_OF_WEEK = {"Monday": 1, "Tuesday": 2, "Wednesday": 3, "Thursday": 4, "Friday": 5,
                "Saturday": 6, "Sunday": 0}
MONTHS = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
# The fields each frequency uses, in cron order; BTU leaves the others stale or empty.
FIELDS_USED = {
    "Hourly": ("minute",),
    "Daily": ("minute", "hour"),
    "Weekly": ("minute", "hour", "day_of_week"),
    "Monthly": ("minute", "hour", "day_of_month"),
    "Yearly": ("minute", "hour", "day_of_month", "month"),
}
FREQUENCIES = (*FIELDS_USED, CRON_STYLE)
STRUCTURED_FIELD_NAMES = ("minute", "hour", "day_of_week", "day_of_month", "month")


class FrequencyError(ValueError):
    """The structured fields of a schedule do not make a cron; the message names the field."""


@dataclass(frozen=True, slots=True)
class StructuredFields:
    """The raw structured columns of one schedule row (None where empty or absent)."""

    minute: object = None
    hour: object = None
    day_of_week: object = None
    day_of_month: object = None
    month: object = None


def is_structured(run_frequency: str | None) -> bool:
    """True when the row's cron comes from its structured fields rather than `cron_string`."""
    return bool(run_frequency) and run_frequency != CRON_STYLE


def local_cron(run_frequency: str, fields: StructuredFields) -> str:
    """The 5-field cron, in local wall time, of a non-`Cron Style` row; FrequencyError if unusable."""
    for name in STRUCTURED_FIELD_NAMES:  # a schedule file may hold any TOML value there
        value = getattr(fields, name)
        if value is not None and not isinstance(value, (str, int)):
            raise FrequencyError(f"{name}: expected a number or a name, got {type(value).__name__}")
    return _local_cron(run_frequency, fields)


@functools.lru_cache(maxsize=4096)  # many rows share a frequency and time; next_fire asks often
def _local_cron(run_frequency: str, fields: StructuredFields) -> str:
    used = FIELDS_USED.get(run_frequency)
    if used is None:
        raise FrequencyError(f"run_frequency: {run_frequency!r} is not one of {', '.join(FREQUENCIES)}")
    minute = _number(run_frequency, "minute", fields.minute, 0, 59)
    hour = _number(run_frequency, "hour", fields.hour, 0, 23) if "hour" in used else "*"
    day = _number(run_frequency, "day_of_month", fields.day_of_month, 1, 31) if "day_of_month" in used else "*"
    month = _named(run_frequency, "month", fields.month, MONTHS) if "month" in used else "*"
    weekday = _named(run_frequency, "day_of_week", fields.day_of_week, DAYS_OF_WEEK) if "day_of_week" in used else "*"
    if "month" in used and day > _MONTH_DAYS[month]:
        raise FrequencyError(f"day_of_month: {day} does not exist in {fields.month} (a {run_frequency} "
                             "schedule would never run)")
    return f"{minute} {hour} {day} {month} {weekday}"


_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


def _number(frequency: str, name: str, value, low: int, high: int) -> int:
    # Frappe keeps `hour` in a Data (text) column and the others in Int columns, where 0 is the
    # empty default: day_of_month 0 is "not chosen", minute 0 and hour "0" are real values.
    if value is None or (isinstance(value, str) and not value.strip()):
        raise FrequencyError(f"{name}: empty, but a {frequency} schedule needs it")
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise FrequencyError(f"{name}: {value!r} is not a whole number from {low} to {high}")
    number = int(text)
    if not low <= number <= high:
        if name == "day_of_month" and number == 0:
            raise FrequencyError(f"day_of_month: not chosen, but a {frequency} schedule needs it")
        raise FrequencyError(f"{name}: {number} is out of range {low}-{high}")
    return number


def _named(frequency: str, name: str, value, names: dict[str, int]) -> int:
    if value is None or not str(value).strip():
        raise FrequencyError(f"{name}: empty, but a {frequency} schedule needs it")
    # BTU's own options are capitalised (`Monday`, `JAN`); accept any case of them.
    found = {key.lower(): number for key, number in names.items()}.get(str(value).strip().lower())
    if found is None:
        raise FrequencyError(f"{name}: {value!r} is not one of {', '.join(names)}")
    return found
