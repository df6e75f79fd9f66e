# -*- test-case-name: tests.test_planner -*-
"""The consumer: take schedule IDs from the internal queue in batches, read their rows, plan their
next fire in Redis, and cancel those that are disabled, deleted or cannot be planned.

It runs as one Cooperator task, so a 100 000-ID refresh never starves the listener or dispatcher.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from btu_twisted.cron import CronError
from btu_twisted.logs import OBSERVER, debugging
from btu_twisted.schedules import Schedule, ScheduleError
from btu_twisted.workqueue import UniqueQueue, resolve

RETRY_MIN_SECS = 1.0  # first wait after a failed batch (database or Redis down), doubled per failure


@dataclass(frozen=True)
class Outcome:
    """What planning did with one schedule ID (the socket reply is built from it)."""

    schedule_id: str
    next_fire: int | None = None
    time_zone: str = "UTC"
    reason: str | None = None
    zone_source: str = "time_zone_string"

    def describe(self) -> str:
        """The sentence the socket reply adds: the next run in local time (zone and its source) and UTC."""
        if self.next_fire is None:
            return f"Not scheduled: {self.reason}."
        local = datetime.fromtimestamp(self.next_fire, ZoneInfo(self.time_zone))
        utc = datetime.fromtimestamp(self.next_fire, timezone.utc)
        return (f"Next run at {local:%Y-%m-%d %H:%M:%S %Z} ({self.time_zone}, from {self.zone_source}), "
                f"{utc:%Y-%m-%dT%H:%M:%SZ}.")


class RowCache(dict):
    """The last row read for each schedule: dispatch falls back on it when SQL is unreachable."""

    def held(self, ids: list[str]) -> list[str]:
        """`ids` as the equal strings the cache holds already, where it has them: rows built on them
        (the SQL source does) leave one copy of each ID in the cache, whichever path read them."""
        return [row.schedule_id if (row := self.get(i)) is not None else i for i in ids]

    def zone_counts(self) -> list[dict]:
        """How many known schedules use each (zone, source): the zones this daemon plans in."""
        counts = Counter((row.time_zone, row.zone_source) for row in self.values())
        return [{"time_zone": zone, "zone_source": source, "schedules": count}
                for (zone, source), count in sorted(counts.items())]


class Planner(service.Service):
    """Cooperator-driven consumer of the internal queue."""

    log = Logger(observer=OBSERVER)

    def __init__(self, clock, queue: UniqueQueue, source, store, rows: RowCache, stats,
                 on_planned=lambda when: None, batch_size: int = 500, cooperator=None,
                 max_retry_secs: float = 60.0, clock_ready: defer.Deferred | None = None):
        """`clock_ready` (ClockWatch.first_sync) holds planning back until `clock` tells Redis
        time: planned with a skewed host clock, fires would be computed from the wrong now."""
        self._clock = clock
        self.queue = queue
        self._source = source
        self._store = store
        self._rows = rows
        self._stats = stats
        self._on_planned = on_planned
        self._batch_size = batch_size
        self._cooperator = cooperator or task.Cooperator(scheduler=lambda f: clock.callLater(0, f))
        self._task = None
        self._pending: defer.Deferred | None = None
        self._busy = False
        self._writing: defer.Deferred | None = None  # the batch whose writes are under way
        self._fires_second: int | None = None  # the whole second `_fires` holds next fires for
        self._fires: dict[tuple[str, str], int] = {}
        self._idle_waiters: list[defer.Deferred] = []
        self._retry = None
        self._retry_ids: list[str] = []
        self._clock_ready = clock_ready
        self._retry_delay = RETRY_MIN_SECS
        self._max_retry = max_retry_secs  # scheduler_polling_interval in the daemon

    def startService(self):
        super().startService()
        ready = defer.succeed(None) if self._clock_ready is None else self._clock_ready
        ready.addCallback(lambda _: self._start_work())

    def _start_work(self) -> None:
        if self.running and self._task is None:
            self._task = self._cooperator.cooperate(self._work())

    def stopService(self):
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._task is not None:
            self._task.stop()
            self._task = None
        for pending in (self._pending, self._writing):
            if pending is not None:
                pending.cancel()

    def idle(self) -> defer.Deferred:
        """Fire once the queue is empty and no batch is being planned."""
        if not self._busy and not len(self.queue):
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._idle_waiters.append(waiter)
        return waiter

    def _work(self):
        while True:
            self._pending = self._next_batch()
            yield self._pending

    @defer.inlineCallbacks
    def _next_batch(self):
        """Take a batch and start reading its rows, then write it once the previous batch's writes
        are done; while more is queued, the next batch's rows are read during these writes (in a
        refresh, Redis and MariaDB then work at the same time). Writes stay one batch at a time, in
        order, so a schedule queued again is never planned out of order."""
        batch = yield self.queue.get_batch(self._batch_size)
        self._busy = True
        reading = self._source.read(self._rows.held([schedule_id for schedule_id, _ in batch]))
        previous, self._writing = self._writing, None
        if previous is not None:
            yield previous
        self._writing = self._write_batch(batch, reading)
        if len(self.queue):
            return  # taken by the next batch: get_batch does not wait while this one writes
        writing, self._writing = self._writing, None
        yield writing
        self._busy = False
        if not len(self.queue):
            waiters, self._idle_waiters = self._idle_waiters, []
            resolve(waiters, None)

    @defer.inlineCallbacks
    def _write_batch(self, batch, reading: defer.Deferred):
        """Plan a batch from its rows being read, and tell its callers; never fails (a failed batch
        is retried later, its callers told so)."""
        ids = [schedule_id for schedule_id, _ in batch]
        try:
            rows = yield reading
            outcomes = yield self._write(ids, rows)
        except Exception as e:
            if self.running:  # one cut off by stopping is planned by the next start's refresh
                self._failed(e, len(batch))
                self._retry_later(ids)
            outcomes = {schedule_id: Outcome(schedule_id, reason=f"planning failed, will retry ({e})")
                        for schedule_id in ids}
        else:
            if not self._retry_ids:
                self._retry_delay = RETRY_MIN_SECS
        for schedule_id, waiters in batch:
            resolve(waiters, outcomes[schedule_id])

    def _failed(self, error: Exception, count: int) -> None:
        """Log a failed batch: the traceback at DEBUG; a warning only for the first failure of a
        run while SQL and Redis look up (their outages are logged, once, where they are seen)."""
        self.log.debug("planning {count} schedules failed: {log_failure}", count=count,
                       log_failure=Failure(error))
        first = self._retry_delay == RETRY_MIN_SECS and not self._retry_ids
        if first and self._stats.sql.up is not False and self._stats.redis.up is not False:
            self.log.warn("planning {count} schedules failed ({error}); retrying with back-off",
                          count=count, error=error)

    def _retry_later(self, ids: list[str]) -> None:
        """Queue `ids` again after a back-off that doubles up to the poll interval; failures
        meanwhile join the same retry."""
        self._retry_ids.extend(ids)
        if self._retry is None or not self._retry.active():
            self._retry = self._clock.callLater(self._retry_delay, self._requeue)
            self._retry_delay = min(self._retry_delay * 2, self._max_retry)

    def _requeue(self) -> None:
        ids, self._retry_ids = self._retry_ids, []
        self.queue.put_many(ids)

    @defer.inlineCallbacks
    def plan(self, ids: list[str]):
        """Plan or cancel each ID from its current row; fires with {id: Outcome}."""
        rows = yield self._source.read(self._rows.held(ids))
        outcomes = yield self._write(ids, rows)
        return outcomes

    @defer.inlineCallbacks
    def _write(self, ids: list[str], rows: dict):
        """Plan or cancel each ID from `rows` in Redis; fires with {id: Outcome}."""
        now = self._clock.seconds()
        entries, cancels, outcomes = [], [], {}
        for schedule_id in ids:
            outcome = self._plan_one(schedule_id, rows.get(schedule_id), now)
            outcomes[schedule_id] = outcome
            if outcome.next_fire is None:
                cancels.append(schedule_id)
            else:
                entries.append((schedule_id, outcome.next_fire))
        yield self._store.plan(entries, now)
        yield self._store.cancel(cancels)
        self._stats.counts["planned"] += len(entries)
        if entries:
            self._on_planned(min(when for _, when in entries))
        return outcomes

    def _next_fire(self, row: Schedule, now: float) -> int:
        """`row.next_fire(now)`, kept by (cron, zone) for the whole second of `now`: a fire is a
        whole second, so every instant of that second has the same next fire, and a refresh plans
        most rows within a few seconds, many sharing a cron and a zone (2 µs saved per row)."""
        second = int(now)
        if second != self._fires_second:
            self._fires_second, self._fires = second, {}
        key = (row.cron(), row.time_zone)
        when = self._fires.get(key)
        if when is None:
            when = self._fires[key] = row.next_fire(now)
        return when

    def _plan_one(self, schedule_id: str, row: Schedule | None, now: float) -> Outcome:
        if row is None:
            self._rows.pop(schedule_id, None)
            self._stats.problem(schedule_id, None)
            return Outcome(schedule_id, reason="no such BTU Task Schedule")
        zone = dict(time_zone=row.time_zone, zone_source=row.zone_source)
        if not row.enabled:
            self._rows.pop(schedule_id, None)
            self._stats.problem(schedule_id, None)
            return Outcome(schedule_id, reason="the schedule is disabled", **zone)
        try:
            row.check()
            when = self._next_fire(row, now)
        except (CronError, ScheduleError) as e:
            # Not cached: a refused row may carry megabytes of text, and nothing will fire from it.
            self._rows.pop(schedule_id, None)
            if self._stats.problem(schedule_id, str(e)):
                self.log.warn("cannot plan {schedule_id}: {reason}", schedule_id=schedule_id, reason=e)
            return Outcome(schedule_id, reason=str(e), **zone)
        self._rows[schedule_id] = row
        self._stats.problem(schedule_id, None)
        if debugging():
            self.log.debug("planned {schedule_id} at {when} ({time_zone}, from {zone_source})",
                           schedule_id=schedule_id, when=when, **zone)
        return Outcome(schedule_id, next_fire=when, **zone)
