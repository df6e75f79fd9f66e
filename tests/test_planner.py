"""The consumer (planner) and the full refresh, driven by task.Clock with in-memory doubles."""

import gc
from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from btu_twisted import logs
from btu_twisted.monitored_source import MonitoredSource
from btu_twisted.planner import RETRY_MIN_SECS, Planner, RowCache
from btu_twisted.refresher import Refresher
from btu_twisted.stats import Stats
from btu_twisted.workqueue import UniqueQueue
from tests.fakes import FakeSource, FakeStore, schedule

T0 = int(datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc).timestamp())
REFRESH_SECS = 900
CHECK_SECS = 60


class PlannerTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.queue = UniqueQueue()
        self.source = FakeSource(schedule("TS-1", cron="*/5 * * * *"), schedule("TS-2", cron="0 3 * * *"))
        self.store = FakeStore()
        self.stats = Stats(started_at=T0)
        self.rows = RowCache()
        self.poked = []
        self.planner = Planner(self.clock, self.queue, MonitoredSource(self.source, self.stats.sql, self.clock),
                               self.store, self.rows, self.stats,
                               on_planned=self.poked.append, batch_size=2)
        self.planner.startService()
        self.addCleanup(self.planner.stopService)

    def run_queue(self):
        for _ in range(10):
            self.clock.advance(0)

    def test_plans_next_fire_of_each_queued_schedule(self):
        """Queued IDs get exactly one member each, at their next fire, and the dispatcher is poked."""
        self.queue.put_many(["TS-1", "TS-2"])
        self.run_queue()
        self.assertEqual(self.store.zset, {f"TS-1|{T0 + 300}": T0 + 300, f"TS-2|{T0 + 15 * 3600}": T0 + 15 * 3600})
        self.assertEqual(self.poked, [T0 + 300])

    def test_a_batch_cut_off_by_stopping_is_not_retried_later(self):
        """Stopping while a batch's rows are being read cancels the read; that is no failure to
        retry, so no timer outlives the service (the next start's refresh plans them)."""
        self.source.read = lambda ids: defer.Deferred()  # SQL that has not answered yet
        self.queue.put_many(["TS-1"])
        self.run_queue()
        self.planner.stopService()
        self.run_queue()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reads_rows_on_the_id_strings_it_holds(self):
        """An ID the row cache holds is read from the source with the cache's own string, not the
        queue's equal copy, so a source that builds rows on it leaves one copy of each ID."""
        held, queued = "".join(["TS-", "1"]), "".join(["TS-", "1"])  # equal strings, not the same objects
        self.rows[held] = schedule(held, cron="*/5 * * * *")
        self.queue.put_many([queued, "TS-2"])
        self.run_queue()
        [[first, second]] = self.source.reads
        self.assertIs(first, held)
        self.assertEqual(second, "TS-2")

    def test_planned_line_only_when_debugging(self):
        """Each planned row is logged at DEBUG, and not at INFO (the default)."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.addCleanup(logs.set_level, "INFO")
        planned = lambda: [e for e in events if e.get("log_format", "").startswith("planned ")]
        self.queue.put_many(["TS-1"])
        self.run_queue()
        self.assertEqual(planned(), [])
        logs.set_level("DEBUG")
        self.queue.put_many(["TS-2"])
        self.run_queue()
        self.assertEqual([e["schedule_id"] for e in planned()], ["TS-2"])

    def test_reads_in_batches(self):
        """IDs are read from the source in batches, not one query each."""
        self.source.rows.update({f"TS-{i}": schedule(f"TS-{i}") for i in range(3, 6)})
        self.queue.put_many([f"TS-{i}" for i in range(1, 6)])
        self.run_queue()
        self.assertEqual([len(ids) for ids in self.source.reads], [2, 2, 1])

    def test_outcome_reaches_the_caller(self):
        """The Deferred of put() fires with the planned fire time, for the socket reply."""
        outcome = self.queue.put("TS-1")
        self.run_queue()
        result = self.successResultOf(outcome)
        self.assertEqual(result.next_fire, T0 + 300)
        self.assertIn("Next run at 2026-03-07 12:05:00 UTC", result.describe())

    def test_disabled_and_deleted_are_cancelled(self):
        """A disabled or missing schedule loses its member and the caller is told why."""
        self.store.add("TS-1", T0 + 60)
        self.store.add("TS-9", T0 + 60)
        self.source.rows["TS-1"] = schedule("TS-1", enabled=False)
        disabled, deleted = self.queue.put("TS-1"), self.queue.put("TS-9")
        self.run_queue()
        self.assertEqual(self.store.zset, {})
        self.assertIn("disabled", self.successResultOf(disabled).describe())
        self.assertIn("no such BTU Task Schedule", self.successResultOf(deleted).describe())

    def test_bad_row_reported_others_planned(self):
        """An unplannable row is reported in stats and cancelled; the rest of its batch is planned."""
        self.source.rows["TS-1"] = schedule("TS-1", cron="61 * * * *")
        self.queue.put_many(["TS-1", "TS-2"])
        self.run_queue()
        self.assertEqual(list(self.store.zset), [f"TS-2|{T0 + 15 * 3600}"])
        self.assertIn("TS-1", self.stats.problems)

    def test_replanning_replaces_member(self):
        """Re-planning an edited schedule replaces its member instead of adding a second one."""
        self.queue.put("TS-1")
        self.run_queue()
        self.source.rows["TS-1"] = schedule("TS-1", cron="0 * * * *")
        self.queue.put("TS-1")
        self.run_queue()
        self.assertEqual(self.store.zset, {f"TS-1|{T0 + 3600}": T0 + 3600})

    def test_overdue_member_kept_for_catch_up(self):
        """An overdue member is left for the dispatcher (catch-up), not silently re-planned."""
        self.store.add("TS-1", T0 - 60)
        self.queue.put("TS-1")
        self.run_queue()
        self.assertEqual(self.store.zset, {f"TS-1|{T0 - 60}": T0 - 60})

    def test_next_rows_read_while_a_batch_writes_and_writes_stay_in_order(self):
        """While a batch's Redis writes are under way the next batch's rows are read, and its
        writes wait for them."""
        held, plan = [], self.store.plan

        def held_plan(entries, now):  # applied at once, answered when the test says
            kept = self.successResultOf(plan(entries, now))
            answer = defer.Deferred()
            held.append((entries, answer))
            return answer.addCallback(lambda _: kept)

        self.store.plan = held_plan
        self.source.rows.update({i: schedule(i) for i in ("TS-3", "TS-4")})
        self.queue.put_many(["TS-1", "TS-2", "TS-3", "TS-4"])
        self.run_queue()
        self.assertEqual(self.source.reads, [["TS-1", "TS-2"], ["TS-3", "TS-4"]])
        self.assertEqual([entries for entries, _ in held], [[("TS-1", T0 + 300), ("TS-2", T0 + 15 * 3600)]])
        idle = self.planner.idle()
        held[0][1].callback(None)
        self.run_queue()
        self.assertEqual([entries[0][0] for entries, _ in held], ["TS-1", "TS-3"])
        self.assertNoResult(idle)
        held[1][1].callback(None)
        self.run_queue()
        self.successResultOf(idle)

    def test_next_fire_kept_for_one_second_only(self):
        """Rows planned within one second share a next fire; the next second plans anew."""
        self.source.rows = {i: schedule(i, cron="* * * * * * *") for i in ("TS-1", "TS-2", "TS-3")}
        self.queue.put_many(["TS-1"])
        self.run_queue()
        self.clock.advance(0.5)
        self.queue.put_many(["TS-2"])
        self.run_queue()
        self.assertEqual(self.store.planned_map, {"TS-1": f"TS-1|{T0 + 1}", "TS-2": f"TS-2|{T0 + 1}"})
        self.clock.advance(0.5)
        self.queue.put_many(["TS-3"])
        self.run_queue()
        self.assertEqual(self.store.planned_map["TS-3"], f"TS-3|{T0 + 2}")

    def test_source_failure_retried_later(self):
        """When the source is down the batch is retried after RETRY_MIN_SECS and the caller told."""
        self.source.failing = True
        outcome = self.queue.put("TS-1")
        self.run_queue()
        self.assertIn("will retry", self.successResultOf(outcome).describe())
        self.assertFalse(self.stats.sql.up)
        self.flushLoggedErrors(ConnectionError)
        self.source.failing = False
        self.clock.advance(RETRY_MIN_SECS)
        self.run_queue()
        self.assertEqual(list(self.store.zset), [f"TS-1|{T0 + 300}"])

    def test_idle_fires_when_drained(self):
        """idle() fires once every queued ID has been planned."""
        self.queue.put_many(["TS-1", "TS-2"])
        idle = self.planner.idle()
        self.assertNoResult(idle)
        self.run_queue()
        self.successResultOf(idle)


class RefresherTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.queue = UniqueQueue()
        self.source = FakeSource(schedule("TS-1", cron="*/5 * * * *"), schedule("TS-2", enabled=False))
        self.store = FakeStore()
        self.stats = Stats(started_at=T0)
        self.planner = Planner(self.clock, self.queue, self.source, self.store, RowCache(), self.stats)
        self.refresher = Refresher(self.clock, self.source, self.store, self.queue, self.planner, self.stats,
                                   REFRESH_SECS, CHECK_SECS)

    def start(self):
        self.planner.startService()
        self.refresher.startService()
        self.addCleanup(self.refresher.stopService)
        self.addCleanup(self.planner.stopService)
        for _ in range(10):
            self.clock.advance(0)

    def test_startup_refresh_plans_enabled_and_cancels_others(self):
        """At start every enabled schedule is planned and members of disabled ones are removed."""
        self.store.add("TS-2", T0 + 60)
        self.start()
        self.assertEqual(list(self.store.zset), [f"TS-1|{T0 + 300}"])
        self.assertEqual(self.stats.last_refresh["schedules"], 1)

    def test_strays_removed(self):
        """Members that are not their schedule's planned member (Rust-era leftovers) are removed."""
        self.store.zset[f"TS-1|{T0 + 7}"] = T0 + 7
        self.store.zset["garbage"] = T0
        self.start()
        self.assertEqual(list(self.store.zset), [f"TS-1|{T0 + 300}"])

    def test_refresh_repeats_every_interval(self):
        """A schedule enabled later is planned by the next periodic refresh."""
        self.start()
        self.source.rows["TS-2"] = schedule("TS-2", cron="0 3 * * *")
        self.clock.advance(REFRESH_SECS)
        for _ in range(10):
            self.clock.advance(0)
        self.assertIn("TS-2", self.store.planned_map)

    def test_lost_plan_rebuilt_within_one_check(self):
        """If Redis loses the plan (restart without persistence), the next check refreshes at once."""
        self.start()
        self.store.zset.clear()
        self.store.planned_map.clear()
        self.store.refreshed_at = None
        self.clock.advance(CHECK_SECS)
        for _ in range(10):
            self.clock.advance(0)
        self.assertEqual(list(self.store.zset), [f"TS-1|{T0 + 300}"])

    def test_intact_plan_not_refreshed_by_check(self):
        """The check leaves an intact plan alone (no refresh every poll)."""
        self.start()
        refreshed = self.stats.last_refresh["at"]
        self.clock.advance(CHECK_SECS)
        self.assertEqual(self.stats.last_refresh["at"], refreshed)

    def test_a_refresh_abandoned_after_its_scan_failed_leaves_no_unhandled_error(self):
        """A daemon stopped mid-refresh (the planner never idle again, the Redis connection closed
        under the scan) leaves no "Unhandled error in Deferred" to be logged at garbage collection,
        in whatever runs then."""
        self.store.scan_planned = lambda cursor, count: defer.fail(ConnectionError("Not connected"))
        self.refresher.startService()  # the planner is not started: the refresh waits for it
        self.clock.advance(0)
        self.refresher.stopService()
        del self.refresher, self.planner, self.queue, self.source, self.store
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(ConnectionError), [])

    def test_failed_refresh_retried_sooner_and_loop_survives(self):
        """A refresh that fails is retried after a back-off and the periodic loop keeps running."""
        self.source.failing = True
        self.start()
        self.assertIsNone(self.stats.last_refresh)
        self.source.failing = False
        self.clock.advance(5)
        for _ in range(10):
            self.clock.advance(0)
        self.assertEqual(self.stats.last_refresh["schedules"], 1)
        self.assertTrue(self.refresher._loop.running)


class MonitoredSourceTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.source = FakeSource(schedule("TS-1"))
        self.stats = Stats(started_at=0)
        self.monitored = MonitoredSource(self.source, self.stats.sql, self.clock)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def outage_warnings(self):
        return [e for e in self.events if "unreachable" in e.get("log_format", "")]

    def test_outage_logged_once_and_recovery_noted(self):
        """Repeated failures give one warning; the first success after them marks the source up."""
        self.source.failing = True
        for _ in range(3):
            self.failureResultOf(self.monitored.read(["TS-1"]), ConnectionError)
        self.assertEqual(len(self.outage_warnings()), 1)
        self.assertEqual((self.stats.sql.up, self.stats.sql.error), (False, "database down"))
        self.source.failing = False
        self.assertEqual(list(self.successResultOf(self.monitored.read(["TS-1"]))), ["TS-1"])
        self.assertTrue(self.stats.sql.up)
