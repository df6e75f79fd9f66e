# -*- test-case-name: tests.test_dispatcher -*-
"""Dispatch: at each fire time, enqueue the due schedules' RQ jobs and plan their next fires.

A timer is armed for the earliest member of the schedule set (re-armed whenever an earlier fire is
planned); a slow poll every `scheduler_polling_interval` re-reads it as a safety net and picks up
fires planned by a peer daemon. Rows are re-read and jobs built PREPARE_LEAD_SECS ahead of the
fire; the enqueue thread then waits for the exact instant, so jobs land within milliseconds of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import redis
import txredisapi
from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from btu_twisted import memory
from btu_twisted.builders import JobSpec, Retry, Skip, iso_utc
from btu_twisted.cron import CronError
from btu_twisted.enqueuer import ALREADY_ENQUEUED, ENQUEUED, Fire
from btu_twisted.logs import OBSERVER
from btu_twisted.schedules import ScheduleError
from btu_twisted.store import describe_error, split_member

# Errors that mean "Redis is unreachable right now" (logged once per outage, not as a traceback).
UNAVAILABLE = (ConnectionError, TimeoutError, OSError, defer.TimeoutError, redis.ConnectionError,
               redis.TimeoutError, txredisapi.ConnectionError)
PREPARE_LEAD_SECS = 0.5  # read rows and build jobs this long before the fire instant...
PREPARE_SECS_PER_FIRE = 100e-6  # ... and this much earlier per fire due with the first one, so
# that a burst is read, built and packed before its instant (about 100 µs a fire), and only its
# transactions are left after it: up to BATCH_SIZE fires, 1.5 s ahead for 10 000
BATCH_SIZE = 10_000      # due members read from Redis per dispatch cycle...
FIRST_PART_SIZES = (500,)  # ... prepared (rows read, jobs built and packed) first this many, so
PART_SIZE = 2000           # that the first jobs are ready well before the instant, then this many
# Fires per Redis transaction, for the transactions of one instant in turn: the first alone, so it
# lands as soon as for a single schedule; then growing, each sent while the next is prepared...
FIRST_TRANSACTION_SIZES = (1, 10)
TRANSACTION_SIZE = 100   # ... up to this, which bounds the time one transaction holds Redis
# The fires due at an instant are counted this long before it (the longest lead they can need).
MAX_PREPARE_LEAD_SECS = PREPARE_LEAD_SECS + BATCH_SIZE * PREPARE_SECS_PER_FIRE
MAX_INSTANT = 253402300799  # 9999-12-31T23:59:59Z, unix seconds: the last instant a datetime holds
RETRY_MIN_SECS = 1.0     # first back-off after a Redis/SQL failure, doubled up to the poll interval
RELEASE_AFTER_FIRES = TRANSACTION_SIZE  # a batch this large returns the memory it freed (memory.release)


class Dispatcher(service.Service):
    """Owns the fire timer; one dispatch cycle runs at a time."""

    log = Logger(observer=OBSERVER)

    def __init__(self, clock, store, source, rows, builder, enqueuer, run_in_thread, stats,
                 misfire_grace_secs: int, poll_interval_secs: float, on_redis_back=lambda: None,
                 clock_ready: defer.Deferred | None = None):
        """`clock_ready` fires when `clock` tells Redis time (ClockWatch.first_sync): nothing is
        armed before, so a host clock that runs fast cannot enqueue early at start-up."""
        self._clock = clock
        self._store = store
        self._source = source
        self._rows = rows
        self._builder = builder
        self._enqueuer = enqueuer
        self._run_in_thread = run_in_thread
        self._stats = stats
        self._grace = misfire_grace_secs
        self._poll_interval = poll_interval_secs
        self._poll = None
        self._timer = None
        self._armed_for: float | None = None
        self._lead = PREPARE_LEAD_SECS  # how long before the armed instant the cycle starts
        self._cycle: defer.Deferred | None = None
        self._backoff = RETRY_MIN_SECS
        self._on_redis_back = on_redis_back
        self._clock_ready = clock_ready
        self._slow_since = 0.0
        self._from_cache = False  # dispatching from cached rows (SQL down), logged once per outage
        self._parked: dict[str, float] = {}  # member -> clock time to retry building its job

    @property
    def armed_for(self) -> float | None:
        """Fire instant the timer is armed for (None when nothing is planned)."""
        return self._armed_for

    def startService(self):
        super().startService()
        ready = defer.succeed(None) if self._clock_ready is None else self._clock_ready
        ready.addCallback(lambda _: self._start_polling())

    def _start_polling(self) -> None:
        if not self.running or self._poll is not None:
            return
        self._poll = task.LoopingCall(self.wake)
        self._poll.clock = self._clock
        self._poll.start(self._poll_interval, now=True)

    def stopService(self):
        """Stop the timers; an enqueue already under way is waited for, never cut in half."""
        super().stopService()
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        self._poll = None
        self._cancel_timer()
        if self._cycle is not None:
            return self._cycle

    def poke(self, when: float) -> None:
        """A fire at `when` was just planned: re-arm if it is earlier than the armed one."""
        if not self.running or self._poll is None or self._cycle is not None:
            return  # not polling yet (clock not ready), or a running cycle re-reads when it ends
        if self._armed_for is None or when < self._armed_for:
            self._arm_at(when)

    def wake(self) -> defer.Deferred:
        """Re-read the earliest member and arm for it (start-up, safety poll, after a cycle)."""
        if self._cycle is not None:
            return defer.succeed(None)
        return self._arm()

    @defer.inlineCallbacks
    def _arm(self):
        try:
            earliest = yield self._earliest()
        except Exception as e:
            self._redis_failed(e)
            self._arm_at(self._clock.seconds() + self._next_backoff() + PREPARE_LEAD_SECS)
            return
        self._redis_ok()
        if earliest is None:
            self._cancel_timer()
        else:
            self._arm_at(earliest)

    @defer.inlineCallbacks
    def _earliest(self):
        """The instant to arm for: the earliest member not parked, or the first parked retry."""
        if not self._parked:
            found = yield self._store.earliest()
            return None if found is None else found[1]
        upcoming = yield self._store.upcoming(len(self._parked) + 1)
        times = [score for member, score in upcoming if member not in self._parked]
        times += [at + PREPARE_LEAD_SECS for at in self._parked.values()]  # _arm_at subtracts it
        return min(times) if times else None

    def _arm_at(self, when: float) -> None:
        """Arm for `when`: MAX_PREPARE_LEAD_SECS before it, count the fires due with it."""
        self._cancel_timer()
        if not self.running:
            return  # an _arm() that was waiting on Redis when the service stopped
        self._armed_for = when
        self._timer = self._clock.callLater(max(0.0, when - MAX_PREPARE_LEAD_SECS - self._clock.seconds()),
                                            self._size_up, when)

    def _size_up(self, when: float) -> None:
        """Start the cycle as long before `when` as its fires need to be prepared in."""
        self._timer = None
        counted = self._store.count_due(when)
        counted.addErrback(lambda _: 0)  # Redis down: the cycle's own reads say so
        counted.addCallback(lambda count: self._start_ahead(when, count))

    def _start_ahead(self, when: float, count: int) -> None:
        if not self.running or self._armed_for != when or self._timer is not None:
            return  # re-armed (an earlier fire was planned) or stopped while counting
        self._lead = PREPARE_LEAD_SECS + min(count, BATCH_SIZE) * PREPARE_SECS_PER_FIRE
        self._timer = self._clock.callLater(max(0.0, when - self._lead - self._clock.seconds()),
                                            self._start_cycle)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._armed_for = None

    def _start_cycle(self) -> None:
        self._timer = None
        self._armed_for = None
        if self._cycle is not None:
            return  # armed by an _arm() that raced a cycle; the cycle re-arms when it ends
        self._cycle = self._run_cycle(self._lead)
        self._cycle.addBoth(self._cycle_done)

    def _cycle_done(self, retry_in):
        self._cycle = None
        if not self.running:
            return
        if retry_in:
            self._arm_at(self._clock.seconds() + retry_in + PREPARE_LEAD_SECS)
        else:
            self._arm()

    @defer.inlineCallbacks
    def _run_cycle(self, lead: float):
        """Dispatch everything due within `lead` seconds; fires with a back-off delay when
        something failed, else None."""
        try:
            while self.running:  # a stopping daemon finishes the batch under way, not the backlog
                now = self._clock.seconds()
                due = yield self._store.due(now + lead, BATCH_SIZE)
                self._redis_ok()
                self._parked = {member: at for member, at in self._parked.items() if at > now}
                due = [(member, score) for member, score in due if member not in self._parked]
                if not due:
                    return None
                lines = []  # the log lines of the batch's transactions, written when it is done
                try:
                    handled = yield self._dispatch(due, lines)
                finally:
                    # After the batch's last transaction, so that the lines (about 30 µs each)
                    # delay no job, and after every batch, so that a backlog delays no line.
                    self._log(lines)
                    if len(due) >= RELEASE_AFTER_FIRES:
                        memory.release()
                if handled < len(due):
                    return self._next_backoff()
        except Exception as e:
            self._redis_failed(e)
            return self._next_backoff()

    @defer.inlineCallbacks
    def _dispatch(self, due: list[tuple[str, float]], lines: list):
        """Enqueue one batch of due members, adding the log lines of its transactions to `lines`;
        fires with how many members were dealt with."""
        latest: dict[str, int] = {}
        strays, malformed = [], []
        for member, score in due:
            parsed = split_member(member)
            problem = _malformed(parsed, score)
            if problem:
                # Rust leftovers and hand edits: dropped at once, so they are warned about once,
                # and never waited for (a text time ahead of its score would hold the enqueue
                # thread, and shutdown, until then).
                self.log.warn("dropping member {member!r} of {key}: {problem}", member=member[:200],
                              key=self._store.layout.schedule_key, problem=problem)
                malformed.append(member)
                continue
            schedule_id, when = parsed
            if schedule_id in latest:  # two members of one schedule: keep the latest (coalesce)
                strays.append(f"{schedule_id}|{min(when, latest[schedule_id])}")
            latest[schedule_id] = max(when, latest.get(schedule_id, when))
        if malformed:
            yield self._store.remove_members(malformed)
        if strays:
            yield self._store.remove_strays(strays)
        handled = len(strays) + len(malformed)
        # Part by part: while one part's transactions run in the enqueue thread, the next part is
        # read, decided, built and packed here, so a burst larger than a part is not prepared
        # only after the first part is in.
        ids = list(latest)
        enqueued = defer.succeed(None)  # the transactions of the parts so far, in order
        try:
            for part in _cut(ids, FIRST_PART_SIZES, PART_SIZE):
                fires, prepared, parked = yield self._prepare({i: latest[i] for i in part})
                handled += len(fires) + parked
                enqueued.addCallback(lambda _, fires=fires, prepared=prepared:
                                     self._enqueue(fires, prepared, lines))
        finally:
            yield enqueued
        return handled

    @defer.inlineCallbacks
    def _prepare(self, latest: dict[str, int]):
        """Read the rows of one part of the due schedules (ID -> fire instant), decide each fire
        and build and pack its job; fires with (fires, packed jobs, how many were parked)."""
        # The earliest fire's instant is the re-read's deadline (a late batch still gets a short
        # wait): a database that answers later must not hold the fire back.
        deadline = max(min(latest.values(), default=0), self._clock.seconds() + PREPARE_LEAD_SECS)
        rows = yield self._read_rows(list(latest), deadline)
        # Now, not when the cycle began: Redis and SQL may have kept it waiting for seconds, and a
        # stale now would plan a next fire already past, giving one outage a second late run.
        now = self._clock.seconds()
        decided = [self._fire(schedule_id, when, rows.get(schedule_id, _MISSING), now)
                   for schedule_id, when in latest.items()]
        fires = yield self._build_jobs([fire for fire in decided if fire is not None])
        prepared = yield self._run_in_thread(self._enqueuer.prepare, fires)
        return fires, prepared, len(decided) - len(fires) - decided.count(None)

    @defer.inlineCallbacks
    def _enqueue(self, fires: list[Fire], prepared: dict, lines: list):
        """Run the transactions of `fires`, instant by instant, adding their log lines to `lines`."""
        for when in sorted({fire.when for fire in fires}):
            group = [fire for fire in fires if fire.when == when]
            # A group that fits one transaction is one (one WAIT with redis_min_replicas, which
            # times out per transaction while no replica answers); a larger one grows.
            first = FIRST_TRANSACTION_SIZES if len(group) > TRANSACTION_SIZE else ()
            for chunk in _cut(group, first, TRANSACTION_SIZE):
                outcomes = yield self._run_in_thread(self._enqueuer.dispatch, chunk, not_before=when,
                                                     prepared=prepared)
                self._record(chunk, outcomes, lines)

    @defer.inlineCallbacks
    def _read_rows(self, ids: list[str], deadline: float):
        """Current rows from the source; while it is unreachable, or has not answered by
        `deadline`, the last rows read."""
        answer = defer.Deferred()
        timer = self._clock.callLater(max(0.0, deadline - self._clock.seconds()),
                                      lambda: answer.called or answer.callback(_TOO_SLOW))
        read = self._source.read(self._rows.held(ids))
        # A late answer is dropped (its failure too: the source has logged it).
        read.addBoth(lambda result: None if answer.called else answer.callback(result))
        try:
            result = yield answer
        except Exception as e:
            result = e
        if timer.active():
            timer.cancel()
        if result is _TOO_SLOW or isinstance(result, Exception):
            self._sql_slow(result is _TOO_SLOW)
            if not self._from_cache:
                self.log.warn("{source} {state}; dispatching from the last rows read until it "
                              "answers", source=self._source.description,
                              state="too slow to answer before the fire" if result is _TOO_SLOW
                              else "unreachable")
            self._from_cache = True
            return {i: self._rows[i] for i in ids if i in self._rows}
        rows = result
        self._sql_slow(False)
        self._from_cache = False
        for schedule_id in ids:
            if schedule_id in rows:
                self._rows[schedule_id] = rows[schedule_id]
            else:
                rows[schedule_id] = None  # deleted: known to be gone, not merely unknown
                self._rows.pop(schedule_id, None)
        return rows

    def _fire(self, schedule_id: str, when: int, row, now: float) -> Fire | _ToBuild | None:
        """Decide what to do with one due member: a Fire without a job (drop or advance it), a fire
        whose job is to be built, or None to leave it for a later cycle."""
        if row is _MISSING:
            self.log.warn("no row known for {schedule_id} due at {due}; it waits until the database "
                          "answers", schedule_id=schedule_id, due=iso_utc(when))
            return None
        if row is None or not row.enabled:
            self.log.info("{schedule_id} due at {due} is {state}: not enqueued", schedule_id=schedule_id,
                          due=iso_utc(when), state="deleted" if row is None else "disabled")
            self._stats.counts["dropped"] += 1
            return Fire(schedule_id, when, None, None)
        try:
            row.check()  # a row edited after planning is held to the rules it was planned by
            try:
                next_when = row.next_fire(max(when, now))
            except CronError:
                # A valid cron that still fires at `when` but never after (its year field is
                # exhausted): this is its last fire, so run it and plan nothing after it.
                if row.next_fire(when - 1) != when:
                    raise
                next_when = None
            # Fires missed while no daemon ran coalesce into one run of the latest of them, so the
            # grace bounds how late that run is, not how long ago the first missed fire was.
            fire_at = _latest_fire(row, when, now) if now > when else when
            late = now - fire_at
            if late > self._grace:
                self.log.warn("skipping {schedule_id} due at {due}: {late:.0f} s late, beyond "
                              "misfire_grace_secs={grace}", schedule_id=schedule_id,
                              due=iso_utc(fire_at), late=late, grace=self._grace)
                self._stats.count("skipped_misfires", self._builder.queue_for(row))
                return Fire(schedule_id, when, None, next_when)
            return _ToBuild(row, Fire(schedule_id, fire_at, None, next_when, planned=when))
        except (CronError, ScheduleError) as e:
            return self._unusable(Fire(schedule_id, when, None, None), e, row)

    def _unusable(self, fire: Fire, error: Exception, row) -> Fire:
        """A row that cannot be dispatched: reported; its member is dropped, nothing is planned.

        Said once per reason: a fixed row comes back through the planner (the app's save, or the
        next full refresh)."""
        self._rows.pop(fire.schedule_id, None)
        if self._stats.problem(fire.schedule_id, str(error)):
            self.log.error("cannot dispatch {schedule_id} due at {due}: {reason}; not enqueued",
                           schedule_id=fire.schedule_id, due=iso_utc(fire.when), reason=error)
        self._stats.count("errors", self._builder.queue_for(row))
        return replace(fire, job=None, next_when=None)

    @defer.inlineCallbacks
    def _build_jobs(self, decided: list):
        """Build the jobs of these fires with the job builder (which may query or fetch); a fire
        it cannot build yet is parked until its retry time and left out of the result."""
        to_build = [item for item in decided if isinstance(item, _ToBuild)]
        outcomes = yield self._builder.build_batch([(item.row, item.fire.when) for item in to_build])
        built = dict(zip((id(item) for item in to_build), outcomes))
        fires = []
        for item in decided:
            if not isinstance(item, _ToBuild):
                fires.append(item)
                continue
            fire, outcome = item.fire, built[id(item)]
            if isinstance(outcome, JobSpec):
                fires.append(replace(fire, job=outcome))
            elif isinstance(outcome, Skip):
                self._stats.counts[outcome.counter] += 1
                fires.append(fire)  # no job; the member advances to the next fire
            elif isinstance(outcome, Retry):
                self._parked[fire.member] = outcome.at
            else:
                fires.append(self._unusable(fire, outcome, item.row))
        return fires

    def _record(self, group: list[Fire], outcomes: list[str], lines: list) -> None:
        """Count one transaction's outcomes, and add their log lines to `lines` (written by
        `_log` after the batch's last transaction, so that the lines, about 30 µs each, delay no
        job; kept as a few strings each, not the fires)."""
        now = self._clock.seconds()
        for fire, outcome in zip(group, outcomes):
            if outcome == ENQUEUED:
                self._stats.count("enqueued", fire.job.queue)
                self._stats.lateness.observe(max(0.0, now - fire.when))
                lines.append((outcome, fire.schedule_id, fire.when, fire.job.job_id, fire.job.queue))
            elif outcome == ALREADY_ENQUEUED:
                self._stats.counts["already_enqueued"] += 1
                lines.append((outcome, fire.schedule_id, fire.when, None, None))

    def _log(self, lines: list) -> None:
        for outcome, schedule_id, when, job_id, queue in lines:
            if outcome == ENQUEUED:
                self.log.info("enqueued {schedule_id} for {due} as {job_id} in queue {queue}",
                              schedule_id=schedule_id, due=iso_utc(when), job_id=job_id, queue=queue)
            else:
                self.log.info("{schedule_id} for {due} was already enqueued (by a peer or before a "
                              "restart)", schedule_id=schedule_id, due=iso_utc(when))

    def _sql_slow(self, slow: bool) -> None:
        """Record whether re-reads miss their deadline (`status`: sql.slow), logging the change."""
        health = self._stats.sql
        if slow and not health.slow:
            health.slow, self._slow_since = True, self._clock.seconds()
        elif not slow and health.slow:
            health.slow = False
            self.log.info("{source} answers in time again after {took:.1f} s",
                          source=self._source.description, took=self._clock.seconds() - self._slow_since)

    def _redis_ok(self) -> None:
        self._backoff = RETRY_MIN_SECS
        was_down = self._stats.redis.up is False
        if self._stats.redis.mark(True, self._clock.seconds()):
            self.log.info("Redis reachable")
        if was_down:
            # A Redis that restarted without persistence has lost the plan: rebuild it at once.
            self._on_redis_back()

    def _redis_failed(self, error: Exception) -> None:
        """Log a failed cycle once per run of failures (the traceback only at DEBUG)."""
        self.log.debug("dispatch cycle failed: {log_failure}", log_failure=Failure(error))
        if not isinstance(error, UNAVAILABLE):
            if self._backoff == RETRY_MIN_SECS:
                self.log.error("dispatch failed ({error}); retrying with back-off", error=error)
        else:
            described = describe_error(self._store.settings, error)
            if self._stats.redis.mark(False, self._clock.seconds(), described):
                self.log.error("{error}; Redis unreachable, retrying with back-off", error=described)
        self._stats.counts["errors"] += 1

    def _next_backoff(self) -> float:
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self._poll_interval)
        return delay


def _malformed(parsed: tuple[str, int] | None, score: float) -> str | None:
    """Why a member cannot be a fire (None when it can): not "<id>|<unix seconds>", a time no
    datetime can hold, or a text time that disagrees with the score that made it due."""
    if parsed is None:
        return "not of the form <schedule id>|<unix seconds>"
    schedule_id, when = parsed
    if not schedule_id:
        return "no schedule id"
    if when > MAX_INSTANT:
        return f"{when} is beyond year 9999"
    if when != score:
        return f"its time {when} disagrees with its score {score:.0f}"
    return None


def _cut(items: list, first_sizes: tuple[int, ...], size: int):
    """`items` in consecutive slices of `first_sizes`, then of `size`."""
    sizes = iter(first_sizes)
    start = 0
    while start < len(items):
        step = next(sizes, size)
        yield items[start:start + step]
        start += step


def _latest_fire(row, when: int, now: float) -> int:
    """The latest fire of `row` at or before `now`, `when` being one: a binary search, so an outage
    of days costs a few dozen next_fire calls, not one per missed fire."""
    low, high = when, int(now)  # low is a fire; no fire falls in (high, now]
    while low < high:
        middle = (low + high + 1) // 2
        try:
            found = row.next_fire(middle - 1)  # the first fire at or after `middle`
        except CronError:
            found = high + 1
        if found <= high:
            low = found
        else:
            high = middle - 1
    return low


@dataclass(frozen=True)
class _ToBuild:
    """A fire to enqueue once the job builder has made its job from `row`."""

    row: object
    fire: Fire


_TOO_SLOW = object()  # the re-read missed its deadline
_MISSING = object()  # no row known at all (database down and never read): leave the member be
