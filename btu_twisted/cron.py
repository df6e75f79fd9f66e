# -*- test-case-name: tests.test_cron -*-
"""Fire instants of cron expressions in an IANA time zone, exact across every offset change.

Implements DESIGN §7. Expressions match local wall-clock time. A *wildcard* schedule (minute or
hour field starting with ``*``) fires at every real instant whose wall time matches: twice in a
fall-back overlap, never in a spring-forward gap. A *fixed-time* schedule fires at the first
occurrence of a matching wall time only, and once, at the end of a gap, for the matching wall
times the gap swallowed.

The parser is our own rather than croniter's: it is small, its errors name the field and value,
it follows the Rust daemon's layouts (6 fields = 5 + year, 7 fields = seconds first), and it reads
an equal range such as `5-5` as Vixie cron does (the value 5; croniter 7 reads a whole cycle).
"""

from __future__ import annotations

import functools
import heapq
import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import MAXYEAR, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# Distinct expressions kept parsed; many schedules share a few expressions.
PARSE_CACHE_SIZE = 4096
# Next fires kept by (expression, zone, whole second after): a refresh plans every schedule against
# the same few seconds, and many schedules share an expression and a zone.
NEXT_FIRE_CACHE_SIZE = 4096

_ONE_SECOND = timedelta(seconds=1)
# Fires fall on whole seconds, so "strictly after this" means "at or after the next whole second".
_JUST_BEFORE = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
# Weekdays and leap days repeat every 400 Gregorian years (146 097 days, exactly 20 871 weeks), so
# a day pattern without a match in that span never matches.
_CALENDAR_CYCLE_DAYS = 146_097
# Last day scanned: leaves room for "first day of next month" arithmetic below date.max.
_LAST_DAY = date(MAXYEAR - 1, 12, 31)
_MIDNIGHT = (0, 0, 0)
# Days in each month, February counted in a leap year: which day-of-month values can ever occur.
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
# Fires at the same instant are ordered so a gap's note wins over a plain fire's (None).
_GAP, _PLAIN = 0, 1
# A fire as (naive UTC instant, rank, note): tuples order by instant in the heap below.
_Firing = tuple[datetime, int, str | None]

MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


class CronError(ValueError):
    """A cron expression or time zone is unusable; the message names the field and the value."""


@dataclass(frozen=True)
class _Field:
    """One field of the grammar: its name in errors, its bounds and the names it accepts."""

    name: str
    low: int
    high: int
    star_high: int  # where `*` and `N/step` stop: 6 for day-of-week, where 7 is a second Sunday
    names: Mapping[str, int] = field(default_factory=dict)
    any_mark: bool = False  # accepts `?` as `*` (the day fields)


_SECOND = _Field("second", 0, 59, 59)
_MINUTE = _Field("minute", 0, 59, 59)
_HOUR = _Field("hour", 0, 23, 23)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31, 31, any_mark=True)
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH = _Field("month", 1, 12, 12, names={name: number for number, name in enumerate(_MONTH_NAMES, start=1)})
_DAY_OF_WEEK = _Field("day-of-week", 0, 7, 6, any_mark=True,
                      names={name: number for number, name in enumerate(_DAY_NAMES)})
_YEAR = _Field("year", 1970, 2099, 2099)

_FIELDS = (_SECOND, _MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK, _YEAR)


@dataclass(frozen=True, slots=True)
class CronExpression:
    """A parsed expression: the values each field allows (sorted) and how the day fields combine."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday
    years: tuple[int, ...] | None  # None: every year
    days_and: bool  # Vixie rule: a day field starting with `*` makes both day fields required
    wildcard: bool

    def matches_day(self, day: date) -> bool:
        """True when `day` satisfies the day-of-month and day-of-week fields (month and year aside)."""
        by_month = day.day in self.days_of_month
        by_week = (day.weekday() + 1) % 7 in self.days_of_week
        return by_month and by_week if self.days_and else by_month or by_week


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire for an operator preview; `note` explains a fire shaped by an offset change."""

    utc: datetime
    local: datetime
    note: str | None


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse(expression: str) -> CronExpression:
    """Parse and validate `expression` (cached), raising CronError naming the bad field and value."""
    text = expression.strip()
    if not text:
        raise CronError("empty expression")
    if text.startswith("@"):
        try:
            text = MACROS[text.lower()]
        except KeyError:
            raise CronError(f"unknown macro {text!r} (expected one of {', '.join(MACROS)})") from None
    texts = _seven_fields(text.split())
    # Left to right, so the first bad field is the one reported.
    seconds, minutes, hours, days_of_month, months, days_of_week, years = (
        _parse_field(spec, field_text) for spec, field_text in zip(_FIELDS, texts))
    _, minute, hour, dom, month, dow, year = texts
    days_and = dom.startswith(("*", "?")) or dow.startswith(("*", "?"))
    if days_and and not any(day <= _MONTH_DAYS[m] for m in months for day in days_of_month):
        raise CronError(f"day-of-month field: {dom!r} never falls in month field {month!r}")
    return CronExpression(
        text=expression,
        seconds=tuple(sorted(seconds)),
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days_of_month=days_of_month,
        months=months,
        days_of_week=frozenset(day % 7 for day in days_of_week),
        years=None if year == "*" else tuple(sorted(years)),
        days_and=days_and,
        wildcard=minute.startswith("*") or hour.startswith("*"),
    )


def is_wildcard(expression: str) -> bool:
    """True when `expression` fires at every matching real instant (minute or hour field starts with `*`)."""
    return parse(expression).wildcard


def next_fire(expression: str, zone: str, after: datetime) -> datetime:
    """The first fire instant strictly after the aware datetime `after`, in UTC.

    Raises CronError for a bad expression or zone, or when the expression never fires again
    (its year field is exhausted); ValueError when `after` is naive.
    """
    # Fires fall on whole seconds, so the first one strictly after `after` is the first one
    # strictly after its whole second: one cache entry serves every instant of that second.
    found = _next_fire_after_second(expression, zone, _naive_utc(after).replace(microsecond=0))
    if found is None:
        raise CronError(f"{expression!r} never fires after {after.isoformat()}")
    return found


@functools.lru_cache(maxsize=NEXT_FIRE_CACHE_SIZE)
def _next_fire_after_second(expression: str, zone: str, after: datetime) -> datetime | None:
    """The first fire strictly after the naive UTC whole second `after` (aware, UTC), None if none."""
    for instant, _rank, _note in _fires(parse(expression), _zone(zone), after):
        return instant.replace(tzinfo=timezone.utc)
    return None


def preview(expression: str, zone: str, after: datetime, count: int) -> list[Fire]:
    """The next `count` fires strictly after `after`, fewer if the expression stops firing."""
    tz = _zone(zone)
    fires = itertools.islice(_fires(parse(expression), tz, _naive_utc(after)), count)
    utc = timezone.utc
    return [Fire(instant.replace(tzinfo=utc), instant.replace(tzinfo=utc).astimezone(tz), note)
            for instant, _rank, note in fires]


# --- parsing ------------------------------------------------------------------------------------


def _seven_fields(texts: list[str]) -> tuple[str, ...]:
    """Field texts in 7-field order (second ... year), with the defaults 5 and 6 fields leave out."""
    if len(texts) == 5:
        return ("0", *texts, "*")
    if len(texts) == 6:
        return ("0", *texts)
    if len(texts) == 7:
        return tuple(texts)
    raise CronError(f"expected 5, 6 or 7 fields, got {len(texts)}")


def _parse_field(spec: _Field, text: str) -> frozenset[int]:
    """The values a comma-separated field allows."""
    items = text.split(",")
    if "" in items:
        raise CronError(f"{spec.name} field: empty list item in {text!r}")
    return frozenset(itertools.chain.from_iterable(_parse_item(spec, item) for item in items))


def _parse_item(spec: _Field, item: str) -> range:
    """The values of one list item: `*`, `N`, `N-M`, each optionally followed by `/step`."""
    base, slash, step_text = item.partition("/")
    if base == "*" or (base == "?" and spec.any_mark):
        low, high = spec.low, spec.star_high
    elif "-" in base:
        first, _, last = base.partition("-")
        low, high = _value(spec, first, item), _value(spec, last, item)
        if low > high:
            raise CronError(f"{spec.name} field: range {base!r} runs backwards")
    else:
        low = _value(spec, base, item)
        high = max(low, spec.star_high) if slash else low
    if not slash:
        return range(low, high + 1)
    if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
        raise CronError(f"{spec.name} field: step {step_text!r} in {item!r} is not a positive number")
    return range(low, high + 1, int(step_text))


def _value(spec: _Field, token: str, item: str) -> int:
    """One number or name of a field, range-checked."""
    if token.lower() in spec.names:
        return spec.names[token.lower()]
    if not token:
        raise CronError(f"{spec.name} field: missing value in {item!r}")
    if not (token.isascii() and token.isdigit()):
        if spec.names and token.isalpha():
            raise CronError(f"{spec.name} field: unknown name {token!r}")
        raise CronError(f"{spec.name} field: {token!r} is not a number")
    value = int(token)
    if not spec.low <= value <= spec.high:
        raise CronError(f"{spec.name} field: {value} is out of range {spec.low}-{spec.high}")
    return value


@functools.lru_cache(maxsize=None)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {name!r}") from None


def _naive_utc(after: datetime) -> datetime:
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"after must be timezone-aware, got naive {after.isoformat()}")
    return after.astimezone(timezone.utc).replace(tzinfo=None)


# --- wall times ---------------------------------------------------------------------------------


def _walls(cron: CronExpression, start: datetime) -> Iterator[datetime]:
    """Matching naive wall times from `start` (to the second) on, ascending, for one calendar cycle."""
    first_day = start.date()
    last_day = date.fromordinal(min(first_day.toordinal() + _CALENDAR_CYCLE_DAYS, _LAST_DAY.toordinal()))
    day = _next_day(cron, first_day, last_day)
    while day is not None:
        bound = (start.hour, start.minute, start.second) if day == first_day else _MIDNIGHT
        for hour, minute, second in _times(cron, bound):
            yield datetime(day.year, day.month, day.day, hour, minute, second)
        day = _next_day(cron, day + _ONE_DAY, last_day)


def _next_day(cron: CronExpression, day: date, last_day: date) -> date | None:
    """The first matching day from `day` to `last_day`, skipping whole months and years that cannot match."""
    while day <= last_day:
        if cron.years is not None and day.year not in cron.years:
            later = bisect_right(cron.years, day.year)
            if later == len(cron.years):
                return None
            day = date(cron.years[later], 1, 1)
        elif day.month not in cron.months:
            day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        elif cron.matches_day(day):
            return day
        else:
            day += _ONE_DAY
    return None


def _times(cron: CronExpression, bound: tuple[int, int, int]) -> Iterator[tuple[int, int, int]]:
    """Matching (hour, minute, second) of a day at or after `bound`, ascending."""
    bound_hour, bound_minute, bound_second = bound
    for hour in cron.hours[bisect_left(cron.hours, bound_hour):]:
        tight_hour = hour == bound_hour
        minutes = cron.minutes[bisect_left(cron.minutes, bound_minute):] if tight_hour else cron.minutes
        for minute in minutes:
            tight = tight_hour and minute == bound_minute
            for second in cron.seconds[bisect_left(cron.seconds, bound_second):] if tight else cron.seconds:
                yield hour, minute, second


# --- from wall times to instants ----------------------------------------------------------------


def _fires(cron: CronExpression, tz: tzinfo, after: datetime) -> Iterator[_Firing]:
    """Fires strictly after the naive UTC instant `after`, ascending and distinct."""
    local = tz.fromutc(after.replace(tzinfo=tz))
    before, later = local.utcoffset(), local.replace(fold=1).utcoffset()
    wall = local.replace(tzinfo=None)
    if local.fold or before == later:
        yield from _scan(cron, tz, wall, after)
        return
    # `after` is in the first pass through a fall-back overlap, whose wall times the second pass
    # shows again: finish the first pass, then scan again from the wall time the clock steps back to.
    whole = after.replace(microsecond=0)
    change = _transition(tz, whole, whole + (before - later), before)
    for fire in _scan(cron, tz, wall, after):
        if fire[0] >= change:
            break
        yield fire
    yield from _scan(cron, tz, change + later, change - _JUST_BEFORE)


def _scan(cron: CronExpression, tz: tzinfo, start: datetime, after: datetime) -> Iterator[_Firing]:
    """Fires strictly after `after` from the wall times at and after `start`, in order of instant.

    The earliest instant each wall time maps to never decreases, but the second occurrence of an
    overlap wall time comes after later wall times' first occurrences, so fires wait in a heap
    until no later wall time can produce an earlier one.
    """
    pending: list[_Firing] = []
    last = after
    for wall in _walls(cron, start):
        floor, fires = _instants(cron, tz, wall)
        for fire in fires:
            if fire[0] > last:
                heapq.heappush(pending, fire)
        while pending and pending[0][0] <= floor:
            fire = heapq.heappop(pending)
            last = fire[0]
            yield fire
    while pending:
        yield heapq.heappop(pending)


def _instants(cron: CronExpression, tz: tzinfo, wall: datetime) -> tuple[datetime, tuple[_Firing, ...]]:
    """The earliest instant `wall` maps to (the gap's end if it does not exist), and the fires it causes."""
    before = wall.replace(tzinfo=tz).utcoffset()  # fold=0: the offset in force before a change
    later = wall.replace(tzinfo=tz, fold=1).utcoffset()
    if before == later:
        instant = wall - before
        return instant, ((instant, _PLAIN, None),)
    if before > later:  # fall-back overlap: the wall time happens twice
        first, second = wall - before, wall - later
        clock = _clock(wall)
        if cron.wildcard:
            return first, ((first, _PLAIN, f"first of two {clock} (fall-back overlap)"),
                           (second, _PLAIN, f"second {clock} (fall-back overlap)"))
        return first, ((first, _PLAIN, f"first of two {clock} (fall-back overlap; fixed-time, fires once)"),)
    end = _transition(tz, wall - later, wall - before, before)  # spring-forward gap: never happens
    if cron.wildcard:
        return end, ()
    note = f"first instant after the spring-forward gap ({_span(end + before, end + later)} does not exist)"
    return end, ((end, _GAP, note),)


def _transition(tz: tzinfo, earlier: datetime, later: datetime, offset: timedelta) -> datetime:
    """The instant in (`earlier`, `later`] where `offset` stops applying, bisected to the second."""
    steps = (later - earlier) // _ONE_SECOND
    while steps > 1:
        middle = earlier + steps // 2 * _ONE_SECOND
        if tz.fromutc(middle.replace(tzinfo=tz)).utcoffset() == offset:
            earlier = middle
        else:
            later = middle
        steps = (later - earlier) // _ONE_SECOND
    return later


def _clock(wall: datetime) -> str:
    return f"{wall:%H:%M:%S}" if wall.second else f"{wall:%H:%M}"


def _span(start: datetime, end: datetime) -> str:
    if start.date() == end.date():
        return f"{_clock(start)}-{_clock(end)}"
    return f"{start:%Y-%m-%d} {_clock(start)}-{end:%Y-%m-%d} {_clock(end)}"
