# -*- test-case-name: tests.test_planner -*-
"""The full refresh: at start-up and every `full_refresh_internal_secs`, re-synchronise Redis with
the source of record by queueing every enabled schedule, and queueing (for cancellation) every
planned schedule that is no longer enabled.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from btu_twisted.logs import OBSERVER
from btu_twisted.store import split_member

RETRY_MIN_SECS = 5.0  # a failed refresh is retried sooner than the next interval, doubling


class Refresher(service.Service):
    """A LoopingCall around `refresh`, which logs and survives every error."""

    log = Logger(observer=OBSERVER)

    def __init__(self, clock, source, store, queue, planner, stats, interval_secs: float):
        self._clock = clock
        self._source = source
        self._store = store
        self._queue = queue
        self._planner = planner
        self._stats = stats
        self._interval = interval_secs
        self._loop = None
        self._retry = None
        self._retry_delay = RETRY_MIN_SECS
        self._running_refresh: defer.Deferred | None = None

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()

    def refresh(self) -> defer.Deferred:
        """Run one refresh unless one is under way; never fails (the loop must keep running)."""
        if self._running_refresh is None:
            self._running_refresh = self._refresh()
            self._running_refresh.addBoth(self._finished)
        return defer.succeed(None)

    def _finished(self, ok) -> None:
        self._running_refresh = None
        if ok:
            self._retry_delay = RETRY_MIN_SECS
        elif self.running:
            self._retry = self._clock.callLater(self._retry_delay, self.refresh)
            self._retry_delay = min(self._retry_delay * 2, self._interval)

    @defer.inlineCallbacks
    def _refresh(self):
        started = self._clock.seconds()
        try:
            ids = yield self._source.enabled_ids()
        except Exception:
            return False  # the source logged the outage; _finished schedules the retry
        self._queue.put_many(ids)
        try:
            yield self._cancel_disabled(set(ids))
        except Exception:
            self.log.failure("refresh could not read the schedule set from Redis")
            return False
        yield self._planner.idle()
        took = self._clock.seconds() - started
        self._stats.last_refresh = {"at": started, "schedules": len(ids), "seconds": round(took, 3)}
        self.log.info("full refresh: {count} enabled schedules planned in {took:.3f} s",
                      count=len(ids), took=took)
        return True

    @defer.inlineCallbacks
    def _cancel_disabled(self, enabled: set[str]):
        """Queue planned schedules that are no longer enabled, and drop members nobody owns."""
        members = yield self._store.members()
        planned = yield self._store.planned()
        owners = {parsed[0] for parsed in map(split_member, members) if parsed}
        self._queue.put_many(sorted((owners | set(planned)) - enabled))
        # The store re-checks each candidate atomically: one re-planned meanwhile is kept.
        candidates = [m for m in members if planned.get((split_member(m) or ("",))[0]) != m]
        yield self._store.remove_strays(candidates)
