"""Specification of the TOML schedule file source (the daemon without a Frappe database)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

import btu_twisted
from btu_twisted.file_source import FileSource, ScheduleFileError, load_schedule_file

EMBEDDED = Path(btu_twisted.__file__).parent / "data" / "embedded_schedules.toml"

TWO_SCHEDULES = """\
time_zone = "Europe/London"

[tasks.BTU-00001]
desc_short = "Table arguments"
function_string = "myapp.tasks.table"
arguments = { greeting = "hello", count = 3 }
max_task_duration = 120
queue_name = "long"

[tasks.BTU-00002]
function_string = "myapp.tasks.text"
arguments = "{'greeting': 'hi', 'names': ['a', 'b']}"

[schedules.TS-000001]
task = "BTU-00001"
cron_string = "0 3 * * *"
argument_overrides = { count = 4 }

[schedules.TS-000002]
task = "BTU-00002"
cron_string = "*/5 * * * *"
queue_name = "short"
argument_overrides = "{'greeting': 'hey'}"

[schedules.TS-000003]
task = "BTU-00002"
cron_string = "@daily"
enabled = false
"""


class TempFileMixin:
    def write(self, text: str, name: str = "schedules.toml") -> Path:
        if not hasattr(self, "directory"):
            self.directory = Path(tempfile.mkdtemp(prefix="btu-schedules-"))
            self.addCleanup(shutil.rmtree, self.directory, True)
        path = self.directory / name
        path.write_text(text, encoding="utf-8")
        return path


class EmbeddedFileTests(unittest.SynchronousTestCase):
    """The packaged schedule file of the embedded default."""

    def test_loads(self):
        """It parses into usable schedules."""
        schedules = load_schedule_file(EMBEDDED)
        self.assertEqual(sorted(schedules), ["TS-000001", "TS-000002"])
        for row in schedules.values():
            row.check()

    def test_values(self):
        """TS-000001 runs the example task every ten seconds with its override."""
        row = load_schedule_file(EMBEDDED)["TS-000001"]
        self.assertEqual((row.task_id, row.function_string, row.queue_name, row.max_task_duration),
                         ("BTU-00001", "btu_twisted.examples.hello", "default", 60))
        self.assertEqual(row.kwargs(), {"greeting": "hello", "name": "BTU"})
        self.assertEqual(row.next_fire(1_000_000_000), 1_000_000_010)


class LoadTests(TempFileMixin, unittest.SynchronousTestCase):
    """load_schedule_file maps the Frappe columns onto Schedule records."""

    def setUp(self):
        self.schedules = load_schedule_file(self.write(TWO_SCHEDULES), fallback_zone="UTC")

    def test_table_arguments(self):
        """Arguments and overrides may be TOML tables."""
        self.assertEqual(self.schedules["TS-000001"].kwargs(), {"greeting": "hello", "count": 4})

    def test_literal_text_arguments(self):
        """Arguments and overrides may be Python-literal text, as Frappe stores them."""
        self.assertEqual(self.schedules["TS-000002"].kwargs(), {"greeting": "hey", "names": ["a", "b"]})

    def test_task_fields(self):
        """The task's function, duration and desc_short reach the schedule."""
        row = self.schedules["TS-000001"]
        self.assertEqual((row.function_string, row.max_task_duration, row.description),
                         ("myapp.tasks.table", 120, "Table arguments"))

    def test_queue_name(self):
        """The schedule's queue_name wins, then the task's, then "default"."""
        self.assertEqual([self.schedules[i].queue_name for i in ("TS-000001", "TS-000002", "TS-000003")],
                         ["long", "short", "default"])

    def test_time_zone(self):
        """The file's time_zone applies to every schedule."""
        self.assertEqual({row.time_zone for row in self.schedules.values()}, {"Europe/London"})

    def test_fallback_zone(self):
        """Without time_zone in the file, the configured zone applies."""
        text = TWO_SCHEDULES.replace('time_zone = "Europe/London"\n', "")
        schedules = load_schedule_file(self.write(text, "nozone.toml"), fallback_zone="Asia/Tokyo")
        self.assertEqual(schedules["TS-000001"].time_zone, "Asia/Tokyo")

    def test_enabled(self):
        """enabled defaults to true and false is kept."""
        self.assertEqual([self.schedules[i].enabled for i in ("TS-000001", "TS-000003")], [True, False])

    def test_unknown_task(self):
        """A schedule naming a missing task loads, and check() says the task does not exist."""
        schedules = load_schedule_file(self.write('[schedules.TS-9]\ntask = "BTU-404"\ncron_string = "@daily"\n'))
        error = self.assertRaises(ValueError, schedules["TS-9"].check)
        self.assertIn("BTU-404", str(error))


class MalformedFileTests(TempFileMixin, unittest.SynchronousTestCase):
    """A malformed file is a ScheduleFileError naming the file."""

    def assertMalformed(self, text: str, *fragments: str) -> None:
        path = self.write(text)
        error = self.assertRaises(ScheduleFileError, load_schedule_file, path)
        self.assertIn(str(path), str(error))
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_invalid_toml(self):
        """A TOML syntax error."""
        self.assertMalformed("[schedules.TS-1\ntask = 1\n")

    def test_schedule_not_a_table(self):
        """A schedule entry that is not a table, named in the error."""
        self.assertMalformed('[schedules]\nTS-1 = "daily"\n', "TS-1")

    def test_task_not_a_table(self):
        """A task entry that is not a table."""
        self.assertMalformed('[tasks]\nBTU-1 = "x"\n[schedules.TS-1]\ntask = "BTU-1"\ncron_string = "@daily"\n',
                             "BTU-1")

    def test_schedules_not_a_table(self):
        """A top-level schedules key that is not a table."""
        self.assertMalformed('schedules = ["TS-1"]\n', "schedules")

    def test_bad_max_task_duration(self):
        """A max_task_duration that is not an integer, naming the key."""
        self.assertMalformed('[tasks.BTU-1]\nfunction_string = "f"\nmax_task_duration = "ten"\n'
                             '[schedules.TS-1]\ntask = "BTU-1"\ncron_string = "@daily"\n', "max_task_duration")

    def test_enabled_not_boolean(self):
        """enabled = "false" is an error, not a schedule silently enabled."""
        self.assertMalformed('[schedules.TS-1]\ntask = "BTU-1"\ncron_string = "@daily"\nenabled = "false"\n',
                             "enabled")

    def test_missing_file(self):
        """A missing file is a ScheduleFileError naming it."""
        path = Path(tempfile.gettempdir()) / "btu-no-such-schedules.toml"
        error = self.assertRaises(ScheduleFileError, load_schedule_file, path)
        self.assertIn(str(path), str(error))


class FileSourceTests(TempFileMixin, unittest.TestCase):
    """FileSource reads in a thread and follows changes to the file."""

    def setUp(self):
        self.path = self.write(TWO_SCHEDULES)
        self.source = FileSource(str(self.path), fallback_zone="UTC")
        self.addCleanup(self.source.close)

    @defer.inlineCallbacks
    def test_enabled_ids(self):
        """enabled_ids lists the enabled schedules only."""
        ids = yield self.source.enabled_ids()
        self.assertEqual(sorted(ids), ["TS-000001", "TS-000002"])

    @defer.inlineCallbacks
    def test_read(self):
        """read returns the requested schedules that exist, disabled ones included."""
        rows = yield self.source.read(["TS-000002", "TS-000003", "TS-404"])
        self.assertEqual(sorted(rows), ["TS-000002", "TS-000003"])
        self.assertEqual(rows["TS-000002"].cron_string, "*/5 * * * *")

    @defer.inlineCallbacks
    def test_reread_after_modification(self):
        """A changed file is read again."""
        yield self.source.enabled_ids()
        stamp = os.stat(self.path).st_mtime_ns
        self.path.write_text(TWO_SCHEDULES.replace("enabled = false", "enabled = true"), encoding="utf-8")
        os.utime(self.path, ns=(stamp + 10**9, stamp + 10**9))
        ids = yield self.source.enabled_ids()
        self.assertEqual(sorted(ids), ["TS-000001", "TS-000002", "TS-000003"])

    @defer.inlineCallbacks
    def test_rewrite_in_same_timestamp(self):
        """A rewrite of a different size within the same mtime tick is still noticed."""
        yield self.source.enabled_ids()
        stamp = os.stat(self.path).st_mtime_ns
        self.path.write_text(TWO_SCHEDULES.replace("enabled = false\n", ""), encoding="utf-8")
        os.utime(self.path, ns=(stamp, stamp))
        ids = yield self.source.enabled_ids()
        self.assertEqual(sorted(ids), ["TS-000001", "TS-000002", "TS-000003"])

    @defer.inlineCallbacks
    def test_malformed_fails_deferred(self):
        """A malformed file fails the Deferred with ScheduleFileError."""
        self.path.write_text("not toml = = 1\n", encoding="utf-8")
        os.utime(self.path, ns=(1, 1))
        yield self.assertFailure(self.source.enabled_ids(), ScheduleFileError)

    @defer.inlineCallbacks
    def test_missing_fails_deferred(self):
        """A file deleted under the daemon fails the Deferred with ScheduleFileError naming it."""
        os.remove(self.path)
        error = yield self.assertFailure(self.source.read(["TS-000001"]), ScheduleFileError)
        self.assertIn(str(self.path), str(error))
