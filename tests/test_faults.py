# -*- test-case-name: tests.test_faults -*-
"""Exactly-once, fault-tolerant dispatch (DESIGN §8): Redis and MariaDB outages, bad rows, a daemon
that was down, start-up without a database, and a graceful stop, each against real servers.

Tests that stop or pause a server start their own private one; the others use the shared ones.
Schedules fire every second or every other second (7-field crons), so an outage of a few seconds
spans several fire times. Fires are audited from the RQ queue alone: each job's id and its
`btu_scheduled_for` meta name one (schedule, fire instant).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

import pymysql
from rq import Queue
from rq.job import Job
from twisted.enterprise import adbapi
from twisted.internet import defer, reactor, task, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from tests.support import frappe_schema as fs
from tests.support.daemon import (TwistdProcess, control_request, daemon_config, poll, short_dir,
                                  start_daemon, wait_for, write_config)
from tests.support.servers import (MariaDBServer, RedisServer, fresh_database, shared_mariadb,
                                   use_shared_redis, use_shared_servers)

NOOP = "tests.support.jobfuncs.noop"
EVERY_SECOND, EVERY_OTHER_SECOND = "* * * * * * *", "*/2 * * * * * *"
PERIODS = {"TS-000001": 1, "TS-000002": 2}  # the two firing schedules, seconds between fires
CRONS = {1: EVERY_SECOND, 2: EVERY_OTHER_SECOND}
SCHEDULE_KEY = "btu_scheduler:task_execution_times"
PLANNED_KEY = "btu_scheduler:planned"
STATUS = {"request_type": "status", "request_content": None}
PING = {"request_type": "ping", "request_content": None}
RELOAD = {"request_type": "reload", "request_content": None}
OUTAGE_START_OFFSET_SECS = 0.25  # faults start this far into a second: fires land on whole seconds
OUTAGE_SECS = 6.5    # Redis outages: longer than the daemon's 5 s Redis timeout, so it sees them fail
RECOVERY_SECS = 15   # after a server is back: txredisapi reconnects within 10 s, then one back-off
START_TIMEOUT_SECS = 15
CLEAN_SIGTERM_EXITS = (0, -15)  # twistd re-raises SIGTERM on itself (Twisted >= 20.3); older exit 0


def fire_instant(iso: str) -> int:
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())


def seconds_to_mid_second() -> float:
    """How long until the next OUTAGE_START_OFFSET_SECS past a whole second."""
    return (OUTAGE_START_OFFSET_SECS - time.time()) % 1.0 or 1.0


def hourly_cron(when: int) -> str:
    """A 7-field cron firing every hour at the minute and second of unix instant `when` (UTC)."""
    at = datetime.fromtimestamp(when, timezone.utc)
    return f"{at.second} {at.minute} * * * * *"


def add_firing_schedules(sql, task="BTU-00001") -> None:
    fs.insert_task(sql, task, NOOP)
    for schedule_id, period in PERIODS.items():
        fs.insert_schedule(sql, schedule_id, task, CRONS[period])


class FaultTestCase(unittest.TestCase):
    """Reading fires back from the RQ queue and judging them against the misfire policy."""

    timeout = 60

    def queued_jobs(self, client, queue: str = "default") -> dict[str, dict[int, float]]:
        """{schedule_id: {fire instant: unix time enqueued}} of the queue's jobs; fails on any duplicate."""
        ids = Queue(queue, connection=client).job_ids
        self.assertEqual(len(ids), len(set(ids)), f"a job is queued twice: {sorted(ids)}")
        jobs: dict[str, dict[int, float]] = {}
        for job in Job.fetch_many(ids, connection=client):
            schedule_id, when = job.meta["btu_task_schedule"], fire_instant(job.meta["btu_scheduled_for"])
            self.assertEqual(job.id, f"btu-{schedule_id}-{when}")
            enqueued = job.enqueued_at
            if enqueued.tzinfo is None:
                enqueued = enqueued.replace(tzinfo=timezone.utc)
            jobs.setdefault(schedule_id, {})[when] = enqueued.timestamp()
        return jobs

    def queued_fires(self, client, queue: str = "default") -> dict[str, list[int]]:
        """{schedule_id: sorted fire instants} of the queue's jobs; fails on any duplicate."""
        return {schedule_id: sorted(jobs) for schedule_id, jobs in self.queued_jobs(client, queue).items()}

    def has_fires(self, client, count: int, after: float = 0.0) -> bool:
        fires = self.queued_fires(client)
        return all(len([f for f in fires.get(s, []) if f > after]) >= count for s in PERIODS)

    def assertContiguous(self, fires: list[int], period: int, what: str) -> None:
        self.assertTrue(fires, f"no {what}")
        self.assertEqual(fires, list(range(fires[0], fires[-1] + period, period)),
                         f"{what} are not every fire from {fires[0]} to {fires[-1]}")

    def assertCoalesced(self, jobs: dict[int, float], period: int, down_from: float,
                        down_until: float, recovered_within: float = RECOVERY_SECS) -> None:
        """Nothing could be enqueued from `down_from` to `down_until`: every fire before, ONE
        catch-up run for all the fires that fell due until the recovery, then every fire again.

        Which missed instant the catch-up carries is the misfire policy's choice (the first or
        the latest); either way no other fire due before the recovery may be enqueued.
        """
        fires = sorted(jobs)
        self.assertTrue(all(f % period == 0 for f in fires), f"{fires} are not all fire instants")
        before = [f for f in fires if f <= down_from]
        after = [f for f in fires if f > down_from]
        self.assertGreaterEqual(len(before), 2, f"too few fires before the outage: {fires}")
        self.assertContiguous(before, period, "fires before the outage")
        first_missed = before[-1] + period
        self.assertGreater(first_missed, down_from - 1, f"fires lost before the outage: {fires}")
        self.assertLessEqual(first_missed, down_until, "the outage was shorter than one fire interval")
        self.assertTrue(after, f"nothing enqueued after the outage: {fires}")
        catch_up, recovered_at = after[0], jobs[after[0]]
        self.assertLessEqual(recovered_at, down_until + recovered_within, f"slow recovery: {fires}")
        self.assertTrue(first_missed <= catch_up <= recovered_at,
                        f"{catch_up} (enqueued at {recovered_at:.3f}) is not a missed fire: {fires}")
        resumed = after[1:]
        self.assertGreaterEqual(len(resumed), 2, f"firing did not resume: {fires}")
        self.assertGreater(resumed[0], recovered_at - 0.5,
                           f"more than one run for the fires missed until {recovered_at:.3f}: {fires}")
        self.assertLessEqual(resumed[0], recovered_at + period, f"a fire lost after the recovery: {fires}")
        self.assertContiguous(resumed, period, "fires after the recovery")

    def capture_logs(self) -> list[str]:
        """Formatted log events from now until the end of the test."""
        lines: list[str] = []

        def observe(event):
            lines.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return lines


class InProcessFaultTestCase(FaultTestCase):
    """A Frappe database with the two firing schedules; the in-process daemon and Redis vary."""

    mariadb: MariaDBServer | None = None  # None: the shared one

    def setUp(self):
        server = self.mariadb or shared_mariadb()
        self.database = fresh_database(testcase=self, server=server)
        self.sql = server.connect(self.database)
        self.addCleanup(self.sql.close)
        add_firing_schedules(self.sql)

    def at_mid_second(self) -> defer.Deferred:
        """Fires with time.time() at the next OUTAGE_START_OFFSET_SECS past a whole second."""
        return task.deferLater(reactor, seconds_to_mid_second(), time.time)


class RedisOutageTests(InProcessFaultTestCase):
    """A persistent Redis (like a bench's redis_queue) that goes away and comes back."""

    def setUp(self):
        super().setUp()
        self.redis_server = RedisServer(persistent=True)
        self.addCleanup(self.redis_server.cleanup)
        self.redis_server.start()
        self.redis = self.redis_server.client()
        self.addCleanup(self.redis.close)
        self.logs = self.capture_logs()

    @defer.inlineCallbacks
    def outage(self, down, up):
        """Run the daemon, apply `down` mid-second, check status says Redis is down, apply `up`;
        fires with (down_from, down_until, daemon)."""
        daemon = start_daemon(self, self.database, redis_url=self.redis_server.url,
                              scheduler_polling_interval=2)
        self.addCleanup(lambda: self.redis_server.paused and self.redis_server.resume())
        yield daemon.refreshed()
        yield wait_for(lambda: self.has_fires(self.redis, 2), 10, "two fires of each schedule")

        down_from = yield self.at_mid_second()
        yield threads.deferToThread(down)
        status = yield daemon.status()
        self.assertIs(status["redis"]["up"], False, status)
        # Longer than the daemon's 5 s Redis timeout, so that it does see Redis fail.
        yield task.deferLater(reactor, max(0.0, down_from + OUTAGE_SECS - time.time()), lambda: None)
        yield threads.deferToThread(up)
        down_until = time.time()
        return down_from, down_until, daemon

    @defer.inlineCallbacks
    def recovers_with_one_catch_up(self, down_from, down_until, daemon):
        yield wait_for(lambda: self.has_fires(self.redis, 3, after=down_until), RECOVERY_SECS + 5,
                       "three fires of each schedule after the outage")
        jobs = self.queued_jobs(self.redis)
        for schedule_id, period in PERIODS.items():
            self.assertCoalesced(jobs[schedule_id], period, down_from, down_until)
        status = yield daemon.status()
        self.assertIs(status["redis"]["up"], True, status)
        self.assertEqual(status["counts"].get("skipped_misfires", 0), 0, status)
        self.assertTrue(any("Redis unreachable" in line for line in self.logs), self.logs)

    @defer.inlineCallbacks
    def test_redis_stopped_then_started_enqueues_one_catch_up_per_schedule(self):
        """Redis stopped across several fires: status says down, then one catch-up per schedule, no duplicate, firing resumes."""
        down_from, down_until, daemon = yield self.outage(self.redis_server.stop,
                                                          self.redis_server.start)
        yield self.recovers_with_one_catch_up(down_from, down_until, daemon)

    @defer.inlineCallbacks
    def test_redis_paused_then_resumed_enqueues_one_catch_up_per_schedule(self):
        """Redis frozen (SIGSTOP) across several fires: status says down, then one catch-up per schedule, no duplicate, firing resumes."""
        down_from, down_until, daemon = yield self.outage(self.redis_server.pause,
                                                          self.redis_server.resume)
        yield self.recovers_with_one_catch_up(down_from, down_until, daemon)


class RedisDataLossTests(InProcessFaultTestCase):
    """A Redis without persistence restarted quickly: the daemon may never see a failed call."""

    def setUp(self):
        super().setUp()
        self.redis_server = RedisServer()
        self.addCleanup(self.redis_server.cleanup)
        self.redis_server.start()
        self.redis = self.redis_server.client()
        self.addCleanup(self.redis.close)

    @defer.inlineCallbacks
    def test_plan_lost_by_a_quick_restart_is_rebuilt_within_a_poll(self):
        """After a quick restart that empties Redis, the plan is rebuilt within one polling interval and firing resumes."""
        daemon = start_daemon(self, self.database, redis_url=self.redis_server.url,
                              scheduler_polling_interval=2)
        yield daemon.refreshed()
        yield wait_for(lambda: self.has_fires(self.redis, 1), 10, "a fire of each schedule")
        yield threads.deferToThread(self.redis_server.restart)
        restarted = time.time()
        self.assertEqual(self.redis.zcard(SCHEDULE_KEY), 0, "the restart emptied Redis")
        yield wait_for(lambda: self.has_fires(self.redis, 2, after=restarted), 10,
                       "fires of each schedule after the restart")


class DatabaseOutageTests(InProcessFaultTestCase):
    """A private MariaDB stopped under a running daemon, then started again."""

    def setUp(self):
        self.mariadb = MariaDBServer()
        self.addCleanup(self.mariadb.cleanup)
        self.mariadb.start()
        super().setUp()
        use_shared_redis(self)
        self.logs = self.capture_logs()

    @defer.inlineCallbacks
    def test_fires_continue_from_cached_rows_while_mariadb_is_down(self):
        """MariaDB stopped: every fire is still enqueued from the last rows read, the log and status say so, and a reload recovers."""
        daemon = start_daemon(self, self.database, mysql_unix_socket=self.mariadb.socket_path)
        yield daemon.refreshed()
        yield wait_for(lambda: self.has_fires(self.redis, 2), 10, "two fires of each schedule")

        stopped_at = time.time()
        yield threads.deferToThread(self.mariadb.stop)
        yield wait_for(lambda: self.has_fires(self.redis, 2, after=stopped_at + 1), 10,
                       "fires while MariaDB is down")
        status = yield daemon.status()
        self.assertIs(status["sql"]["up"], False, status)
        self.assertTrue(any("MariaDB unreachable" in line and "dispatching from the last rows read"
                            in line for line in self.logs), self.logs)

        before = status["last_refresh"]["at"]  # the daemon's clock (Redis time), not ours
        yield threads.deferToThread(self.mariadb.start)
        reply = yield daemon.query(RELOAD)
        self.assertEqual(reply, "Full refresh started.")

        @defer.inlineCallbacks
        def refreshed_since_restart():
            status = yield daemon.status()
            return (status["sql"]["up"] is True and status["last_refresh"]["at"] > before
                    and status)

        status = yield wait_for(refreshed_since_restart, RECOVERY_SECS,
                                "a full refresh after MariaDB is back")
        self.assertEqual(status["last_refresh"]["schedules"], len(PERIODS))
        recovered_at = time.time()
        yield wait_for(lambda: self.has_fires(self.redis, 1, after=recovered_at), 5,
                       "fires after the recovery")
        fires = self.queued_fires(self.redis)
        for schedule_id, period in PERIODS.items():
            self.assertContiguous(fires[schedule_id], period, f"fires of {schedule_id}")
        # adbapi itself logs "Rollback failed" tracebacks for the connection MariaDB dropped
        self.flushLoggedErrors(pymysql.err.InterfaceError, adbapi.ConnectionLost)


class BadRowTests(FaultTestCase):
    """Rows the daemon cannot plan sit beside good ones in the shared servers."""

    def setUp(self):
        use_shared_servers(self)

    def assertNeverQueued(self, schedule_ids) -> None:
        planned = {member.decode().rpartition("|")[0]
                   for member in self.redis.zrange(SCHEDULE_KEY, 0, -1)}
        for schedule_id in schedule_ids:
            self.assertNotIn(schedule_id, planned)
            self.assertEqual(self.redis.keys(f"rq:job:btu-{schedule_id}-*"), [])

    @defer.inlineCallbacks
    def test_bad_rows_are_unplannable_while_good_ones_fire(self):
        """Invalid cron, missing task, bad arguments, NULL columns: never enqueued, listed in status with the problem, good rows fire."""
        add_firing_schedules(self.sql)
        fs.insert_task(self.sql, "BTU-BADARGS", NOOP, arguments="{'a': ")
        fs.insert_task(self.sql, "BTU-NOFUNC", None)
        bad = {  # schedule id: (columns, a word the reason must contain)
            "TS-BAD-RANGE": (dict(cron_string="61 * * * * * *"), "61"),
            "TS-BAD-SYNTAX": (dict(cron_string="every day at noon"), "fields"),
            "TS-NEVER": (dict(cron_string="0 0 0 31 2 * *"), "never"),
            "TS-NO-TASK": (dict(task="BTU-MISSING"), "BTU-MISSING"),
            "TS-BAD-ARGS": (dict(task="BTU-BADARGS"), "arguments"),
            "TS-LIST-OVERRIDES": (dict(argument_overrides="[1, 2]"), "argument_overrides"),
            "TS-NULL-CRON": (dict(cron_string=None), "cron_string"),
            "TS-NULL-QUEUE": (dict(queue_name=None), "queue_name"),
            "TS-NULL-FUNCTION": (dict(task="BTU-NOFUNC"), "function_string"),
            "TS-NULL-TASK": (dict(task=None), "task is empty"),
        }
        for schedule_id, (columns, _word) in bad.items():
            columns = {"task": "BTU-00001", "cron_string": EVERY_SECOND, **columns}
            fs.insert_schedule(self.sql, schedule_id, columns.pop("task"), columns.pop("cron_string"),
                               **columns)

        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        yield wait_for(lambda: self.has_fires(self.redis, 2), 10, "two fires of each good schedule")

        status = yield daemon.status()
        self.assertEqual(set(status["unplannable"]), set(bad), status["unplannable"])
        for schedule_id, (_columns, word) in bad.items():
            self.assertIn(word, status["unplannable"][schedule_id], schedule_id)
        self.assertNeverQueued(bad)
        self.assertEqual(set(self.queued_fires(self.redis)), set(PERIODS))

    @defer.inlineCallbacks
    def test_unknown_cron_time_zone_makes_schedules_unplannable(self):
        """A cron_time_zone that is not an IANA zone: nothing is enqueued and status names the zone for each schedule."""
        add_firing_schedules(self.sql)
        fs.set_cron_time_zone(self.sql, "Mars/Olympus_Mons")

        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        yield task.deferLater(reactor, 2.5, lambda: None)  # time for two fires, had they been planned

        status = yield daemon.status()
        self.assertEqual(set(status["unplannable"]), set(PERIODS), status)
        for reason in status["unplannable"].values():
            self.assertIn("Mars/Olympus_Mons", reason)
        self.assertNeverQueued(PERIODS)
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [])


class DaemonDownTests(InProcessFaultTestCase):
    """The daemon stopped while fires fall due, then started again on the same Redis."""

    def setUp(self):
        super().setUp()
        use_shared_redis(self)
        self.logs = self.capture_logs()

    @defer.inlineCallbacks
    def test_daemon_down_across_fires_catches_up_once_per_schedule(self):
        """A daemon down across several fires runs one catch-up per schedule when it starts, then fires normally."""
        first = start_daemon(self, self.database)
        yield first.refreshed()
        yield wait_for(lambda: self.has_fires(self.redis, 2), 10, "two fires of each schedule")

        down_from = yield self.at_mid_second()
        yield first.service.stopService()
        yield task.deferLater(reactor, 3.5, lambda: None)
        down_until = time.time()
        second = start_daemon(self, self.database)
        yield second.refreshed()

        yield wait_for(lambda: self.has_fires(self.redis, 3, after=down_until), 10,
                       "three fires of each schedule after the restart")
        jobs = self.queued_jobs(self.redis)
        for schedule_id, period in PERIODS.items():
            self.assertCoalesced(jobs[schedule_id], period, down_from, down_until, recovered_within=5)

    @defer.inlineCallbacks
    def test_missed_fire_beyond_grace_is_skipped_with_a_warning(self):
        """At start-up a fire missed within misfire_grace_secs runs once; one missed beyond it is skipped with a warning naming it."""
        now = int(time.time())
        missed = {"TS-000001": now - 30, "TS-000002": now - 300}  # misfire_grace_secs is 60
        for schedule_id, when in missed.items():
            fs.update_schedule(self.sql, schedule_id, cron_string=hourly_cron(when))
            member = f"{schedule_id}|{when}"  # what a daemon stopped for minutes leaves behind
            self.redis.zadd(SCHEDULE_KEY, {member: when})
            self.redis.hset(PLANNED_KEY, schedule_id, member)

        daemon = start_daemon(self, self.database, misfire_grace_secs=60)
        yield daemon.refreshed()
        next_members = {f"{schedule_id}|{when + 3600}" for schedule_id, when in missed.items()}
        yield wait_for(lambda: {m.decode() for m in self.redis.hvals(PLANNED_KEY)} == next_members,
                       10, "both schedules planned an hour after their missed fire")

        self.assertEqual(self.queued_fires(self.redis), {"TS-000001": [missed["TS-000001"]]})
        skipped_at = datetime.fromtimestamp(missed["TS-000002"], timezone.utc)
        skipped_at = skipped_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.assertTrue(any("TS-000002" in line and skipped_at in line and "misfire_grace_secs" in line
                            for line in self.logs), self.logs)
        status = yield daemon.status()
        self.assertEqual(status["counts"].get("skipped_misfires"), 1, status)


class TwistdFaultTestCase(FaultTestCase):
    """`twistd -n btu` subprocesses with a config in a short private directory."""

    def twistd(self, config_path: str) -> TwistdProcess:
        return TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config", config_path],
                             cwd=self.dir)

    def answers_ping(self, daemon: TwistdProcess) -> None:
        def listening():
            if daemon.process.poll() is not None:
                self.fail(f"twistd exited early; {daemon.describe()}")
            try:
                return control_request(self.socket_path, PING, timeout=1) == "pong"
            except OSError:
                return False

        poll(listening, START_TIMEOUT_SECS, "the control socket to answer ping")

    def status(self) -> dict:
        return json.loads(control_request(self.socket_path, STATUS))

    def stops_cleanly(self, daemon: TwistdProcess) -> None:
        """SIGTERM: a clean exit status, no traceback, and the socket file removed."""
        self.assertIn(daemon.terminate(), CLEAN_SIGTERM_EXITS, daemon.describe())
        self.assertIn("Server Shut Down.", daemon.output())
        self.assertNotIn("Traceback", daemon.output())
        self.assertFalse(os.path.exists(self.socket_path), daemon.describe())


class StartupWithoutDatabaseTests(TwistdFaultTestCase):
    """`startup_without_database_connections` decides what a MariaDB down at start-up means."""

    def setUp(self):
        self.mariadb = MariaDBServer()  # not started yet: the database is down
        self.addCleanup(self.mariadb.cleanup)
        use_shared_redis(self)
        self.dir = short_dir(self)
        self.socket_path = os.path.join(self.dir, "btu.sock")
        self.database = f"btu_late_{os.getpid()}"

    def config(self, allowed: bool) -> str:
        keys = daemon_config(self.socket_path, startup_without_database_connections=allowed,
                             mysql_unix_socket=self.mariadb.socket_path, mysql_user="root",
                             mysql_database=self.database)
        return write_config(os.path.join(self.dir, "btu.toml"), keys)

    def test_database_down_without_permission_exits_1_naming_it(self):
        """startup_without_database_connections = false and MariaDB down: twistd exits 1 with a message naming the database."""
        daemon = self.twistd(self.config(allowed=False))

        self.assertEqual(daemon.wait(START_TIMEOUT_SECS), 1, daemon.describe())
        output = daemon.output()
        self.assertIn(f"cannot connect to MariaDB {self.database!r}", output)
        self.assertIn("startup_without_database_connections", output)
        self.assertNotIn("Traceback", output)
        self.assertFalse(os.path.exists(self.socket_path))

    def test_database_down_with_permission_starts_and_plans_once_it_is_up(self):
        """startup_without_database_connections = true and MariaDB down: twistd answers ping, reports SQL down, and plans once MariaDB is up."""
        daemon = self.twistd(self.config(allowed=True))
        self.answers_ping(daemon)
        status = poll(lambda: (s := self.status())["sql"]["up"] is False and s, 10,
                      "status to say SQL is down")
        self.assertIsNone(status["last_refresh"], status)

        self.mariadb.start()
        self.mariadb.create_database(self.database)
        sql = self.mariadb.connect(self.database)
        self.addCleanup(sql.close)
        fs.create_schema(sql)
        fs.insert_task(sql, "BTU-00001", NOOP)
        fs.insert_schedule(sql, "TS-000001", "BTU-00001", "0 4 * * *")

        poll(lambda: self.redis.hget(PLANNED_KEY, "TS-000001"), RECOVERY_SECS,
             "TS-000001 to be planned")
        status = self.status()
        self.assertIs(status["sql"]["up"], True, status)
        self.assertEqual(status["planned_schedules"], 1, status)
        self.stops_cleanly(daemon)


class GracefulStopTests(TwistdFaultTestCase):
    """SIGTERM to a daemon whose schedules fire every second, then a restart."""

    def setUp(self):
        use_shared_redis(self)
        self.database = fresh_database(testcase=self)
        sql = shared_mariadb().connect(self.database)
        add_firing_schedules(sql)
        sql.close()
        self.dir = short_dir(self)
        self.socket_path = os.path.join(self.dir, "btu.sock")
        self.config_path = write_config(os.path.join(self.dir, "btu.toml"),
                                        daemon_config(self.socket_path, self.database))

    def test_sigterm_exits_cleanly_and_a_restart_loses_and_repeats_nothing(self):
        """SIGTERM mid-firing: clean exit, socket removed; the restarted daemon repeats no fire and loses none but those coalesced."""
        first = self.twistd(self.config_path)
        self.answers_ping(first)
        poll(lambda: self.has_fires(self.redis, 3), 10, "three fires of each schedule")

        time.sleep(seconds_to_mid_second())
        down_from = time.time()
        self.stops_cleanly(first)
        time.sleep(max(0.0, down_from + 2.5 - time.time()))  # down across fires of both schedules
        down_until = time.time()
        second = self.twistd(self.config_path)
        self.answers_ping(second)
        poll(lambda: self.has_fires(self.redis, 3, after=down_until), 15,
             "three fires of each schedule after the restart")
        self.stops_cleanly(second)

        jobs = self.queued_jobs(self.redis)
        for schedule_id, period in PERIODS.items():
            self.assertCoalesced(jobs[schedule_id], period, down_from, down_until, recovered_within=10)
