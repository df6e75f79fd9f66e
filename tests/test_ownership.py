"""The ownership guard, and `twistd -n btu --bench PATH` on a two-site bench sharing one Redis."""

from __future__ import annotations

import json
import os

from rq.job import Job
from twisted.internet import defer, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest

from btu_twisted import ownership
from btu_twisted.config import parse
from btu_twisted.redis_connections import settings_for_url
from tests.support.bench_tree import make_bench
from tests.support.daemon import TwistdProcess, control_request, poll, schedule_members, short_dir, twistd_env
from tests.support.frappe_schema import insert_schedule, insert_task
from tests.support.servers import RedisServer, fresh_database, shared_mariadb, use_shared_redis
from tests.test_end_to_end import CLEAN_SIGTERM_EXITS

START_TIMEOUT_SECS = 30.0
EXIT_TIMEOUT_SECS = 20.0
EVERY_SECOND = "* * * * * * *"  # 7 fields: sec min hour dom mon dow year
BENCH_ID = "acme-bench"


def config_for(database: str, redis_url: str, site: str | None = "one.localhost"):
    return parse(f'mysql_user = "root"\nmysql_database = "{database}"\nredis_url = "{redis_url}"\n'
                 + (f'frappe_site = "{site}"\n' if site else ""))[0]


class StartCheckTests(unittest.TestCase):
    """The blocking check makeService runs before twistd forks."""

    def setUp(self):
        use_shared_redis(self)

    def test_first_daemon_claims(self):
        """An absent key is claimed with the database's identity."""
        self.assertTrue(ownership.check_at_start(settings_for_url(self.redis_server.url), "database:a", "one.localhost"))
        self.assertEqual(self.redis.get(ownership.OWNER_KEY), b"database:a")
        self.assertTrue(ownership.check_at_start(settings_for_url(self.redis_server.url), "database:a", "one.localhost"))

    def test_other_database_refused(self):
        """A layout owned by another database is refused with a message naming both and the way out."""
        self.redis.set(ownership.OWNER_KEY, "database:a")
        with self.assertRaises(ownership.OwnershipError) as caught:
            ownership.check_at_start(settings_for_url(self.redis_server.url), "database:b", "two.localhost")
        message = str(caught.exception)
        for part in ("belong to database:a", "reads database:b (site two.localhost)", "its own Redis",
                     "redis-cli DEL btu_scheduler:owner"):
            self.assertIn(part, message)
        self.assertEqual(self.redis.get(ownership.OWNER_KEY), b"database:a")

    def test_one_site_in_both_layouts_refused(self):
        """A site served by a single-site daemon is refused by a bench daemon, and the reverse,
        before either claims anything (both would fire its schedules)."""
        settings = settings_for_url(self.redis_server.url)
        site_key = "btu_scheduler:site:one.localhost:owner"
        self.assertTrue(ownership.check_at_start(settings, "database:a", "one.localhost"))
        with self.assertRaises(ownership.OwnershipError) as caught:
            ownership.check_at_start(settings, "database:a", "one.localhost", site_key)
        self.assertIn("served by a single-site daemon", str(caught.exception))
        self.assertIn("redis-cli DEL btu_scheduler:owner", str(caught.exception))
        self.assertIsNone(self.redis.get(site_key))
        self.redis.delete(ownership.OWNER_KEY)
        self.assertTrue(ownership.check_at_start(settings, "database:a", "one.localhost", site_key))
        with self.assertRaises(ownership.OwnershipError) as caught:
            ownership.check_at_start(settings, "database:a", "one.localhost")
        self.assertIn("served by a bench daemon (--bench)", str(caught.exception))
        self.assertIsNone(self.redis.get(ownership.OWNER_KEY))
        self.assertTrue(ownership.check_at_start(settings, "database:b", "two.localhost"))

    def test_unreachable_redis(self):
        """An unreachable Redis is not a refusal: the guard's loop checks later."""
        missing = f"unix://{os.path.join(short_dir(self), 'none.sock')}?db=0"
        self.assertFalse(ownership.check_at_start(settings_for_url(missing), "database:a", None))


class GuardLoopTests(unittest.SynchronousTestCase):
    """The guard's periodic check, driven by a Clock."""

    def guard(self, owner: str, checked: bool = True):
        self.clock = task.Clock()
        self.calls = []
        self.stops = []

        def run_script(script, keys, args):
            self.calls.append((keys, args))
            return defer.succeed(owner) if owner else defer.fail(ConnectionError("down"))

        config = config_for("a", "redis://127.0.0.1:1/0")
        guard = ownership.OwnershipGuard(self.clock, run_script, config, lambda: self.stops.append(1), checked)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        guard.startService()
        self.addCleanup(guard.stopService)
        return guard

    def test_our_own_key_keeps_running(self):
        """Finding its own identity, the guard does nothing, every polling interval."""
        self.guard("database:a")
        self.assertEqual(self.calls, [])  # checked at start-up already
        self.clock.advance(60)
        self.clock.advance(60)
        self.assertEqual(self.calls, [(["btu_scheduler:owner"], ["database:a"])] * 2)
        self.assertEqual(self.stops, [])

    def test_taken_over_stops_the_daemon(self):
        """Another database's identity (Redis lost the key, another daemon claimed it) stops this one."""
        self.guard("database:b")
        self.clock.advance(60)
        self.assertEqual(self.stops, [1])
        critical = [e for e in self.events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertIn("belong to database:b", critical[0]["problem"])

    def test_unchecked_at_start_checks_at_once(self):
        """When Redis did not answer at start-up, the first check is at once, and an error is survived."""
        self.guard(None, checked=False)
        self.assertEqual(len(self.calls), 1)
        self.clock.advance(60)
        self.assertEqual((len(self.calls), self.stops), (2, []))


class TwoSitesOneRedisTests(unittest.TestCase):
    """A bench with two sites, their databases on the private MariaDB, one private Redis."""

    def setUp(self):
        self.mariadb = shared_mariadb()
        self.redis_server = RedisServer(short_dir(self))
        self.redis_server.start()
        self.addCleanup(self.redis_server.cleanup)
        self.redis = self.redis_server.client()
        self.addCleanup(self.redis.close)
        self.databases = {}
        sites = {}
        for site in ("one.localhost", "two.localhost"):
            database = fresh_database("btu_bench", testcase=self)
            self.databases[site] = database
            with self.mariadb.connect(database) as conn:
                insert_task(conn, "BTU-00001", "tests.support.jobfuncs.noop", desc_short=f"task of {site}")
                insert_schedule(conn, "TS-000001", "BTU-00001", EVERY_SECOND)  # the same ID on both sites
            sites[site] = {"db_name": database, "db_socket": self.mariadb.socket_path}
        # Site one as Frappe writes it: its database user is the database name, with a password.
        password = "site-one-db-pa55"
        self.create_user(self.databases["one.localhost"], password)
        sites["one.localhost"]["db_password"] = password
        sites["two.localhost"]["db_user"] = "root"
        self.bench = make_bench(os.path.join(short_dir(self), "frappe-bench"),
                                {"redis_queue": self.redis_server.url, "bench_id": BENCH_ID},
                                sites, current="one.localhost")

    def create_user(self, name: str, password: str) -> None:
        with self.mariadb.connect() as conn, conn.cursor() as cur:
            cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (name, password))
            cur.execute(f"GRANT ALL ON `{name}`.* TO %s@'localhost'", (name,))
        self.addCleanup(self.drop_user, name)

    def drop_user(self, name: str) -> None:
        with self.mariadb.connect() as conn, conn.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'localhost'", (name,))

    def twistd(self, *args: str, mode: tuple[str, ...] = ("-n", "--pidfile=", "--logfile=-")) -> TwistdProcess:
        directory = short_dir(self)
        self.socket_path = os.path.join(directory, "btu.sock")
        return TwistdProcess(self, [*mode, "btu", "--bench", self.bench, "--socket", self.socket_path, *args],
                             env=twistd_env(), cwd=directory)

    def queued(self) -> int:
        return self.redis.llen(f"rq:queue:{BENCH_ID}:default")

    def test_one_site_of_the_bench_plans_and_dispatches(self):
        """`twistd -n btu --bench PATH --site NAME` serves that site, in the single-site layout, from
        the bench's files alone."""
        daemon = self.twistd("--site", "one.localhost")
        poll(lambda: self.alive(daemon) and self.queued() >= 2, START_TIMEOUT_SECS,
             f"two jobs in rq:queue:{BENCH_ID}:default")
        self.assertEqual([member.split("|")[0] for member in schedule_members(self.redis)], ["TS-000001"])
        self.assertEqual(self.redis.get(ownership.OWNER_KEY).decode(),
                         f"database:{self.databases['one.localhost']}")
        status = json.loads(control_request(self.socket_path, {"request_type": "status", "request_content": None}))
        self.assertEqual(status["settings_from"]["mysql_database"], "bench sites/one.localhost/site_config.json")
        self.assertEqual(status["settings_from"]["socket_path"], "command line")
        self.assertIn(daemon.terminate(), CLEAN_SIGTERM_EXITS, daemon.describe())
        output = daemon.output()
        for origin in ("frappe_site from --site / frappe_sites",
                       "mysql_password from bench sites/one.localhost/site_config.json",
                       "queue_name_template from bench apps/frappe/frappe/__init__.py (Frappe 15.51.1)",
                       "redis_url from bench sites/common_site_config.json"):
            self.assertIn(origin, output)
        self.assertNotIn("site-one-db-pa55", output)
        self.assertNotIn("Traceback", output)

    def test_second_site_refused_first_untouched(self):
        """A daemon for the other site on the same Redis exits 1 naming both databases; the first
        daemon's plan is untouched and it keeps dispatching."""
        first = self.twistd("--site", "one.localhost")
        poll(lambda: self.alive(first) and self.queued() >= 1, START_TIMEOUT_SECS, "the first daemon's jobs")
        planned = self.redis.hgetall("btu_scheduler:planned")
        pidfile = os.path.join(short_dir(self), "twistd.pid")
        for mode in (("-n", "--pidfile=", "--logfile=-"),
                     (f"--pidfile={pidfile}", f"--logfile={os.path.join(os.path.dirname(pidfile), 'log')}")):
            second = self.twistd("--site", "two.localhost", mode=mode)
            self.assertEqual(second.wait(EXIT_TIMEOUT_SECS), 1, second.describe())
            lines = second.output().strip().splitlines()
            self.assertEqual(len(lines), 1, second.describe())
            self.assertIn(f"belong to database:{self.databases['one.localhost']}", lines[0])
            self.assertIn(f"reads database:{self.databases['two.localhost']} (site two.localhost)", lines[0])
            self.assertFalse(os.path.exists(pidfile), second.describe())
        self.assertEqual(set(self.redis.hgetall("btu_scheduler:planned")), set(planned))
        before = self.queued()
        poll(lambda: self.alive(first) and self.queued() >= before + 2, START_TIMEOUT_SECS,
             "the first daemon to keep dispatching")
        sites = {Job.fetch(job_id.decode(), connection=self.redis).kwargs["site"]
                 for job_id in self.redis.lrange(f"rq:queue:{BENCH_ID}:default", 0, -1)}
        self.assertEqual(sites, {"one.localhost"})
        self.assertIn(first.terminate(), CLEAN_SIGTERM_EXITS, first.describe())
        self.assertNotIn("Traceback", first.output())

    def alive(self, daemon: TwistdProcess) -> bool:
        if daemon.process.poll() is not None:
            self.fail(f"twistd exited early; {daemon.describe()}")
        return True


