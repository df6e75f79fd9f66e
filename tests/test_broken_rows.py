"""Rows that break after planning, schedules that leave `unplannable`, and refused rows' memory
(issue 10 items 4, 8 and 9), against the shared private MariaDB and Redis."""

from __future__ import annotations

import sys
import time

from twisted.internet import defer
from twisted.trial import unittest

from btu_twisted.planner import Planner, RowCache
from btu_twisted.stats import Stats
from btu_twisted.workqueue import UniqueQueue
from tests.fakes import FakeSource, FakeStore, schedule
from tests.support import frappe_schema as fs
from tests.support.daemon import start_daemon, wait_for
from tests.test_faults import (EVERY_SECOND, NOOP, RELOAD, SCHEDULE_KEY, FaultTestCase,
                               add_firing_schedules)
from tests.support.servers import use_shared_servers

BREAKS = {  # schedule id: (SQL that breaks its row after planning, a word the reason must contain)
    "TS-TASK-DELETED": ("DELETE FROM `tabBTU Task` WHERE name = 'BTU-TASK-DELETED'", "does not exist"),
    "TS-NULL-FUNCTION": ("UPDATE `tabBTU Task` SET function_string = NULL WHERE name = 'BTU-NULL-FUNCTION'",
                         "function_string"),
    "TS-NULL-QUEUE": ("UPDATE `tabBTU Task Schedule` SET queue_name = NULL WHERE name = 'TS-NULL-QUEUE'",
                      "queue_name"),
    "TS-NEGATIVE-DURATION": ("UPDATE `tabBTU Task` SET max_task_duration = -5 "
                             "WHERE name = 'BTU-NEGATIVE-DURATION'", "max_task_duration"),
}
BROKEN_FOR_SECS = 3  # several fire instants of the every-second schedules


class BrokenAfterPlanningTests(FaultTestCase):
    """Each broken schedule has its own task, so one break touches one schedule."""

    def setUp(self):
        use_shared_servers(self)
        self.logs = self.capture_logs()
        add_firing_schedules(self.sql)
        for schedule_id in BREAKS:
            task = schedule_id.replace("TS-", "BTU-")
            fs.insert_task(self.sql, task, NOOP)
            fs.insert_schedule(self.sql, schedule_id, task, EVERY_SECOND)

    def lines_about(self, schedule_id: str) -> list[str]:
        return [line for line in self.logs if schedule_id in line and "enqueued" not in line.split(":")[0]
                and ("cannot" in line)]

    @defer.inlineCallbacks
    def test_rows_broken_after_planning_are_refused_at_fire_time(self):
        """Task deleted, function_string or queue_name NULL, negative max_task_duration: nothing more
        is enqueued, the schedule is listed under `unplannable` with the reason, one log line each,
        and a full refresh does not repeat it."""
        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        yield wait_for(lambda: all(self.queued_fires(self.redis).get(s) for s in BREAKS), 10,
                       "a fire of every schedule before the break")
        with self.sql.cursor() as cursor:
            for statement, _word in BREAKS.values():
                cursor.execute(statement)
        broken_at = time.time()
        yield wait_for(lambda: time.time() > broken_at + BROKEN_FOR_SECS, BROKEN_FOR_SECS + 1, "fires")
        yield daemon.query(RELOAD)
        reloaded_at = time.time()
        yield wait_for(lambda: self.has_fires(self.redis, 2, after=reloaded_at), 10, "good fires")

        status = yield daemon.status()
        fires = self.queued_fires(self.redis)
        for schedule_id, (_statement, word) in BREAKS.items():
            # A fire whose row was read (PREPARE_LEAD_SECS ahead) before the break may still go out.
            late = [f for f in fires[schedule_id] if f > broken_at + 1]
            self.assertEqual(late, [], f"{schedule_id} enqueued after its row broke")
            self.assertIn(word, status["unplannable"].get(schedule_id, ""), status["unplannable"])
            self.assertEqual(len(self.lines_about(schedule_id)), 1, self.lines_about(schedule_id))
            planned = [m for m in self.redis.zrange(SCHEDULE_KEY, 0, -1)
                       if m.decode().startswith(schedule_id + "|")]
            self.assertEqual(planned, [], f"{schedule_id} is still planned")
        self.assertContiguous(fires["TS-000001"], 1, "the good schedule's fires")


class UnplannableForgetsTests(FaultTestCase):
    """`unplannable` lists only schedules that exist, are enabled, and still cannot be planned."""

    def setUp(self):
        use_shared_servers(self)
        fs.insert_task(self.sql, "BTU-00001", NOOP)
        for schedule_id in ("TS-DELETED", "TS-DISABLED", "TS-STILL-BAD"):
            fs.insert_schedule(self.sql, schedule_id, "BTU-00001", "61 * * * *")

    @defer.inlineCallbacks
    def test_deleted_and_disabled_schedules_leave_unplannable(self):
        """After a reload, a deleted and a disabled unplannable schedule are no longer listed."""
        daemon = start_daemon(self, self.database)
        status = yield daemon.refreshed()
        self.assertEqual(set(status["unplannable"]), {"TS-DELETED", "TS-DISABLED", "TS-STILL-BAD"})
        fs.delete_schedule(self.sql, "TS-DELETED")
        fs.update_schedule(self.sql, "TS-DISABLED", enabled=0)
        before = status["last_refresh"]["at"]  # in the daemon's clock (Redis time), not ours
        yield daemon.query(RELOAD)

        @defer.inlineCallbacks
        def refreshed_again():
            status = yield daemon.status()
            return status["last_refresh"]["at"] > before and status

        status = yield wait_for(refreshed_again, 10, "the reload's refresh")
        self.assertEqual(set(status["unplannable"]), {"TS-STILL-BAD"})


class RefusedRowMemoryTests(unittest.TestCase):
    """A refused row is not kept: the row cache holds only what is planned (item 8)."""

    def test_refused_rows_text_is_not_retained(self):
        """A 1 MiB argument_overrides row is refused, and nothing of ours references it afterwards."""
        huge = "{'x': '" + "a" * (1 << 20) + "'}"
        refused = schedule("TS-HUGE", cron="* * * * *", argument_overrides=huge)
        good = schedule("TS-GOOD", cron="* * * * *")
        source = FakeSource(refused, good)
        references_before = sys.getrefcount(refused)
        rows, stats = RowCache(), Stats(started_at=0)
        planner = Planner(_Clock(), UniqueQueue(), source, FakeStore(), rows, stats)
        outcomes = self.successResultOf(planner.plan(["TS-HUGE", "TS-GOOD"]))

        self.assertIn("argument_overrides", outcomes["TS-HUGE"].reason)
        self.assertEqual(set(rows), {"TS-GOOD"})
        self.assertLess(len(stats.problems["TS-HUGE"]), 200)
        del outcomes
        self.assertEqual(sys.getrefcount(refused), references_before)


class _Clock:
    def seconds(self):
        return 1_800_000_000.0
