# -*- test-case-name: tests.test_planner -*-
"""The full refresh: at start-up and every `full_refresh_internal_secs`, re-synchronise Redis with
the source of record by queueing every enabled schedule, and queueing (for cancellation) every
planned schedule that is no longer enabled.

Each completed refresh leaves a marker key in Redis; a check every `scheduler_polling_interval`
that finds it gone (Redis restarted without persistence, or was flushed) refreshes at once, so a
lost plan is rebuilt within one poll instead of one full-refresh interval.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from btu_twisted import memory
from btu_twisted.logs import OBSERVER

RETRY_MIN_SECS = 5.0  # a failed refresh is retried sooner than the next interval, doubling
# Members and planned IDs read per Redis call when looking for strays and disabled schedules: the
# plan is never held whole (100 000 schedules held at once cost 60 MB of peak RSS), and each page's
# Lua call keeps Redis busy about a millisecond.
SCAN_PAGE = 1000
# Enabled IDs queued at a time, the next ones once the planner is idle: a queue holding all of a
# 100 000-schedule refresh took 14 MB, on top of the row cache during a `reload`.
QUEUED_AT_ONCE = 10_000


class Refresher(service.Service):
    """A LoopingCall around `refresh`, which logs and survives every error."""

    log = Logger(observer=OBSERVER)

    def __init__(self, clock, source, store, queue, planner, stats, interval_secs: float,
                 check_interval_secs: float, rows=None, clock_ready: defer.Deferred | None = None,
                 scan_page: int = SCAN_PAGE):
        """`clock_ready` (ClockWatch.first_sync): a refresh starts once `clock` tells Redis time, so
        its start and duration are measured on one clock."""
        self._scan_page = scan_page
        self._clock = clock
        self._clock_ready = clock_ready
        self._rows = rows  # the planner's RowCache: the first refresh says which zones are in use
        self._source = source
        self._store = store
        self._queue = queue
        self._planner = planner
        self._stats = stats
        self._interval = interval_secs
        self._check_interval = check_interval_secs
        self._loop = None
        self._check_loop = None
        self._retry = None
        self._retry_delay = RETRY_MIN_SECS
        self._running_refresh: defer.Deferred | None = None
        self._again = False

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.refresh)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=True)
        self._check_loop = task.LoopingCall(self._check_plan)
        self._check_loop.clock = self._clock
        self._check_loop.start(self._check_interval, now=False)

    def stopService(self):
        super().stopService()
        for loop in (self._loop, self._check_loop):
            if loop is not None and loop.running:
                loop.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()

    def refresh(self) -> defer.Deferred:
        """Run one refresh; asked during one, run another after it (what it planned may predate
        the request, e.g. a clock resync). Never fails (the loop must keep running)."""
        if self._running_refresh is None:
            self._running_refresh = self._refresh()
            self._running_refresh.addBoth(self._finished)
        else:
            self._again = True
        return defer.succeed(None)

    def _finished(self, ok) -> None:
        self._running_refresh = None
        if isinstance(ok, Failure):
            # One line for the operator; the traceback only at DEBUG (a failing refresh is retried
            # with back-off, and must not print forty lines each time).
            self.log.error("full refresh failed ({error}); retrying in {delay:.0f} s",
                           error=ok.getErrorMessage() or ok.type.__name__, delay=self._retry_delay)
            self.log.debug("full refresh failure: {log_failure}", log_failure=ok)
            ok = False
        if ok:
            self._retry_delay = RETRY_MIN_SECS
            if self._again and self.running:
                self._again = False
                self.refresh()
        elif self.running:  # the retry is the refresh asked for meanwhile, too
            self._again = False
            self._retry = self._clock.callLater(self._retry_delay, self.refresh)
            self._retry_delay = min(self._retry_delay * 2, self._interval)

    @defer.inlineCallbacks
    def _refresh(self):
        if self._clock_ready is not None:
            yield self._clock_ready
        started = self._clock.seconds()
        try:
            ids = yield self._source.enabled_ids()
        except Exception:
            return False  # the source logged the outage; _finished schedules the retry
        if self._rows is not None:
            # The row cache's copies of the IDs, so the query's own 100 000 strings (6 MB) are
            # freed before the queue and the set below are built.
            ids = self._rows.held(ids)
        try:
            cancelling = self._cancel_disabled(set(ids))  # meanwhile, in Redis
            # Its failure is taken at once and raised when it is waited for: a refresh abandoned
            # before that (the daemon stopping while the planner works) leaves none unhandled.
            cancel_failures = []
            cancelling.addErrback(cancel_failures.append)
            for start in range(0, len(ids), QUEUED_AT_ONCE):
                self._queue.put_many(ids[start:start + QUEUED_AT_ONCE])
                yield self._planner.idle()
            yield cancelling
            if cancel_failures:
                cancel_failures[0].raiseException()
            yield self._planner.idle()
            yield self._store.mark_refreshed(started)
        except Exception as e:
            self.log.warn("full refresh could not update Redis ({error}); retrying", error=e)
            return False
        took = self._clock.seconds() - started
        first = self._stats.last_refresh is None
        unplannable = sum(1 for schedule_id in ids if schedule_id in self._stats.problems)
        self._stats.last_refresh = {"at": started, "schedules": len(ids), "planned": len(ids) - unplannable,
                                    "unplannable": unplannable, "seconds": round(took, 3)}
        # Counted, not assumed: "9 planned" while all 9 were unplannable misled operators.
        self.log.info("full refresh: {count} enabled schedules, {planned} planned, {unplannable} "
                      "unplannable (`btu status` says why) in {took:.3f} s", count=len(ids),
                      planned=len(ids) - unplannable, unplannable=unplannable, took=took)
        if first and self._rows is not None:
            self.log.info("zones in use: {zones}", zones="; ".join(
                f"{z['time_zone']} from {z['zone_source']} ({z['schedules']} schedule"
                f"{'' if z['schedules'] == 1 else 's'})"
                for z in self._rows.zone_counts()) or "none (no schedule read)")
        memory.release()  # the rows and plan entries of a large refresh were freed
        return True

    @defer.inlineCallbacks
    def _check_plan(self):
        """Refresh at once when the marker of the last refresh has vanished from Redis."""
        if self._stats.last_refresh is None or self._running_refresh is not None:
            return
        try:
            present = yield self._store.refresh_marked()
        except Exception:
            return  # Redis down: the dispatcher reports it, and asks for a refresh when it is back
        if not present:
            self.log.warn("the schedule plan vanished from Redis (restart without persistence, or "
                          "a flush); rebuilding it with a full refresh")
            self.refresh()

    @defer.inlineCallbacks
    def _cancel_disabled(self, enabled: set[str]):
        """Queue planned schedules that are no longer enabled, and drop members nobody owns, a page
        at a time (the store checks each page's members atomically: one re-planned meanwhile is
        kept)."""
        # Unplannable schedules have no member, yet one deleted or disabled since must leave
        # `unplannable`: the planner clears it when it sees the row gone or disabled.
        gone = set(self._stats.problems) - enabled
        # Each member is its schedule's planned one or a stray: the planned map's IDs and the
        # removed strays' IDs name every schedule the set held.
        for scan in (self._store.scan_planned, self._store.scan_strays):
            cursor = 0
            while True:
                cursor, ids = yield scan(cursor, self._scan_page)
                gone.update(schedule_id for schedule_id in ids if schedule_id not in enabled)
                if cursor == 0:
                    break
        self._queue.put_many(sorted(gone))
