# -*- test-case-name: tests.test_cron -*-
"""Specification of btu_twisted.cron: DESIGN §7 examples, agreement with a brute-force reference
around every offset change, restart invariance, properties, previews and errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from btu_twisted.cron import CronError, is_wildcard, next_fire, parse, preview
from tests import cron_reference as ref

UTC = timezone.utc
NEW_YORK = "America/New_York"

ZONES = ("America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Dublin", "Australia/Sydney",
         "Australia/Lord_Howe", "America/Sao_Paulo", "Asia/Kolkata", "UTC", "Pacific/Apia", "America/Caracas")
FIRST_YEAR, LAST_YEAR = 2020, 2030
# Notable changes outside 2020-2030: São Paulo's last DST (spring-forward at midnight), Apia
# skipping 2011-12-30 entirely, and Caracas moving its standard time by half an hour each way.
EXTRA_CHANGES = {"America/Sao_Paulo": (2017, 2019), "Pacific/Apia": (2011, 2011),
                 "America/Caracas": (2007, 2016)}

# 5- and 6-field expressions, compared on a minute walk around each change.
MINUTE_CORPUS = (
    # wildcard
    "* * * * *", "*/5 * * * *", "*/30 * * * *", "0 * * * *", "@hourly", "15,45 * * * *",
    "0 */2 * * *", "30 */3 * * *", "*/10 1-3 * * *", "* 2 * * *", "*/15 1 * * *", "0-10/5 * * * *",
    "59 * * * *", "*/7 0-4 * * 0", "0 * * 3,4,9,10,11 sun",
    # fixed-time
    "30 2 * * *", "30 1 * * *", "0 2 * * *", "0 3 * * *", "0 1 * * *", "59 1 * * *", "0 0 * * *",
    "@daily", "@weekly", "15 2 * * sun", "0,30 2 * * *", "0-59/15 1,2 * * *", "45 1,2,3 * * *",
    "30 2 8 3 *", "0 2 * * 1-5", "0 2 1,15 * sun", "30 2 */2 * sun", "0 12 * * *", "@monthly",
    "0 2 * mar,oct,nov *", "10 1 ? * SUN", "30 0 * * *", "15 3 * * 7",
    # with a year field
    "30 2 * * * 2026", "*/20 * * * * 2021-2023", "0 1 * * * 2020,2025,2030", "30 1 * * sun */2",
)
# 7-field expressions, compared on a second walk close to each change.
SECOND_CORPUS = (
    "*/20 * * * * * *", "15 */10 * * * * *", "45 * 2 * * * 2026", "0 0 * * * * *",
    "30 30 2 * * * *", "0,30 59 1 * * * *", "*/10 0-5 1 * * * *", "30 5 1 * * * *", "0 45 1 * * * *",
    "10 50-59 1,2 * * * *",
)
MINUTE_WINDOW = timedelta(hours=3)  # each side of a change
PREVIEW_WINDOW = timedelta(hours=1)
PREVIEW_COUNT = 5
SECOND_WINDOW = timedelta(minutes=20)
# A horizon past a window's end long enough to hold the next fire of every daily expression.
DAY_AND_MORE = timedelta(hours=27)


def _changes(zone: str) -> tuple[datetime, ...]:
    """The zone's offset changes in 2020-2030 (plus notable older ones); New York's dates as
    ordinary instants for zones without any."""
    found = ref.transitions(zone, FIRST_YEAR, LAST_YEAR)
    if zone in EXTRA_CHANGES:
        found = ref.transitions(zone, *EXTRA_CHANGES[zone]) + found
    return found or ref.transitions(NEW_YORK, FIRST_YEAR, LAST_YEAR)


def _chain(expression: str, zone: str, start: datetime, end: datetime) -> list[datetime]:
    """next_fire applied repeatedly from `start`: every fire in (start, end], checked increasing."""
    fires, instant = [], start
    while True:
        try:
            following = next_fire(expression, zone, instant)
        except CronError as error:
            if "never fires after" not in str(error):
                raise
            return fires  # its year field has run out
        if following <= instant:
            raise AssertionError(f"{expression!r} in {zone}: {following} is not after {instant}")
        if following > end:
            return fires
        fires.append(following)
        instant = following


def _utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


class DesignExampleTests(unittest.TestCase):
    """The examples DESIGN §7 names."""

    def test_fixed_time_in_gap_fires_at_gap_end(self):
        """`30 2 * * *` in New York on 2026-03-08 fires at 03:00 EDT, 07:00Z."""
        self.assertEqual(next_fire("30 2 * * *", NEW_YORK, _utc(2026, 3, 8, 0)), _utc(2026, 3, 8, 7))

    def test_fixed_time_in_overlap_fires_once(self):
        """`30 1 * * *` fires at the first 01:30 of 2026-11-01 (05:30Z), and next on 2026-11-02."""
        first = next_fire("30 1 * * *", NEW_YORK, _utc(2026, 11, 1, 0))
        self.assertEqual(first, _utc(2026, 11, 1, 5, 30))
        self.assertEqual(next_fire("30 1 * * *", NEW_YORK, first), _utc(2026, 11, 2, 6, 30))

    def test_wildcard_in_overlap_fires_twice(self):
        """`*/30 * * * *` fires at both 01:00 and both 01:30 of the New York overlap."""
        fires = _chain("*/30 * * * *", NEW_YORK, _utc(2026, 11, 1, 4, 59), _utc(2026, 11, 1, 7))
        self.assertEqual(fires, [_utc(2026, 11, 1, 5), _utc(2026, 11, 1, 5, 30), _utc(2026, 11, 1, 6),
                                 _utc(2026, 11, 1, 6, 30), _utc(2026, 11, 1, 7)])

    def test_even_hours_only(self):
        """`0 */2 * * *` fires only at even wall hours across both 2026 New York changes."""
        tz = ZoneInfo(NEW_YORK)
        for start in (_utc(2026, 3, 7, 12), _utc(2026, 10, 31, 12)):
            fires = _chain("0 */2 * * *", NEW_YORK, start, start + timedelta(days=1))
            self.assertTrue(fires)
            self.assertEqual([f.astimezone(tz).hour % 2 for f in fires], [0] * len(fires))

    def test_wildcard_in_gap_does_not_fire(self):
        """`* 2 * * *` skips the New York gap day entirely: no 02:xx wall time exists."""
        self.assertEqual(next_fire("* 2 * * *", NEW_YORK, _utc(2026, 3, 8, 0)), _utc(2026, 3, 9, 6))

    def test_several_gap_matches_fire_once(self):
        """`0,30 2 * * *` fires once at the end of the New York gap, then on the next day."""
        fires = _chain("0,30 2 * * *", NEW_YORK, _utc(2026, 3, 8, 0), _utc(2026, 3, 9, 7))
        self.assertEqual(fires, [_utc(2026, 3, 8, 7), _utc(2026, 3, 9, 6), _utc(2026, 3, 9, 6, 30)])

    def test_lord_howe_half_hour_gap(self):
        """`0 2 * * *` in Lord Howe fires at 02:30 (+11) when 02:00-02:30 does not exist."""
        self.assertEqual(next_fire("0 2 * * *", "Australia/Lord_Howe", _utc(2026, 10, 3, 12)),
                         _utc(2026, 10, 3, 15, 30))

    def test_apia_skipped_day(self):
        """`0 12 * * *` in Apia fires once at the end of the skipped 2011-12-30."""
        fires = _chain("0 12 * * *", "Pacific/Apia", _utc(2011, 12, 29, 0), _utc(2011, 12, 31, 0))
        self.assertEqual(fires, [_utc(2011, 12, 29, 22), _utc(2011, 12, 30, 10), _utc(2011, 12, 30, 22)])

    def test_dublin_negative_dst(self):
        """`30 1 * * *` in Dublin (negative DST in tzdata) fires once in the 2026 autumn overlap."""
        first = next_fire("30 1 * * *", "Europe/Dublin", _utc(2026, 10, 25, 0))
        self.assertEqual(first, _utc(2026, 10, 25, 0, 30))
        self.assertEqual(next_fire("30 1 * * *", "Europe/Dublin", first), _utc(2026, 10, 26, 1, 30))


class ReferenceAgreementTests(unittest.TestCase):
    """next_fire matches the brute-force reference around every offset change of each zone."""

    def assertAgrees(self, zone: str, corpus: tuple[str, ...], window: timedelta):
        mismatches = []
        crons = [(expression, ref.ReferenceCron(expression)) for expression in corpus]
        step = crons[0][1].step
        for change in _changes(zone):
            start, end = change - window, change + window
            steps = ref.walk(zone, start, end, step)
            for expression, cron in crons:
                expected = cron.fires(steps)
                got = _chain(expression, zone, start, end)
                if got != expected:
                    mismatches.append((expression, change.isoformat(), expected, got))
        self.assertEqual(mismatches[:3], [], f"{len(mismatches)} mismatches in {zone}")

    def test_minute_corpus(self):
        """Every 5- and 6-field corpus expression fires as the reference does, ±3 h of each change."""
        self.assertGreaterEqual(len(MINUTE_CORPUS), 40)
        for zone in ZONES:
            self.assertAgrees(zone, MINUTE_CORPUS, MINUTE_WINDOW)

    def test_second_corpus(self):
        """Every 7-field corpus expression fires as the reference does, ±20 min of each change."""
        for zone in ZONES:
            self.assertAgrees(zone, SECOND_CORPUS, SECOND_WINDOW)


class RestartInvarianceTests(unittest.TestCase):
    """The answer depends only on (expression, zone, after), never on when it is asked."""

    EXPRESSIONS = ("30 2 * * *", "30 1 * * *", "*/30 * * * *", "0 */2 * * *", "0,30 2 * * *", "45 1 * * *")
    ZONES = ("America/New_York", "Australia/Lord_Howe", "Europe/London", "Australia/Sydney")
    YEARS = (2026, 2026)

    def test_every_minute_near_changes(self):
        """From every minute within ±3 h of a 2026 change, next_fire gives the reference's next fire."""
        mismatches = []
        for zone in self.ZONES:
            for change in ref.transitions(zone, *self.YEARS):
                start, end = change - MINUTE_WINDOW, change + MINUTE_WINDOW
                steps = ref.walk(zone, start - ref.MINUTE, end + DAY_AND_MORE, ref.MINUTE)
                for expression in self.EXPRESSIONS:
                    fires = ref.ReferenceCron(expression).fires(steps)
                    for step in steps:
                        if step.instant > end:
                            break
                        expected = next(fire for fire in fires if fire > step.instant)
                        got = next_fire(expression, zone, step.instant)
                        if got != expected:
                            mismatches.append((expression, zone, step.instant.isoformat(), expected, got))
        self.assertEqual(mismatches[:3], [], f"{len(mismatches)} mismatches")

    def test_preview_near_changes(self):
        """From every minute within ±1 h of a 2026 change, a preview lists the reference's next five fires."""
        mismatches = []
        for zone in self.ZONES:
            for change in ref.transitions(zone, *self.YEARS):
                start, end = change - PREVIEW_WINDOW, change + PREVIEW_WINDOW
                steps = ref.walk(zone, start - ref.MINUTE, end + 5 * DAY_AND_MORE, ref.MINUTE)
                for expression in self.EXPRESSIONS:
                    fires = ref.ReferenceCron(expression).fires(steps)
                    for step in steps:
                        if step.instant > end:
                            break
                        expected = [fire for fire in fires if fire > step.instant][:PREVIEW_COUNT]
                        got = [fire.utc for fire in preview(expression, zone, step.instant, PREVIEW_COUNT)]
                        if got != expected:
                            mismatches.append((expression, zone, step.instant.isoformat(), expected, got))
        self.assertEqual(mismatches[:3], [], f"{len(mismatches)} mismatches")

    def test_after_in_any_zone(self):
        """The zone `after` is expressed in does not matter, only the instant it denotes."""
        after = _utc(2026, 11, 1, 5, 40)
        for tz in (UTC, ZoneInfo(NEW_YORK), ZoneInfo("Asia/Tokyo"), timezone(timedelta(hours=-3))):
            self.assertEqual(next_fire("*/30 * * * *", NEW_YORK, after.astimezone(tz)), _utc(2026, 11, 1, 6))

    def test_within_a_second(self):
        """Fractions of a second in `after` are honoured: the fire is strictly after them."""
        just_before = _utc(2026, 1, 1, 2, 59, 59, 999_999)
        self.assertEqual(next_fire("0 3 * * *", "UTC", just_before), _utc(2026, 1, 1, 3))
        self.assertEqual(next_fire("0 3 * * *", "UTC", _utc(2026, 1, 1, 3, 0, 0, 1)), _utc(2026, 1, 2, 3))


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    """Field texts using `*`, steps, values, lists and ranges within [low, high]."""
    value = st.integers(low, high)
    span = st.tuples(value, value).map(sorted)
    return st.one_of(
        st.just("*"),
        st.integers(1, 8).map(lambda step: f"*/{step}"),
        value.map(str),
        st.lists(value, min_size=1, max_size=4, unique=True).map(lambda values: ",".join(map(str, values))),
        span.map(lambda ends: f"{ends[0]}-{ends[1]}"),
        st.tuples(span, st.integers(1, 5)).map(lambda s: f"{s[0][0]}-{s[0][1]}/{s[1]}"),
    )


EXPRESSIONS = st.builds(
    lambda minute, hour, dom, month, dow, year: " ".join(filter(None, (minute, hour, dom, month, dow, year))),
    _field(0, 59), _field(0, 23),
    st.one_of(st.just("*"), _field(1, 28)), st.sampled_from(("*", "*", "3,4,10,11", "1-6")),
    st.one_of(st.just("*"), _field(0, 6), st.sampled_from(("sun", "mon-fri", "7", "?"))),
    st.sampled_from(("", "", "", "*", "2020-2030", "*/2")),
)
# Instants near offset changes (where the rules bite), by zone; half within the hour either side.
NEAR_CHANGES = st.sampled_from(ZONES).flatmap(lambda zone: st.tuples(
    st.just(zone), st.sampled_from(_changes(zone)),
    st.one_of(st.integers(-3600, 3600), st.integers(-6 * 3600, 6 * 3600)), st.integers(0, 999_999)))
PROPERTY_HORIZON = timedelta(hours=8)


class PropertyTests(unittest.TestCase):
    """Generated expressions and instants."""

    @settings(max_examples=250, deadline=None)
    @given(EXPRESSIONS, NEAR_CHANGES)
    def test_agrees_with_reference(self, expression, near):
        """Generated expressions fire as the reference does for 8 h after an instant near a change."""
        zone, change, seconds, micros = near
        after = change + timedelta(seconds=seconds, microseconds=micros)
        cron = ref.ReferenceCron(expression)
        expected = cron.fires(ref.walk(zone, after, after + PROPERTY_HORIZON, cron.step))
        self.assertEqual(_chain(expression, zone, after, after + PROPERTY_HORIZON), expected)

    @settings(max_examples=100, deadline=None)
    @given(EXPRESSIONS, NEAR_CHANGES)
    def test_preview_follows_next_fire(self, expression, near):
        """A preview lists exactly the fires that successive next_fire calls reach, with local times."""
        zone, change, seconds, micros = near
        after = change + timedelta(seconds=seconds, microseconds=micros)
        fires = preview(expression, zone, after, PREVIEW_COUNT)
        chained, instant = [], after
        for _ in fires:
            instant = next_fire(expression, zone, instant)
            chained.append(instant)
        self.assertEqual([fire.utc for fire in fires], chained)
        expected = [fire.utc.astimezone(ZoneInfo(zone)) for fire in fires]
        self.assertEqual([(f.local.tzinfo, f.local.replace(tzinfo=None), f.local.fold) for f in fires],
                         [(e.tzinfo, e.replace(tzinfo=None), e.fold) for e in expected])

    @settings(max_examples=100, deadline=None)
    @given(EXPRESSIONS, st.sampled_from(ZONES), st.datetimes(datetime(1971, 1, 1), datetime(2098, 1, 1)))
    def test_increasing_anywhere(self, expression, zone, moment):
        """From any instant 1971-2098, successive fires are strictly increasing and never raise."""
        instant = moment.replace(tzinfo=UTC)
        for _ in range(3):
            try:
                following = next_fire(expression, zone, instant)
            except CronError as error:  # only an exhausted year field may end the fires
                self.assertIn("never fires after", str(error))
                return
            self.assertLess(instant, following)
            instant = following


class PreviewTests(unittest.TestCase):
    """The operator preview: UTC and local instants, with notes at offset changes."""

    def test_gap_note(self):
        """A fire moved to the end of a gap says so and names the missing wall times."""
        [fire] = preview("30 2 * * *", NEW_YORK, _utc(2026, 3, 8), 1)
        self.assertEqual(fire.utc, _utc(2026, 3, 8, 7))
        self.assertEqual(fire.local, datetime(2026, 3, 8, 3, tzinfo=ZoneInfo(NEW_YORK)))
        self.assertEqual(fire.note, "first instant after the spring-forward gap (02:00-03:00 does not exist)")

    def test_overlap_notes(self):
        """Both fires of a wildcard overlap wall time are marked first and second."""
        fires = preview("30 * * * *", NEW_YORK, _utc(2026, 11, 1, 5), 3)
        self.assertEqual([f.utc for f in fires], [_utc(2026, 11, 1, 5, 30), _utc(2026, 11, 1, 6, 30),
                                                  _utc(2026, 11, 1, 7, 30)])
        self.assertEqual([f.note for f in fires], ["first of two 01:30 (fall-back overlap)",
                                                   "second 01:30 (fall-back overlap)", None])
        self.assertEqual([f.local.fold for f in fires], [0, 1, 0])

    def test_fixed_overlap_note(self):
        """A fixed-time fire in an overlap says it fires once."""
        [fire] = preview("30 1 * * *", NEW_YORK, _utc(2026, 11, 1), 1)
        self.assertEqual(fire.note, "first of two 01:30 (fall-back overlap; fixed-time, fires once)")

    def test_ordinary_fires_have_no_note(self):
        """Fires away from offset changes carry no note, and count bounds the list."""
        fires = preview("0 9 * * 1-5", NEW_YORK, _utc(2026, 6, 1), 5)
        self.assertEqual(len(fires), 5)
        self.assertEqual({f.note for f in fires}, {None})
        self.assertEqual({f.local.hour for f in fires}, {9})

    def test_stops_when_years_run_out(self):
        """A preview past the last year of a year field is shorter than asked."""
        self.assertEqual(len(preview("0 0 1 1 * 2027-2028", "UTC", _utc(2026, 6, 1), 5)), 2)


class ParseTests(unittest.TestCase):
    """Validation and the parsed form."""

    def assertRejects(self, expression: str, message: str):
        with self.assertRaises(CronError) as caught:
            parse(expression)
        self.assertEqual(str(caught.exception), message)

    def test_field_count(self):
        """A wrong number of fields is named with the count."""
        self.assertRejects("1 2 3", "expected 5, 6 or 7 fields, got 3")
        self.assertRejects("* * * * * * * *", "expected 5, 6 or 7 fields, got 8")

    def test_empty(self):
        """An empty or blank expression is rejected as such."""
        self.assertRejects("", "empty expression")
        self.assertRejects("   ", "empty expression")

    def test_out_of_range(self):
        """Values outside a field's range name the field, the value and the range."""
        self.assertRejects("0 25 * * *", "hour field: 25 is out of range 0-23")
        self.assertRejects("60 * * * *", "minute field: 60 is out of range 0-59")
        self.assertRejects("0 0 0 * *", "day-of-month field: 0 is out of range 1-31")
        self.assertRejects("0 0 * 13 *", "month field: 13 is out of range 1-12")
        self.assertRejects("0 0 * * 8", "day-of-week field: 8 is out of range 0-7")
        self.assertRejects("0 0 0 * * * 2100", "year field: 2100 is out of range 1970-2099")
        self.assertRejects("61 0 0 * * * *", "second field: 61 is out of range 0-59")

    def test_bad_names(self):
        """Unknown names, and names in the wrong field, are rejected by name."""
        self.assertRejects("0 0 * * fooday", "day-of-week field: unknown name 'fooday'")
        self.assertRejects("0 0 * jan-foo *", "month field: unknown name 'foo'")
        self.assertRejects("0 0 * mon *", "month field: unknown name 'mon'")
        self.assertRejects("0 x * * *", "hour field: 'x' is not a number")

    def test_bad_steps_and_ranges(self):
        """Zero, negative or missing steps, backwards ranges and empty items are rejected."""
        self.assertRejects("*/0 * * * *", "minute field: step '0' in '*/0' is not a positive number")
        self.assertRejects("*/-1 * * * *", "minute field: step '-1' in '*/-1' is not a positive number")
        self.assertRejects("0 1-5/ * * *", "hour field: step '' in '1-5/' is not a positive number")
        self.assertRejects("0 5-1 * * *", "hour field: range '5-1' runs backwards")
        self.assertRejects("0 1- * * *", "hour field: missing value in '1-'")
        self.assertRejects("1,,2 * * * *", "minute field: empty list item in '1,,2'")
        self.assertRejects("? * * * *", "minute field: '?' is not a number")

    def test_never_fires(self):
        """A day of month no allowed month has is rejected when it must match."""
        self.assertRejects("0 0 30 2 *", "day-of-month field: '30' never falls in month field '2'")
        self.assertRejects("0 0 31 4,6 *", "day-of-month field: '31' never falls in month field '4,6'")
        parse("0 0 31 4,6 mon")  # either day field suffices (Vixie OR): fires on Mondays

    def test_unknown_macro_and_zone(self):
        """Unknown macros and unknown zones are named."""
        self.assertRejects("@reboot", "unknown macro '@reboot' (expected one of @hourly, @daily, @midnight, "
                                      "@weekly, @monthly, @yearly, @annually)")
        for zone in ("Mars/Base", "", "../etc/passwd"):
            with self.assertRaises(CronError) as caught:
                next_fire("* * * * *", zone, _utc(2026, 1, 1))
            self.assertEqual(str(caught.exception), f"unknown time zone {zone!r}")

    def test_naive_after(self):
        """A naive `after` is a programming error, reported as ValueError."""
        with self.assertRaises(ValueError) as caught:
            next_fire("* * * * *", "UTC", datetime(2026, 1, 1))
        self.assertNotIsInstance(caught.exception, CronError)

    def test_exhausted_years(self):
        """An expression whose year field has run out raises CronError saying it never fires."""
        with self.assertRaises(CronError) as caught:
            next_fire("0 0 1 1 * 2020", "UTC", _utc(2020, 6, 1))
        self.assertEqual(str(caught.exception),
                         "'0 0 1 1 * 2020' never fires after 2020-06-01T00:00:00+00:00")
        with self.assertRaises(CronError):
            next_fire("0 0 29 2 * 2025-2027", "UTC", _utc(2020, 6, 1))

    def test_values(self):
        """Names, ranges, steps, 7 as Sunday and `?` expand to the right values."""
        cron = parse("5/15 1-10/3 ? JAN,mar-May 5-7")
        self.assertEqual(cron.minutes, (5, 20, 35, 50))
        self.assertEqual(cron.hours, (1, 4, 7, 10))
        self.assertEqual(cron.months, frozenset({1, 3, 4, 5}))
        self.assertEqual(cron.days_of_week, frozenset({5, 6, 0}))
        self.assertTrue(cron.days_and)
        self.assertEqual(parse("0 0 * * 7-7").days_of_week, frozenset({0}))
        self.assertEqual(parse("0 0 * * */2").days_of_week, frozenset({0, 2, 4, 6}))
        self.assertFalse(parse("0 0 1 * 1").days_and)

    def test_layouts(self):
        """6 fields end with a year; 7 fields start with seconds and end with a year."""
        self.assertEqual(parse("0 12 * * * 2030").years, (2030,))
        seven = parse("30 0 12 * * * 2030-2031")
        self.assertEqual((seven.seconds, seven.minutes, seven.hours, seven.years),
                         ((30,), (0,), (12,), (2030, 2031)))
        self.assertIsNone(parse("0 0 * * *").years)
        self.assertEqual(parse("0 0 * * *").seconds, (0,))

    def test_wildcard(self):
        """Wildcard means the minute or hour field starts with `*`, after macro expansion."""
        for expression in ("* 3 * * *", "0 */2 * * *", "@hourly", "0 * * * *", "0 * 3 * * * *"):
            self.assertTrue(is_wildcard(expression), expression)
        for expression in ("0 3 * * *", "@daily", "@weekly", "@monthly", "@yearly", "0,30 1-3 * * *",
                           "* 0 3 * * * *"):
            self.assertFalse(is_wildcard(expression), expression)

    def test_cached(self):
        """Parsing the same text twice returns the same object."""
        self.assertIs(parse("*/5 * * * *"), parse("*/5 * * * *"))
