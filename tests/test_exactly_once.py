# -*- test-case-name: tests.test_exactly_once -*-
"""Exactly once under SIGKILL (DESIGN §8, README "Exactly once"): real `twistd -n btu` daemons on one
Redis and one MariaDB, 50 schedules firing every 1-3 s, daemons killed -9 at random moments and
restarted; audited afterwards from the RQ queue lists (no worker runs, so a duplicate push shows as
a repeated job id). The harness is tests/support/chaos.py; bench/chaos_long.py runs it for minutes.
The clock-skew test runs the two daemons under libfaketime (Debian package `faketime`), on a private
persistent Redis that it restarts mid-run.

Set BTU_CHAOS_SEED to replay a run's kill moments; failures name the seed.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

from rq import Queue
from twisted.python import log
from twisted.trial import unittest

from btu_twisted.builders import iso_utc, job_id
from tests.support.chaos import (JOB_FUNCTION, ONE_DAEMON_DOWN_SECS, ONE_DAEMON_GAP_SECS,
                                 TWO_DAEMONS_GAP_SECS, Enqueued, Outage, RedisRestart, Run, check,
                                 read_enqueued, run_chaos)
from tests.support.daemon import short_dir
from tests.support.pushes import LIBFAKETIME, PushMonitor
from tests.support.servers import RedisServer, shared_mariadb, shared_redis, use_shared_servers

SCHEDULES = 50
TWO_DAEMONS_SECS = 60
MIN_KILLS = 30
ONE_DAEMON_SECS = 25
SKEWED_SECS = 25        # chaos of the clock-skew test
SKEWED_MIN_KILLS = 8
SKEW_SECS = 1.5         # the second daemon's wall clock is this far ahead of the first one's
STEP = (8.0, -3600.0, 4.0)  # seconds into the window, size, held: the first daemon's backward step
REDIS_RESTART = (16.0, 2.0)  # seconds into the window, seconds down: Redis restarted with its files


class ExactlyOnceUnderSigkillTests(unittest.TestCase):
    """Each test runs its own chaos: fresh database, flushed shared Redis, its own daemons."""

    timeout = 150

    def setUp(self):
        use_shared_servers(self)
        self.directory = short_dir(self)
        self.seed = int(os.environ.get("BTU_CHAOS_SEED") or time.time_ns() % 2**32)

    def chaos(self, **settings) -> Run:
        run = run_chaos(self.directory, self.redis, self.redis_server.url,
                        shared_mariadb().socket_path, self.sql, self.database,
                        schedules=SCHEDULES, rng=random.Random(self.seed), log=log.msg, **settings)
        log.msg(f"chaos seed {self.seed}: {run.report.summary()}; restarts "
                f"{[round(s, 2) for s in run.restart_seconds()]}")
        for outage, resumed in zip(run.redis_outages, run.redis_resumed):
            log.msg(f"Redis restart: {outage}; first push {resumed:.2f} s after it answered again")
        return run

    def verdict(self, run: Run) -> str:
        """Everything a failing assertion should show."""
        tracebacks = "\n".join(run.tracebacks()[:3])
        return (f"BTU_CHAOS_SEED={self.seed}\n{run.report.details()}\n{tracebacks}\n"
                f"early pushes: {run.early[:5]}\n"
                f"pushes MONITOR missed: {run.unmonitored[:5]}\n"
                f"Redis restarts: {run.redis_outages}\n"
                f"daemon logs: {[d.log_path for d in run.daemons]}")

    def assertNothingWrong(self, run: Run) -> None:
        report = run.report
        message = self.verdict(run)
        self.assertEqual(report.duplicates, [], message)
        self.assertEqual(report.losses, [], message)
        self.assertEqual(report.unexpected, [], message)
        self.assertEqual(report.violations, [], message)
        self.assertEqual(report.anomalies, [], message)
        self.assertEqual(run.tracebacks(), [], message)

    def test_two_daemons_one_killed_repeatedly_enqueue_every_fire_exactly_once(self):
        """Two daemons, one of them SIGKILLed at random moments (30+ times in 60 s) and restarted at once: every fire of 50 schedules is enqueued exactly once."""
        run = self.chaos(daemons=2, seconds=TWO_DAEMONS_SECS, gap_secs=TWO_DAEMONS_GAP_SECS,
                         min_kills=MIN_KILLS + 2)

        self.assertGreaterEqual(run.report.kills, MIN_KILLS, self.verdict(run))
        self.assertNothingWrong(run)
        self.assertEqual(run.report.coalesced, [], self.verdict(run))
        self.assertEqual(run.report.enqueued, run.report.expected, self.verdict(run))
        self.assertGreater(run.report.expected, SCHEDULES * TWO_DAEMONS_SECS / 3)

    def test_one_daemon_killed_repeatedly_misses_only_what_the_misfire_policy_coalesces(self):
        """A single daemon SIGKILLed at random moments and restarted: no fire is enqueued twice, and the only missing fires are those that fell due while it was down, bar the latest one per schedule and outage, which is caught up once."""
        run = self.chaos(daemons=1, seconds=ONE_DAEMON_SECS, gap_secs=ONE_DAEMON_GAP_SECS,
                         down_secs=ONE_DAEMON_DOWN_SECS)

        self.assertGreaterEqual(run.report.kills, 3, self.verdict(run))
        self.assertNothingWrong(run)
        self.assertGreater(run.report.catch_ups, 0,
                           f"no outage made a schedule miss two fires\n{self.verdict(run)}")
        self.assertEqual(run.report.enqueued + len(run.report.coalesced), run.report.expected)

    def test_two_daemons_with_skewed_clocks_a_step_and_a_redis_restart_enqueue_every_fire_exactly_once_on_time(self):
        """Two daemons whose wall clocks are 1.5 s apart (libfaketime), one stepped back 1 h for 4 s, SIGKILLed at random moments, their Redis restarted with persistence: every fire of 50 schedules is enqueued exactly once or coalesced by a catch-up, none before its instant by Redis time."""
        if not os.path.exists(LIBFAKETIME):
            raise unittest.SkipTest("libfaketime missing: apt-get install faketime")
        self.redis_server = RedisServer(persistent=True)  # instead of the shared, ephemeral one
        self.addCleanup(self.redis_server.cleanup)
        self.redis_server.start()
        self.redis = self.redis_server.client()
        self.addCleanup(self.redis.close)
        pushes = PushMonitor(self.redis_server)
        self.addCleanup(pushes.stop)

        run = self.chaos(daemons=2, seconds=SKEWED_SECS, gap_secs=TWO_DAEMONS_GAP_SECS,
                         min_kills=SKEWED_MIN_KILLS + 2, clock_offsets=(0.0, SKEW_SECS),
                         clock_step=STEP, pushes=pushes,
                         redis_restart=RedisRestart(self.redis_server, *REDIS_RESTART))

        self.assertGreaterEqual(run.report.kills, SKEWED_MIN_KILLS, self.verdict(run))
        [outage] = run.redis_outages
        self.assertGreater(outage.keys_after, 0, f"the restart restored nothing: {outage}")
        self.assertNothingWrong(run)
        self.assertEqual(run.early, [], self.verdict(run))
        self.assertEqual(run.unmonitored, [], self.verdict(run))
        # A missing fire is one that a late catch-up's history entry says it coalesced (the fires
        # that fell due while Redis was down, or a daemon stalled a whole period on this shared
        # machine): the misfire policy, never a loss.
        self.assertEqual(run.report.enqueued + len(run.report.coalesced), run.report.expected,
                         self.verdict(run))
        self.assertGreater(run.report.expected, SCHEDULES * SKEWED_SECS / 3)


W = 1_800_000_000  # a whole second; the checker tests' schedule fires every second from here
EVERY_SECOND = {"TS-A": "* * * * * * *"}


def enqueued(*fires: int) -> Enqueued:
    return Enqueued(counts=Counter({("TS-A", when): 1 for when in fires}))


class CheckerTests(unittest.TestCase):
    """The checker sees what the chaos tests say is absent (so their passing means something)."""

    def test_job_id_pushed_twice_is_a_duplicate(self):
        """A job id pushed twice is counted twice from the queue list, though its hash is one."""
        server = shared_redis()
        server.flush()
        client = server.client()
        self.addCleanup(client.close)
        queue = Queue("default", connection=client)
        for _ in range(2):
            queue.enqueue_call(JOB_FUNCTION, job_id=job_id("TS-A", W),
                               meta={"btu_task_schedule": "TS-A", "btu_scheduled_for": iso_utc(W)})

        found = read_enqueued(client)

        self.assertEqual(found.counts, Counter({("TS-A", W): 2}))
        self.assertEqual(check(found, EVERY_SECOND, (W, W)).duplicates, [(("TS-A", W), 2)])

    def test_missing_fire_with_a_daemon_always_up_is_a_loss(self):
        """With several daemons nothing explains a missing fire."""
        report = check(enqueued(W, W + 1, W + 3, W + 4), EVERY_SECOND, (W, W + 4),
                       [Outage("btu0", W + 1.5, W + 2.5)])
        self.assertEqual(report.losses, [("TS-A", W + 2)])
        self.assertFalse(report.ok)

    def test_missing_fire_coalesced_by_a_catch_up_in_the_history_is_explained(self):
        """With several daemons, W+2 missing is coalesced when the history of W+3 says it
        coalesced the fires from W+2; W+5 missing with no such entry is still a loss."""
        found = enqueued(W, W + 1, W + 3, W + 4, W + 6)
        found.coalesced = {("TS-A", W + 2, W + 3)}
        report = check(found, EVERY_SECOND, (W, W + 6))
        self.assertEqual(report.coalesced, [("TS-A", W + 2)])
        self.assertEqual(report.losses, [("TS-A", W + 5)])

    def test_catch_up_after_the_outage_window_is_explained_by_its_history(self):
        """A schedule every 3 s whose missed W+3 was coalesced into W+6, a fire after the outage's
        window: explained only by the history entry of W+6 (without it, a violation)."""
        every_third = {"TS-A": "*/3 * * * * * *"}
        start = W - W % 3
        outage = [Outage("redis master", start + 1.5, start + 4.0)]
        found = enqueued(start, start + 6)
        self.assertTrue(check(found, every_third, (start, start + 6), outage, single_daemon=True).violations)
        found.coalesced = {("TS-A", start + 3, start + 6)}
        report = check(found, every_third, (start, start + 6), outage, single_daemon=True)
        self.assertEqual((report.coalesced, report.violations, report.losses), ([("TS-A", start + 3)], [], []))

    def test_latest_missed_fire_caught_up_explains_the_others(self):
        """One daemon down from W+1.5 to W+4.2: W+2 and W+3 coalesce into the catch-up of W+4."""
        report = check(enqueued(*range(W, W + 2), *range(W + 4, W + 9)), EVERY_SECOND, (W, W + 8),
                       [Outage("btu0", W + 1.5, W + 4.2)], single_daemon=True)
        self.assertEqual(report.coalesced, [("TS-A", W + 2), ("TS-A", W + 3)])
        self.assertTrue(report.ok, report.details())

    def test_earlier_missed_fire_caught_up_is_a_violation(self):
        """A catch-up for the first missed fire instead of the latest is not the misfire policy."""
        report = check(enqueued(*range(W, W + 3), *range(W + 5, W + 9)), EVERY_SECOND, (W, W + 8),
                       [Outage("btu0", W + 1.5, W + 4.2)], single_daemon=True)
        self.assertEqual(len(report.violations), 1)
        self.assertEqual(report.losses, [("TS-A", W + 3), ("TS-A", W + 4)])

    def test_fires_enqueued_while_down_besides_the_catch_up_are_a_violation(self):
        """Fires that fell due while the only daemon was down cannot all have been enqueued."""
        report = check(enqueued(*range(W, W + 9)), EVERY_SECOND, (W, W + 8),
                       [Outage("btu0", W + 1.5, W + 4.2)], single_daemon=True)
        self.assertEqual(len(report.violations), 1)

    def test_instant_that_is_not_a_fire_is_unexpected(self):
        """A job for an instant the cron does not fire at is reported."""
        report = check(enqueued(W, W + 1, W + 2), {"TS-A": "*/2 * * * * * *"}, (W, W + 2))
        self.assertEqual(report.unexpected, [("TS-A", W + 1)])
