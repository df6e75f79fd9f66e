"""Specification of structured frequencies: Hourly/Daily/Weekly/Monthly/Yearly rows fire at the wall
time their fields say, whichever BTU generation wrote their cron_string, checked against the
brute-force reference of tests/cron_reference.py in winter and summer of three zones."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from twisted.trial import unittest

from btu_twisted.frequencies import StructuredFields, local_cron
from btu_twisted.schedules import ScheduleError
from tests import cron_reference as ref
from tests.fakes import schedule

ZONES = ("America/New_York", "Europe/London", "Australia/Sydney")
# Each case: the user's entry in BTU's form, the local cron it means (written out by hand, so the
# check shares nothing with frequencies.py), and how far ahead the reference must look for a fire.
CASES = {
    "Hourly": (dict(minute=15), "15 * * * *", timedelta(hours=2)),
    "Daily": (dict(minute=30, hour="9"), "30 9 * * *", timedelta(days=2)),
    "Weekly": (dict(minute=0, hour="7", day_of_week="Monday"), "0 7 * * 1", timedelta(days=8)),
    "Monthly": (dict(minute=45, hour="23", day_of_month=20), "45 23 20 * *", timedelta(days=8)),
    "Yearly": (dict(minute=5, hour="6", day_of_month=18, month="JAN"), "5 6 18 1 *", timedelta(days=8)),
}
SUMMER_YEARLY = (dict(minute=5, hour="6", day_of_month=18, month="JUL"), "5 6 18 7 *", timedelta(days=8))
# Plan from a few days before the 18th/20th so Monthly and Yearly fire within the horizon.
WINTER = datetime(2027, 1, 14, 12, 0, tzinfo=timezone.utc)
SUMMER = datetime(2027, 7, 14, 12, 0, tzinfo=timezone.utc)
SEASONS = {"winter": WINTER, "summer": SUMMER}
DAY_NUMBERS = {"Sunday": 0, "Monday": 1, "Tuesday": 2, "Wednesday": 3, "Thursday": 4, "Friday": 5,
               "Saturday": 6}


def btu_15_1_0_cron_string(fields: dict, zone: str, saved_on: datetime) -> str:
    """What BTU <= 15.1.0's schedule_to_cron_string stored: hour and minute converted to UTC with the
    offset of the day of the save, day_of_month dropped, month and weekday as entered."""
    local = saved_on.astimezone(ZoneInfo(zone)).replace(hour=int(fields.get("hour") or 0),
                                                        minute=fields["minute"], second=0)
    utc = local.astimezone(timezone.utc)
    return " ".join((str(utc.minute), str(utc.hour) if fields.get("hour") else "*", "*",
                     fields.get("month") or "*",
                     str(DAY_NUMBERS[fields["day_of_week"]]) if fields.get("day_of_week") else "*"))


def btu_15_1_1_cron_string(fields: dict) -> str:
    """What BTU 15.1.1+ stores: the same fields in local time."""
    return " ".join((str(fields["minute"]), fields.get("hour") or "*", str(fields.get("day_of_month") or "*"),
                     fields.get("month") or "*",
                     str(DAY_NUMBERS[fields["day_of_week"]]) if fields.get("day_of_week") else "*"))


def row(frequency: str, zone: str, cron_string: str, **overrides):
    """A schedule row of `frequency` holding CASES' fields (with `overrides`) and `cron_string`."""
    fields = {**CASES[frequency][0], **overrides}
    return schedule(cron=cron_string, zone=zone, run_frequency=frequency, structured=StructuredFields(**fields))


class GenerationsAgainstReferenceTests(unittest.SynchronousTestCase):
    """Rows as each BTU version stored them fire where the brute-force reference says the local cron fires."""

    def check(self, generation: str):
        checked = 0
        for zone in ZONES:
            for season, after in SEASONS.items():
                for saved_in, saved_on in SEASONS.items():
                    for frequency, case in CASES.items():
                        if frequency == "Yearly" and season == "summer":
                            case = SUMMER_YEARLY  # a Yearly row fires once: in the season's month
                        fields, expected_cron, horizon = case
                        stored = (btu_15_1_0_cron_string(fields, zone, saved_on) if generation == "15.1.0"
                                  else btu_15_1_1_cron_string(fields))
                        fire = row(frequency, zone, stored, **fields).next_fire(after.timestamp())
                        expected = ref.next_fire(expected_cron, zone, after, horizon)
                        where = f"{generation} {frequency} in {zone}, {season}, saved in {saved_in} as {stored!r}"
                        self.assertIsNotNone(expected, where)
                        self.assertEqual(datetime.fromtimestamp(fire, timezone.utc), expected, where)
                        local = expected.astimezone(ZoneInfo(zone))
                        self.assertEqual((local.hour if "hour" in fields else None, local.minute),
                                         (int(fields["hour"]) if "hour" in fields else None, fields["minute"]),
                                         where)
                        checked += 1
        self.assertEqual(checked, len(ZONES) * len(SEASONS) ** 2 * len(CASES))

    def test_btu_15_1_0_rows_utc_converted(self):
        """BTU <= 15.1.0 rows (cron_string in UTC at the save day's offset) fire at the entered wall time."""
        self.check("15.1.0")

    def test_btu_15_1_1_rows_local(self):
        """BTU 15.1.1+ rows (cron_string in local time) fire at the entered wall time."""
        self.check("15.1.1")

    def test_stored_utc_string_would_be_an_hour_off(self):
        """The case the derivation exists for: a winter-saved UTC string read as local is wrong in summer."""
        fields = CASES["Daily"][0]
        stored = btu_15_1_0_cron_string(fields, "America/New_York", WINTER)
        self.assertEqual(stored, "30 14 * * *")
        fire = row("Daily", "America/New_York", stored).next_fire(SUMMER.timestamp())
        local = datetime.fromtimestamp(fire, ZoneInfo("America/New_York"))
        self.assertEqual((local.hour, local.minute), (9, 30))


class DaylightSavingChangeTests(unittest.SynchronousTestCase):
    """Across the change days themselves, rows follow the cron rules of DESIGN §7 as the reference does."""

    CHANGES = {  # the UTC instant a little before each 2027 change, in each zone
        "America/New_York": (datetime(2027, 3, 13, 12, tzinfo=timezone.utc),
                             datetime(2027, 11, 6, 12, tzinfo=timezone.utc)),
        "Europe/London": (datetime(2027, 3, 27, 12, tzinfo=timezone.utc),
                          datetime(2027, 10, 30, 12, tzinfo=timezone.utc)),
        "Australia/Sydney": (datetime(2027, 4, 3, 12, tzinfo=timezone.utc),
                             datetime(2027, 10, 2, 12, tzinfo=timezone.utc)),
    }

    def test_hourly_and_daily_in_change_weeks(self):
        """Hourly (wildcard: twice in an overlap, never in a gap) and Daily 01:30/02:30 match the reference for 2 days."""
        for zone, afters in self.CHANGES.items():
            for after in afters:
                for frequency, fields, expected_cron in (
                        ("Hourly", dict(minute=30), "30 * * * *"),
                        ("Daily", dict(minute=30, hour="1"), "30 1 * * *"),
                        ("Daily", dict(minute=30, hour="2"), "30 2 * * *")):
                    r = schedule(cron="", zone=zone, run_frequency=frequency, structured=StructuredFields(**fields))
                    got, instant = [], after.timestamp()
                    for _ in range(60):
                        instant = r.next_fire(instant)
                        if instant > (after + timedelta(days=2)).timestamp():
                            break
                        got.append(datetime.fromtimestamp(instant, timezone.utc))
                    steps = ref.walk(zone, after, after + timedelta(days=2), ref.MINUTE)
                    expected = ref.ReferenceCron(expected_cron).fires(steps)
                    self.assertEqual(got, expected, f"{frequency} {fields} in {zone} after {after}")


class LocalCronTests(unittest.SynchronousTestCase):
    """The derived cron of each frequency, from BTU's own field values."""

    def test_each_frequency(self):
        """Each frequency uses exactly its fields (BTU leaves the others stale)."""
        stale = dict(minute=10, hour="8", day_of_week="Friday", day_of_month=3, month="MAR")
        self.assertEqual({frequency: local_cron(frequency, StructuredFields(**stale))
                          for frequency in CASES},
                         {"Hourly": "10 * * * *", "Daily": "10 8 * * *", "Weekly": "10 8 * * 5",
                          "Monthly": "10 8 3 * *", "Yearly": "10 8 3 3 *"})

    def test_btu_select_options(self):
        """Every day and month option of BTU's Select fields maps to its cron number."""
        days = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
        self.assertEqual([local_cron("Weekly", StructuredFields(minute=0, hour="0", day_of_week=d)).split()[4]
                          for d in days], ["1", "2", "3", "4", "5", "6", "0"])
        months = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
        self.assertEqual([local_cron("Yearly", StructuredFields(minute=0, hour="0", day_of_month=1, month=m))
                          .split()[3] for m in months], [str(n) for n in range(1, 13)])

    def test_midnight_hour_text(self):
        """hour "0" (text, as Frappe's Data column holds it) is midnight, not empty."""
        self.assertEqual(local_cron("Daily", StructuredFields(minute=0, hour="0")), "0 0 * * *")

    def test_cron_style_keeps_cron_string(self):
        """A Cron Style row (or one without run_frequency) uses its cron_string as it is."""
        for frequency in ("Cron Style", None):
            self.assertEqual(schedule(cron="*/5 * * * *", run_frequency=frequency,
                                      structured=StructuredFields(minute=7)).cron(), "*/5 * * * *")


class InvalidFieldTests(unittest.SynchronousTestCase):
    """Missing or invalid structured fields make the row unplannable, with a reason naming the field."""

    def assertUnplannable(self, frequency, field_name, **fields):
        error = self.assertRaises(ScheduleError, schedule(cron="0 9 * * *", run_frequency=frequency,
                                                          structured=StructuredFields(**fields)).check)
        self.assertTrue(str(error).startswith(f"{field_name}:"), str(error))
        return str(error)

    def test_missing_fields(self):
        """Each field a frequency needs, when empty, is named."""
        self.assertUnplannable("Hourly", "minute")
        self.assertUnplannable("Daily", "hour", minute=0)
        self.assertUnplannable("Daily", "hour", minute=0, hour="  ")
        self.assertUnplannable("Weekly", "day_of_week", minute=0, hour="9")
        self.assertUnplannable("Monthly", "day_of_month", minute=0, hour="9", day_of_month=0)
        self.assertUnplannable("Yearly", "month", minute=0, hour="9", day_of_month=1)

    def test_out_of_range(self):
        """Values beyond their field's range are named with the value."""
        self.assertIn("60", self.assertUnplannable("Hourly", "minute", minute=60))
        self.assertIn("24", self.assertUnplannable("Daily", "hour", minute=0, hour="24"))
        self.assertIn("32", self.assertUnplannable("Monthly", "day_of_month", minute=0, hour="1", day_of_month=32))

    def test_not_numbers_or_names(self):
        """Text where a number belongs, and names BTU does not offer, are named."""
        self.assertIn("'9am'", self.assertUnplannable("Daily", "hour", minute=0, hour="9am"))
        self.assertIn("'Funday'", self.assertUnplannable("Weekly", "day_of_week", minute=0, hour="9",
                                                         day_of_week="Funday"))
        self.assertIn("'JANUARY'", self.assertUnplannable("Yearly", "month", minute=0, hour="9",
                                                          day_of_month=1, month="JANUARY"))
        self.assertUnplannable("Hourly", "minute", minute=[1])

    def test_day_not_in_month(self):
        """A Yearly day the month never has (30 FEB) would never run: named."""
        self.assertIn("FEB", self.assertUnplannable("Yearly", "day_of_month", minute=0, hour="9",
                                                    day_of_month=30, month="FEB"))

    def test_unknown_frequency(self):
        """A run_frequency BTU does not offer is named."""
        self.assertIn("'Fortnightly'", self.assertUnplannable("Fortnightly", "run_frequency", minute=0))
