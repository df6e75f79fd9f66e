# -*- test-case-name: tests.test_integration -*-
"""Enqueue due fires into RQ exactly once: one Redis transaction per batch, run in a thread.

For each fire the transaction writes the RQ job (with the `rq` library, hash before push), moves
the schedule's watermark `btu_scheduler:last_fire:<id>` to the fire instant, and replaces the fired
member with the next one. WATCHing the watermarks makes the claim atomic: a fire at or before its
schedule's watermark was already enqueued (by this daemon before a crash, or by a peer) and is
skipped, and a crash at any instruction leaves either all of a batch's effects or none.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue

from btu_twisted.jobs import JobSpec
from btu_twisted.store import LAST_FIRE_PREFIX, PLANNED_KEY, SCHEDULE_KEY, make_member

SOCKET_TIMEOUT_SECS = 5
WATERMARK_TTL_SECS = 8 * 24 * 3600  # far longer than any window in which a fire could be replayed
MAX_ATTEMPTS = 20                   # WATCH conflicts only come from peers dispatching the same fires

# Remove each fired member; plan the next fire unless the schedule was re-planned meanwhile.
ADVANCE_SCRIPT = """
for i = 1, #ARGV, 3 do
  local id, old, nxt = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  redis.call('ZREM', KEYS[1], old)
  local current = redis.call('HGET', KEYS[2], id)
  if (not current) or current == old then
    if nxt == '' then
      redis.call('HDEL', KEYS[2], id)
    else
      local member = id .. '|' .. nxt
      redis.call('ZADD', KEYS[1], nxt, member)
      redis.call('HSET', KEYS[2], id, member)
    end
  end
end
return 1
"""

ENQUEUED = "enqueued"
ALREADY_ENQUEUED = "already enqueued"
NOT_ENQUEUED = "not enqueued"


@dataclass(frozen=True)
class Fire:
    """One due member: what to enqueue (None: just drop or advance it) and the next fire to plan."""

    schedule_id: str
    when: int
    job: JobSpec | None
    next_when: int | None
    planned: int | None = None  # the member's instant, when `when` is a later fire coalescing it

    @property
    def member(self) -> str:
        return make_member(self.schedule_id, self.when if self.planned is None else self.planned)


class Enqueuer:
    """Blocking RQ/Redis client; every method is meant to run in a pool thread."""

    def __init__(self, redis_url: str, now=time.time, sleep=None, max_skew_secs: float = 2.0,
                 on_distrusted=lambda schedule_id, watermark, now: None):
        """`now` tells instants (Redis time in the daemon: `clock.RedisClock.seconds`); a watermark
        more than `max_skew_secs` ahead of it was left by a fast clock and is not trusted, and
        `on_distrusted` (called in the enqueue thread) reports it."""
        # No client-side retries: a failed transaction is retried by the dispatcher, which
        # re-reads what is due, so a retried EXEC can never enqueue a fire twice.
        timeouts = {"socket_timeout": SOCKET_TIMEOUT_SECS}
        if not redis_url.startswith("unix:"):
            # redis-py < 5 refuses this keyword for unix sockets, where socket_timeout bounds the
            # connect (and redis-py >= 5 falls back to it, or to its own 5 s default in 8.x).
            timeouts["socket_connect_timeout"] = SOCKET_TIMEOUT_SECS
        self.connection = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0), **timeouts)
        self._now = now
        # An Event's timed wait, not time.sleep: that one is clock_nanosleep, which libfaketime
        # (the clock-step tests' tool) fails with EINVAL when the monotonic clock is left real.
        self._sleep = sleep or threading.Event().wait
        self._max_skew = max_skew_secs
        self._on_distrusted = on_distrusted
        self._queues: dict[str, Queue] = {}

    def dispatch(self, fires: list[Fire], not_before: float) -> list[str]:
        """Wait until `not_before`, then enqueue `fires` atomically; returns one outcome per fire.

        Jobs are built and the watermarks WATCHed and read before the wait, so that at the fire
        instant only the transaction is left (one round trip instead of three: about 0.3 ms less
        lateness, bench/bench_lateness.py); a peer's claim during the wait fails our EXEC, and the
        retry then sees its watermark.
        """
        jobs = {fire.member: self._create(fire.job) for fire in fires if fire.job is not None}
        keys = [LAST_FIRE_PREFIX + fire.schedule_id for fire in fires]
        for _ in range(MAX_ATTEMPTS):
            try:
                return self._transact(fires, jobs, keys, not_before)
            except redis.WatchError:
                continue
        raise RuntimeError(f"gave up after {MAX_ATTEMPTS} conflicting attempts to enqueue "
                           f"{len(fires)} fires")

    def _transact(self, fires: list[Fire], jobs: dict, keys: list[str], not_before: float) -> list[str]:
        with self.connection.pipeline() as pipe:
            pipe.watch(*keys)
            watermarks = pipe.mget(keys)
            delay = not_before - self._now()
            if delay > 0:
                self._sleep(delay)
            pipe.multi()
            outcomes, advance = [], []
            for fire, key, watermark in zip(fires, keys, watermarks):
                watermark = self._trusted(fire.schedule_id, watermark)
                if watermark is not None and watermark >= fire.when:
                    outcomes.append(ALREADY_ENQUEUED)
                elif fire.job is None:
                    outcomes.append(NOT_ENQUEUED)
                else:
                    # enqueue_many, not enqueue_job: rq 1.x's enqueue_job calls pipe.multi()
                    # unconditionally, which fails inside our transaction.
                    self._queue(fire.job.queue).enqueue_many([jobs[fire.member]], pipeline=pipe)
                    pipe.set(key, fire.when, ex=WATERMARK_TTL_SECS)
                    outcomes.append(ENQUEUED)
                advance += [fire.schedule_id, fire.member, "" if fire.next_when is None else str(fire.next_when)]
            pipe.eval(ADVANCE_SCRIPT, 2, SCHEDULE_KEY, PLANNED_KEY, *advance)
            pipe.execute()
            return outcomes

    def _trusted(self, schedule_id: str, watermark: bytes | None) -> int | None:
        """The watermark as an instant, or None when it is absent or ahead of Redis time."""
        if watermark is None:
            return None
        now = self._now()
        if int(watermark) > now + self._max_skew:
            # No fire is enqueued before its instant, so only a fast clock can have written it;
            # trusting it would block this schedule's fires until Redis time catches up.
            self._on_distrusted(schedule_id, int(watermark), now)
            return None
        return int(watermark)

    @staticmethod
    def _create(spec: JobSpec):
        return Queue.prepare_data(
            spec.func, kwargs=spec.kwargs, timeout=spec.timeout, description=spec.description,
            job_id=spec.job_id, meta=spec.meta)

    def _queue(self, name: str) -> Queue:
        if name not in self._queues:
            self._queues[name] = Queue(name, connection=self.connection)
        return self._queues[name]

    def close(self) -> None:
        self.connection.close()
