"""The `btu` CLI against a running daemon on private servers: what is planned, what ran, doctor."""

from __future__ import annotations

import json
import os
import subprocess
import time

from click.testing import CliRunner
from rq import Queue, Worker
from twisted.internet import defer, threads
from twisted.trial import unittest

from btu_twisted import __version__
from btu_twisted.cli import main
from btu_twisted.store import PLANNED_KEY
from tests.support import frappe_schema as fs
from tests.support.daemon import one_shot_cron, short_dir, start_daemon, wait_for, write_config
from tests.support.servers import use_shared_servers
from tests.support.workers import rq_executable, run_burst_worker, worker_env

ZONE = "America/New_York"
DUE_IN_SECS = 3
GAP_CRON = "30 2 14 3 *"  # 2:30 on 14 March: inside New York's spring-forward gap in 2027


def invoke(*args) -> defer.Deferred:
    """Run `btu ARGS` in a thread (the daemon answers in the reactor thread meanwhile)."""
    return threads.deferToThread(CliRunner().invoke, main, list(args))


def assert_exit(testcase, result, code: int) -> None:
    testcase.assertEqual(result.exit_code, code, f"{result.output}\n{result.exception!r}")


class CockpitTestCase(unittest.TestCase):
    """A daemon on a Frappe database in New York time with six schedules of every kind."""

    daemon_keys: dict = {}  # extra configuration keys of the daemon

    @defer.inlineCallbacks
    def setUp(self):
        use_shared_servers(self)
        fs.set_cron_time_zone(self.sql, ZONE)
        fs.insert_task(self.sql, "BTU-OK", "tests.support.jobfuncs.noop", desc_short="says nothing")
        fs.insert_task(self.sql, "BTU-BAD", "tests.support.jobfuncs.explode", desc_short="raises")
        self.due = int(time.time()) + DUE_IN_SECS
        once = one_shot_cron(self.due, ZONE)
        fs.insert_schedule(self.sql, "TS-000001", "BTU-OK", GAP_CRON)
        fs.insert_schedule(self.sql, "TS-000002", "BTU-OK", "0 4 * * *", enabled=0)
        fs.insert_schedule(self.sql, "TS-000003", "BTU-OK", "61 * * * *")
        fs.insert_schedule(self.sql, "TS-000004", "BTU-OK", once, queue_name="long")
        fs.insert_schedule(self.sql, "TS-000005", "BTU-OK", once)
        fs.insert_schedule(self.sql, "TS-000006", "BTU-BAD", once)
        self.daemon = start_daemon(self, self.database, **self.daemon_keys)
        yield self.daemon.refreshed()
        self.config = self.daemon.config_path

    def btu(self, *args):
        return invoke("--config", self.config, *args)

    @defer.inlineCallbacks
    def fired(self):
        """Wait for the one-shot fires, then run the default queue with a real burst worker."""
        default, long_ = (Queue(name, connection=self.redis) for name in ("default", "long"))
        yield wait_for(lambda: default.count == 2 and long_.count == 1, DUE_IN_SECS + 10,
                       "the one-shot fires in their queues")
        yield threads.deferToThread(run_burst_worker, self.redis_server.url, "default")


class StatusTests(CockpitTestCase):
    @defer.inlineCallbacks
    def test_status_summary(self):
        """`status` shows health, counts, queues, the backlog of a queue without worker and why a
        schedule is not planned; `--json` gives the same data."""
        yield self.fired()
        result = yield self.btu("status")
        assert_exit(self, result, 0)
        out = result.output
        self.assertIn("daemon    OK  btu test daemon (TEST)", out)
        self.assertIn("source    OK  MariaDB", out)
        # the three one-shot schedules have fired their only fire: nothing more can be planned
        self.assertIn("schedules 6 in total: 5 enabled, 1 planned, 4 unplannable", out)
        self.assertIn("queue long has 1 job and no worker: start `rq worker long`", out)
        self.assertIn("TS-000003 is not planned: minute field", out)
        self.assertRegex(out, r"next fire TS-000001 in \d+ d \d+ h: 2027-03-14 03:00:00 EDT \(2027-03-14T07:00:00Z\)")
        data = json.loads((yield self.btu("--json", "status")).output)
        self.assertEqual(data["counts"], {"schedules": 6, "enabled": 5, "planned": 1, "unplannable": 4})
        self.assertEqual({q["queue"]: (q["jobs"], q["workers"]) for q in data["queues"]},
                         {"default": (0, 0), "long": (1, 0)})
        self.assertEqual((data["daemon"]["name"], data["daemon"]["source"]), ("btu test daemon", "MariaDB"))

    @defer.inlineCallbacks
    def test_daemon_down(self):
        """With the daemon stopped, `show-scheduled` still answers from Redis and SQL; `status` and
        `ping` exit 1 saying the daemon cannot be reached."""
        yield self.daemon.service.stopService()
        result = yield self.btu("show-scheduled")
        assert_exit(self, result, 0)
        line = next(l for l in result.output.splitlines() if l.startswith("TS-000001"))
        self.assertIn("2027-03-14 03:00:00 EDT  2027-03-14T07:00:00Z", line)
        self.assertIn("America/New_York", line)
        self.assertIn("tests.support.jobfuncs.noop", line)
        disabled = next(l for l in result.output.splitlines() if l.startswith("TS-000002"))
        self.assertIn("disabled", disabled)
        listed = json.loads((yield self.btu("show-scheduled", "--json")).output)
        self.assertEqual([s["schedule_id"] for s in listed], [f"TS-00000{i}" for i in range(1, 7)])
        result = yield self.btu("status")
        assert_exit(self, result, 1)
        self.assertIn("daemon    FAIL  cannot talk to the daemon", result.output)
        assert_exit(self, (yield self.btu("ping")), 1)


class ScheduleCommandTests(CockpitTestCase):
    @defer.inlineCallbacks
    def test_show_explains_zone_dst_and_last_fires(self):
        """`show` gives the zone and its source, next fires local and UTC with the DST gap noted."""
        result = yield self.btu("show", "TS-000001")
        assert_exit(self, result, 0)
        out = result.output
        self.assertIn("zone      America/New_York (from ", out)
        self.assertIn("cron      30 2 14 3 *", out)
        self.assertIn("2027-03-14 03:00:00 EDT  2027-03-14T07:00:00Z", out)
        self.assertIn("gap", out)
        self.assertIn("2028-03-14 02:30:00 EDT  2028-03-14T06:30:00Z", out)
        data = json.loads((yield self.btu("explain", "TS-000001", "--json")).output)
        self.assertEqual(data["next_fires"][0]["utc"], "2027-03-14T07:00:00Z")
        self.assertIn("gap", data["next_fires"][0]["note"])
        self.assertIsNone(data["problem"])

    @defer.inlineCallbacks
    def test_show_says_why_not_planned(self):
        """`show` of a disabled or invalid schedule says why it is not planned; an unknown ID exits 1."""
        out = (yield self.btu("show", "TS-000003")).output
        self.assertIn("why not planned: minute field", out)
        out = (yield self.btu("show", "TS-000002")).output
        self.assertIn("why not planned: disabled", out)
        result = yield self.btu("show", "TS-NOPE")
        assert_exit(self, result, 1)
        self.assertIn("no BTU Task Schedule 'TS-NOPE'", result.output)

    @defer.inlineCallbacks
    def test_history_finished_and_failed(self):
        """Fires run by a real rq worker show `finished` with a duration; a raising job `failed`
        with its error; a queue nobody works shows `queued`."""
        yield self.fired()
        result = yield self.btu("history", "TS-000005")
        assert_exit(self, result, 0)
        row = result.output.splitlines()[1]
        self.assertIn(f"btu-TS-000005-{self.due}", row)
        self.assertIn("finished", row)
        self.assertRegex(row, r"finished\s+\d+(\.\d)? m?s ")
        ok = json.loads((yield self.btu("history", "TS-000005", "--json")).output)[0]
        self.assertEqual((ok["status"], ok["at"], ok["queue"], ok["builder"]), ("finished", self.due, "default", "python"))
        self.assertGreaterEqual(ok["duration_secs"], 0)
        self.assertGreaterEqual(ok["late_secs"], 0)
        bad = json.loads((yield self.btu("history", "TS-000006", "--json")).output)[0]
        self.assertEqual(bad["status"], "failed")
        self.assertEqual(bad["error"], "RuntimeError: boom with []")
        out = (yield self.btu("show", "TS-000006")).output
        self.assertIn("RuntimeError: boom with []", out)
        waiting = json.loads((yield self.btu("history", "TS-000004", "--json")).output)[0]
        self.assertEqual(waiting["status"], "queued")

    @defer.inlineCallbacks
    def test_upcoming_and_list_tasks(self):
        """`upcoming` lists planned fires local and UTC; `list-tasks` the tasks."""
        result = yield self.btu("upcoming", "10")
        assert_exit(self, result, 0)
        last = result.output.splitlines()[-1]
        self.assertTrue(last.startswith("2027-03-14 03:00:00 EDT  2027-03-14T07:00:00Z  in "), last)
        self.assertIn("TS-000001", last)
        items = json.loads((yield self.btu("upcoming", "2", "--json")).output)
        self.assertEqual(len(items), 2)
        tasks = json.loads((yield self.btu("list-tasks", "--json")).output)
        self.assertEqual([t["task"] for t in tasks], ["BTU-BAD", "BTU-OK"])
        self.assertIn("tests.support.jobfuncs.explode", (yield self.btu("list-tasks")).output)


class ActionTests(CockpitTestCase):
    @defer.inlineCallbacks
    def test_run_now_leaves_the_plan(self):
        """`run-now` enqueues a job with a run-now id and history entry; the planned fire stays."""
        planned = self.redis.hget(PLANNED_KEY, "TS-000001")
        result = yield self.btu("run-now", "TS-000001", "--json")
        assert_exit(self, result, 0)
        job_id = json.loads(result.output)["job_id"]
        self.assertRegex(job_id, r"^btu-TS-000001-\d+-now$")
        self.assertIn(job_id, Queue("default", connection=self.redis).job_ids)
        self.assertEqual(self.redis.hget(PLANNED_KEY, "TS-000001"), planned)
        entry = json.loads((yield self.btu("history", "TS-000001", "--json")).output)[0]
        self.assertEqual((entry["job_id"], entry["manual"], entry["status"]), (job_id, True, "queued"))
        shown = json.loads((yield self.btu("show-job", job_id, "--json")).output)
        self.assertEqual(shown["meta"]["btu_task_schedule"], "TS-000001")
        listed = json.loads((yield self.btu("list-jobs", "--json")).output)
        self.assertIn(job_id, [j["job_id"] for j in listed])
        assert_exit(self, (yield self.btu("run-now", "TS-NOPE")), 1)
        assert_exit(self, (yield self.btu("show-job", "no-such-job")), 1)

    @defer.inlineCallbacks
    def test_queue_job_now(self):
        """`queue-job-now` pushes an existing job onto its queue again."""
        job_id = json.loads((yield self.btu("run-now", "TS-000001", "--json")).output)["job_id"]
        queue = Queue("default", connection=self.redis)
        self.redis.delete(queue.key)  # the list only: the job hash stays
        result = yield self.btu("queue-job-now", job_id)
        assert_exit(self, result, 0)
        self.assertEqual(queue.job_ids, [job_id])

    @defer.inlineCallbacks
    def test_queue_task_now(self):
        """`queue-task-now` enqueues a task's job through the configured builder; a real worker runs it."""
        result = yield self.btu("queue-task-now", "BTU-OK", "--json")
        assert_exit(self, result, 0)
        job_id = json.loads(result.output)["job_id"]
        self.assertRegex(job_id, r"^btu-task-BTU-OK-\d+-now$")
        yield threads.deferToThread(run_burst_worker, self.redis_server.url, "default")
        shown = json.loads((yield self.btu("show-job", job_id, "--json")).output)
        self.assertEqual((shown["status"], shown["function"]), ("finished", "tests.support.jobfuncs.noop"))
        assert_exit(self, (yield self.btu("queue-task-now", "BTU-NOPE")), 1)

    @defer.inlineCallbacks
    def test_cancel_tells_unknown_from_known(self):
        """`cancel` of a planned schedule exits 0; of one with nothing planned, exits 1."""
        result = yield self.btu("cancel", "TS-000001")
        assert_exit(self, result, 0)
        self.assertEqual(result.output, "Successfully cancelled BTU Task Schedule TS-000001 in Python RQ.\n")
        result = yield self.btu("cancel", "TS-000001")
        assert_exit(self, result, 1)
        self.assertIn("nothing to cancel", result.output)


def verdicts(result) -> dict:
    """{check: verdict} of `btu doctor --json`."""
    return {c["check"]: c["verdict"] for c in json.loads(result.output)["checks"]}


class DoctorTests(CockpitTestCase):
    """`doctor` turns FAIL, and exits 2, for each broken precondition."""

    def variant(self, **keys) -> str:
        """A copy of the daemon's configuration with `keys` changed."""
        import tomllib

        with open(self.config, "rb") as f:
            values = tomllib.load(f)
        values.update(keys)
        return write_config(os.path.join(short_dir(self), "btu.toml"), values)

    @defer.inlineCallbacks
    def test_found_problems(self):
        """The daemon's own setup: source, Redis, zones and socket OK; the invalid row and the queue
        without worker FAIL, each with a hint; the human form says the same one line each."""
        result = yield self.btu("doctor", "--json")
        assert_exit(self, result, 2)
        self.assertEqual(verdicts(result), {"config": "OK", "source": "OK", "redis": "OK", "zones": "OK",
                                            "socket": "OK", "plannable": "FAIL", "workers": "FAIL"})
        checks = {c["check"]: c for c in json.loads(result.output)["checks"]}
        self.assertIn("TS-000003: minute field", checks["plannable"]["detail"])
        self.assertIn("start `rq worker default`", checks["workers"]["detail"])
        human = (yield self.btu("doctor")).output.splitlines()
        self.assertEqual(len(human), 7)
        self.assertTrue(human[0].startswith("OK    config: "), human[0])
        self.assertTrue(human[5].startswith("FAIL  plannable: TS-000003: minute field"), human[5])

    @defer.inlineCallbacks
    def test_each_broken_precondition(self):
        """A bad file, wrong SQL credentials, an unreachable Redis, a bad zone, a wrong socket mode
        and a stopped daemon each make their check FAIL."""
        broken = os.path.join(short_dir(self), "bad.toml")
        with open(broken, "w", encoding="utf-8") as f:
            f.write("mysql_port = 'many'\n")
        result = yield invoke("--config", broken, "doctor", "--json")
        assert_exit(self, result, 2)
        self.assertEqual(verdicts(result), {"config": "FAIL"})
        self.assertEqual(verdicts((yield invoke("--config", self.variant(mysql_user="nobody"), "doctor",
                                                "--json")))["source"], "FAIL")
        redis_down = verdicts((yield invoke("--config", self.variant(redis_url="unix:///nonexistent.sock"),
                                            "doctor", "--json")))
        # the plan cannot be seen, which is not the same as nothing planned
        self.assertEqual((redis_down["redis"], redis_down["plannable"]), ("FAIL", "WARN"))
        os.chmod(self.daemon.socket_path, 0o666)
        self.assertEqual(verdicts((yield self.btu("doctor", "--json")))["socket"], "FAIL")
        fs.set_cron_time_zone(self.sql, "Mars/Olympus_Mons")
        found = json.loads((yield self.btu("doctor", "--json")).output)["checks"]
        zones = next(c for c in found if c["check"] == "zones")
        self.assertEqual(zones["verdict"], "FAIL")
        self.assertIn("Mars/Olympus_Mons", zones["detail"])
        yield self.daemon.service.stopService()
        self.assertEqual(verdicts((yield self.btu("doctor", "--json")))["socket"], "FAIL")


class ConfigurationTests(unittest.TestCase):
    """The CLI's configuration handling, with no daemon."""

    @defer.inlineCallbacks
    def test_print_config_masks_every_secret(self):
        """`print-config` (human and --json) shows every key but no password or token."""
        path = write_config(os.path.join(short_dir(self), "btu.toml"), {
            "mysql_user": "frappe", "mysql_database": "site1", "mysql_password": "s3cret-db-pw",
            "webserver_token": "token k3y:s3cret-tok", "frappe_site": "site1.localhost",
            "redis_url": "redis://btu:s3cret-redis@127.0.0.1:6379/0"})
        for args in ([], ["--json"]):
            result = yield invoke("--config", path, "print-config", *args)
            assert_exit(self, result, 0)
            for secret in ("s3cret-db-pw", "s3cret-tok", "s3cret-redis", "k3y"):
                self.assertNotIn(secret, result.output)
            self.assertIn("mysql_user", result.output)
            self.assertIn("***", result.output)

    @defer.inlineCallbacks
    def test_unreadable_config_is_a_clear_error(self):
        """A missing configuration file exits 1 naming it; no silent fallback to defaults."""
        result = yield invoke("--config", "/nonexistent/btu.toml", "show-scheduled")
        assert_exit(self, result, 1)
        self.assertIn("/nonexistent/btu.toml does not exist", result.output)

    def test_version(self):
        """`--version` prints the package version."""
        result = CliRunner().invoke(main, ["--version"])
        self.assertEqual((result.exit_code, result.output), (0, f"btu, version {__version__}\n"))


class HealthyDoctorTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_all_ok(self):
        """With a valid row and a real rq worker listening on its queue, every check is OK: exit 0."""
        use_shared_servers(self)
        fs.insert_task(self.sql, "BTU-OK", "tests.support.jobfuncs.noop")
        fs.insert_schedule(self.sql, "TS-000001", "BTU-OK", "0 4 * * *")
        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        worker = subprocess.Popen([rq_executable(), "worker", "--url", self.redis_server.url, "default"],
                                  env=worker_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        self.addCleanup(worker.wait)
        self.addCleanup(worker.kill)
        yield wait_for(lambda: Worker.count(connection=self.redis) > 0, 30, "the rq worker to register")
        result = yield invoke("--config", daemon.config_path, "doctor")
        assert_exit(self, result, 0)
        self.assertEqual([line.split()[0] for line in result.output.splitlines()], ["OK"] * 7)
        self.assertIn("workers: default: 1", result.output)
