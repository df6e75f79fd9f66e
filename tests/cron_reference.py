"""Brute-force reference for the cron semantics of DESIGN §7, independent of btu_twisted.cron.

It walks the real time line one step at a time (a minute, or a second for 7-field expressions),
turns each instant into local wall time with zoneinfo and applies the rules literally:

- wildcard: an instant fires when its wall time matches;
- fixed-time: an instant fires when its wall time matches and no earlier instant showed that wall
  time, or when the clock has just jumped over a matching wall time (a gap).

Field values come from croniter's parser, so the reference shares no parsing code with cron.py;
only the layouts and the Vixie day rule, which croniter does not follow, are spelled out here. One
croniter reading differs from Vixie cron's: an equal range such as `5-5` (or `5-5/2`) is a whole
wrapped-around cycle to croniter, the single value 5 to Vixie; such items are rewritten first.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from croniter import croniter

MINUTE = timedelta(minutes=1)
SECOND = timedelta(seconds=1)
# History walked before a window so "was this wall time shown before?" has an answer; longer than
# the longest overlap of the zones tested (one hour).
LOOKBACK = timedelta(minutes=70)
# Probe spacing when searching for offset changes; far shorter than the time between two changes.
PROBE = timedelta(hours=1)

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# An equal range, with or without a step: "5-5", "mon-mon/2".
EQUAL_RANGE = re.compile(r"^(\w+)-\1(/\d+)?$", re.IGNORECASE)


class _Any:
    """A `*` field: it allows every value."""

    def __contains__(self, value: int) -> bool:
        return True


_ANY = _Any()


@dataclass(frozen=True)
class Step:
    """One instant of a walk: its wall time, whether that wall time was shown before, and the
    wall times the clock jumped over just before it."""

    instant: datetime
    wall: datetime
    repeat: bool
    skipped: tuple[datetime, ...]


class ReferenceCron:
    """A cron expression matched against wall times by brute force."""

    def __init__(self, expression: str):
        fields = MACROS.get(expression.lower(), expression).split()
        if len(fields) == 5:
            second, (minute, hour, dom, month, dow), year = "0", fields, "*"
        elif len(fields) == 6:
            second, (minute, hour, dom, month, dow, year) = "0", fields
        else:
            second, minute, hour, dom, month, dow, year = fields
        # croniter's 7-field layout puts seconds sixth and the year last.
        texts = (minute, hour, dom, month, dow, second, year)
        expanded = croniter(" ".join(_vixie_ranges(text) for text in texts)).expanded
        self._sets = [_ANY if values == ["*"] else frozenset(values) for values in expanded]
        self.days_and = dom.startswith(("*", "?")) or dow.startswith(("*", "?"))
        self.wildcard = minute.startswith("*") or hour.startswith("*")
        self.step = SECOND if len(fields) == 7 else MINUTE

    def matches(self, wall: datetime) -> bool:
        """True when the naive wall time `wall` satisfies every field."""
        minute, hour, dom, month, dow, second, year = self._sets
        if not (wall.second in second and wall.minute in minute and wall.hour in hour and wall.month in month
                and wall.year in year):
            return False
        by_month = wall.day in dom
        by_week = wall.isoweekday() % 7 in dow
        return by_month and by_week if self.days_and else by_month or by_week

    def fires(self, steps: list[Step]) -> list[datetime]:
        """The instants of a walk at which the expression fires."""
        return [step.instant for step in steps if self._fires_at(step)]

    def _fires_at(self, step: Step) -> bool:
        if self.wildcard:
            return self.matches(step.wall)
        if self.matches(step.wall) and not step.repeat:
            return True
        return any(self.matches(wall) for wall in step.skipped)


def walk(zone: str, start: datetime, end: datetime, step: timedelta) -> list[Step]:
    """Every instant on the `step` grid in (start, end], with the history before it taken into account."""
    tz = ZoneInfo(zone)
    instant = _grid_floor(start - LOOKBACK, step)
    seen: set[datetime] = set()
    previous = None
    steps = []
    while instant <= end:
        wall = instant.astimezone(tz).replace(tzinfo=None, fold=0)
        skipped = ()
        if previous is not None and wall - previous > step:
            skipped = tuple(previous + step * k for k in range(1, (wall - previous) // step))
        if instant > start:
            steps.append(Step(instant, wall, wall in seen, skipped))
        seen.add(wall)
        previous = wall
        instant += step
    return steps


def next_fire(expression: str, zone: str, after: datetime, horizon: timedelta) -> datetime | None:
    """The reference's first fire strictly after `after`, or None if none within `horizon`."""
    cron = ReferenceCron(expression)
    fires = cron.fires(walk(zone, after, after + horizon, cron.step))
    return fires[0] if fires else None


@functools.lru_cache(maxsize=None)
def transitions(zone: str, first_year: int, last_year: int) -> tuple[datetime, ...]:
    """The UTC instants in those years where the zone's UTC offset changes, to the second."""
    tz = ZoneInfo(zone)
    instant = datetime(first_year, 1, 1, tzinfo=timezone.utc)
    stop = datetime(last_year + 1, 1, 1, tzinfo=timezone.utc)
    found = []
    while instant < stop:
        probe = instant + PROBE
        if instant.astimezone(tz).utcoffset() != probe.astimezone(tz).utcoffset():
            found.append(_bisect_change(tz, instant, probe))
        instant = probe
    return tuple(found)


def _bisect_change(tz: ZoneInfo, before: datetime, after: datetime) -> datetime:
    offset = before.astimezone(tz).utcoffset()
    while after - before > SECOND:
        middle = before + (after - before) // SECOND // 2 * SECOND
        if middle.astimezone(tz).utcoffset() == offset:
            before = middle
        else:
            after = middle
    return after


def _vixie_ranges(field: str) -> str:
    """The field with equal ranges written as the single value Vixie cron reads them as."""
    return ",".join(EQUAL_RANGE.sub(r"\1", item) for item in field.split(","))


def _grid_floor(instant: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + (instant - epoch) // step * step
