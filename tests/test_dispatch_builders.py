"""The dispatcher's build step with builders that skip, retry or refuse fires (task.Clock, doubles):
a fire whose job cannot be built yet is retried until misfire_grace_secs runs out, without holding
back the other schedules."""

from datetime import datetime, timezone

from twisted.internet import defer, task
from twisted.trial import unittest

from btu_twisted.builders import Retry, Skip
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.dispatcher import Dispatcher
from btu_twisted.planner import RowCache
from btu_twisted.schedules import ScheduleError
from btu_twisted.stats import Stats
from tests.fakes import FakeEnqueuer, FakeSource, FakeStore, run_now, schedule

T0 = int(datetime(2026, 3, 7, 12, 0, tzinfo=timezone.utc).timestamp())
GRACE_SECS = 5
POLL_SECS = 60


class ScriptedBuilder(PythonBuilder):
    """Builds python jobs, except that `script[schedule_id]` lists what to answer first."""

    def __init__(self, clock):
        super().__init__()
        self.clock = clock
        self.script: dict[str, list] = {}
        self.asked: list[tuple[str, float]] = []

    def build_batch(self, fires):
        outcomes = []
        for row, when in fires:
            self.asked.append((row.schedule_id, self.clock.seconds()))
            queued = self.script.get(row.schedule_id)
            outcome = queued.pop(0) if queued else self.build(row, when)
            if isinstance(outcome, float):  # a retry delay
                outcome = Retry("web server down", self.clock.seconds() + outcome)
            outcomes.append(outcome)
        return defer.succeed(outcomes)


class BuildStepTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.store = FakeStore()
        self.source = FakeSource(schedule("TS-1", cron="* * * * *"), schedule("TS-2", cron="* * * * *"))
        self.enqueuer = FakeEnqueuer(self.store)
        self.stats = Stats(started_at=T0)
        self.builder = ScriptedBuilder(self.clock)
        self.dispatcher = Dispatcher(self.clock, self.store, self.source, RowCache(), self.builder,
                                     self.enqueuer, run_now, self.stats, GRACE_SECS, POLL_SECS)
        self.dispatcher.startService()
        self.addCleanup(self.dispatcher.stopService)

    def advance_to(self, when: float) -> None:
        while self.clock.seconds() < when:
            self.clock.advance(min(0.25, when - self.clock.seconds()))

    def enqueued(self) -> list[str]:
        return [spec.job_id for spec in self.enqueuer.enqueued]

    def test_retried_fire_does_not_hold_back_others(self):
        """TS-1's job cannot be built (retries every second); TS-2, due 2 s later, is enqueued at its
        instant; TS-1 is retried within the grace, then skipped and planned for its next fire."""
        self.store.add("TS-1", T0 + 60)
        self.store.add("TS-2", T0 + 62)
        self.builder.script["TS-1"] = [1.0] * 20
        self.advance_to(T0 + 62)
        self.assertEqual(self.enqueued(), [f"btu-TS-2-{T0 + 62}"])
        self.assertEqual(self.enqueuer.calls[-1][1], T0 + 62)  # at its instant, not after a back-off
        self.advance_to(T0 + 70)
        retries = [at for schedule_id, at in self.builder.asked if schedule_id == "TS-1"]
        self.assertGreaterEqual(len(retries), 4)
        self.assertLessEqual(retries[-1], T0 + 60 + GRACE_SECS)
        self.assertEqual(self.stats.counts["skipped_misfires"], 1)
        self.assertEqual(self.store.planned_map["TS-1"], f"TS-1|{T0 + 120}")
        self.assertNotIn(f"btu-TS-1-{T0 + 60}", self.enqueued())

    def test_retry_that_succeeds_within_grace_enqueues_once(self):
        """Two failed attempts, then a job: enqueued once, for the planned fire."""
        self.store.add("TS-1", T0 + 60)
        self.builder.script["TS-1"] = [1.0, 1.0]
        self.advance_to(T0 + 65)
        self.assertEqual(self.enqueued(), [f"btu-TS-1-{T0 + 60}"])
        self.assertEqual(self.store.planned_map["TS-1"], f"TS-1|{T0 + 120}")

    def test_skip_is_counted_and_advances(self):
        """A Skip (e.g. In-Progress) enqueues nothing, counts, and plans the next fire."""
        self.store.add("TS-1", T0 + 60)
        self.builder.script["TS-1"] = [Skip("task BTU-00001 is In-Progress", "skipped_in_progress")]
        self.advance_to(T0 + 61)
        self.assertEqual(self.enqueued(), [])
        self.assertEqual(self.stats.counts["skipped_in_progress"], 1)
        self.assertEqual(self.store.planned_map["TS-1"], f"TS-1|{T0 + 120}")

    def test_bad_row_from_builder_is_reported(self):
        """A ScheduleError from the builder marks the schedule unplannable and drops its member."""
        self.store.add("TS-1", T0 + 60)
        self.builder.script["TS-1"] = [ScheduleError("arguments: not a Python literal")]
        self.advance_to(T0 + 61)
        self.assertEqual(self.enqueued(), [])
        self.assertIn("not a Python literal", self.stats.problems["TS-1"])
        self.assertNotIn("TS-1", self.store.planned_map)
