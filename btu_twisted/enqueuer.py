# -*- test-case-name: tests.test_integration -*-
"""Enqueue due fires into RQ exactly once: one Redis transaction per batch, run in a thread.

For each fire the transaction writes the RQ job (with the `rq` library, hash before push), moves
the schedule's watermark `btu_scheduler:last_fire:<id>` to the fire instant, records the fire in its
history (`history.py`), and replaces the fired member with the next one. WATCHing the watermarks makes the claim atomic: a fire at or before its
schedule's watermark was already enqueued (by this daemon before a crash, or by a peer) and is
skipped, and a crash at any instruction leaves either all of a batch's effects or none.

Durable claims (issue 12): with `redis_min_replicas`, each transaction is followed by WAIT on its
own connection. And the enqueuer remembers, per schedule, the last fire it enqueued: a watermark in
Redis older than that (Redis restored from an older snapshot, or failed over to a lagging replica)
is logged once per episode and re-asserted in the same transaction, so this daemon never enqueues
a fire twice whatever Redis forgot.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone

import redis
from rq import Callback, Queue
from rq.job import Job
from rq.utils import utcformat
from twisted.logger import Logger

from btu_twisted import history
from btu_twisted.builders import JobSpec, iso_utc
from btu_twisted.logs import OBSERVER
from btu_twisted.redis_connections import RedisSettings, redis_py_client, settings_for_url
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout
from btu_twisted.store import make_member

SOCKET_TIMEOUT_SECS = 5
WATERMARK_TTL_SECS = 8 * 24 * 3600  # far longer than any window in which a fire could be replayed
REGRESSION_EPISODE_SECS = 60       # lost watermarks seen within this of each other: one log line
SPIN_SECS = 0.001                   # the last stretch to a fire instant is busy-waited (_wait_until)
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

    log = Logger(observer=OBSERVER)

    def __init__(self, redis_settings: RedisSettings | str, now=time.time, sleep=None,
                 min_replicas: int = 0, replicas_timeout_secs: float = 0.5,
                 max_skew_secs: float = 2.0, on_distrusted=lambda schedule_id, watermark, now: None,
                 layout: KeyLayout = SINGLE_SITE):
        """`now` tells instants (Redis time in the daemon: `clock.RedisClock.seconds`); a watermark
        more than `max_skew_secs` ahead of it was left by a fast clock and is not trusted, and
        `on_distrusted` (called in the enqueue thread) reports it. `layout` names the site's keys."""
        if isinstance(redis_settings, str):
            redis_settings = settings_for_url(redis_settings)
        self._settings = redis_settings
        self._layout = layout
        self._now = now
        # An Event's timed wait, not time.sleep: that one is clock_nanosleep, which libfaketime
        # (the clock-step tests' tool) fails with EINVAL when the monotonic clock is left real.
        self._sleep = sleep or threading.Event().wait
        self._max_skew = max_skew_secs
        self._on_distrusted = on_distrusted
        self._min_replicas = min_replicas
        self._replicas_timeout_ms = int(replicas_timeout_secs * 1000)
        self._local = threading.local()
        self._clients: list[redis.Redis] = []
        self._lock = threading.Lock()  # guards _clients and _enqueued across the pool threads
        # schedule ID -> last fire this process enqueued: one int per schedule, so bounded by the
        # schedules planned; a fire at or before it is never enqueued again.
        self._enqueued: dict[str, int] = {}
        self._regressed_at: float | None = None  # last time Redis was seen to have lost our watermarks
        self._unreplicated = False  # inside an episode of WAIT timing out

    @property
    def connection(self) -> redis.Redis:
        """This thread's client: its pipeline and its WAIT take the same pooled connection (the
        pool hands back the one last released), since WAIT only covers its connection's writes."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = redis_py_client(self._settings, SOCKET_TIMEOUT_SECS)
            self._local.queues = {}
            with self._lock:
                self._clients.append(client)
        return client

    def prepare(self, fires: list[Fire]) -> dict[str, tuple[list[bytes], int]]:
        """The commands that write each fire's RQ job (its hash, its queue push), packed in the
        Redis protocol, with their count, by member.

        Building and packing a job is most of an enqueue's CPU (rq's `to_dict` and serialising,
        then redis-py packing some 40 arguments: 52 and 25 µs a job): done for a whole batch ahead
        of the fire instant, each transaction at the instant only packs its claim and sends the
        jobs' bytes as they are (`_execute`)."""
        client = self.connection
        prepared = {}
        scratch = client.pipeline()
        pool = client.connection_pool
        packer = pool.connection_class(**pool.connection_kwargs)  # never connected: it only packs
        try:
            for fire in fires:
                if fire.job is None:
                    continue
                self._write_job(scratch, fire.job)
                commands = [args for args, _ in scratch.command_stack]
                prepared[fire.member] = (packer.pack_commands(commands), len(commands))
                scratch.command_stack = []
        finally:
            scratch.reset()
        return prepared

    def dispatch(self, fires: list[Fire], not_before: float, prepared: dict | None = None) -> list[str]:
        """Wait until `not_before`, then enqueue `fires` atomically; returns one outcome per fire.

        Jobs are packed (`prepare`, or `prepared` if given) and the watermarks WATCHed and read
        before the wait, and the transaction is queued and packed but for its history entries
        and `enqueued_at` (which carry the instant), so that at the fire instant only those and
        EXEC are left: one round trip instead of three, about 0.3 ms less lateness
        (bench/bench_lateness.py). A peer's claim during the wait fails our EXEC, and the retry
        then sees its watermark.
        """
        jobs = self.prepare(fires) if prepared is None else prepared
        keys = [self._layout.last_fire_prefix + fire.schedule_id for fire in fires]
        for _ in range(MAX_ATTEMPTS):
            try:
                return self._transact(fires, jobs, keys, not_before)
            except redis.WatchError as e:
                if not isinstance(e.__context__, (redis.ConnectionError, redis.TimeoutError)):
                    continue  # a peer's claim: the retry sees its watermark
                # redis-py reports a connection lost under WATCH as a conflict. Retrying these
                # fires on the next master would enqueue them late, one by one, past the misfire
                # policy: fail, and let the dispatcher decide again what is due.
                self.drop_idle_connections()
                raise redis.ConnectionError(f"{e.__context__} (during the enqueue transaction)") from e
            except (redis.ConnectionError, redis.TimeoutError):
                self.drop_idle_connections()
                raise
        raise RuntimeError(f"gave up after {MAX_ATTEMPTS} conflicting attempts to enqueue "
                           f"{len(fires)} fires")

    def _transact(self, fires: list[Fire], jobs: dict, keys: list[str], not_before: float) -> list[str]:
        with self.connection.pipeline() as pipe:
            try:
                outcomes = self._claim(pipe, fires, jobs, keys, not_before)
            except (redis.ConnectionError, redis.TimeoutError):
                # Closed now, so that the pipeline's UNWATCH on exit reconnects (to the current
                # master) instead of waiting out a second timeout on a frozen one.
                if pipe.connection is not None:
                    pipe.connection.disconnect()
                raise
        self._remember([fire for fire, outcome in zip(fires, outcomes) if outcome == ENQUEUED])
        if self._min_replicas and ENQUEUED in outcomes:
            self._wait_for_replicas(fires)
        return outcomes

    def _claim(self, pipe, fires: list[Fire], jobs: dict, keys: list[str], not_before: float) -> list[str]:
        """The transaction itself: WATCH and read the watermarks, queue the claim, wait for the
        instant, add the history entries and execute."""
        pipe.watch(*keys)
        watermarks = pipe.mget(keys)
        pipe.multi()
        outcomes, advance, packed = [], [], []
        for fire, key, watermark in zip(fires, keys, watermarks):
            trusted = self._trusted(fire.schedule_id, watermark)
            watermark = self._reassert(pipe, fire.schedule_id, key, trusted)
            if watermark is not None and watermark >= fire.when:
                outcomes.append(ALREADY_ENQUEUED)
            elif fire.job is None:
                outcomes.append(NOT_ENQUEUED)
            else:
                packed.append(jobs[fire.member])
                pipe.set(key, fire.when, ex=WATERMARK_TTL_SECS)
                outcomes.append(ENQUEUED)
            advance += [fire.schedule_id, fire.member, "" if fire.next_when is None else str(fire.next_when)]
        pipe.eval(ADVANCE_SCRIPT, 2, *self._layout.plan_keys, *advance)
        head = self._pack_head(pipe, packed)
        self._wait_until(not_before)
        late = self._now() - not_before
        enqueued_at = utcformat(datetime.now(timezone.utc))  # what rq would write at this moment
        for fire, outcome in zip(fires, outcomes):
            if outcome == ENQUEUED:
                # The job was packed ahead of the instant: its enqueued_at is made the real one.
                pipe.hset(Job.key_for(fire.job.job_id), "enqueued_at", enqueued_at)
                coalesced = fire.planned if fire.planned not in (None, fire.when) else None
                history.append(pipe, self._layout, fire.schedule_id,
                               history.entry(fire.when, fire.job, late, coalesced_from=coalesced))
        self._execute(pipe, head)
        return outcomes

    def _wait_until(self, instant: float) -> None:
        """Sleep until SPIN_SECS before `instant`, then busy-wait for it. A timed wait wakes
        0.1–1 ms late, on a cold CPU that runs what is left of the transaction several times
        slower; the spin costs about SPIN_SECS of CPU per instant that fires. The spin is
        bounded on the monotonic clock too, so a `now` that stands still (tests) cannot hold it."""
        delay = instant - self._now()
        if delay > SPIN_SECS:
            self._sleep(delay - SPIN_SECS)
        give_up = time.monotonic() + 2 * SPIN_SECS
        while self._now() < instant and time.monotonic() < give_up:
            pass

    @staticmethod
    def _pack_head(pipe, packed: list[tuple[list[bytes], int]]) -> tuple[list[bytes], int]:
        """MULTI, the jobs' commands as `prepare` packed them and the claim queued on `pipe` so
        far, packed in the Redis protocol, with how many replies they get; `pipe`'s queue is
        emptied. Packed before the wait: at the instant only the commands that carry it are
        left to pack."""
        connection = pipe.connection
        chunks = connection.pack_commands([("MULTI",)])
        for job_chunks, _ in packed:
            chunks += job_chunks
        chunks += connection.pack_commands([args for args, _ in pipe.command_stack])
        replies = 1 + sum(job_commands for _, job_commands in packed) + len(pipe.command_stack)
        pipe.command_stack = []
        return chunks, replies

    @staticmethod
    def _execute(pipe, head: tuple[list[bytes], int]) -> None:
        """EXEC the transaction on `pipe`'s WATCHing connection: the head (`_pack_head`), the
        commands queued on `pipe` since, EXEC. What redis-py's `Pipeline.execute` does, without
        packing anything twice: every reply is read before an error is raised, a failed WATCH is
        a WatchError, an error inside EXEC is raised."""
        connection = pipe.connection
        chunks, replies = head
        own = [args for args, _ in pipe.command_stack]
        connection.send_packed_command(chunks + connection.pack_commands([*own, ("EXEC",)]))
        errors = []
        for _ in range(replies + len(own)):  # +OK for MULTI, then +QUEUED for each command
            try:
                pipe.parse_response(connection, "_")
            except redis.ResponseError as e:
                errors.append(e)
        try:
            replies = pipe.parse_response(connection, "_")
        except redis.exceptions.ExecAbortError:
            if errors:
                raise errors[0] from None
            raise
        pipe.watching = False  # EXEC ends the WATCH
        if replies is None:
            raise redis.WatchError("Watched variable changed.")
        for reply in [*errors, *replies]:
            if isinstance(reply, Exception):
                raise reply

    def _reassert(self, pipe, schedule_id: str, key: str, stored: int | None) -> int | None:
        """The schedule's watermark: Redis's (when trusted), or the later fire this process
        remembers enqueueing, which is then written back inside the transaction so that peers see
        it too."""
        with self._lock:
            remembered = self._enqueued.get(schedule_id)
            if remembered is None or (stored is not None and stored >= remembered):
                return stored
        now = self._now()
        if self._regressed_at is None or now - self._regressed_at > REGRESSION_EPISODE_SECS:
            self.log.warn("Redis has lost writes of this daemon: the watermark of {schedule_id} is "
                          "{stored}, but this daemon enqueued its fire of {remembered} (Redis "
                          "restored from an older snapshot, or failed over to a lagging replica); "
                          "re-asserting what this daemon enqueued, no fire is enqueued twice",
                          schedule_id=schedule_id, remembered=iso_utc(remembered),
                          stored="missing" if stored is None else iso_utc(stored))
        self._regressed_at = now
        pipe.set(key, remembered, ex=WATERMARK_TTL_SECS)
        return remembered

    def _remember(self, enqueued: list[Fire]) -> None:
        with self._lock:
            for fire in enqueued:
                if fire.when > self._enqueued.get(fire.schedule_id, fire.when - 1):
                    self._enqueued[fire.schedule_id] = fire.when

    def _wait_for_replicas(self, fires: list[Fire]) -> None:
        """WAIT for `redis_min_replicas` copies of the transaction. On a timeout the fires stay
        enqueued (on the master) and remembered here: retrying could only enqueue them twice."""
        acknowledged = self.connection.wait(self._min_replicas, self._replicas_timeout_ms)
        if acknowledged >= self._min_replicas:
            if self._unreplicated:
                self._unreplicated = False
                self.log.info("Redis replicas acknowledge enqueues again ({count} of {wanted})",
                              count=acknowledged, wanted=self._min_replicas)
            return
        if not self._unreplicated:
            self._unreplicated = True
            self.log.warn("only {count} of redis_min_replicas={wanted} replicas acknowledged the "
                          "enqueue of {schedule_id} for {due} within {timeout} ms: kept on the "
                          "master, at risk if it fails before replicating (logged once until "
                          "replicas catch up)", count=acknowledged, wanted=self._min_replicas,
                          schedule_id=fires[0].schedule_id, due=iso_utc(fires[0].when),
                          timeout=self._replicas_timeout_ms)

    def enqueue_now(self, schedule_id: str | None, spec: JobSpec, when: int) -> bool:
        """Enqueue one job outside the plan (run-now), with its history entry (none without a
        schedule); False when a job with its id exists already (the same run asked twice in a second)."""
        with self.connection.pipeline() as pipe:
            key = Job.key_for(spec.job_id)
            pipe.watch(key)
            if pipe.exists(key):
                return False
            pipe.multi()
            self._write_job(pipe, spec)
            if schedule_id is not None:
                history.append(pipe, self._layout, schedule_id, history.entry(when, spec, 0.0, manual=True))
            pipe.execute()
        return True

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

    def _write_job(self, pipe, spec: JobSpec) -> None:
        """Queue on `pipe` the commands that write `spec`'s RQ job and push it onto its queue."""
        # enqueue_many, not enqueue_job: rq 1.x's enqueue_job calls pipe.multi()
        # unconditionally, which fails inside our transaction.
        self._queue(spec.queue).enqueue_many([self._create(spec)], pipeline=pipe)
        if spec.data is not None:
            # Pre-pickled job data (btu-web): replaces the placeholder rq serialised,
            # compressed as rq writes it, inside the same transaction.
            pipe.hset(Job.key_for(spec.job_id), "data", zlib.compress(spec.data))

    @staticmethod
    def _create(spec: JobSpec):
        # A Callback named by a string: every rq from 1.15 to 3.x stores it in the job hash as
        # `failure_callback_name` (a worker that predates callbacks ignores the field).
        on_failure = Callback(spec.on_failure) if spec.on_failure else None
        return Queue.prepare_data(
            spec.func, kwargs=spec.kwargs, timeout=spec.timeout, description=spec.description,
            job_id=spec.job_id, meta=spec.meta, on_failure=on_failure)

    def _queue(self, name: str) -> Queue:
        connection = self.connection
        queues = self._local.queues
        if name not in queues:
            queues[name] = Queue(name, connection=connection)
        return queues[name]

    def drop_idle_connections(self) -> None:
        """After a connection failure, close every thread's idle connections: through Sentinel
        each new one asks for the current master, so no thread waits out its own timeout against
        a master that is gone or frozen."""
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.connection_pool.disconnect(inuse_connections=False)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
