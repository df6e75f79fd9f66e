"""Specification of the control-socket request handlers (reply texts of the Rust daemon, JSON extras)."""

from __future__ import annotations

import json

from twisted.internet import defer, task
from twisted.trial import unittest

from btu_twisted.commands import MAX_LISTED, MAX_SCHEDULE_ID_CHARS, REPLY_WAIT_SECS, Commands
from btu_twisted.config import parse
from btu_twisted.channels.text_protocol import RequestError
from btu_twisted.planner import Outcome
from btu_twisted.stats import Stats
from btu_twisted.workqueue import UniqueQueue, resolve

NOW = 1772884800  # 2026-03-07T12:00:00Z, the day before New York springs forward
NEXT = 1772953200  # 2026-03-08T07:00:00Z = 03:00 EDT

CONFIG_TEXT = """\
name = "BTU test daemon"
environment_name = "TEST"
mysql_user = "u"
mysql_password = "mysql-pass-s3cr3t"
mysql_database = "d"
webserver_host_header = "erp.example.com"
webserver_token = "token key:tok-s3cr3t"
redis_url = "redis://:redis-s3cr3t@127.0.0.1:6379/0"
time_zone_string = "America/New_York"
"""
SECRETS = ("mysql-pass-s3cr3t", "tok-s3cr3t", "redis-s3cr3t")


class FakeStore:
    """The parts of ScheduleStore the handlers use, answering at once."""

    def __init__(self):
        self.cancelled: list[list[str]] = []
        self.members = [("TS-000001|%d" % NEXT, float(NEXT)), ("odd|id|%d" % (NEXT + 60), float(NEXT + 60))]
        self.error: Exception | None = None

    def _answer(self, value):
        return defer.fail(self.error) if self.error else defer.succeed(value)

    def cancel(self, schedule_ids):
        """Removes those schedules' members, answering how many (as the store's script does)."""
        self.cancelled.append(list(schedule_ids))
        kept = [m for m in self.members if m[0].rpartition("|")[0] not in schedule_ids]
        removed, self.members = len(self.members) - len(kept), kept
        return self._answer(removed)

    def count(self):
        return self._answer(len(self.members))

    def earliest(self):
        return self._answer(self.members[0] if self.members else None)

    def upcoming(self, count):
        self.asked = count
        return self._answer(self.members[:count])


class FakeRefresher:
    def __init__(self):
        self.refreshes = 0

    def refresh(self):
        self.refreshes += 1


class CommandsTestCase(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(NOW)
        self.queue = UniqueQueue()
        self.store = FakeStore()
        self.refresher = FakeRefresher()
        self.stats = Stats(started_at=NOW - 100)
        self.config = parse(CONFIG_TEXT)[0]
        self.commands = Commands(self.clock, self.queue, self.store, self.refresher, self.stats,
                                 self.config)

    def call(self, request_type: str, content):
        """The reply as ControlFactory would get it: the handler called through maybeDeferred."""
        return defer.maybeDeferred(self.commands.handlers()[request_type], content)

    def reply(self, request_type: str, content):
        return self.successResultOf(self.call(request_type, content))

    def rejected(self, request_type: str, content) -> RequestError:
        return self.failureResultOf(self.call(request_type, content), RequestError).value

    def plan_queued(self, outcome_for) -> None:
        """Play the planner: take everything queued and resolve each with outcome_for(id)."""
        for schedule_id, waiters in self.successResultOf(self.queue.get_batch(100)):
            resolve(waiters, outcome_for(schedule_id))


class CreateTaskScheduleTests(CommandsTestCase):
    """create_task_schedule queues the ID and replies with the Rust daemon's text."""

    def test_queues_the_id(self):
        """The ID goes into the internal queue."""
        self.call("create_task_schedule", "TS-000001")
        self.assertIn("TS-000001", self.queue)

    def test_reply_with_next_run(self):
        """Planned within REPLY_WAIT_SECS: the reply adds the next run time."""
        d = self.call("create_task_schedule", "TS-000001")
        self.assertNoResult(d)
        self.plan_queued(lambda i: Outcome(i, NEXT, "America/New_York",
                                           zone_source="BTU Configuration cron_time_zone"))
        self.assertEqual(self.successResultOf(d),
                         "BTU Scheduler now re-processing Task Schedule TS-000001 in Python RQ. "
                         "Next run at 2026-03-08 03:00:00 EDT (America/New_York, from BTU Configuration "
                         "cron_time_zone), 2026-03-08T07:00:00Z.")

    def test_reply_starts_with_rust_text(self):
        """The reply begins with exactly the Rust daemon's sentence."""
        d = self.call("create_task_schedule", "TS-000001")
        self.plan_queued(lambda i: Outcome(i, NEXT))
        self.assertTrue(self.successResultOf(d).startswith(
            "BTU Scheduler now re-processing Task Schedule TS-000001 in Python RQ. "))

    def test_reply_with_reason(self):
        """A schedule that cannot be planned: the reply says why."""
        d = self.call("create_task_schedule", "TS-000009")
        self.plan_queued(lambda i: Outcome(i, reason="schedule is disabled"))
        self.assertEqual(self.successResultOf(d),
                         "BTU Scheduler now re-processing Task Schedule TS-000009 in Python RQ. "
                         "Not scheduled: schedule is disabled.")

    def test_no_timer_left_after_outcome(self):
        """An outcome in time cancels the reply timer."""
        d = self.call("create_task_schedule", "TS-000001")
        self.plan_queued(lambda i: Outcome(i, NEXT))
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout(self):
        """No outcome after REPLY_WAIT_SECS: the reply says planning continues in the background."""
        d = self.call("create_task_schedule", "TS-000001")
        self.clock.advance(REPLY_WAIT_SECS - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        self.assertEqual(self.successResultOf(d),
                         "BTU Scheduler now re-processing Task Schedule TS-000001 in Python RQ. "
                         "Planning continues in the background.")

    def test_late_outcome_harmless(self):
        """After a timeout the ID stays queued and its late outcome is dropped quietly."""
        d = self.call("create_task_schedule", "TS-000001")
        self.clock.advance(REPLY_WAIT_SECS)
        self.successResultOf(d)
        self.assertIn("TS-000001", self.queue)
        self.plan_queued(lambda i: Outcome(i, NEXT))

    def test_same_id_twice(self):
        """Two requests for one waiting ID queue it once and both get the outcome."""
        first = self.call("create_task_schedule", "TS-000001")
        second = self.call("create_task_schedule", "TS-000001")
        self.assertEqual(len(self.queue), 1)
        self.plan_queued(lambda i: Outcome(i, NEXT))
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))

    def test_wrong_content(self):
        """Content that is not a non-empty string ID is a RequestError, and nothing is queued."""
        for content in (None, 5, True, ["TS-1"], {"id": "TS-1"}, "", "   ", "x" * (MAX_SCHEDULE_ID_CHARS + 1)):
            self.rejected("create_task_schedule", content)
        self.assertEqual(len(self.queue), 0)


class CancelTaskScheduleTests(CommandsTestCase):
    """cancel_task_schedule removes exactly one schedule's planned fire."""

    def test_reply(self):
        """The reply is the Rust daemon's text."""
        self.assertEqual(self.reply("cancel_task_schedule", "TS-000001"),
                         "Successfully cancelled BTU Task Schedule TS-000001 in Python RQ.")

    def test_reply_when_nothing_was_planned(self):
        """Cancelling a schedule with no planned fire does not claim success."""
        self.assertEqual(self.reply("cancel_task_schedule", "TS-NONE"),
                         "BTU Task Schedule TS-NONE had no planned fire in Python RQ; nothing to cancel.")

    def test_cancels_exactly_that_id(self):
        """The store is asked to cancel that one ID."""
        self.reply("cancel_task_schedule", "TS-000")
        self.assertEqual(self.store.cancelled, [["TS-000"]])

    def test_redis_down(self):
        """With Redis unreachable the reply is an error saying so."""
        self.store.error = ConnectionError("connection refused")
        error = self.rejected("cancel_task_schedule", "TS-000001")
        self.assertIn("Redis", str(error))
        self.assertIn("TS-000001", str(error))

    def test_wrong_content(self):
        """Content that is not a schedule ID is a RequestError; nothing is cancelled."""
        for content in (None, 1, [], ""):
            self.rejected("cancel_task_schedule", content)
        self.assertEqual(self.store.cancelled, [])


class StatusTests(CommandsTestCase):
    """status answers JSON describing the daemon."""

    def status(self) -> dict:
        return json.loads(self.reply("status", None))

    def test_keys(self):
        """The documented keys are present."""
        self.assertTrue({"uptime_secs", "internal_queue_length", "last_refresh", "planned_schedules", "next_due",
                         "counts", "sql", "redis", "unplannable"} <= set(self.status()))

    def test_values(self):
        """Uptime, queue length, counters, problems and the planned set are reported."""
        self.queue.put("TS-7")
        self.stats.counts["enqueued"] += 3
        self.stats.problem("TS-8", "cron_string is empty")
        report = self.status()
        self.assertEqual(report["uptime_secs"], 100)
        self.assertEqual(report["internal_queue_length"], 1)
        self.assertEqual(report["counts"], {"enqueued": 3})
        self.assertEqual(report["unplannable"], {"TS-8": "cron_string is empty"})
        self.assertEqual(report["planned_schedules"], 2)
        self.assertEqual(report["next_due"], {"schedule_id": "TS-000001", "at": "2026-03-08T07:00:00Z",
                                              "unix": NEXT})

    def test_no_secret(self):
        """No password, token or Redis URL password appears in the status."""
        text = self.reply("status", None)
        for secret in SECRETS:
            self.assertNotIn(secret, text)

    def test_redis_down(self):
        """With Redis unreachable, status still answers and says Redis is down."""
        self.store.error = ConnectionError("connection refused")
        report = self.status()
        self.assertIs(report["redis"]["up"], False)
        self.assertIsNone(report["planned_schedules"])

    def test_nothing_planned(self):
        """An empty plan has no next_due."""
        self.store.members = []
        self.assertIsNone(self.status()["next_due"])


class UpcomingTests(CommandsTestCase):
    """upcoming answers a JSON list of the next planned fires."""

    def test_list(self):
        """Each entry has the schedule ID (split at the last '|'), ISO time and unix seconds."""
        self.assertEqual(json.loads(self.reply("upcoming", 5)), [
            {"schedule_id": "TS-000001", "at": "2026-03-08T07:00:00Z", "unix": NEXT},
            {"schedule_id": "odd|id", "at": "2026-03-08T07:01:00Z", "unix": NEXT + 60},
        ])
        self.assertEqual(self.store.asked, 5)

    def test_default_count(self):
        """Without a count, ten fires are asked for."""
        self.reply("upcoming", None)
        self.assertEqual(self.store.asked, 10)

    def test_bad_counts(self):
        """A count that is not an integer from 1 to MAX_LISTED is a RequestError."""
        for count in (0, -1, MAX_LISTED + 1, True, "5", 2.5, [3]):
            self.rejected("upcoming", count)

    def test_redis_down(self):
        """With Redis unreachable the reply is an error."""
        self.store.error = ConnectionError("connection refused")
        self.assertIn("Redis", str(self.rejected("upcoming", 3)))


class PreviewCronTests(CommandsTestCase):
    """preview_cron answers JSON of the next fires of an expression, marking offset changes."""

    def test_preview(self):
        """The fires after now in the zone, the one shaped by the DST gap with a note."""
        fires = json.loads(self.reply("preview_cron", {"cron_string": "30 2 * * *",
                                                        "time_zone": "America/New_York", "count": 3}))
        self.assertEqual([(f["utc"], f["local"]) for f in fires], [
            ("2026-03-08T07:00:00Z", "2026-03-08T03:00:00-04:00"),
            ("2026-03-09T06:30:00Z", "2026-03-09T02:30:00-04:00"),
            ("2026-03-10T06:30:00Z", "2026-03-10T02:30:00-04:00"),
        ])
        self.assertIsNotNone(fires[0]["note"])
        self.assertEqual([f["note"] for f in fires[1:]], [None, None])

    def test_default_zone_and_count(self):
        """Without time_zone the configured zone applies; without count, ten fires."""
        fires = json.loads(self.reply("preview_cron", {"cron_string": "0 12 * * *"}))
        self.assertEqual(len(fires), 10)
        self.assertEqual(fires[0]["local"], "2026-03-07T12:00:00-05:00")

    def test_bad_expression(self):
        """An invalid cron string is a RequestError carrying the parser's reason."""
        self.assertIn("field", str(self.rejected("preview_cron", {"cron_string": "61 * * * *"})))

    def test_bad_zone(self):
        """An unknown zone is a RequestError."""
        self.rejected("preview_cron", {"cron_string": "@daily", "time_zone": "Mars/Base"})

    def test_bad_content(self):
        """Content that is not an object with string fields is a RequestError."""
        for content in (None, "@daily", {"cron_string": 5}, {"cron_string": "@daily", "time_zone": 0}):
            self.rejected("preview_cron", content)

    def test_bad_counts(self):
        """A count that is not an integer from 1 to MAX_LISTED is a RequestError."""
        for count in (0, MAX_LISTED + 1, False, "3"):
            self.rejected("preview_cron", {"cron_string": "@daily", "count": count})


class ReloadTests(CommandsTestCase):
    """reload starts a full refresh."""

    def test_reload(self):
        """The refresher is asked for one refresh and the reply says so."""
        self.assertEqual(self.reply("reload", None), "Full refresh started.")
        self.assertEqual(self.refresher.refreshes, 1)
