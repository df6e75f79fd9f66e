"""Clocks (issue 10 items 1 and 2): instants come from Redis time, delays from the monotonic
reactor, so steps and skew of the host clock neither stall nor hurry dispatch.

The real-process tests run `twistd -n btu` under libfaketime (Debian package `faketime`), whose
offset is read from a file at every clock call, so the test steps the daemon's wall clock while it
runs; the monotonic clock is left alone (FAKETIME_DONT_FAKE_MONOTONIC), as an NTP step leaves it.
Enqueue instants are read from Redis `MONITOR`, i.e. by Redis time, the clock that decides.
"""

from __future__ import annotations

import json
import os
import re
import time

from twisted.internet import defer, task
from twisted.logger import Logger, formatEvent
from twisted.trial import unittest

from btu_twisted import history
from btu_twisted.clock import ClockWatch, RedisClock
from btu_twisted.enqueuer import ENQUEUED, Enqueuer, Fire
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.stats import Stats
from btu_twisted.store import LAST_FIRE_PREFIX, PLANNED_KEY, SCHEDULE_KEY
from tests.fakes import schedule
from tests.support.daemon import (TwistdProcess, control_request, poll, short_dir, twistd_env,
                                  write_config)
from tests.support.pushes import LIBFAKETIME, PushMonitor, faketime_env, set_faketime_offset
from tests.support.servers import use_shared_redis

NOOP = "tests.support.jobfuncs.noop"
STATUS = {"request_type": "status", "request_content": None}
START_TIMEOUT_SECS = 15
STEP_SECS = 3600          # an NTP step or VM resume: one hour
STEP_HELD_SECS = 4        # how long the wrong clock is held before it is put right
AFTER_STEP_SECS = 3       # dispatch observed after the clock is right again
LATE_SECS = 0.5           # a fire pushed this late explains the one before it (coalesced, misfire policy)
SCHEDULE_FILE = """
time_zone = "UTC"
[tasks.BTU-00001]
desc_short = "no-op"
function_string = "tests.support.jobfuncs.noop"
queue_name = "clock"
[schedules.TS-000001]
task = "BTU-00001"
cron_string = "* * * * * * *"
queue_name = "clock"
enabled = true
"""


class FakeTimeStore:
    """A store whose TIME answers a settable Redis time."""

    def __init__(self, redis_time):
        self.redis_time = redis_time

    def server_time(self):
        now = self.redis_time()
        return defer.succeed([int(now), int((now % 1) * 1e6)])


class RedisClockTests(unittest.TestCase):
    """RedisClock: reactor time plus the offset last learned from Redis."""

    def test_seconds_follow_redis_not_the_host(self):
        """After one TIME, instants are Redis time however far the host clock is off."""
        reactor = task.Clock()
        reactor.advance(1000)
        clock = RedisClock(reactor, wall=lambda: 5000.0)
        self.assertEqual(clock.seconds(), 5000.0)  # host clock until Redis answers
        clock.learn(1_800_000_000.0, received_at=1000)
        reactor.advance(2.5)
        self.assertEqual(clock.seconds(), 1_800_000_002.5)
        self.assertTrue(clock.synced)

    def test_timers_are_the_reactors(self):
        """callLater is the reactor's: a delay, whatever the offset."""
        reactor = task.Clock()
        clock = RedisClock(reactor, wall=lambda: 0.0)
        clock.learn(1e9, received_at=0)
        called = []
        clock.callLater(3, called.append, 1)
        reactor.advance(3)
        self.assertEqual(called, [1])
        self.assertEqual(clock.getDelayedCalls(), [])


class ClockWatchTests(unittest.TestCase):
    """ClockWatch: skew is logged once when it starts and once when it ends, and shown in status."""

    def setUp(self):
        self.reactor = task.Clock()
        self.reactor.advance(100)
        self.host_offset = 0.0
        self.clock = RedisClock(self.reactor, wall=lambda: self.reactor.seconds() + 1e9 + self.host_offset)
        self.store = FakeTimeStore(lambda: self.reactor.seconds() + 1e9)
        self.stats = Stats(started_at=0)
        self.watch = ClockWatch(self.reactor, self.clock, self.store, self.stats, max_skew_secs=2)
        self.events = []
        self.patch(ClockWatch, "log", Logger(observer=self.events.append))
        self.watch.startService()
        self.addCleanup(self.watch.stopService)

    def texts(self):
        return [formatEvent(e) for e in self.events]

    def test_step_is_logged_once_and_its_end_once(self):
        """A 1 h step back held for 30 s: one warning with its size, one line when it is over."""
        self.host_offset = -3600.0
        for _ in range(30):
            self.reactor.advance(1)
        self.assertTrue(self.stats.clock["skewed"])
        self.assertEqual(self.stats.clock["host_offset_secs"], -3600.0)
        self.host_offset = 0.0
        for _ in range(30):
            self.reactor.advance(1)
        texts = self.texts()
        self.assertEqual(len(texts), 2, texts)
        self.assertIn("3600.000 s behind Redis time", texts[0])
        self.assertIn("agrees with Redis time again", texts[1])
        self.assertFalse(self.stats.clock["skewed"])
        self.assertEqual(self.stats.clock["source"], "redis")

    def test_skew_within_the_bound_is_quiet(self):
        """A host clock 1.5 s off (bound 2 s) is shown in status but not warned about."""
        self.host_offset = 1.5
        self.reactor.advance(20)
        self.assertEqual(self.texts(), [])
        self.assertEqual(self.stats.clock["host_offset_secs"], 1.5)


class SlowTimeReplyTests(unittest.TestCase):
    """A TIME reply that waited in a busy process is not learned from: its instants would lag."""

    def setUp(self):
        self.reactor = task.Clock()
        self.reactor.advance(100)
        self.clock = RedisClock(self.reactor, wall=lambda: self.reactor.seconds() + 1e9)
        self.store = FakeTimeStore(lambda: self.reactor.seconds() + 1e9)
        self.watch = ClockWatch(self.reactor, self.clock, self.store, Stats(started_at=0),
                                max_skew_secs=2)

    def reply_after(self, delay: float) -> None:
        """The next TIME is executed at once and its reply handled `delay` seconds later."""
        answer = FakeTimeStore.server_time(self.store)
        self.store.server_time = lambda: task.deferLater(self.reactor, delay, lambda: answer.result)

    def test_nothing_is_ready_before_the_first_answer(self):
        """A first TIME that fails does not release planning and dispatch (they would run on a
        host clock 1e9 s off); it is asked again soon, and the first answer releases them."""
        self.store.server_time = lambda: defer.fail(ConnectionError("Redis down"))
        self.watch.startService()
        self.addCleanup(self.watch.stopService)
        self.assertFalse(self.watch.first_sync.called)
        self.store.server_time = lambda: FakeTimeStore.server_time(self.store)
        self.reactor.advance(0.5)
        self.assertTrue(self.watch.first_sync.called)
        self.assertEqual(self.clock.seconds(), self.reactor.seconds() + 1e9)

    def test_a_reply_delayed_1_5_s_leaves_instants_on_redis_time(self):
        """Synced, then a TIME whose reply is handled 1.5 s late: instants stay Redis time."""
        self.watch.sync()
        self.reply_after(1.5)
        self.watch.sync()
        self.reactor.advance(1.5)
        self.assertEqual(self.clock.seconds(), self.reactor.seconds() + 1e9)

    def test_a_slow_first_reply_is_corrected_at_once(self):
        """A first reply handled 1.5 s late is learned (nothing better yet), and a sync follows
        at once: instants are Redis time long before the next interval."""
        self.reply_after(1.5)
        self.watch.startService()
        self.addCleanup(self.watch.stopService)
        self.store.server_time = lambda: FakeTimeStore.server_time(self.store)
        self.reactor.advance(1.5)
        self.assertEqual(self.clock.seconds(), self.reactor.seconds() + 1e9 - 1.5)
        self.reactor.advance(0.5)
        self.assertEqual(self.clock.seconds(), self.reactor.seconds() + 1e9)

    def test_a_first_slow_reply_and_a_second_slow_one_in_a_row_are_learned(self):
        """The first reply is all there is; a link that stays slow is still followed."""
        self.reply_after(1.5)
        self.watch.sync()
        self.reactor.advance(1.5)
        self.assertTrue(self.clock.synced)
        self.assertEqual(self.clock.seconds(), self.reactor.seconds() + 1e9 - 1.5)
        self.store.server_time = lambda: FakeTimeStore.server_time(self.store)
        self.watch.sync()  # fast: the best round trip seen is 0
        for _ in range(2):
            self.reply_after(0.5)
            self.watch.sync()
            self.reactor.advance(0.5)
        self.assertEqual(self.clock.seconds(), self.reactor.seconds() + 1e9 - 0.5)


class DistrustedWatermarkTests(unittest.TestCase):
    """A watermark ahead of Redis time beyond the bound is reported and not trusted (real Redis)."""

    def setUp(self):
        use_shared_redis(self)
        self.reports = []
        self.now = 1_800_000_000.0
        self.enqueuer = Enqueuer(self.redis_server.url, now=lambda: self.now, sleep=lambda _: None,
                                 max_skew_secs=2, on_distrusted=lambda *r: self.reports.append(r))
        self.addCleanup(self.enqueuer.close)
        self.row = schedule("TS-1", cron="* * * * *")
        member = f"TS-1|{int(self.now)}"
        self.redis.zadd(SCHEDULE_KEY, {member: self.now})
        self.redis.hset(PLANNED_KEY, "TS-1", member)

    def fire(self):
        when = int(self.now)
        return Fire("TS-1", when, PythonBuilder().build(self.row, when), when + 60)

    def test_watermark_from_a_fast_clock_does_not_block_fires(self):
        """A watermark 1 h ahead (left by a daemon 1 h fast) is distrusted: the fire goes out."""
        self.redis.set(LAST_FIRE_PREFIX + "TS-1", int(self.now) + 3600)
        self.assertEqual(self.enqueuer.dispatch([self.fire()], not_before=self.now), [ENQUEUED])
        self.assertEqual(self.reports, [("TS-1", int(self.now) + 3600, self.now)])
        self.assertEqual(int(self.redis.get(LAST_FIRE_PREFIX + "TS-1")), int(self.now))

    def test_catch_up_that_coalesces_says_so_in_the_history(self):
        """A fire that coalesced the planned one before it names it in its history entry."""
        when = int(self.now)
        fire = Fire("TS-1", when, PythonBuilder().build(self.row, when), when + 60, planned=when - 60)
        self.redis.zadd(SCHEDULE_KEY, {fire.member: when - 60})
        self.assertEqual(self.enqueuer.dispatch([fire], not_before=self.now), [ENQUEUED])
        self.assertEqual(history.read(self.redis, "TS-1")[0]["coalesced_from"], when - 60)
        on_time = Fire("TS-1", when + 60, PythonBuilder().build(self.row, when + 60), None)
        self.now += 60
        self.assertEqual(self.enqueuer.dispatch([on_time], not_before=self.now), [ENQUEUED])
        self.assertNotIn("coalesced_from", history.read(self.redis, "TS-1")[0])

    def test_watermark_within_the_bound_is_trusted(self):
        """A watermark 1 s ahead (within max_clock_skew_secs) still refuses the fire."""
        self.redis.set(LAST_FIRE_PREFIX + "TS-1", int(self.now) + 1)
        self.assertEqual(self.enqueuer.dispatch([self.fire()], not_before=self.now), ["already enqueued"])
        self.assertEqual(self.reports, [])


class FakedClockDaemonTests(unittest.TestCase):
    """`twistd -n btu` whose wall clock libfaketime steps while it runs."""

    timeout = 90

    def setUp(self):
        if not os.path.exists(LIBFAKETIME):
            raise unittest.SkipTest("libfaketime missing: apt-get install faketime")
        use_shared_redis(self)
        self.dir = short_dir(self)
        self.socket_path = os.path.join(self.dir, "btu.sock")
        self.offset_file = os.path.join(self.dir, "faketime")
        self.set_offset(0)
        with open(os.path.join(self.dir, "schedules.toml"), "w") as f:
            f.write(SCHEDULE_FILE)
        self.config_path = write_config(os.path.join(self.dir, "btu.toml"), {
            "redis_url": self.redis_server.url, "socket_path": self.socket_path,
            "schedule_file": os.path.join(self.dir, "schedules.toml"), "job_builder": "python",
            "misfire_grace_secs": 60, "scheduler_polling_interval": 60})
        self.monitor = PushMonitor(self.redis_server, "clock")
        self.addCleanup(self.monitor.stop)

    def set_offset(self, seconds: int) -> None:
        set_faketime_offset(self.offset_file, seconds)

    def start(self) -> TwistdProcess:
        env = twistd_env(**faketime_env(self.offset_file))
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config",
                                      self.config_path], env=env, cwd=self.dir)
        try:
            poll(lambda: len(self.monitor.fires()) >= 2 or daemon.process.poll() is not None,
                 START_TIMEOUT_SECS, "the first fires")
        except AssertionError as e:
            self.fail(f"{e}; {daemon.describe()}")
        self.assertIsNone(daemon.process.poll(), daemon.describe())
        return daemon

    def status(self) -> dict:
        return json.loads(control_request(self.socket_path, STATUS))

    def assertNoneEarly(self, fires: dict[int, float]) -> None:
        early = {when: at for when, at in fires.items() if at < when}
        self.assertEqual(early, {}, "fires pushed before their instant by Redis time")

    def assertEveryFireOrExplained(self, fires: dict[int, float]) -> None:
        """Every second from the first fire to the last, or a missing one the misfire policy
        explains: the fire before it was pushed at or after its instant (its next fire was planned
        after "now"), or the fire after it was pushed late (the missed ones coalesced into it)."""
        instants = sorted(fires)
        present = set(instants)
        for missing in sorted(set(range(instants[0], instants[-1])) - present):
            previous = max(w for w in instants if w < missing)
            following = min(w for w in instants if w > missing)
            if fires[previous] >= missing:
                continue
            self.assertGreater(fires[following] - following, LATE_SECS - (following - missing - 1),
                               f"{missing} missing while the daemon was on time: {instants}")

    def test_backward_and_forward_steps_never_stall_or_hurry_dispatch(self):
        """A 1 h step back, then one forward, each held 4 s: every fire on time by Redis time, each
        step logged once with its size and once when it is over."""
        daemon = self.start()
        time.sleep(1)
        self.set_offset(-STEP_SECS)
        time.sleep(STEP_HELD_SECS)
        during_back = self.status()["clock"]
        self.set_offset(0)
        time.sleep(AFTER_STEP_SECS)
        self.set_offset(+STEP_SECS)
        time.sleep(STEP_HELD_SECS)
        self.set_offset(0)
        right_at = time.time()
        time.sleep(AFTER_STEP_SECS)
        fires = self.monitor.fires()
        daemon.terminate()
        output = daemon.output()

        self.assertIn("MonotonicEPollReactor", output)
        self.assertTrue(during_back["skewed"], f"{during_back}: {output[-3000:]}")
        self.assertLess(during_back["host_offset_secs"], -STEP_SECS + 2, during_back)
        self.assertNoneEarly(fires)
        self.assertEveryFireOrExplained(fires)
        self.assertGreaterEqual(max(fires), int(right_at) + AFTER_STEP_SECS - 1,
                                "dispatch did not go on after the clock was right")
        steps = re.findall(r"host clock is ([0-9.]+) s (behind|ahead of) Redis time", output)
        self.assertEqual([(round(float(size)), way) for size, way in steps],
                         [(STEP_SECS, "behind"), (STEP_SECS, "ahead of")], output[-4000:])
        self.assertEqual(output.count("agrees with Redis time again"), 2, output[-4000:])
        self.assertNotIn("Traceback", output)

    def test_a_fast_host_clock_enqueues_nothing_early(self):
        """A daemon whose clock runs 20 s fast enqueues on Redis time, and status says it is skewed."""
        self.set_offset(+20)
        daemon = self.start()
        time.sleep(3)
        clock = self.status()["clock"]
        fires = self.monitor.fires()
        daemon.terminate()
        output = daemon.output()

        self.assertNoneEarly(fires)
        self.assertEveryFireOrExplained(fires)
        self.assertTrue(clock["skewed"], clock)
        self.assertLess(abs(clock["host_offset_secs"] - 20), 1, clock)  # trial has no delta=
        self.assertEqual(len(re.findall("host clock is 2[0-9.]+ s ahead of Redis time", output)), 1,
                         output[-3000:])
