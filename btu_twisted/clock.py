# -*- test-case-name: tests.test_clock -*-
"""Two clocks, kept apart: the reactor measures delays, Redis TIME tells instants.

Cron fires, due-ness, watermarks and the enqueuer's wait are instants, and every daemon sharing a
Redis must agree on them, so they are read from `RedisClock`: the reactor's (monotonic) time plus
an offset learned from Redis `TIME` every SYNC_INTERVAL_SECS (one round trip per interval, none per
fire). The host's wall clock is only watched: a step or a drift beyond `max_clock_skew_secs` is
logged once when it starts and once when it ends, and shown in `status`.

With a monotonic reactor (`monotonic_reactor.install`, used by `twistd btu` and `btu.tac`) a step of
the host clock moves no timer at all; on a wall-clock reactor a step still stalls timers, which is
why `makeService` warns when it runs on one.
"""

from __future__ import annotations

import time

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from btu_twisted.logs import OBSERVER

SYNC_INTERVAL_SECS = 10.0  # between Redis TIME reads; the monotonic clock drifts microseconds per hour
# Between comparisons of the host clock with Redis time (no I/O, but a reactor wake of ~0.15 ms,
# the idle daemon's largest cost at 1 s): a step held 4 s is still seen, and logged, at 2 s.
WATCH_INTERVAL_SECS = 2.0
# A TIME reply slower than this (and than SLOW_SYNC_FACTOR times the fastest one seen) is not
# learned from once synced: an estimate lags Redis by up to its round trip, and a reply that waited
# 1.5 s in a busy process made every fire of the next SYNC_INTERVAL_SECS go out 1.5 s late.
MAX_SYNC_ROUND_TRIP_SECS = 0.05
SLOW_SYNC_FACTOR = 4.0
RESYNC_SOON_SECS = 0.2  # after a slow TIME reply, the next sync comes this soon, not a whole interval later


class RedisClock:
    """An IReactorTime whose `seconds()` is Redis server time and whose timers are the reactor's."""

    def __init__(self, reactor, wall=time.time):
        self._reactor = reactor
        self._wall = wall
        # Until Redis answers, instants come from the host clock.
        self._offset = wall() - reactor.seconds()
        self.synced = False

    def seconds(self) -> float:
        """Now, in unix seconds by Redis time (thread-safe: the enqueuer waits on it)."""
        return self._reactor.seconds() + self._offset

    def callLater(self, delay, f, *args, **kwargs):
        return self._reactor.callLater(delay, f, *args, **kwargs)

    def getDelayedCalls(self):
        return self._reactor.getDelayedCalls()

    def learn(self, server_time: float, received_at: float) -> None:
        """Take Redis `server_time`, whose reply arrived at reactor time `received_at`.

        Redis read its clock at some moment of the round trip; taking the latest makes our
        estimate lag Redis by at most the round trip, so a fire waited for is never enqueued early.
        """
        self._offset = server_time - received_at
        self.synced = True

    def host_offset(self) -> float:
        """How far the host's wall clock is ahead of Redis time (negative: behind), in seconds."""
        return self._wall() - self.seconds()


class ClockWatch(service.Service):
    """Keeps `RedisClock` in step with Redis and reports the host clock's skew and steps."""

    log = Logger(observer=OBSERVER)

    def __init__(self, reactor, clock: RedisClock, store, stats, max_skew_secs: float,
                 on_resync=lambda: None):
        """`on_resync` is called when a sync moves instants by more than `max_skew_secs` (the first
        sync of a skewed host, or a step of Redis's own clock): what was planned must be re-planned."""
        self._reactor = reactor
        self._clock = clock
        self._store = store
        self._stats = stats
        self._max_skew = max_skew_secs
        self._loops: list[task.LoopingCall] = []
        self._skewed_since: float | None = None
        self._on_resync = on_resync
        self._fastest_round_trip: float | None = None
        self._skipped_last = False  # the last TIME reply was too slow to learn from
        self._resync = None  # the early sync that follows a slow reply
        self.first_sync = defer.Deferred()  # fires once the first TIME has answered
        self._report(clock.host_offset())

    def startService(self):
        super().startService()
        for interval, work in ((SYNC_INTERVAL_SECS, self.sync), (WATCH_INTERVAL_SECS, self.watch)):
            loop = task.LoopingCall(work)
            loop.clock = self._reactor  # delays: never moved by a clock step
            loop.start(interval, now=True)
            self._loops.append(loop)

    def stopService(self):
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._resync is not None and self._resync.active():
            self._resync.cancel()

    @defer.inlineCallbacks
    def sync(self):
        """Learn Redis time; a Redis that does not answer keeps the last offset (and says so elsewhere)."""
        sent_at = self._reactor.seconds()
        try:
            seconds, micros = yield self._store.server_time()
        except Exception:
            # The dispatcher logs Redis outages; instants keep the offset last learned. Before the
            # first answer there is none: ask again soon, as nothing may be planned or dispatched
            # on the host's clock (a fast one would enqueue early).
            if not self._clock.synced:
                self._sync_soon()
        else:
            received_at = self._reactor.seconds()
            round_trip = received_at - sent_at
            if self._too_slow(round_trip):
                self.log.debug("TIME answered in {took:.3f} s: keeping the offset last learned",
                               took=round_trip)
            else:
                self._learn(int(seconds) + int(micros) / 1e6, received_at)
            if round_trip > MAX_SYNC_ROUND_TRIP_SECS:
                # A lag learned from a slow first reply, corrected only a whole interval later,
                # would jump instants forward past a pending fire, which the misfire policy
                # then coalesces into the next one.
                self._sync_soon()
        if self._clock.synced and not self.first_sync.called:
            self.first_sync.callback(None)

    def _sync_soon(self) -> None:
        """Sync again RESYNC_SOON_SECS from now (once: a sync already pending is enough)."""
        if self.running and not (self._resync is not None and self._resync.active()):
            self._resync = self._reactor.callLater(RESYNC_SOON_SECS, self.sync)

    def _learn(self, server_time: float, received_at: float) -> None:
        """Take one TIME reply; instants moved beyond the skew bound mean re-planning."""
        before = self._clock.seconds()
        self._clock.learn(server_time, received_at)
        if abs(self._clock.seconds() - before) > self._max_skew:
            self.log.info("instants moved by {shift:+.3f} s to Redis time; re-planning",
                          shift=self._clock.seconds() - before)
            self._on_resync()
        self.watch()

    def _too_slow(self, round_trip: float) -> bool:
        """Whether a TIME reply took too long to learn from: never the first one, nor two in a
        row (a link that stays slow is still followed, a step of Redis's clock still learned)."""
        fastest = self._fastest_round_trip
        self._fastest_round_trip = round_trip if fastest is None else min(fastest, round_trip)
        slow = self._clock.synced and not self._skipped_last and round_trip > max(
            MAX_SYNC_ROUND_TRIP_SECS, SLOW_SYNC_FACTOR * self._fastest_round_trip)
        self._skipped_last = slow
        return slow

    def watch(self) -> None:
        """Compare the host clock with Redis time; log when the skew goes beyond the bound and back."""
        offset = self._clock.host_offset()
        self._report(offset)
        now = self._clock.seconds()
        if abs(offset) > self._max_skew:
            if self._skewed_since is None:
                self._skewed_since = now
                self.log.warn("host clock is {size:.3f} s {direction} Redis time (stepped or "
                              "drifting; max_clock_skew_secs={bound}): instants are taken from Redis",
                              size=abs(offset), direction="ahead of" if offset > 0 else "behind",
                              bound=self._max_skew)
        elif self._skewed_since is not None:
            self.log.info("host clock agrees with Redis time again ({offset:+.3f} s) after {took:.0f} s",
                          offset=offset, took=now - self._skewed_since)
            self._skewed_since = None

    def _report(self, offset: float) -> None:
        self._stats.clock = {"source": "redis" if self._clock.synced else "host",
                             "host_offset_secs": round(offset, 3),
                             "skewed": abs(offset) > self._max_skew,
                             "max_skew_secs": self._max_skew}
