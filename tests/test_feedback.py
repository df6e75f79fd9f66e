"""Honest feedback: typo suggestions for configuration and schedule-file keys, `twistd btu
--check-config`, and a refresh log line that counts what was actually planned."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from twisted.internet import task
from twisted.logger import Logger, globalLogPublisher
from twisted.trial import unittest

from btu_twisted.config import _FIELDS, parse
from btu_twisted.file_source import read_schedule_file, schedule_file_warnings
from btu_twisted.logs import journal_observer
from btu_twisted.planner import Planner, RowCache
from btu_twisted.refresher import Refresher
from btu_twisted.stats import Stats
from btu_twisted.workqueue import UniqueQueue
from tests.fakes import FakeSource, FakeStore, schedule
from tests.support.daemon import short_dir, twistd_env, twistd_executable, write_config

BASE = 'schedule_file = "s.toml"\njob_builder = "python"\n'


class TypoTests(unittest.SynchronousTestCase):
    def test_config_key_suggestion(self):
        """An unknown configuration key is a warning naming the nearest known key."""
        _, warnings = parse(BASE + 'mysql_hots = "db"\nfull_refresh_interval_secs = 60\nzzz = 1\n')
        self.assertEqual(warnings, [
            "unknown configuration key 'mysql_hots' ignored (did you mean 'mysql_host'?)",
            "unknown configuration key 'full_refresh_interval_secs' ignored (did you mean "
            "'full_refresh_internal_secs'?)",
            "unknown configuration key 'zzz' ignored"])

    def test_schedule_file_keys(self):
        """Unknown keys of a schedule file, top level, task and schedule, are reported with hints."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('time_zone = "UTC"\ntimezone = "UTC"\n[tasks.T1]\nfunction_string = "m.f"\n'
                    'max_duration = 60\n[schedules.S1]\ntask = "T1"\ncron_strng = "* * * * *"\n')
        self.assertEqual(schedule_file_warnings(read_schedule_file(Path(path))), [
            "unknown key 'timezone' ignored (did you mean 'time_zone'?)",
            "unknown key of tasks.T1: 'max_duration' ignored (did you mean 'max_task_duration'?)",
            "unknown key of schedules.S1: 'cron_strng' ignored (did you mean 'cron_string'?)"])


class CheckConfigTests(unittest.TestCase):
    def check(self, keys: dict) -> subprocess.CompletedProcess:
        path = write_config(os.path.join(short_dir(self), "btu.toml"), keys)
        return subprocess.run([twistd_executable(), "-n", "btu", "--config", path, "--check-config"],
                              env=twistd_env(), capture_output=True, text=True, timeout=60)

    def test_valid_with_warning(self):
        """--check-config exits 0 without starting, printing each warning with its suggestion."""
        done = self.check({"schedule_file": "s.toml", "job_builder": "python", "socket_pth": "/tmp/x.sock",
                           "mysql_host": "db.invalid"})
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("is valid (1 warning)", done.stdout)
        self.assertIn("'socket_pth' ignored (did you mean 'socket_path'?)", done.stderr)

    def test_invalid(self):
        """--check-config of an invalid file exits 1 naming the key."""
        done = self.check({"schedule_file": "s.toml", "job_builder": "python", "misfire_grace_secs": -5})
        self.assertEqual(done.returncode, 1)
        self.assertIn("misfire_grace_secs: must not be negative", done.stderr)


class RefreshLineTests(unittest.TestCase):
    def test_counts_unplannable(self):
        """The refresh line and last_refresh count planned and unplannable schedules separately."""
        clock = task.Clock()
        clock.advance(1_800_000_000)
        source = FakeSource(schedule("TS-1", cron="*/5 * * * *"), schedule("TS-2", cron="61 * * * *"))
        stats = Stats(started_at=clock.seconds())
        queue, store = UniqueQueue(), FakeStore()
        rows = RowCache()
        planner = Planner(clock, queue, source, store, rows, stats)
        refresher = Refresher(clock, source, store, queue, planner, stats, 900, 60, rows=rows)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        planner.startService()
        refresher.startService()
        self.addCleanup(refresher.stopService)
        self.addCleanup(planner.stopService)
        for _ in range(10):
            clock.advance(0)
        self.assertEqual((stats.last_refresh["planned"], stats.last_refresh["unplannable"]), (1, 1))
        line = next(e for e in events if e.get("log_format", "").startswith("full refresh:"))
        self.assertEqual((line["count"], line["planned"], line["unplannable"]), (2, 1, 1))
        zones = [e for e in events if e.get("log_format", "").startswith("zones in use:")]
        self.assertEqual([e["zones"] for e in zones], ["UTC from time_zone_string (1 schedule)"])


EXAMPLES = Path(__file__).parent.parent / "examples"


class ShippedFilesTests(unittest.SynchronousTestCase):
    def test_example_config_has_every_key_and_parses(self):
        """examples/btu_scheduler.toml parses without warnings and names every key (set or commented)."""
        text = (EXAMPLES / "btu_scheduler.toml").read_text(encoding="utf-8")
        _, warnings = parse(text)
        self.assertEqual(warnings, [])
        named = set(re.findall(r"^#? ?([a-z_]+) = ", text, re.MULTILINE))
        self.assertEqual(set(_FIELDS) - named, set())

    def test_service_is_hardened(self):
        """The systemd unit is hardened, keeps the socket in its RuntimeDirectory and logs without
        timestamps of its own."""
        unit = (EXAMPLES / "btu_scheduler.service").read_text(encoding="utf-8")
        for line in ("NoNewPrivileges=true", "ProtectSystem=strict", "ProtectHome=true",
                     "RuntimeDirectory=btu_scheduler", "--logger=btu_twisted.logs.journal_observer"):
            self.assertIn(line, unit)
        self.assertIn('socket_path = "/run/btu_scheduler/btu_scheduler.sock"',
                      (EXAMPLES / "btu_scheduler.toml").read_text(encoding="utf-8"))

    def test_journal_lines_have_no_timestamp(self):
        """journal_observer writes `[namespace#level] text`, the journal adding the time."""
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        Logger(namespace="btu.test", observer=journal_observer()).info("hello {who}", who="ops")
        self.assertEqual(out.getvalue(), "[btu.test#info] hello ops\n")
