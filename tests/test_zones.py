"""Specification of schedule zones (DESIGN §4): the fallback chain, its sources, unknown zones at each
level, and where the zone shows (reply, upcoming, status), on private MariaDB with the tables of
each BTU generation and the daemon in process; plus rows of both generations' structured frequencies."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from twisted.internet import defer
from twisted.trial import unittest

from btu_twisted import zones
from btu_twisted.config import ConfigError, parse
from btu_twisted.schedules import ScheduleError
from tests.fakes import schedule
from tests.support import frappe_schema as fs
from tests.support.daemon import members_of, schedule_members, start_daemon, wait_for
from tests.test_frequencies import btu_15_1_0_cron_string
from tests.test_integration import MARKER_FUNCTION, next_unix

CRON = "0 9 * * *"


class ChainTests(unittest.SynchronousTestCase):
    """first_zone and the config's own level, without a database."""

    def test_first_non_blank_wins(self):
        """Blank and None candidates are skipped; the first other one gives zone and source."""
        self.assertEqual(zones.first_zone((None, "a"), ("  ", "b"), (" Asia/Kolkata ", "c"), ("UTC", "d")),
                         ("Asia/Kolkata", "c"))

    def test_nothing_is_default_utc(self):
        """With every level empty the zone is UTC, said to be the default."""
        self.assertEqual(zones.first_zone((None, "a"), ("", "b")), ("UTC", zones.DEFAULT_ZONE))

    def test_config_level(self):
        """time_zone_string set in the file is its own source; absent, the default UTC is."""
        minimal = 'mysql_user = "u"\nmysql_database = "d"\nfrappe_site = "s"\n'
        self.assertEqual(zones.configured_zone(parse(minimal)[0]), ("UTC", zones.DEFAULT_ZONE))
        self.assertEqual(zones.configured_zone(parse(minimal + 'time_zone_string = "UTC"\n')[0]),
                         ("UTC", zones.CONFIG_ZONE))

    def test_unknown_config_zone_stops_start_up(self):
        """An unknown time_zone_string stays a start-up configuration error."""
        self.assertRaises(ConfigError, parse, 'mysql_user = "u"\nmysql_database = "d"\nfrappe_site = "s"\n'
                                              'time_zone_string = "Mars/Olympus_Mons"\n')

    def test_unknown_zone_names_zone_and_source(self):
        """A row whose zone is unknown cannot be planned; the reason names the zone and where it came from."""
        row = schedule(zone="Mars/Olympus_Mons", zone_source=zones.SYSTEM_SETTINGS_ZONE)
        error = self.assertRaises(ScheduleError, row.check)
        self.assertEqual(str(error), "unknown time zone 'Mars/Olympus_Mons' (from System Settings time_zone)")


class ZoneDaemonTestCase(unittest.TestCase):
    """A BTU 15.1.1+ database (cron_timezone and structured columns) and a daemon on it."""

    timeout = 45
    generation = "15.1.1"

    def setUp(self):
        from tests.support.servers import use_shared_servers

        use_shared_servers(self)
        fs.upgrade_schema(self.sql, self.generation)
        fs.insert_task(self.sql, "BTU-00001", MARKER_FUNCTION)

    def add(self, schedule_id, cron_string=CRON, **columns):
        fs.insert_schedule(self.sql, schedule_id, "BTU-00001", cron_string, **columns)

    @defer.inlineCallbacks
    def create(self, daemon, schedule_id):
        reply = yield daemon.btu_app_request({"request_type": "create_task_schedule",
                                              "request_content": schedule_id})
        return reply

    def wait_planned(self, schedule_id, when):
        member = f"{schedule_id}|{when}"
        return wait_for(lambda: members_of(self.redis, schedule_id) == {member: float(when)}, 10,
                        f"exactly {member}")


class PerScheduleZoneTests(ZoneDaemonTestCase):
    """BTU 15.1.1+'s cron_timezone, and where the zone and its source are shown."""

    @defer.inlineCallbacks
    def test_cron_timezone_plans_in_that_zone_and_shows_it(self):
        """0 9 * * * in Asia/Kolkata is planned at 03:30Z; reply, upcoming and status name the zone and source."""
        fs.set_cron_time_zone(self.sql, "America/New_York")
        self.add("TS-KOL", cron_timezone="Asia/Kolkata")
        self.add("TS-NY", cron_timezone="")
        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        kolkata, new_york = next_unix(CRON, "Asia/Kolkata"), next_unix(CRON, "America/New_York")
        self.assertEqual(schedule_members(self.redis), {f"TS-KOL|{kolkata}": kolkata, f"TS-NY|{new_york}": new_york})
        self.assertEqual(datetime.fromtimestamp(kolkata, timezone.utc).strftime("%H:%M"), "03:30")

        reply = yield self.create(daemon, "TS-KOL")
        self.assertIn("(Asia/Kolkata, from schedule cron_timezone)", reply)
        upcoming = json.loads((yield daemon.query({"request_type": "upcoming", "request_content": 10})))
        self.assertEqual({entry["schedule_id"]: (entry["time_zone"], entry["zone_source"]) for entry in upcoming},
                         {"TS-KOL": ("Asia/Kolkata", "schedule cron_timezone"),
                          "TS-NY": ("America/New_York", "BTU Configuration cron_time_zone")})
        status = yield daemon.status()
        self.assertEqual(status["zones"], [
            {"time_zone": "America/New_York", "zone_source": "BTU Configuration cron_time_zone", "schedules": 1},
            {"time_zone": "Asia/Kolkata", "zone_source": "schedule cron_timezone", "schedules": 1}])
        self.assertIn("zone_source", status["next_due"])


class FallbackLevelTests(ZoneDaemonTestCase):
    """Each level of the chain, reached by emptying the ones above it."""

    @defer.inlineCallbacks
    def test_each_level_in_turn(self):
        """cron_timezone, then BTU Configuration, System Settings, time_zone_string: each is used and named."""
        self.add("TS-1", cron_timezone="Asia/Kolkata")
        fs.set_cron_time_zone(self.sql, "America/New_York")
        fs.set_system_time_zone(self.sql, "Australia/Sydney")
        daemon = start_daemon(self, self.database, time_zone_string="Europe/Berlin")
        yield daemon.refreshed()
        levels = [
            ("Asia/Kolkata", "schedule cron_timezone", lambda: None),
            ("America/New_York", "BTU Configuration cron_time_zone",
             lambda: fs.update_schedule(self.sql, "TS-1", cron_timezone=None)),
            ("Australia/Sydney", "System Settings time_zone", lambda: fs.set_cron_time_zone(self.sql, " ")),
            ("Europe/Berlin", "time_zone_string", lambda: fs.set_system_time_zone(self.sql, None)),
        ]
        for zone, source, empty_the_level_above in levels:
            empty_the_level_above()
            reply = yield self.create(daemon, "TS-1")
            self.assertIn(f"({zone}, from {source})", reply)
            yield self.wait_planned("TS-1", next_unix(CRON, zone))

    @defer.inlineCallbacks
    def test_default_utc(self):
        """With no zone anywhere, not even time_zone_string, UTC is used and said to be the default."""
        self.add("TS-1")
        daemon = start_daemon(self, self.database, time_zone_string=None)
        yield daemon.refreshed()
        reply = yield self.create(daemon, "TS-1")
        self.assertIn("(UTC, from default UTC)", reply)
        yield self.wait_planned("TS-1", next_unix(CRON, "UTC"))


class UnknownZoneTests(ZoneDaemonTestCase):
    """An unknown zone at one level makes only the schedules using it unplannable."""

    @defer.inlineCallbacks
    def check_only(self, unplannable: dict, planned: dict, **keys):
        daemon = start_daemon(self, self.database, **keys)
        yield daemon.refreshed()
        status = yield daemon.status()
        self.assertEqual(status["unplannable"], unplannable)
        self.assertEqual(schedule_members(self.redis),
                         {f"{i}|{next_unix(CRON, zone)}": next_unix(CRON, zone) for i, zone in planned.items()})
        reply = yield self.create(daemon, next(iter(unplannable)))
        self.assertIn(f"Not scheduled: {next(iter(unplannable.values()))}.", reply)

    def test_unknown_cron_timezone(self):
        """A bad cron_timezone: only that schedule; the others plan in the site zone."""
        self.add("TS-BAD", cron_timezone="Mars/Olympus_Mons")
        self.add("TS-GOOD")
        fs.set_cron_time_zone(self.sql, "America/New_York")
        return self.check_only({"TS-BAD": "unknown time zone 'Mars/Olympus_Mons' (from schedule cron_timezone)"},
                               {"TS-GOOD": "America/New_York"})

    def test_unknown_btu_configuration_zone(self):
        """A bad cron_time_zone: the schedules without their own zone; those with one still plan."""
        self.add("TS-BAD")
        self.add("TS-OWN", cron_timezone="Asia/Kolkata")
        fs.set_cron_time_zone(self.sql, "Not/AZone")
        fs.set_system_time_zone(self.sql, "Europe/London")
        return self.check_only({"TS-BAD": "unknown time zone 'Not/AZone' (from BTU Configuration cron_time_zone)"},
                               {"TS-OWN": "Asia/Kolkata"})

    def test_unknown_system_settings_zone(self):
        """A bad System Settings time_zone (no BTU zone set): the same, naming System Settings."""
        self.add("TS-BAD")
        self.add("TS-OWN", cron_timezone="Australia/Sydney")
        fs.set_system_time_zone(self.sql, "Europe/Atlantis")
        return self.check_only({"TS-BAD": "unknown time zone 'Europe/Atlantis' (from System Settings time_zone)"},
                               {"TS-OWN": "Australia/Sydney"})


class SchemaRefreshTests(ZoneDaemonTestCase):
    """A column added by a BTU upgrade is read from the next full refresh on."""

    generation = "15.1.0"

    @defer.inlineCallbacks
    def test_cron_timezone_added_by_upgrade(self):
        """Upgrading the table to 15.1.1 while the daemon runs: the next reload plans in cron_timezone."""
        self.add("TS-1")
        fs.set_cron_time_zone(self.sql, "America/New_York")
        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        yield self.wait_planned("TS-1", next_unix(CRON, "America/New_York"))

        fs.upgrade_schema(self.sql, "15.1.1")
        fs.update_schedule(self.sql, "TS-1", cron_timezone="Asia/Kolkata")
        yield daemon.query({"request_type": "reload", "request_content": None})
        yield self.wait_planned("TS-1", next_unix(CRON, "Asia/Kolkata"))


class StructuredRowsTestCase(ZoneDaemonTestCase):
    """Hourly ... Yearly rows read from MariaDB, as each generation stored them, plan at the entered wall time."""

    ZONE = "America/New_York"
    FORM = {  # BTU's form entry and the local cron it means
        "Hourly": (dict(minute=15), "15 * * * *"),
        "Daily": (dict(minute=30, hour="9"), "30 9 * * *"),
        "Weekly": (dict(minute=0, hour="7", day_of_week="Monday"), "0 7 * * 1"),
        "Monthly": (dict(minute=45, hour="23", day_of_month=20), "45 23 20 * *"),
        "Yearly": (dict(minute=5, hour="6", day_of_month=18, month="JUL"), "5 6 18 7 *"),
    }

    @defer.inlineCallbacks
    def check(self, stored_cron):
        fs.set_cron_time_zone(self.sql, self.ZONE)
        for frequency, (fields, _cron) in self.FORM.items():
            self.add(f"TS-{frequency}", stored_cron(fields), run_frequency=frequency, **fields)
        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        self.assertEqual(schedule_members(self.redis),
                         {f"TS-{frequency}|{next_unix(cron, self.ZONE)}": next_unix(cron, self.ZONE)
                          for frequency, (_fields, cron) in self.FORM.items()})
        status = yield daemon.status()
        self.assertEqual(status["unplannable"], {})


class Btu1510StructuredRowsTests(StructuredRowsTestCase):
    """A BTU <= 15.1.0 table (structured columns, no cron_timezone)."""

    generation = "15.1.0"

    def test_btu_15_1_0_rows(self):
        """cron_strings converted to UTC in summer (saved in July, EDT) plan at the entered local time."""
        saved = datetime(2026, 7, 15, 12, tzinfo=timezone.utc)
        return self.check(lambda fields: btu_15_1_0_cron_string(fields, self.ZONE, saved))


class Btu1511StructuredRowsTests(StructuredRowsTestCase):
    """A BTU 15.1.1+ table."""

    def test_btu_15_1_1_rows(self):
        """A 15.1.1 table whose cron_strings are local."""
        return self.check(lambda fields: " ".join((str(fields["minute"]), fields.get("hour", "*"),
                                                   str(fields.get("day_of_month", "*")),
                                                   fields.get("month", "*"), "*")))

    @defer.inlineCallbacks
    def test_invalid_field_only_that_row(self):
        """A Weekly row without day_of_week is unplannable, named; a Daily row beside it plans."""
        self.add("TS-W", "0 7 * * 1", run_frequency="Weekly", minute=0, hour="7")
        self.add("TS-D", "30 9 * * *", run_frequency="Daily", minute=30, hour="9")
        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        status = yield daemon.status()
        self.assertEqual(status["unplannable"], {"TS-W": "day_of_week: empty, but a Weekly schedule needs it"})
        when = next_unix("30 9 * * *", "UTC")
        self.assertEqual(schedule_members(self.redis), {f"TS-D|{when}": when})
        self.assertEqual(datetime.fromtimestamp(when, ZoneInfo("UTC")).strftime("%H:%M"), "09:30")


class ScheduleFileZoneTests(unittest.SynchronousTestCase):
    """The schedule file takes the same fields: cron_timezone per schedule, run_frequency and its fields."""

    TEXT = """time_zone = "Europe/London"
[tasks.T]
function_string = "tests.support.jobfuncs.noop"
[schedules.TS-OWN]
task = "T"
cron_string = "0 9 * * *"
cron_timezone = "Asia/Kolkata"
[schedules.TS-FILE]
task = "T"
run_frequency = "Weekly"
day_of_week = "Monday"
hour = 9
minute = 30
[schedules.TS-BAD]
task = "T"
run_frequency = "Monthly"
hour = "9"
minute = 0
"""

    def load(self, text, *fallback):
        from pathlib import Path

        from btu_twisted.file_source import load_schedule_file

        path = Path(self.mktemp())
        path.write_text(text, encoding="utf-8")
        return load_schedule_file(path, *fallback)

    def test_zones_and_sources(self):
        """cron_timezone wins over the file's time_zone, which wins over the config's."""
        rows = self.load(self.TEXT, "America/New_York", zones.CONFIG_ZONE)
        self.assertEqual((rows["TS-OWN"].time_zone, rows["TS-OWN"].zone_source), ("Asia/Kolkata", "schedule cron_timezone"))
        self.assertEqual((rows["TS-FILE"].time_zone, rows["TS-FILE"].zone_source), ("Europe/London", "schedule file time_zone"))
        rows = self.load(self.TEXT.replace('time_zone = "Europe/London"\n', ""), "America/New_York", zones.CONFIG_ZONE)
        self.assertEqual((rows["TS-FILE"].time_zone, rows["TS-FILE"].zone_source), ("America/New_York", "time_zone_string"))

    def test_structured_fields(self):
        """A Weekly entry fires at its wall time; a Monthly one without day_of_month is unplannable, named."""
        rows = self.load(self.TEXT)
        when = datetime.fromtimestamp(rows["TS-FILE"].next_fire(datetime(2027, 7, 1, tzinfo=timezone.utc).timestamp()),
                                      ZoneInfo("Europe/London"))
        self.assertEqual((when.strftime("%A"), when.hour, when.minute), ("Monday", 9, 30))
        error = self.assertRaises(ScheduleError, rows["TS-BAD"].check)
        self.assertTrue(str(error).startswith("day_of_month:"), str(error))

    def test_unknown_file_zone_only_its_schedules(self):
        """An unknown file time_zone: the schedules using it are unplannable, the one with its own zone is not."""
        rows = self.load(self.TEXT.replace("Europe/London", "Europe/Lemuria"))
        rows["TS-OWN"].check()
        error = self.assertRaises(ScheduleError, rows["TS-FILE"].check)
        self.assertEqual(str(error), "unknown time zone 'Europe/Lemuria' (from schedule file time_zone)")


class DispatchZoneTests(unittest.SynchronousTestCase):
    """A zone that became unknown after planning: the dispatcher's reason names it and its source."""

    def test_next_fire_names_zone_and_source(self):
        """next_fire on a row with an unknown zone raises ScheduleError naming zone and source."""
        row = schedule(zone="Mars/Olympus_Mons", zone_source=zones.BTU_CONFIGURATION_ZONE)
        error = self.assertRaises(ScheduleError, row.next_fire, 0)
        self.assertEqual(str(error), "unknown time zone 'Mars/Olympus_Mons' (from BTU Configuration cron_time_zone)")
