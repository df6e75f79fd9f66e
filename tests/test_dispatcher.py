"""Dispatcher timing and decisions, driven by task.Clock with in-memory doubles."""

from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from btu_twisted import dispatcher
from btu_twisted.dispatcher import PREPARE_LEAD_SECS, Dispatcher
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.monitored_source import MonitoredSource
from btu_twisted.planner import RowCache
from btu_twisted.stats import Stats
from tests.fakes import FakeEnqueuer, FakeSource, FakeStore, run_now, schedule

T0 = int(datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc).timestamp())  # a Saturday, noon UTC
POLL_SECS = 60
GRACE_SECS = 300


class DispatcherTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = FakeStore()
        self.source = FakeSource(schedule("TS-1", cron="* * * * *"))
        self.enqueuer = FakeEnqueuer(self.store)
        self.stats = Stats(started_at=T0)
        self.rows = RowCache()
        self.recoveries = []
        source = MonitoredSource(self.source, self.stats.sql, self.clock)
        self.dispatcher = Dispatcher(self.clock, self.store, source, self.rows, PythonBuilder(),
                                     self.enqueuer, run_now, self.stats, GRACE_SECS, POLL_SECS,
                                     on_redis_back=lambda: self.recoveries.append(self.clock.seconds()))
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self):
        self.dispatcher.startService()
        self.addCleanup(self.dispatcher.stopService)
        self.clock.advance(0)  # run what start-up scheduled for "now"

    def test_arms_for_earliest_member_and_fires_ahead_of_time(self):
        """The timer fires PREPARE_LEAD_SECS before the earliest member, asking to enqueue at its instant."""
        self.store.add("TS-1", T0 + 60)
        self.start()
        self.assertEqual(self.dispatcher.armed_for, T0 + 60)
        self.clock.advance(60 - PREPARE_LEAD_SECS - 0.01)
        self.assertEqual(self.enqueuer.calls, [])
        self.clock.advance(0.01)
        [(fires, not_before)] = self.enqueuer.calls
        self.assertEqual(not_before, T0 + 60)
        self.assertEqual([f.job.job_id for f in fires], [f"btu-TS-1-{T0 + 60}"])

    def test_a_burst_is_prepared_earlier_by_its_size(self):
        """2 000 fires due at one instant start their cycle PREPARE_SECS_PER_FIRE each earlier
        than one fire would, so that their jobs are built before the instant; they still go at it."""
        self.burst_prepared_early(planned_after_start=False)

    def test_a_burst_planned_after_start_is_prepared_earlier_by_its_size(self):
        """The same for fires the planner pokes in after start-up (the first full refresh)."""
        self.burst_prepared_early(planned_after_start=True)

    def burst_prepared_early(self, planned_after_start: bool):
        if planned_after_start:
            self.start()
        for i in range(2000):
            self.source.rows[f"TS-B{i:04d}"] = schedule(f"TS-B{i:04d}", cron="* * * * *")
            self.store.add(f"TS-B{i:04d}", T0 + 60)
            if planned_after_start:
                self.dispatcher.poke(T0 + 60)
        if not planned_after_start:
            self.start()
        lead = PREPARE_LEAD_SECS + 2000 * dispatcher.PREPARE_SECS_PER_FIRE
        self.clock.advance(60 - lead - 0.01)
        self.assertEqual(self.enqueuer.calls, [])
        self.clock.advance(0.01)
        self.assertEqual({not_before for _, not_before in self.enqueuer.calls}, {T0 + 60})
        self.assertEqual(len(self.enqueuer.enqueued), 2000)

    def test_next_fire_planned_after_dispatch(self):
        """After a fire the schedule's member moves to its next fire, and the timer follows it."""
        self.store.add("TS-1", T0 + 60)
        self.start()
        self.clock.advance(60)
        self.assertEqual(self.store.zset, {f"TS-1|{T0 + 120}": T0 + 120})
        self.assertEqual(self.dispatcher.armed_for, T0 + 120)

    def test_early_fire_plans_after_scheduled_time(self):
        """A fire prepared before its instant plans the next one after the instant, not after 'now'."""
        self.source.rows["TS-1"] = schedule("TS-1", cron="0 3 * * *")
        due = int(datetime(2026, 3, 8, 3, 0, tzinfo=timezone.utc).timestamp())
        self.store.add("TS-1", due)
        self.start()
        self.clock.advance(due - T0 - PREPARE_LEAD_SECS)
        [(fires, _)] = self.enqueuer.calls
        self.assertEqual(fires[0].next_when, due + 24 * 3600)

    def test_poke_rearms_for_earlier_fire(self):
        """Planning a fire earlier than the armed one re-arms the timer for it."""
        self.store.add("TS-1", T0 + 600)
        self.start()
        self.store.add("TS-2", T0 + 30)
        self.source.rows["TS-2"] = schedule("TS-2", cron="* * * * *")
        self.dispatcher.poke(T0 + 30)
        self.assertEqual(self.dispatcher.armed_for, T0 + 30)
        self.clock.advance(30)
        self.assertEqual([j.job_id for j in self.enqueuer.enqueued], [f"btu-TS-2-{T0 + 30}"])

    def test_poke_ignores_later_fire(self):
        """Planning a fire later than the armed one leaves the timer alone."""
        self.store.add("TS-1", T0 + 60)
        self.start()
        self.dispatcher.poke(T0 + 600)
        self.assertEqual(self.dispatcher.armed_for, T0 + 60)

    def test_safety_poll_picks_up_peer_member(self):
        """A member written by someone else is found by the poll every scheduler_polling_interval."""
        self.start()
        self.assertIsNone(self.dispatcher.armed_for)
        self.store.add("TS-1", T0 + 90)
        self.clock.advance(POLL_SECS)
        self.assertEqual(self.dispatcher.armed_for, T0 + 90)

    def test_late_fire_within_grace_runs_once_without_burst(self):
        """Several missed fires within the grace give one catch-up job, for the latest of them, and
        a next fire after now."""
        self.store.add("TS-1", T0 - 180)
        self.clock.advance(5)
        self.start()
        self.assertEqual([j.job_id for j in self.enqueuer.enqueued], [f"btu-TS-1-{T0}"])
        self.assertEqual(self.store.zset, {f"TS-1|{T0 + 60}": T0 + 60})
        self.assertEqual(self.enqueuer.watermarks["TS-1"], T0)

    def test_missed_fires_partly_beyond_grace_still_run_once(self):
        """When the first missed fire is beyond the grace but a later one is within it, that later
        one runs once (only fires older than the grace are skipped)."""
        self.store.add("TS-1", T0 - GRACE_SECS - 60)
        self.clock.advance(5)
        self.start()
        self.assertEqual([j.job_id for j in self.enqueuer.enqueued], [f"btu-TS-1-{T0}"])
        self.assertEqual(self.store.zset, {f"TS-1|{T0 + 60}": T0 + 60})
        self.assertEqual(self.stats.counts["skipped_misfires"], 0)

    def test_late_fire_beyond_grace_is_skipped_with_warning(self):
        """A fire missed by more than misfire_grace_secs is not enqueued, and a warning names it."""
        self.source.rows["TS-1"] = schedule("TS-1", cron="0 3 * * *")
        self.store.add("TS-1", T0 - 9 * 3600)  # 03:00 today, the latest fire
        self.start()
        self.assertEqual(self.enqueuer.enqueued, [])
        self.assertEqual(self.store.zset, {f"TS-1|{T0 + 15 * 3600}": T0 + 15 * 3600})
        self.assertEqual(self.stats.counts["skipped_misfires"], 1)
        warnings = [e for e in self.events if e.get("schedule_id") == "TS-1" and "late" in e]
        self.assertEqual(len(warnings), 1)

    def test_disabled_schedule_not_enqueued_and_dropped(self):
        """A schedule disabled in SQL at its fire time is not enqueued and its member is removed."""
        self.source.rows["TS-1"] = schedule("TS-1", cron="* * * * *", enabled=False)
        self.store.add("TS-1", T0 + 60)
        self.start()
        self.clock.advance(60)
        self.assertEqual(self.enqueuer.enqueued, [])
        self.assertEqual(self.store.zset, {})
        self.assertNotIn("TS-1", self.store.planned_map)

    def test_deleted_schedule_not_enqueued_and_dropped(self):
        """A schedule deleted from SQL is not enqueued and its member is removed."""
        del self.source.rows["TS-1"]
        self.store.add("TS-1", T0 + 60)
        self.start()
        self.clock.advance(60)
        self.assertEqual(self.enqueuer.enqueued, [])
        self.assertEqual(self.store.zset, {})

    def test_sql_down_uses_last_row_read(self):
        """With the database unreachable, dispatch uses the last row read and says so."""
        self.rows["TS-1"] = schedule("TS-1", cron="* * * * *")
        self.source.failing = True
        self.store.add("TS-1", T0 + 60)
        self.start()
        self.clock.advance(60)
        self.assertEqual([j.job_id for j in self.enqueuer.enqueued], [f"btu-TS-1-{T0 + 60}"])
        self.assertFalse(self.stats.sql.up)
        self.assertTrue(any("last rows read" in e.get("log_format", "") for e in self.events))

    def test_sql_down_without_row_leaves_member_for_later(self):
        """With no row known and the database down, the member stays and is retried after a back-off."""
        self.source.failing = True
        self.store.add("TS-1", T0 + 60)
        self.start()
        self.clock.advance(60)
        self.assertEqual(self.store.zset, {f"TS-1|{T0 + 60}": T0 + 60})
        self.source.failing = False
        self.clock.advance(10)
        self.assertEqual([j.job_id for j in self.enqueuer.enqueued], [f"btu-TS-1-{T0 + 60}"])

    def test_redis_down_backs_off_and_recovers(self):
        """Redis failures are reported in stats and retried; due fires are enqueued once it returns."""
        self.store.add("TS-1", T0 + 5)
        self.store.failing = True
        self.start()
        self.assertFalse(self.stats.redis.up)
        self.clock.advance(30)
        self.assertEqual(self.enqueuer.enqueued, [])
        self.store.failing = False
        self.clock.advance(POLL_SECS)
        self.assertTrue(self.stats.redis.up)
        # The clock jumped to T0 + 90 at once: the fires missed meanwhile coalesce into the latest.
        self.assertEqual([j.job_id for j in self.enqueuer.enqueued], [f"btu-TS-1-{T0 + 60}"])
        self.assertEqual(len(self.recoveries), 1, "a full refresh is asked for when Redis returns")

    def test_already_enqueued_fire_is_not_repeated(self):
        """A fire whose watermark shows it enqueued (by a peer or before a crash) is not enqueued again."""
        self.enqueuer.watermarks["TS-1"] = T0 + 60
        self.store.add("TS-1", T0 + 60)
        self.start()
        self.clock.advance(60)
        self.assertEqual(self.enqueuer.enqueued, [])
        self.assertEqual(self.stats.counts["already_enqueued"], 1)
        self.assertEqual(self.store.zset, {f"TS-1|{T0 + 120}": T0 + 120})

    def test_bad_cron_at_fire_time_reported_not_fatal(self):
        """A row whose cron became invalid is reported; other due schedules still fire."""
        self.source.rows["TS-1"] = schedule("TS-1", cron="not a cron")
        self.source.rows["TS-2"] = schedule("TS-2", cron="* * * * *")
        self.store.add("TS-1", T0 + 60)
        self.store.add("TS-2", T0 + 60)
        self.start()
        self.clock.advance(60)
        self.assertEqual([j.job_id for j in self.enqueuer.enqueued], [f"btu-TS-2-{T0 + 60}"])
        self.assertIn("TS-1", self.stats.problems)

    def test_two_members_of_one_schedule_coalesce(self):
        """Leftover members of one schedule (e.g. Rust-era) give one job, for the latest fire."""
        self.store.zset[f"TS-1|{T0 - 120}"] = T0 - 120
        self.store.add("TS-1", T0 - 60)
        self.start()
        self.assertEqual([j.job_id for j in self.enqueuer.enqueued], [f"btu-TS-1-{T0}"])
        self.assertEqual(list(self.store.zset), [f"TS-1|{T0 + 60}"])

    def test_stop_cancels_timers(self):
        """After stopService no timer is left pending on the clock."""
        self.store.add("TS-1", T0 + 60)
        self.dispatcher.startService()
        self.dispatcher.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def burst(self, count):
        """`count` schedules due at T0 + 60, dispatched."""
        for i in range(count):
            schedule_id = f"TS-B{i:04d}"
            self.source.rows[schedule_id] = schedule(schedule_id, cron="* * * * *")
            self.store.add(schedule_id, T0 + 60)
        self.start()
        self.clock.advance(60)

    def lines_logged_before_each_transaction(self) -> list[int]:
        """How many "enqueued" lines were written before each transaction, as they run."""
        logged_before = []
        dispatch = self.enqueuer.dispatch

        def counting(fires, not_before, prepared=None):
            logged_before.append(sum("enqueued {schedule_id}" in e.get("log_format", "") for e in self.events))
            return dispatch(fires, not_before, prepared)

        self.enqueuer.dispatch = counting
        return logged_before

    def test_a_burst_starts_with_a_transaction_of_one_fire_then_grows(self):
        """Fires due at one instant go in transactions of 1, then 10, then 100 at most, each at that instant."""
        self.burst(250)
        self.assertEqual([len(fires) for fires, _ in self.enqueuer.calls], [1, 10, 100, 100, 39])
        self.assertEqual({not_before for _, not_before in self.enqueuer.calls}, {T0 + 60})
        self.assertEqual(len(self.enqueuer.enqueued), 250)

    def test_fires_that_fit_one_transaction_are_one(self):
        """An instant with at most TRANSACTION_SIZE fires is one transaction, so one WAIT with
        redis_min_replicas (each times out while no replica answers, as after a failover)."""
        self.burst(100)
        self.assertEqual([len(fires) for fires, _ in self.enqueuer.calls], [100])

    def test_a_burst_is_logged_after_its_last_transaction(self):
        """Every fire still has its "enqueued" line, but none is written before the last job is enqueued."""
        logged_before = self.lines_logged_before_each_transaction()
        self.burst(120)
        self.assertEqual(logged_before, [0, 0, 0, 0])
        enqueued = [e["schedule_id"] for e in self.events if "enqueued {schedule_id}" in e.get("log_format", "")]
        self.assertEqual(sorted(enqueued), [f"TS-B{i:04d}" for i in range(120)])

    def test_each_batch_is_logged_before_the_next_is_enqueued(self):
        """A backlog of several batches (BATCH_SIZE due members each) delays no line: each batch's
        lines are written when it is done."""
        self.patch(dispatcher, "BATCH_SIZE", 5)
        logged_before = self.lines_logged_before_each_transaction()
        self.burst(12)
        self.assertEqual(logged_before, [0, 5, 10])

    def test_a_stopping_daemon_finishes_the_batch_under_way_not_the_backlog(self):
        """stopService waits for the batch being enqueued; the batches after it stay planned."""
        self.patch(dispatcher, "BATCH_SIZE", 5)
        held = []

        def in_thread(f, *args, **kwargs):
            if f == self.enqueuer.dispatch:
                held.append(defer.Deferred().addCallback(lambda _: f(*args, **kwargs)))
                return held[-1]
            return run_now(f, *args, **kwargs)

        self.dispatcher._run_in_thread = in_thread
        self.burst(12)
        stopped = self.dispatcher.stopService()
        held.pop(0).callback(None)
        self.assertEqual((self.successResultOf(stopped), held), (None, []))
        still_due = [member for member in self.store.zset if member.endswith(f"|{T0 + 60}")]
        self.assertEqual((len(self.enqueuer.enqueued), len(still_due)), (5, 7))

    def test_the_next_part_is_prepared_while_a_part_is_enqueued(self):
        """Beyond the first part (FIRST_PART_SIZES, then PART_SIZE fires), later parts are read, built and packed while the first part's transactions still run."""
        self.patch(dispatcher, "FIRST_PART_SIZES", (3,))
        self.patch(dispatcher, "PART_SIZE", 5)
        self.patch(dispatcher, "FIRST_TRANSACTION_SIZES", (1,))
        self.patch(dispatcher, "TRANSACTION_SIZE", 2)
        held, packed = [], []
        prepare = self.enqueuer.prepare

        def in_thread(f, *args, **kwargs):
            if f == self.enqueuer.dispatch:  # an enqueue thread still busy, until released below
                held.append(defer.Deferred().addCallback(lambda _: f(*args, **kwargs)))
                return held[-1]
            return run_now(f, *args, **kwargs)

        self.enqueuer.prepare = lambda fires: packed.append(len(fires)) or prepare(fires)
        self.dispatcher._run_in_thread = in_thread
        self.burst(12)
        self.assertEqual((packed, len(held)), ([3, 5, 4], 1))
        while held:
            held.pop(0).callback(None)
        self.assertEqual([len(fires) for fires, _ in self.enqueuer.calls], [1, 2, 1, 2, 2, 1, 2, 1])
        self.assertEqual(len(self.enqueuer.enqueued), 12)
