"""The In-Progress guard of the btu builder, and `auto`'s choice, against a real MariaDB.

BTU's own enqueue skips a task that still has a `tabBTU Task Log` row with `success_fail =
'In-Progress'`; the btu builder does the same with one parameterised query per dispatch batch.
"""

from __future__ import annotations

from rq.job import Job
from twisted.internet import defer
from twisted.trial import unittest

from btu_twisted.builders import job_id
from tests.support import frappe_schema as fs
from tests.support.daemon import members_of, start_daemon, wait_for
from tests.support.servers import use_shared_servers
from tests.support.sources import shared_sql_source

EVERY_2_SECS = "*/2 * * * * * *"  # sec min hour dom mon dow year


class InProgressQueryTests(unittest.TestCase):
    """SQLSource.in_progress_tasks on a real database."""

    timeout = 30

    def setUp(self):
        use_shared_servers(self)
        self.source = shared_sql_source(self, 'job_builder = "python"\n')

    @defer.inlineCallbacks
    def test_only_in_progress_tasks(self):
        """Tasks with an In-Progress log are returned; Success/Failed logs and other tasks are not;
        awkward IDs are data, not SQL."""
        fs.create_task_log_table(self.sql)
        awkward = "BTU-'1\"; DROP TABLE x; --"
        for n, (task, state) in enumerate([("BTU-1", "In-Progress"), ("BTU-1", "Success"), ("BTU-2", "Success"),
                                           ("BTU-3", "Failed"), (awkward, "In-Progress"),
                                           ("BTU-9", "In-Progress")]):
            fs.insert_task_log(self.sql, f"LOG-{n}", task, state)
        busy = yield self.source.in_progress_tasks(["BTU-1", "BTU-2", "BTU-3", awkward, "BTU-4"])
        self.assertEqual(busy, {"BTU-1", awkward})

    @defer.inlineCallbacks
    def test_no_log_table_no_guard(self):
        """A site without `tabBTU Task Log` has no task In-Progress."""
        busy = yield self.source.in_progress_tasks(["BTU-1"])
        self.assertEqual(busy, set())


class GuardedDaemonTests(unittest.TestCase):
    """The daemon on a BTU 15.1.1+ database: auto picks btu, and the guard skips busy tasks."""

    timeout = 45

    def setUp(self):
        use_shared_servers(self)

    @defer.inlineCallbacks
    def test_in_progress_task_is_skipped_counted_and_advanced(self):
        """A schedule whose task is In-Progress is not enqueued (logged, counted in status) and its
        member moves on; another schedule's btu job is enqueued on its task's queue."""
        fs.add_cron_timezone_column(self.sql)
        fs.create_task_log_table(self.sql)
        fs.insert_task(self.sql, "BTU-00001", "app.busy", queue_name="long")
        fs.insert_task(self.sql, "BTU-00002", "app.free", queue_name="short")
        fs.insert_task_log(self.sql, "LOG-1", "BTU-00001", "In-Progress")
        fs.insert_schedule(self.sql, "TS-000001", "BTU-00001", EVERY_2_SECS)
        fs.insert_schedule(self.sql, "TS-000002", "BTU-00002", EVERY_2_SECS)
        daemon = start_daemon(self, self.database, job_builder="auto", frappe_site="site1.localhost")
        yield daemon.refreshed()
        first = min(members_of(self.redis, "TS-000001").values())

        @defer.inlineCallbacks
        def skipped():
            found = yield daemon.status()
            return found["counts"].get("skipped_in_progress", 0) >= 1
        yield wait_for(skipped, 15, "a skipped_in_progress count")
        chosen = yield daemon.job_builder_chosen()
        self.assertEqual(chosen["kind"], "btu", chosen)
        self.assertIn("cron_timezone", chosen["reason"])
        yield wait_for(lambda: min(members_of(self.redis, "TS-000001").values(), default=0) > first, 10,
                       "TS-000001 to move to a later fire")
        self.assertFalse(Job.exists(job_id("TS-000001", int(first)), connection=self.redis))
        self.assertEqual(self.redis.llen("rq:queue:long"), 0)
        yield wait_for(lambda: self.redis.llen("rq:queue:short") >= 1, 10, "a btu job for TS-000002")
        [queued] = self.redis.lrange("rq:queue:short", 0, 0)
        job = Job.fetch(queued.decode(), connection=self.redis)
        self.assertEqual(job.kwargs["method"], "btu.btu_core.task_runner.run_task_by_id")
        self.assertEqual(job.kwargs["kwargs"]["schedule_id"], "TS-000002")

    @defer.inlineCallbacks
    def test_auto_without_token_on_old_schema_is_frappe(self):
        """A BTU <= 15.1.0 database and no webserver_token: auto picks frappe, and says why."""
        daemon = start_daemon(self, self.database, job_builder="auto", frappe_site="site1.localhost")
        chosen = yield daemon.job_builder_chosen()
        self.assertEqual(chosen["kind"], "frappe", chosen)
        self.assertIn("no webserver_token", chosen["reason"])
