"""The exactly-once RQ transaction, against a private Redis."""

import time
from datetime import datetime, timezone

import redis
from rq import Queue
from twisted.logger import globalLogPublisher
from rq.job import Job
from twisted.trial import unittest

from btu_twisted import history
from btu_twisted.enqueuer import ALREADY_ENQUEUED, ENQUEUED, NOT_ENQUEUED, SPIN_SECS, Enqueuer, Fire
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.store import LAST_FIRE_PREFIX, PLANNED_KEY, SCHEDULE_KEY
from tests.fakes import schedule
from tests.support.servers import fresh_redis

WHEN = 1_800_000_000
NEXT = WHEN + 60


class EnqueuerTests(unittest.TestCase):
    def setUp(self):
        self.redis_server = fresh_redis()
        self.redis = self.redis_server.client()
        self.addCleanup(self.redis.close)
        self.slept = []
        self.enqueuer = Enqueuer(self.redis_server.url, now=lambda: WHEN - 0.25, sleep=self.slept.append)
        self.addCleanup(self.enqueuer.close)
        self.row = schedule("TS-1", cron="* * * * *")
        self.plan("TS-1", WHEN)

    def plan(self, schedule_id, when):
        member = f"{schedule_id}|{when}"
        self.redis.zadd(SCHEDULE_KEY, {member: when})
        self.redis.hset(PLANNED_KEY, schedule_id, member)

    def fire(self, job=True, next_when=NEXT):
        return Fire("TS-1", WHEN, PythonBuilder().build(self.row, WHEN) if job else None, next_when)

    def members(self):
        return [m.decode() for m in self.redis.zrange(SCHEDULE_KEY, 0, -1)]

    def test_a_connection_lost_in_the_transaction_is_a_failure(self):
        """A connection lost between WATCH and EXEC (a master frozen or gone) is raised, not
        retried: redis-py calls it a WatchError, and a retry would enqueue the fire late on the
        next master instead of letting the dispatcher apply the misfire policy."""
        def lose_connection(delay):
            self.redis.client_kill_filter(_type="normal", skipme=True)

        enqueuer = Enqueuer(self.redis_server.url, now=lambda: WHEN - 0.25, sleep=lose_connection)
        self.addCleanup(enqueuer.close)
        with self.assertRaises(redis.ConnectionError):
            enqueuer.dispatch([self.fire()], not_before=WHEN)
        self.assertEqual((self.members(), self.redis.get(LAST_FIRE_PREFIX + "TS-1")), ([f"TS-1|{WHEN}"], None))

    def test_replicas_that_do_not_acknowledge_leave_the_fire_enqueued_and_warn_once(self):
        """redis_min_replicas = 1 on a Redis without replicas: WAIT times out, the fire stays
        enqueued (a retry could only enqueue it twice) and one warning covers the episode."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        enqueuer = Enqueuer(self.redis_server.url, now=lambda: WHEN - 0.25, sleep=self.slept.append,
                            min_replicas=1, replicas_timeout_secs=0.05)
        self.addCleanup(enqueuer.close)
        self.assertEqual(enqueuer.dispatch([self.fire()], not_before=WHEN), [ENQUEUED])
        self.plan("TS-1", NEXT)
        later = Fire("TS-1", NEXT, PythonBuilder().build(self.row, NEXT), NEXT + 60)
        self.assertEqual(enqueuer.dispatch([later], not_before=NEXT), [ENQUEUED])
        self.assertEqual(Queue("default", connection=self.redis).job_ids,
                         [f"btu-TS-1-{WHEN}", f"btu-TS-1-{NEXT}"])
        warnings = [e for e in events if "replicas acknowledged" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1, warnings)

    def test_jobs_packed_ahead_of_the_instant_carry_the_enqueue_time(self):
        """Jobs packed by `prepare` before the wait are enqueued as packed, with the enqueued_at of
        their transaction, not of their packing."""
        fire = self.fire()
        prepared = self.enqueuer.prepare([fire])
        packed_by = datetime.now(timezone.utc)
        self.assertEqual(self.enqueuer.dispatch([fire], not_before=WHEN, prepared=prepared), [ENQUEUED])
        job = Job.fetch(f"btu-TS-1-{WHEN}", connection=self.redis)
        self.assertEqual((job.meta["btu_task_schedule"], job.kwargs), ("TS-1", {"a": 1}))
        self.assertGreaterEqual(job.enqueued_at.replace(tzinfo=timezone.utc), packed_by)
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [f"btu-TS-1-{WHEN}"])

    def test_enqueues_job_and_plans_next_fire(self):
        """One transaction pushes the job, moves the watermark and replaces the member with the next."""
        self.assertEqual(self.enqueuer.dispatch([self.fire()], not_before=WHEN), [ENQUEUED])
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [f"btu-TS-1-{WHEN}"])
        job = Job.fetch(f"btu-TS-1-{WHEN}", connection=self.redis)
        self.assertEqual(job.meta["btu_task_schedule"], "TS-1")
        self.assertEqual(self.redis.get(LAST_FIRE_PREFIX + "TS-1"), str(WHEN).encode())
        self.assertEqual(self.members(), [f"TS-1|{NEXT}"])
        self.assertEqual(self.redis.hget(PLANNED_KEY, "TS-1"), f"TS-1|{NEXT}".encode())

    def test_waits_for_the_fire_instant(self):
        """The transaction sleeps until SPIN_SECS before not_before (jobs are built before the
        wait), and busy-waits the rest."""
        self.enqueuer.dispatch([self.fire()], not_before=WHEN)
        self.assertEqual(len(self.slept), 1)
        self.assertAlmostEqual(self.slept[0], 0.25 - SPIN_SECS)

    def test_never_enqueues_before_the_instant_on_a_real_clock(self):
        """After the timed wait and the spin, the instant has come: the lateness the history
        records, read at the moment of the transaction, is never negative."""
        instant = time.time() + 0.05
        enqueuer = Enqueuer(self.redis_server.url)  # the real clock and the real wait
        self.addCleanup(enqueuer.close)
        fire = Fire("TS-1", WHEN, PythonBuilder().build(self.row, WHEN), NEXT)
        self.assertEqual(enqueuer.dispatch([fire], not_before=instant), [ENQUEUED])
        [entry] = history.read(self.redis, "TS-1")
        self.assertGreaterEqual(entry["late_secs"], 0)

    def test_second_dispatch_of_a_fire_is_refused(self):
        """Dispatching the same fire again (a peer, or a replay after a crash) pushes nothing."""
        self.enqueuer.dispatch([self.fire()], not_before=WHEN)
        self.plan("TS-1", WHEN)  # a stale plan of the same instant
        self.assertEqual(self.enqueuer.dispatch([self.fire()], not_before=WHEN), [ALREADY_ENQUEUED])
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [f"btu-TS-1-{WHEN}"])
        self.assertEqual(self.members(), [f"TS-1|{NEXT}"])

    def test_replan_made_meanwhile_is_kept(self):
        """If the schedule was re-planned while its fire was in flight, the new plan survives."""
        self.plan("TS-1", WHEN + 3600)
        self.redis.zadd(SCHEDULE_KEY, {f"TS-1|{WHEN}": WHEN})
        self.enqueuer.dispatch([self.fire()], not_before=WHEN)
        self.assertEqual(self.members(), [f"TS-1|{WHEN + 3600}"])

    def test_fire_without_job_drops_member(self):
        """A fire with nothing to enqueue and nothing next (disabled, deleted) just removes the plan."""
        self.assertEqual(self.enqueuer.dispatch([self.fire(job=False, next_when=None)], WHEN), [NOT_ENQUEUED])
        self.assertEqual(self.members(), [])
        self.assertIsNone(self.redis.hget(PLANNED_KEY, "TS-1"))
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [])

    def test_peer_claim_during_the_wait_wins(self):
        """A peer that enqueues the fire while we wait for its instant makes our transaction step back."""
        def peer_claims(_delay):
            if not self.redis.exists(LAST_FIRE_PREFIX + "TS-1"):
                self.redis.set(LAST_FIRE_PREFIX + "TS-1", WHEN)
        enqueuer = Enqueuer(self.redis_server.url, now=lambda: WHEN - 0.25, sleep=peer_claims)
        self.addCleanup(enqueuer.close)
        self.assertEqual(enqueuer.dispatch([self.fire()], not_before=WHEN), [ALREADY_ENQUEUED])
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [])
