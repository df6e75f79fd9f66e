# -*- test-case-name: tests.test_sites -*-
"""Many sites in one daemon (issue 9, README "Several sites"): `twistd -n btu --bench PATH` on a
bench whose sites repeat schedule IDs serves every site with the BTU tables, each under its own
Redis keys, job ids and control socket; SIGKILLs lose or double no site's fires; requests reach the
right site; sites without tables are skipped and sites added or removed are followed.

Real daemons (twistd subprocesses) on the private MariaDB and a private Redis; the expected layout
is spelled out in tests/support/sites.py. bench/sites_soak.py runs the chaos for minutes.
Set BTU_CHAOS_SEED to replay a chaos run's kill moments.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time

from rq import Queue
from rq.job import Job
from twisted.python import log
from twisted.trial import unittest

from btu_twisted.builders import iso_utc
from tests.support import frappe_schema
from tests.support.bench_tree import V13_INIT, write_json
from tests.support.btu_rpc_client import btu_rpc_request
from tests.support.daemon import (TwistdProcess, btu_app_request, control_request, poll,
                                  schedule_members, short_dir, twistd_env)
from tests.support.servers import fresh_database, shared_mariadb, use_shared_redis
from tests.support.sites import (SITE_ONE, SITE_PREFIX, SITE_TWO, answers_ping, bench_queue,
                                 SiteSchedules, build_bench, free_tcp_port, members, planned_ids,
                                 read_sites_enqueued, run_sites_chaos, site_config, site_job_id,
                                 site_key, site_socket, tcp_request)
from tests.test_end_to_end import CLEAN_SIGTERM_EXITS

START_TIMEOUT_SECS = 30.0
EVERY_SECOND = "* * * * * * *"   # 7 fields: sec min hour dom mon dow year
NEW_YEAR = "0 0 0 1 1 * *"       # planned, never due during a test
STATUS = {"request_type": "status", "request_content": None}
CHAOS_SECS = 25
CHAOS_SCHEDULES = 8              # per site, TS-000001.. on each
CHAOS_MIN_KILLS = 3
REFRESH_SECS = 2                 # full_refresh_internal_secs of the test that follows the sites


class SitesCase(unittest.TestCase):
    """A private Redis (the shared one, flushed), site databases on the private MariaDB, a bench."""

    def setUp(self):
        use_shared_redis(self)
        self.mariadb = shared_mariadb()
        self.directory = short_dir(self)
        self.socket_path = os.path.join(self.directory, "btu.sock")

    def database(self, schedules: dict[str, str] = (), generation: str = "minimal") -> str:
        """A fresh site database with the BTU tables and one task; `schedules` {id: cron}."""
        database = fresh_database("btu_sites", testcase=self)
        with self.mariadb.connect(database) as sql:
            frappe_schema.upgrade_schema(sql, generation)
            frappe_schema.create_task_log_table(sql)
            frappe_schema.insert_task(sql, "BTU-00001", "tests.support.jobfuncs.noop",
                                      desc_short=f"task of {database}")
            for schedule_id, expression in dict(schedules).items():
                frappe_schema.insert_schedule(sql, schedule_id, "BTU-00001", expression)
        return database

    def bench(self, databases: dict[str, str], **kwargs) -> str:
        return build_bench(os.path.join(self.directory, "frappe-bench"), self.mariadb,
                           self.redis_server.url, databases, **kwargs)

    def twistd(self, bench: str, *args: str, env: dict | None = None) -> TwistdProcess:
        return TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--bench", bench,
                                    "--socket", self.socket_path, *args],
                             env=twistd_env(**(env or {})))  # its own directory: its own output file

    def socket_of(self, site: str) -> str:
        return site_socket(self.socket_path, site, SITE_ONE)

    def wait_answering(self, daemon: TwistdProcess, *sites: str) -> None:
        for site in sites:
            poll(lambda: self.alive(daemon) and answers_ping(self.socket_of(site)), START_TIMEOUT_SECS,
                 f"{site}'s socket {self.socket_of(site)} to answer ping; {daemon.describe()}")

    def wait_planned(self, daemon: TwistdProcess, site: str, schedule_id: str) -> None:
        poll(lambda: self.alive(daemon) and schedule_id in planned_ids(self.redis, site),
             START_TIMEOUT_SECS, f"{schedule_id} planned on {site}; {daemon.describe()}")

    def alive(self, daemon: TwistdProcess) -> bool:
        if daemon.process.poll() is not None:
            self.fail(f"twistd exited early; {daemon.describe()}")
        return True

    def stop(self, daemon: TwistdProcess) -> str:
        """SIGTERM; the daemon's output, which must hold no traceback."""
        self.assertIn(daemon.terminate(), CLEAN_SIGTERM_EXITS, daemon.describe())
        output = daemon.output()
        self.assertNotIn("Traceback", output)
        return output


class SitesChaosTests(SitesCase):
    """One daemon for a two-site bench, SIGKILLed at random moments and restarted."""

    timeout = 120

    def test_every_fire_of_both_sites_once_on_its_own_site_and_queue(self):
        """Eight schedules with the same IDs on both sites (different tasks, queues and 1-3 s crons; site one BTU <= 15.1.0, site two 15.1.1+): over 25 s of SIGKILLs every fire of each site is enqueued at most once, on its own site, queue and job id, and the only missing ones are those the misfire policy coalesces."""
        seed = int(os.environ.get("BTU_CHAOS_SEED") or time.time_ns() % 2**32)
        databases = {SITE_ONE: fresh_database("btu_sites", testcase=self),
                     SITE_TWO: fresh_database("btu_sites", testcase=self)}
        with self.mariadb.connect(databases[SITE_TWO]) as sql:
            frappe_schema.upgrade_schema(sql, "15.1.1")   # the `btu` builder for site two
            frappe_schema.create_task_log_table(sql)

        run = run_sites_chaos(self.directory, self.redis, self.redis_server.url, self.mariadb,
                              databases, CHAOS_SCHEDULES, CHAOS_SECS, random.Random(seed),
                              CHAOS_MIN_KILLS)

        message = f"BTU_CHAOS_SEED={seed}\n{run.details()}"
        log.msg(f"sites chaos seed {seed}: " + "; ".join(
            f"{site}: {report.summary()}" for site, report in run.reports.items()))
        self.assertGreaterEqual(min(r.kills for r in run.reports.values()), CHAOS_MIN_KILLS, message)
        self.assertEqual(run.anomalies, [], message)
        self.assertEqual(run.daemon.tracebacks(), [], message)
        for site, report in run.reports.items():
            self.assertEqual((site, report.duplicates, report.losses, report.unexpected,
                              report.violations, report.anomalies), (site, [], [], [], [], []), message)
            self.assertEqual(report.enqueued + len(report.coalesced), report.expected, message)
            self.assertGreater(report.enqueued, CHAOS_SCHEDULES * CHAOS_SECS / 3, message)


class SiteRoutingTests(SitesCase):
    """Create and cancel through a site's socket reach that site; through Redis RPC, every site,
    each deciding from its own row."""

    def test_socket_and_rpc_requests_reach_the_right_site(self):
        """Cancel on one's socket drops only one's TS-000001; an RPC cancel after one's row is disabled drops one's member and keeps two's; an RPC create sent before two inserts TS-000002 (BTU sends it from before_save) plans it on two only; status per socket names its site and its own zone, over TCP every site."""
        databases = {SITE_ONE: self.database({"TS-000001": NEW_YEAR}),
                     SITE_TWO: self.database({"TS-000001": NEW_YEAR})}
        with self.mariadb.connect(databases[SITE_TWO]) as sql:  # each site plans in its own zone
            frappe_schema.set_cron_time_zone(sql, "Asia/Kolkata")
        port = free_tcp_port()
        daemon = self.twistd(self.bench(databases), env={"BTU_SCHEDULER_TCP_SOCKET_PORT": str(port)})
        self.wait_answering(daemon, SITE_ONE, SITE_TWO)
        for site, zone in ((SITE_ONE, "UTC"), (SITE_TWO, "Asia/Kolkata")):
            self.wait_planned(daemon, site, "TS-000001")
            status = json.loads(control_request(self.socket_of(site), STATUS))
            self.assertEqual((status["site"], [z["time_zone"] for z in status["zones"]]), (site, [zone]))

        reply = btu_app_request(self.socket_of(SITE_ONE), cancel("TS-000001"))
        self.assertEqual(reply, "Successfully cancelled BTU Task Schedule TS-000001 in Python RQ.")
        self.assertEqual((planned_ids(self.redis, SITE_ONE), planned_ids(self.redis, SITE_TWO)),
                         (set(), {"TS-000001"}))

        reply = btu_app_request(self.socket_of(SITE_ONE), create("TS-000001"))
        self.assertTrue(reply.startswith("BTU Scheduler now re-processing Task Schedule TS-000001 in "
                                         "Python RQ."), reply)
        self.wait_planned(daemon, SITE_ONE, "TS-000001")

        with self.mariadb.connect(databases[SITE_ONE]) as sql:
            frappe_schema.update_schedule(sql, "TS-000001", enabled=0)
        self.assertEqual(btu_rpc_request(self.redis, **cancel("TS-000001"))["status"], "ok")
        poll(lambda: self.alive(daemon) and not planned_ids(self.redis, SITE_ONE), START_TIMEOUT_SECS,
             f"the RPC cancel to drop {SITE_ONE}'s TS-000001")
        self.assertEqual(planned_ids(self.redis, SITE_TWO), {"TS-000001"})

        self.assertEqual(btu_rpc_request(self.redis, **create("TS-000002"))["status"], "ok")
        with self.mariadb.connect(databases[SITE_TWO]) as sql:
            frappe_schema.insert_schedule(sql, "TS-000002", "BTU-00001", NEW_YEAR)
        self.wait_planned(daemon, SITE_TWO, "TS-000002")
        self.assertEqual(planned_ids(self.redis, SITE_ONE), set())

        report = json.loads(tcp_request(port, STATUS))
        self.assertEqual(sorted(report["sites"]), [SITE_ONE, SITE_TWO])
        self.stop(daemon)


class FollowedSitesTests(SitesCase):
    """The bench's sites/ directory is read again at every full refresh."""

    def test_site_without_tables_skipped_added_site_served_removed_site_stopped(self):
        """A site whose database has no BTU tables is skipped with one log line naming it (through several refreshes); once it has them, and a site added while running, are served after the next full refresh; a removed site's socket stops answering."""
        bare = fresh_database("btu_sites", testcase=self)
        with self.mariadb.connect(bare) as sql, sql.cursor() as cur:
            cur.execute("DROP TABLE `tabBTU Task Schedule`, `tabBTU Task`, `tabSingles`")
        databases = {SITE_ONE: self.database({"TS-000001": NEW_YEAR}),
                     SITE_TWO: self.database({"TS-000001": NEW_YEAR}), "bare.localhost": bare}
        bench = self.bench(databases)
        daemon = self.twistd(bench, env={"BTU_SCHEDULER_FULL_REFRESH_INTERNAL_SECS": str(REFRESH_SECS)})
        self.wait_answering(daemon, SITE_ONE, SITE_TWO)
        self.wait_planned(daemon, SITE_ONE, "TS-000001")
        self.wait_refreshes(daemon, SITE_ONE, 2)
        naming = [line for line in daemon.output().splitlines() if "bare.localhost" in line]
        self.assertEqual(len(naming), 1, daemon.describe())
        self.assertFalse(self.redis.exists(site_key("bare.localhost", "task_execution_times")))

        with self.mariadb.connect(bare) as sql:
            frappe_schema.create_schema(sql)
            frappe_schema.insert_task(sql, "BTU-00001", "tests.support.jobfuncs.noop")
            frappe_schema.insert_schedule(sql, "TS-000001", "BTU-00001", NEW_YEAR)
        added = self.database({"TS-000001": NEW_YEAR})
        os.makedirs(os.path.join(bench, "sites", "three.localhost"))
        write_json(os.path.join(bench, "sites", "three.localhost", "site_config.json"),
                   site_config(self.mariadb, added))
        self.wait_planned(daemon, "bare.localhost", "TS-000001")
        self.wait_planned(daemon, "three.localhost", "TS-000001")
        self.wait_answering(daemon, "bare.localhost", "three.localhost")

        shutil.rmtree(os.path.join(bench, "sites", SITE_TWO))
        poll(lambda: self.alive(daemon) and not answers_ping(self.socket_of(SITE_TWO)),
             START_TIMEOUT_SECS, f"the removed {SITE_TWO} to stop answering; {daemon.describe()}")
        self.assertTrue(answers_ping(self.socket_of(SITE_ONE)))
        self.stop(daemon)

    def wait_refreshes(self, daemon: TwistdProcess, site: str, count: int) -> None:
        """Wait until the site's `refreshed` mark has moved `count` times (full refreshes done)."""
        seen = []

        def moved():
            mark = self.redis.get(site_key(site, "refreshed"))
            if mark is not None and mark not in seen:
                seen.append(mark)
            return self.alive(daemon) and len(seen) > count

        poll(moved, START_TIMEOUT_SECS, f"{count} more full refreshes of {site}; {daemon.describe()}")


class LayoutTests(SitesCase):
    """Which Redis keys and job ids each mode writes."""

    def test_one_site_bench_keeps_the_rust_layout(self):
        """A one-site bench, no --site: single-site mode, `btu_scheduler:task_execution_times` and `btu-<id>-<unix>` job ids as before, nothing under `btu_scheduler:site:`."""
        database = self.database({"TS-000001": EVERY_SECOND})
        daemon = self.twistd(self.bench({SITE_ONE: database}))
        self.assertSingleSiteLayout(daemon, database)

    def test_one_named_site_of_two_keeps_the_rust_layout(self):
        """`--site one.localhost` on a two-site bench: single-site mode, the Rust layout."""
        database = self.database({"TS-000001": EVERY_SECOND})
        bench = self.bench({SITE_ONE: database, SITE_TWO: self.database({"TS-000001": EVERY_SECOND})})
        daemon = self.twistd(bench, "--site", SITE_ONE)
        self.assertSingleSiteLayout(daemon, database)

    def assertSingleSiteLayout(self, daemon: TwistdProcess, database: str) -> None:
        queue = f"rq:queue:{bench_queue('default')}"
        poll(lambda: self.alive(daemon) and self.redis.llen(queue) >= 1, START_TIMEOUT_SECS,
             f"a job in {queue}; {daemon.describe()}")
        self.assertEqual([m.split("|")[0] for m in schedule_members(self.redis)], ["TS-000001"])
        job_id = self.redis.lindex(queue, 0).decode()
        self.assertRegex(job_id, r"^btu-TS-000001-\d{10}$")
        self.assertEqual(Job.fetch(job_id, connection=self.redis).kwargs["site"], SITE_ONE)
        self.assertEqual(self.redis.get("btu_scheduler:owner").decode(), f"database:{database}")
        self.assertEqual(list(self.redis.scan_iter(match=SITE_PREFIX + "*")), [])
        self.stop(daemon)

    def test_two_sites_keep_every_key_under_their_site(self):
        """`--site one --site two` of a three-site v13 bench (bare queue names), TS-000001 on each, sockets `{site}.sock`: every daemon key is under `btu_scheduler:site:<site>:` of a named site (schedule set, planned, last_fire, refreshed, history, owner = the site's database), none in the single-site layout, and each job's id, meta and site are its site's."""
        databases = {SITE_ONE: self.database({"TS-000001": EVERY_SECOND}),
                     SITE_TWO: self.database({"TS-000001": EVERY_SECOND})}
        bench = self.bench({**databases, "three.localhost": self.database({"TS-000001": EVERY_SECOND})},
                           frappe_init=V13_INIT)
        self.socket_path = os.path.join(self.directory, "{site}.sock")
        daemon = self.twistd(bench, "--site", SITE_ONE, "--site", SITE_TWO)
        self.wait_answering(daemon, SITE_ONE, SITE_TWO)

        def jobs_of_both_sites():
            metas = [Job.fetch(i.decode(), connection=self.redis).meta
                     for i in self.redis.lrange("rq:queue:default", 0, -1)]
            return self.alive(daemon) and {m.get("btu_site") for m in metas} >= {SITE_ONE, SITE_TWO}

        poll(jobs_of_both_sites, START_TIMEOUT_SECS, f"jobs of both sites in rq:queue:default; "
                                                     f"{daemon.describe()}")
        output = self.stop(daemon)
        for site, database in databases.items():
            (member, score), = members(self.redis, site).items()
            schedule_id, _, unix = member.rpartition("|")
            self.assertEqual((schedule_id, float(unix)), ("TS-000001", score))
            self.assertIn(b"TS-000001", self.redis.hkeys(site_key(site, "planned")))
            for name in ("last_fire:TS-000001", "refreshed", "history:TS-000001"):
                self.assertTrue(self.redis.exists(site_key(site, name)), f"{site_key(site, name)}\n{output}")
            self.assertEqual(self.redis.get(site_key(site, "owner")).decode(), f"database:{database}")
        daemon_keys = {k.decode() for k in self.redis.scan_iter(match="btu_scheduler:*")}
        self.assertEqual({k for k in daemon_keys if not k.startswith((site_key(SITE_ONE, ""),
                                                                      site_key(SITE_TWO, "")))}, set())
        for job_id in {i.decode() for i in self.redis.lrange("rq:queue:default", 0, -1)}:
            job = Job.fetch(job_id, connection=self.redis)
            site, when = job.meta["btu_site"], int(job_id.rpartition("-")[2])
            self.assertEqual((job_id, job.meta["btu_task_schedule"], job.kwargs["site"]),
                             (site_job_id(site, "TS-000001", when), "TS-000001", site))


class StartupTests(SitesCase):
    """What stops a bench daemon before it runs: one line, exit 1, nothing left behind."""

    def test_a_site_socket_that_cannot_listen(self):
        """A `{site}` socket path in a directory that does not exist names that site's socket."""
        bench = self.bench({SITE_ONE: self.database(), SITE_TWO: self.database()})
        missing = os.path.join(self.directory, "gone", "{site}.sock")
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--bench", bench,
                                      "--socket", missing], env=twistd_env())
        self.assertEqual(daemon.wait(20.0), 1, daemon.describe())
        lines = daemon.output().strip().splitlines()
        self.assertEqual(len(lines), 1, daemon.describe())
        self.assertIn(os.path.join(self.directory, "gone"), lines[0])


class MixedModesTests(SitesCase):
    """A site is never served in both layouts: a single-site daemon and its bench's daemon on one
    Redis would both fire its schedules, under different job ids."""

    def setUp(self):
        super().setUp()
        self.bench_path = self.bench({SITE_ONE: self.database({"TS-000001": EVERY_SECOND}),
                                      SITE_TWO: self.database({"TS-000001": EVERY_SECOND})})

    def test_bench_daemon_started_beside_a_single_site_daemon(self):
        """A `--site one.localhost` daemon (the one before the upgrade, say) still running when the bench's daemon starts: the bench daemon says it does not serve one.localhost, naming `btu_scheduler:owner`, and no fire of one.localhost is enqueued twice."""
        single = self.twistd(self.bench_path, "--site", SITE_ONE)
        poll(lambda: self.alive(single) and schedule_members(self.redis), START_TIMEOUT_SECS,
             f"the single-site daemon's plan; {single.describe()}")
        self.socket_path = os.path.join(self.directory, "bench.sock")
        both = self.twistd(self.bench_path)
        poll(lambda: "redis-cli DEL btu_scheduler:owner" in both.output(), START_TIMEOUT_SECS,
             f"the bench daemon's refusal of {SITE_ONE}; {both.describe()}")
        self.assertIn(f"site {SITE_ONE}", both.output())
        poll(lambda: len(self.fires_of_one()) >= 6, START_TIMEOUT_SECS, f"six fires of {SITE_ONE}")
        self.assertEqual({when: ids for when, ids in self.fires_of_one().items() if len(ids) > 1}, {})
        self.assertEqual(self.redis.get(site_key(SITE_ONE, "owner")), None)
        self.stop(single)

    def test_single_site_daemon_started_beside_the_bench_daemon(self):
        """A `--site one.localhost` daemon started while the bench's daemon serves one.localhost exits 1 with one line naming `btu_scheduler:site:one.localhost:owner`, and claims nothing."""
        both = self.twistd(self.bench_path)
        self.wait_answering(both, SITE_ONE, SITE_TWO)
        self.wait_planned(both, SITE_ONE, "TS-000001")
        self.socket_path = os.path.join(self.directory, "single.sock")
        single = self.twistd(self.bench_path, "--site", SITE_ONE)
        self.assertEqual(single.wait(START_TIMEOUT_SECS), 1, single.describe())
        lines = single.output().strip().splitlines()
        self.assertEqual(len(lines), 1, single.describe())
        self.assertIn(f"redis-cli DEL {site_key(SITE_ONE, 'owner')}", lines[0])
        self.assertEqual(self.redis.get("btu_scheduler:owner"), None)
        self.stop(both)

    def fires_of_one(self) -> dict[str, list[str]]:
        """{fire instant: the job ids pushed for it} of one.localhost's jobs."""
        fires: dict[str, list[str]] = {}
        for job_id in self.redis.lrange(f"rq:queue:{bench_queue('default')}", 0, -1):
            job = Job.fetch(job_id.decode(), connection=self.redis)
            if job.kwargs["site"] == SITE_ONE:
                fires.setdefault(job.meta["btu_scheduled_for"], []).append(job_id.decode())
        return fires


W = 1_800_000_000  # a whole second, a fire of TS-000001 on both sites in the checker test


class SitesCheckerTests(unittest.TestCase):
    """The per-site checker sees what the chaos test says is absent (so its passing means something)."""

    def test_colliding_ids_count_per_site_and_wrong_site_or_queue_is_an_anomaly(self):
        """TS-000001 at W on both sites is one fire each, not a duplicate; a job whose `site` kwarg or queue is not its site's is an anomaly."""
        use_shared_redis(self)
        sites = {site: SiteSchedules(site, index, 1) for index, site in enumerate((SITE_ONE, SITE_TWO))}
        one_queue, two_queue = (sites[site].queue("TS-000001") for site in (SITE_ONE, SITE_TWO))
        for site, kwarg_site, queue, when in ((SITE_ONE, SITE_ONE, one_queue, W),
                                              (SITE_TWO, SITE_ONE, two_queue, W),
                                              (SITE_TWO, SITE_TWO, "elsewhere", W + 1)):
            Queue(queue, connection=self.redis).enqueue_call(
                "tests.support.jobfuncs.noop", kwargs={"site": kwarg_site},
                job_id=site_job_id(site, "TS-000001", when),
                meta={"btu_site": site, "btu_task_schedule": "TS-000001",
                      "btu_task": sites[site].task_id, "btu_scheduled_for": iso_utc(when)})

        found, anomalies = read_sites_enqueued(self.redis, sites)

        self.assertEqual({site: dict(f.counts) for site, f in found.items()},
                         {SITE_ONE: {("TS-000001", W): 1},
                          SITE_TWO: {("TS-000001", W): 1, ("TS-000001", W + 1): 1}})
        self.assertEqual(len(anomalies), 2, anomalies)
        self.assertIn("kwargs site is 'one.localhost'", anomalies[0] + anomalies[1])
        self.assertIn(f"queue is not {two_queue}", anomalies[0] + anomalies[1])


class LayoutOracleTests(unittest.SynchronousTestCase):
    """The layout the tests expect, as the contract spells it."""

    def test_job_ids_and_sockets(self):
        """The contract's examples: site `one.localhost` is `one_2Elocalhost` in job ids, the ID keeps `-` and escapes the rest; a non-default site's socket gets `.<site>` before the suffix."""
        self.assertEqual(site_job_id(SITE_ONE, "TS-000001", 1764590400),
                         "btu-one_2Elocalhost-TS-000001-1764590400")
        self.assertEqual(site_job_id("é-1", "TS 1_x", 7), "btu-_C3_A9_2D1-TS_201_5Fx-7")
        self.assertEqual([site_socket(path, SITE_TWO, SITE_ONE) for path in
                          ("/tmp/btu_scheduler.sock", "/tmp/btu", "/run/{site}/btu.sock")],
                         ["/tmp/btu_scheduler.two.localhost.sock", "/tmp/btu.two.localhost",
                          "/run/two.localhost/btu.sock"])
        self.assertEqual(site_socket("/tmp/btu_scheduler.sock", SITE_ONE, SITE_ONE), "/tmp/btu_scheduler.sock")


def create(schedule_id: str) -> dict:
    return {"request_type": "create_task_schedule", "request_content": schedule_id}


def cancel(schedule_id: str) -> dict:
    return {"request_type": "cancel_task_schedule", "request_content": schedule_id}
