"""The daemon in process (trial's reactor) against private MariaDB and Redis, spoken to over its
real unix socket exactly as the BTU Frappe app speaks, with real RQ workers running its jobs."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

from rq import Queue
from rq.job import Job
from twisted.internet import defer, threads
from twisted.trial import unittest

from btu_twisted.cron import next_fire
from tests.support import frappe_schema as fs
from tests.support.daemon import (members_of, one_shot_cron, schedule_members, start_daemon,
                                  wait_for)
from tests.support.servers import shared_redis, use_shared_servers
from tests.support.workers import run_burst_worker

MARKER_FUNCTION = "tests.support.jobfuncs.write_marker"
FAKE_FRAPPE = os.path.join(os.path.dirname(__file__), "support", "fake_frappe")
DUE_IN_SECS = 2  # counted once the daemon is up: ahead of planning, near enough to keep tests short
PLACEHOLDER_CRON = "0 4 * * *"  # replaced by a one-shot cron once the daemon is up
FIRE_TIMEOUT_SECS = DUE_IN_SECS + 7


def next_unix(expression: str, zone: str) -> int:
    """Where the daemon must plan `expression` from now, computed with the daemon's cron module."""
    return int(next_fire(expression, zone, datetime.now(timezone.utc)).timestamp())


class DaemonTestCase(unittest.TestCase):
    """A fresh Frappe-shaped database, a flushed private Redis, and helpers to fill them."""

    timeout = 45

    def setUp(self):
        use_shared_servers(self)

    def start(self, **keys):
        return start_daemon(self, self.database, **keys)

    def add_schedule(self, schedule_id, cron_string, task="BTU-00001", **columns):
        fs.insert_schedule(self.sql, schedule_id, task, cron_string, **columns)

    def add_marker_task(self, task="BTU-00001", **arguments):
        """A task running write_marker into a fresh file; returns the marker path."""
        path = os.path.abspath(self.mktemp())
        fs.insert_task(self.sql, task, MARKER_FUNCTION, arguments=repr({"path": path, **arguments}))
        return path

    @defer.inlineCallbacks
    def due_soon(self, daemon, schedule_id, zone="UTC"):
        """Re-cron the schedule to fire once, DUE_IN_SECS from now, and tell the daemon; fires with the unix due time."""
        due = int(time.time()) + DUE_IN_SECS
        fs.update_schedule(self.sql, schedule_id, cron_string=one_shot_cron(due, zone))
        yield daemon.query({"request_type": "create_task_schedule", "request_content": schedule_id})
        yield self.wait_member(schedule_id, f"{schedule_id}|{due}")
        return due

    def wait_member(self, schedule_id, member, timeout=10):
        return wait_for(lambda: members_of(self.redis, schedule_id) == {member: float(member.split("|")[1])},
                        timeout, f"exactly the member {member!r} for {schedule_id}")

    def wait_job(self, queue, job_id, timeout=FIRE_TIMEOUT_SECS):
        return wait_for(lambda: job_id in Queue(queue, connection=self.redis).job_ids, timeout,
                        f"job {job_id} in RQ queue {queue}")

    @defer.inlineCallbacks
    def run_worker(self, queue, extra_pythonpath=()):
        yield threads.deferToThread(run_burst_worker, self.redis_server.url, [queue],
                                    extra_pythonpath=extra_pythonpath, timeout=30)


class SocketRequestTests(DaemonTestCase):
    """The BTU app's requests: create, cancel and status."""

    @defer.inlineCallbacks
    def test_create_task_schedule_plans_next_fire_in_cron_time_zone(self):
        """create_task_schedule, sent as the BTU app sends it, plans '<id>|<unix>' in the BTU Configuration's zone."""
        fs.set_cron_time_zone(self.sql, "America/New_York")
        fs.insert_task(self.sql, "BTU-00001", MARKER_FUNCTION)
        daemon = self.start(time_zone_string="Europe/Berlin")
        yield daemon.refreshed()
        self.add_schedule("TS-000042", "15 9 * * *")
        expected = next_unix("15 9 * * *", "America/New_York")

        reply = yield daemon.btu_app_request({"request_type": "create_task_schedule",
                                              "request_content": "TS-000042"})

        self.assertTrue(reply.startswith("BTU Scheduler now re-processing Task Schedule TS-000042 in "
                                         "Python RQ."), reply)
        yield self.wait_member("TS-000042", f"TS-000042|{expected}")
        self.assertEqual(schedule_members(self.redis), {f"TS-000042|{expected}": float(expected)})

    @defer.inlineCallbacks
    def test_cancel_task_schedule_removes_exactly_that_schedule(self):
        """cancel_task_schedule removes only the named schedule's member, even when its ID prefixes others."""
        fs.insert_task(self.sql, "BTU-00001", MARKER_FUNCTION)
        for schedule_id in ("TS-000", "TS-0001", "TS-00011"):
            self.add_schedule(schedule_id, "0 4 * * *")
        daemon = self.start()
        yield daemon.refreshed()
        when = next_unix("0 4 * * *", "UTC")
        self.assertEqual(set(schedule_members(self.redis)),
                         {f"TS-000|{when}", f"TS-0001|{when}", f"TS-00011|{when}"})

        reply = yield daemon.btu_app_request({"request_type": "cancel_task_schedule",
                                              "request_content": "TS-000"})

        self.assertEqual(reply, "Successfully cancelled BTU Task Schedule TS-000 in Python RQ.")
        self.assertEqual(schedule_members(self.redis),
                         {f"TS-0001|{when}": float(when), f"TS-00011|{when}": float(when)})

    @defer.inlineCallbacks
    def test_edited_cron_leaves_one_member_at_the_new_time(self):
        """After a cron edit in SQL, create_task_schedule leaves exactly one member, at the new time."""
        fs.insert_task(self.sql, "BTU-00001", MARKER_FUNCTION)
        self.add_schedule("TS-000007", "0 5 * * *")
        daemon = self.start()
        yield daemon.refreshed()
        yield self.wait_member("TS-000007", f"TS-000007|{next_unix('0 5 * * *', 'UTC')}")

        fs.update_schedule(self.sql, "TS-000007", cron_string="30 6 * * 1")
        reply = yield daemon.btu_app_request({"request_type": "create_task_schedule",
                                              "request_content": "TS-000007"})

        self.assertIn("TS-000007", reply)
        expected = next_unix("30 6 * * 1", "UTC")
        yield self.wait_member("TS-000007", f"TS-000007|{expected}")

    @defer.inlineCallbacks
    def test_status_reports_plan_refresh_and_health(self):
        """status answers JSON with planned_schedules, next_due, last_refresh and SQL/Redis up."""
        fs.insert_task(self.sql, "BTU-00001", MARKER_FUNCTION)
        self.add_schedule("TS-000001", "0 4 * * *")
        self.add_schedule("TS-000002", "30 3 * * *")
        self.add_schedule("TS-000003", "0 3 * * *", enabled=0)
        daemon = self.start()
        yield daemon.refreshed()

        reply = yield daemon.btu_app_request({"request_type": "status", "request_content": None})

        status = json.loads(reply)
        self.assertEqual(status["planned_schedules"], 2)
        soonest = min(("TS-000001", next_unix("0 4 * * *", "UTC")),
                      ("TS-000002", next_unix("30 3 * * *", "UTC")), key=lambda entry: entry[1])
        self.assertEqual((status["next_due"]["schedule_id"], status["next_due"]["unix"]), soonest)
        self.assertEqual(status["last_refresh"]["schedules"], 2)
        self.assertIs(status["sql"]["up"], True)
        self.assertIs(status["redis"]["up"], True)


class DispatchTests(DaemonTestCase):
    """Due schedules become RQ jobs that real workers run."""

    @defer.inlineCallbacks
    def test_due_schedule_runs_on_rq_worker_with_overridden_arguments(self):
        """A schedule due in seconds is enqueued as btu-<id>-<unix> in its templated queue and runs with merged kwargs."""
        marker = self.add_marker_task(a=1, b=2)
        fs.set_cron_time_zone(self.sql, "America/New_York")
        self.add_schedule("TS-000100", PLACEHOLDER_CRON, queue_name="short", argument_overrides="{'b': 3}")
        daemon = self.start(queue_name_template="bench-1:{queue_name}")
        yield daemon.refreshed()
        due = yield self.due_soon(daemon, "TS-000100", "America/New_York")
        job_id = f"btu-TS-000100-{due}"

        yield self.wait_job("bench-1:short", job_id)
        yield self.run_worker("bench-1:short")

        with open(marker, encoding="utf-8") as f:
            self.assertEqual(json.load(f), {"a": 1, "b": 3})
        job = Job.fetch(job_id, connection=self.redis)
        self.assertTrue(job.is_finished, job.get_status())
        self.assertEqual({key: job.meta.get(key) for key in ("btu_task_schedule", "btu_task",
                                                             "btu_scheduled_for")},
                         {"btu_task_schedule": "TS-000100", "btu_task": "BTU-00001",
                          "btu_scheduled_for": datetime.fromtimestamp(due, timezone.utc)
                          .strftime("%Y-%m-%dT%H:%M:%SZ")})

    @defer.inlineCallbacks
    def test_frappe_job_shape_runs_through_execute_job(self):
        """With job_builder = "frappe" the job is frappe's execute_job(site, method, ...), which runs the task."""
        marker = self.add_marker_task(a=1, b=2)
        self.add_schedule("TS-000200", PLACEHOLDER_CRON, argument_overrides="{'b': 3}")
        daemon = self.start(job_builder="frappe", frappe_site="site1.localhost")
        yield daemon.refreshed()
        due = yield self.due_soon(daemon, "TS-000200")
        job_id = f"btu-TS-000200-{due}"

        yield self.wait_job("default", job_id)
        yield self.run_worker("default", extra_pythonpath=[FAKE_FRAPPE])

        with open(marker, encoding="utf-8") as f:
            self.assertEqual(json.load(f), {"a": 1, "b": 3})
        job = Job.fetch(job_id, connection=self.redis)
        self.assertEqual(job.func_name, "frappe.utils.background_jobs.execute_job")
        self.assertEqual((job.kwargs["site"], job.kwargs["method"]), ("site1.localhost", MARKER_FUNCTION))
        self.assertTrue(job.is_finished, job.get_status())


class DisabledScheduleTests(DaemonTestCase):
    """Disabling a schedule in SQL is honoured even without a socket request."""

    @defer.inlineCallbacks
    def test_full_refresh_removes_disabled_schedule(self):
        """A schedule disabled in SQL loses its member at the next full refresh (reload)."""
        fs.insert_task(self.sql, "BTU-00001", MARKER_FUNCTION)
        self.add_schedule("TS-000301", "0 4 * * *")
        self.add_schedule("TS-000302", "0 4 * * *")
        daemon = self.start()
        yield daemon.refreshed()
        self.assertEqual(len(schedule_members(self.redis)), 2)

        fs.update_schedule(self.sql, "TS-000301", enabled=0)
        reply = yield daemon.btu_app_request({"request_type": "reload", "request_content": None})

        self.assertIn("refresh", reply.lower())
        yield wait_for(lambda: not members_of(self.redis, "TS-000301"), 10, "TS-000301 to be removed")
        self.assertEqual(set(schedule_members(self.redis)), {f"TS-000302|{next_unix('0 4 * * *', 'UTC')}"})

    @defer.inlineCallbacks
    def test_disabled_due_schedule_is_never_enqueued(self):
        """A schedule disabled in SQL after it was planned is not enqueued when its time comes."""
        self.add_marker_task()
        self.add_schedule("TS-000400", PLACEHOLDER_CRON)
        daemon = self.start()
        yield daemon.refreshed()
        due = yield self.due_soon(daemon, "TS-000400")

        fs.update_schedule(self.sql, "TS-000400", enabled=0)
        yield wait_for(lambda: time.time() > due + 1 and not members_of(self.redis, "TS-000400"),
                       FIRE_TIMEOUT_SECS, "the disabled schedule's due time to pass and its member to go")

        self.assertEqual(Queue("default", connection=self.redis).job_ids, [])
        self.assertEqual(self.redis.keys("rq:job:*"), [])


class ScheduleFileTests(unittest.TestCase):
    """The daemon without any database."""

    timeout = 30

    def setUp(self):
        self.redis_server = shared_redis()
        self.redis_server.flush()
        self.redis = self.redis_server.client()
        self.addCleanup(self.redis.close)

    @defer.inlineCallbacks
    def test_schedule_file_daemon_plans_its_schedules(self):
        """A daemon with schedule_file and no MariaDB plans the file's enabled schedules in the file's zone."""
        path = os.path.abspath(self.mktemp())
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"""time_zone = "Europe/London"
[tasks.BTU-00001]
function_string = "{MARKER_FUNCTION}"
arguments = "{{'path': '/dev/null'}}"
[schedules.TS-F1]
task = "BTU-00001"
cron_string = "0 7 * * *"
[schedules.TS-F2]
task = "BTU-00001"
cron_string = "@hourly"
[schedules.TS-F3]
task = "BTU-00001"
cron_string = "0 7 * * *"
enabled = false
""")
        daemon = start_daemon(self, schedule_file=path)
        yield daemon.refreshed()

        f1, f2 = next_unix("0 7 * * *", "Europe/London"), next_unix("@hourly", "Europe/London")
        self.assertEqual(schedule_members(self.redis), {f"TS-F1|{f1}": float(f1), f"TS-F2|{f2}": float(f2)})
