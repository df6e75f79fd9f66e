# -*- test-case-name: tests.test_store -*-
"""The daemon's own Redis keys, spoken non-blockingly through txredisapi.

`btu_scheduler:task_execution_times` keeps the Rust daemon's layout (member "<id>|<unix>", score
<unix>) with exactly one member per planned schedule; `btu_scheduler:planned` maps each schedule to
its member so re-planning and cancelling touch exactly that schedule, atomically (Lua).
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlparse

import txredisapi
from twisted.internet import defer

SCHEDULE_KEY = "btu_scheduler:task_execution_times"
PLANNED_KEY = "btu_scheduler:planned"
LAST_FIRE_PREFIX = "btu_scheduler:last_fire:"
REFRESHED_KEY = "btu_scheduler:refreshed"
REPLY_TIMEOUT_SECS = 5  # a call to a stopped or paused Redis fails after this, instead of hanging

# Set each schedule's member to "<id>|<ts>", replacing its previous one; a member already due
# (score <= now) is left for the dispatcher so a missed fire is caught up, not silently re-planned.
PLAN_SCRIPT = """
local now = tonumber(ARGV[1])
local kept = 0
for i = 2, #ARGV, 2 do
  local id, ts = ARGV[i], ARGV[i + 1]
  local member = id .. '|' .. ts
  local old = redis.call('HGET', KEYS[2], id)
  local keep = false
  if old and old ~= member then
    local score = redis.call('ZSCORE', KEYS[1], old)
    if score and tonumber(score) <= now then keep = true else redis.call('ZREM', KEYS[1], old) end
  end
  if keep then kept = kept + 1 else
    redis.call('ZADD', KEYS[1], ts, member)
    redis.call('HSET', KEYS[2], id, member)
  end
end
return kept
"""

# Remove each schedule's planned member (and the mapping); returns how many were removed.
CANCEL_SCRIPT = """
local removed = 0
for i = 1, #ARGV do
  local old = redis.call('HGET', KEYS[2], ARGV[i])
  if old then
    removed = removed + redis.call('ZREM', KEYS[1], old)
    redis.call('HDEL', KEYS[2], ARGV[i])
  end
end
return removed
"""

# Remove members that are not their schedule's planned member (Rust-era or orphaned leftovers).
STRAYS_SCRIPT = """
local removed = 0
for i = 1, #ARGV do
  local member = ARGV[i]
  local id = string.match(member, '^(.*)|%d+$')
  if id == nil or redis.call('HGET', KEYS[2], id) ~= member then
    removed = removed + redis.call('ZREM', KEYS[1], member)
  end
end
return removed
"""


def make_member(schedule_id: str, when: int) -> str:
    """The Rust daemon's member format."""
    return f"{schedule_id}|{when}"


def split_member(member: str) -> tuple[str, int] | None:
    """(schedule_id, unix seconds) of a member; IDs may contain '|', so split at the last one."""
    schedule_id, sep, when = member.rpartition("|")
    if not sep or not when.isdigit():
        return None
    return schedule_id, int(when)


def describe_error(redis_url: str | None, error: Exception) -> str:
    """An operator's reading of a Redis failure: "Redis 127.0.0.1:6379: connection refused",
    "...: no reply within 5 s", "...: authentication failed" (never the URL's password)."""
    url = urlparse(redis_url or "")
    where = url.path if url.scheme == "unix" else f"{url.hostname or 'localhost'}:{url.port or 6379}"
    text = str(error)
    if isinstance(error, (defer.TimeoutError, defer.CancelledError, TimeoutError)):
        what = f"no reply within {REPLY_TIMEOUT_SECS} s"
    elif isinstance(error, ConnectionRefusedError) or "refused" in text.lower():
        what = "connection refused"
    elif any(word in text.upper() for word in ("WRONGPASS", "NOAUTH", "INVALID PASSWORD", "AUTHENTICATION")):
        what = "authentication failed"
    else:
        what = text or type(error).__name__
    return f"Redis {where}: {what}"


def connect(redis_url: str):
    """A lazy, self-reconnecting txredisapi connection pool for a redis://, rediss:// or unix:// URL."""
    url = urlparse(redis_url)
    query = parse_qs(url.query)
    password = unquote(url.password) if url.password else query.get("password", [None])[0]
    common = dict(poolsize=2, reconnect=True, charset="utf-8", password=password,
                  connectTimeout=REPLY_TIMEOUT_SECS, replyTimeout=REPLY_TIMEOUT_SECS)
    if url.scheme == "unix":
        return txredisapi.makeUnixConnection(url.path, int(query.get("db", ["0"])[0]), isLazy=True,
                                             convertNumbers=True, **common)
    return txredisapi.lazyConnectionPool(url.hostname or "localhost", url.port or 6379,
                                         dbid=int(url.path.lstrip("/") or 0),
                                         ssl_context_factory=url.scheme == "rediss", **common)


class ScheduleStore:
    """Plan, cancel and read the schedule sorted set; every method returns a Deferred."""

    def __init__(self, clock, redis_url: str | None = None, redis=None):
        self._clock = clock
        self.url = redis_url
        self._redis = redis

    def _call(self, command: str, *args, **kwargs) -> defer.Deferred:
        """Run one command; while Redis is unreachable txredisapi waits for a connection, so bound
        every call by REPLY_TIMEOUT_SECS and let the caller back off."""
        d = getattr(self._redis, command)(*args, **kwargs)
        d.addTimeout(REPLY_TIMEOUT_SECS, self._clock)
        return d

    def open(self) -> None:
        """Start connecting (lazily: commands wait for the connection, bounded by their timeout)."""
        if self._redis is None:
            self._redis = connect(self.url)

    def plan(self, entries: list[tuple[str, int]], now: float) -> defer.Deferred:
        """Set the next fire of each (schedule_id, unix seconds); fires with how many were kept."""
        if not entries:
            return defer.succeed(0)
        args = [str(int(now))]
        for schedule_id, when in entries:
            args += [schedule_id, str(int(when))]
        return self._call("eval", PLAN_SCRIPT, [SCHEDULE_KEY, PLANNED_KEY], args)

    def cancel(self, schedule_ids: list[str]) -> defer.Deferred:
        """Remove exactly these schedules' members; fires with how many members were removed."""
        if not schedule_ids:
            return defer.succeed(0)
        return self._call("eval", CANCEL_SCRIPT, [SCHEDULE_KEY, PLANNED_KEY], list(schedule_ids))

    def remove_strays(self, members: list[str]) -> defer.Deferred:
        """Remove those of `members` that are not the planned member of their schedule."""
        if not members:
            return defer.succeed(0)
        return self._call("eval", STRAYS_SCRIPT, [SCHEDULE_KEY, PLANNED_KEY], list(members))

    def remove_members(self, members: list[str]) -> defer.Deferred:
        """Remove exactly `members` (malformed ones, which no schedule can own)."""
        if not members:
            return defer.succeed(0)
        return self._call("zrem", SCHEDULE_KEY, *members)

    @defer.inlineCallbacks
    def earliest(self):
        """(member, score) of the next fire, or None when nothing is planned."""
        found = yield self._call("zrange", SCHEDULE_KEY, 0, 0, withscores=True)
        return (found[0][0], found[0][1]) if found else None

    @defer.inlineCallbacks
    def due(self, until: float, limit: int):
        """[(member, score)] of members due at or before `until`, earliest first."""
        found = yield self._call("zrangebyscore", SCHEDULE_KEY, "-inf", until, withscores=True,
                                                offset=0, count=limit)
        return [(member, score) for member, score in found]

    @defer.inlineCallbacks
    def upcoming(self, count: int):
        """[(member, score)] of the next `count` fires."""
        found = yield self._call("zrange", SCHEDULE_KEY, 0, count - 1, withscores=True)
        return [(member, score) for member, score in found]

    def members(self) -> defer.Deferred:
        """Every member of the schedule set."""
        return self._call("zrange", SCHEDULE_KEY, 0, -1)

    def planned(self) -> defer.Deferred:
        """The planned-member map {schedule_id: member}."""
        return self._call("hgetall", PLANNED_KEY)

    def count(self) -> defer.Deferred:
        """How many fires are planned."""
        return self._call("zcard", SCHEDULE_KEY)

    def server_time(self) -> defer.Deferred:
        """Redis `TIME`: [unix seconds, microseconds], the clock every daemon sharing Redis agrees on."""
        return self._call("time")

    def mark_refreshed(self, when: float) -> defer.Deferred:
        """Leave the marker of a completed full refresh (its start time, unix seconds)."""
        return self._call("set", REFRESHED_KEY, int(when))

    @defer.inlineCallbacks
    def refresh_marked(self):
        """Whether the marker of a completed full refresh is still in Redis."""
        found = yield self._call("exists", REFRESHED_KEY)
        return bool(found)

    def close(self) -> defer.Deferred | None:
        if self._redis is not None:
            return self._redis.disconnect()
