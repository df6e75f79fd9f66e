# -*- test-case-name: tests.test_planner -*-
"""The consumer: take schedule IDs from the internal queue in batches, read their rows, plan their
next fire in Redis, and cancel those that are disabled, deleted or cannot be planned.

It runs as one Cooperator task, so a 100 000-ID refresh never starves the listener or dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from btu_twisted.cron import CronError
from btu_twisted.logs import OBSERVER, debugging
from btu_twisted.schedules import Schedule, ScheduleError
from btu_twisted.workqueue import UniqueQueue, resolve

RETRY_DELAY_SECS = 5.0  # after a failed batch (database or Redis down), before its IDs are retried


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


class Planner(service.Service):
    """Cooperator-driven consumer of the internal queue."""

    log = Logger(observer=OBSERVER)

    def __init__(self, clock, queue: UniqueQueue, source, store, rows: RowCache, stats,
                 on_planned=lambda when: None, batch_size: int = 500, cooperator=None):
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
        self._idle_waiters: list[defer.Deferred] = []
        self._retry = None
        self._retry_ids: list[str] = []

    def startService(self):
        super().startService()
        self._task = self._cooperator.cooperate(self._work())

    def stopService(self):
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._task is not None:
            self._task.stop()
        if self._pending is not None:
            self._pending.cancel()

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
        batch = yield self.queue.get_batch(self._batch_size)
        self._busy = True
        try:
            outcomes = yield self.plan([schedule_id for schedule_id, _ in batch])
        except Exception as e:
            self.log.failure("planning {count} schedules failed; retrying in {delay} s",
                             count=len(batch), delay=RETRY_DELAY_SECS)
            self._retry_later([schedule_id for schedule_id, _ in batch])
            outcomes = {schedule_id: Outcome(schedule_id, reason=f"planning failed, will retry ({e})")
                        for schedule_id, _ in batch}
        finally:
            self._busy = False
        for schedule_id, waiters in batch:
            resolve(waiters, outcomes[schedule_id])
        if not len(self.queue):
            waiters, self._idle_waiters = self._idle_waiters, []
            resolve(waiters, None)

    def _retry_later(self, ids: list[str]) -> None:
        """Queue `ids` again after RETRY_DELAY_SECS; failures meanwhile join the same retry."""
        self._retry_ids.extend(ids)
        if self._retry is None or not self._retry.active():
            self._retry = self._clock.callLater(RETRY_DELAY_SECS, self._requeue)

    def _requeue(self) -> None:
        ids, self._retry_ids = self._retry_ids, []
        self.queue.put_many(ids)

    @defer.inlineCallbacks
    def plan(self, ids: list[str]):
        """Plan or cancel each ID from its current row; fires with {id: Outcome}."""
        rows = yield self._source.read([self._held(schedule_id) for schedule_id in ids])
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

    def _held(self, schedule_id: str) -> str:
        """The equal ID string the row cache holds already, if any: rows built on it (the SQL source
        does) leave one copy of each ID in the cache, not one from every query that read it."""
        row = self._rows.get(schedule_id)
        return row.schedule_id if row is not None else schedule_id

    def _plan_one(self, schedule_id: str, row: Schedule | None, now: float) -> Outcome:
        if row is None:
            self._rows.pop(schedule_id, None)
            self._stats.problem(schedule_id, None)
            return Outcome(schedule_id, reason="no such BTU Task Schedule")
        self._rows[schedule_id] = row
        zone = dict(time_zone=row.time_zone, zone_source=row.zone_source)
        if not row.enabled:
            self._stats.problem(schedule_id, None)
            return Outcome(schedule_id, reason="the schedule is disabled", **zone)
        try:
            row.check()
            when = row.next_fire(now)
        except (CronError, ScheduleError) as e:
            self._stats.problem(schedule_id, str(e))
            self.log.warn("cannot plan {schedule_id}: {reason}", schedule_id=schedule_id, reason=e)
            return Outcome(schedule_id, reason=str(e), **zone)
        self._stats.problem(schedule_id, None)
        if debugging():
            self.log.debug("planned {schedule_id} at {when} ({time_zone}, from {zone_source})",
                           schedule_id=schedule_id, when=when, **zone)
        return Outcome(schedule_id, next_fire=when, **zone)
