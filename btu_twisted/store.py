# -*- test-case-name: tests.test_store -*-
"""The daemon's own Redis keys, spoken non-blockingly through txredisapi.

`btu_scheduler:task_execution_times` keeps the Rust daemon's layout (member "<id>|<unix>", score
<unix>) with exactly one member per planned schedule; `btu_scheduler:planned` maps each schedule to
its member so re-planning and cancelling touch exactly that schedule, atomically (Lua).
Serving several sites of a bench, each site's store has the same keys under `btu_scheduler:site:<site>:`
(sites/layout.py).
"""

from __future__ import annotations

import json

from twisted.internet import defer

from btu_twisted.redis_connections import (REPLY_TIMEOUT_SECS, RedisSettings, WritesRefused,
                                           settings_for_url, txredis_connection)
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout

# The single-site layout (the Rust daemon's); a store serving one of several sites has its own.
SCHEDULE_KEY = SINGLE_SITE.schedule_key
PLANNED_KEY = SINGLE_SITE.planned_key
LAST_FIRE_PREFIX = SINGLE_SITE.last_fire_prefix
REFRESHED_KEY = SINGLE_SITE.refreshed_key
POOL_SIZE = 2

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

# The rule both stray scripts apply, on KEYS[2] (the planned map): a member is a stray unless it is
# its schedule's planned member (Rust-era or orphaned leftovers); also returns the member's ID.
_STRAY_RULE = """
local function stray(member)
  local id = string.match(member, '^(.*)|%d+$')
  return id, id == nil or redis.call('HGET', KEYS[2], id) ~= member
end
"""

# Remove the strays among ARGV; returns how many were removed.
STRAYS_SCRIPT = _STRAY_RULE + """
local removed = 0
for i = 1, #ARGV do
  local _, is_stray = stray(ARGV[i])
  if is_stray then removed = removed + redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return removed
"""

# One ZSCAN page of the schedule set: remove its strays, and return the next cursor and, as one
# JSON text, the schedule IDs of the removed members that name one. One bulk reply per page:
# txredisapi's parser costs ~7 µs per reply element, so 100 000 elements cost more than the whole
# page's work in Redis.
STRAYS_PAGE_SCRIPT = _STRAY_RULE + """
local page = redis.call('ZSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local items, removed = page[2], {}
for i = 1, #items, 2 do
  local id, is_stray = stray(items[i])
  if is_stray then
    redis.call('ZREM', KEYS[1], items[i])
    if id ~= nil then removed[#removed + 1] = id end
  end
end
return {page[1], cjson.encode(removed)}
"""

# One HSCAN page of the planned map: the next cursor and the page's schedule IDs as one JSON text.
PLANNED_PAGE_SCRIPT = """
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local items, ids = page[2], {}
for i = 1, #items, 2 do ids[#ids + 1] = items[i] end
return {page[1], cjson.encode(ids)}
"""


def _page(reply) -> tuple[int, list[str]]:
    """(next cursor, IDs) of a page script's reply; Lua's cjson writes an empty table as `{}`."""
    cursor, text = reply
    if isinstance(text, bytes):  # txredisapi hands back bytes that are not UTF-8
        text = text.decode("utf-8", "replace")
    return int(cursor), list(json.loads(text) or ())


def make_member(schedule_id: str, when: int) -> str:
    """The Rust daemon's member format."""
    return f"{schedule_id}|{when}"


def split_member(member: str) -> tuple[str, int] | None:
    """(schedule_id, unix seconds) of a member; IDs may contain '|', so split at the last one."""
    schedule_id, sep, when = member.rpartition("|")
    if not sep or not when.isdigit():
        return None
    return schedule_id, int(when)


def describe_error(settings: RedisSettings, error: Exception) -> str:
    """An operator's reading of a Redis failure: "Redis 127.0.0.1:6379: connection refused",
    "...: no reply within 5 s", "...: authentication failed" (never a password)."""
    where = settings.address
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


class ScheduleStore:
    """Plan, cancel and read the schedule sorted set; every method returns a Deferred."""

    def __init__(self, clock, redis: RedisSettings | str | None = None, connection=None,
                 master_tracker=None, layout: KeyLayout = SINGLE_SITE):
        self._clock = clock
        self.layout = layout  # whose keys: the single-site layout, or one site's of several
        self._settings = settings_for_url(redis) if isinstance(redis, str) else redis
        self._redis = connection
        self._tracker = master_tracker

    @property
    def settings(self) -> RedisSettings:
        """The connection settings (errors name the server from them)."""
        return self._settings

    def _call(self, command: str, *args, **kwargs) -> defer.Deferred:
        """Run one command; while Redis is unreachable txredisapi waits for a connection, so bound
        every call by REPLY_TIMEOUT_SECS and let the caller back off."""
        d = getattr(self._redis, command)(*args, **kwargs)
        d.addTimeout(REPLY_TIMEOUT_SECS, self._clock)
        return d

    def open(self) -> None:
        """Start connecting (lazily: commands wait for the connection, bounded by their timeout)."""
        if self._redis is None:
            self._redis = txredis_connection(self._settings, POOL_SIZE, self._clock, self._tracker)

    def plan(self, entries: list[tuple[str, int]], now: float) -> defer.Deferred:
        """Set the next fire of each (schedule_id, unix seconds); fires with how many were kept."""
        if not entries:
            return defer.succeed(0)
        args = [str(int(now))]
        for schedule_id, when in entries:
            args += [schedule_id, str(int(when))]
        return self._call("eval", PLAN_SCRIPT, self.layout.plan_keys, args)

    def cancel(self, schedule_ids: list[str]) -> defer.Deferred:
        """Remove exactly these schedules' members; fires with how many members were removed."""
        if not schedule_ids:
            return defer.succeed(0)
        return self._call("eval", CANCEL_SCRIPT, self.layout.plan_keys, list(schedule_ids))

    def run_script(self, script: str, keys: list[str], args: list[str]) -> defer.Deferred:
        """Evaluate a Lua script of another module's own btu_scheduler: keys (ownership.py)."""
        return self._call("eval", script, keys, args)

    def remove_strays(self, members: list[str]) -> defer.Deferred:
        """Remove those of `members` that are not the planned member of their schedule."""
        if not members:
            return defer.succeed(0)
        return self._call("eval", STRAYS_SCRIPT, self.layout.plan_keys, list(members))

    def scan_strays(self, cursor: int, count: int) -> defer.Deferred:
        """Remove the strays among about `count` members from ZSCAN `cursor` on (0 starts a scan);
        fires with (next cursor, 0 when done; IDs named by the removed members)."""
        d = self._call("eval", STRAYS_PAGE_SCRIPT, self.layout.plan_keys, [str(cursor), str(count)])
        return d.addCallback(_page)

    def scan_planned(self, cursor: int, count: int) -> defer.Deferred:
        """About `count` schedule IDs of the planned map from HSCAN `cursor` on (0 starts a scan);
        fires with (next cursor, 0 when done; the IDs)."""
        d = self._call("eval", PLANNED_PAGE_SCRIPT, [self.layout.planned_key], [str(cursor), str(count)])
        return d.addCallback(_page)

    def remove_members(self, members: list[str]) -> defer.Deferred:
        """Remove exactly `members` (malformed ones, which no schedule can own)."""
        if not members:
            return defer.succeed(0)
        return self._call("zrem", self.layout.schedule_key, *members)

    @defer.inlineCallbacks
    def _writable(self, read: defer.Deferred):
        """The result of `read`, once ROLE (asked at the same time) says this Redis takes writes:
        a read-only replica answers every read, so the dispatcher's reads check it is a master."""
        both = defer.gatherResults([self._call("role"), read], consumeErrors=True)
        both.addErrback(lambda failure: failure.value.subFailure)  # the first error itself
        role, found = yield both
        if role[0] != "master":
            where = self._settings.description if self._settings else "Redis"
            raise WritesRefused(f"{where} is a read-only replica (ROLE {role[0]}): writes are refused; "
                                "give the master's address, or redis_sentinels")
        return found

    @defer.inlineCallbacks
    def earliest(self):
        """(member, score) of the next fire, or None when nothing is planned (checks writability)."""
        found = yield self._writable(self._call("zrange", self.layout.schedule_key, 0, 0, withscores=True))
        return (found[0][0], found[0][1]) if found else None

    @defer.inlineCallbacks
    def due(self, until: float, limit: int):
        """[(member, score)] of members due at or before `until`, earliest first (checks writability)."""
        found = yield self._writable(self._call("zrangebyscore", self.layout.schedule_key, "-inf", until,
                                                withscores=True, offset=0, count=limit))
        return [(member, score) for member, score in found]

    def count_due(self, until: float) -> defer.Deferred:
        """How many members are due at or before `until`."""
        return self._call("zcount", self.layout.schedule_key, "-inf", until)

    @defer.inlineCallbacks
    def upcoming(self, count: int):
        """[(member, score)] of the next `count` fires."""
        found = yield self._call("zrange", self.layout.schedule_key, 0, count - 1, withscores=True)
        return [(member, score) for member, score in found]

    def count(self) -> defer.Deferred:
        """How many fires are planned."""
        return self._call("zcard", self.layout.schedule_key)

    def server_time(self) -> defer.Deferred:
        """Redis `TIME`: [unix seconds, microseconds], the clock every daemon sharing Redis agrees on."""
        return self._call("time")

    def mark_refreshed(self, when: float) -> defer.Deferred:
        """Leave the marker of a completed full refresh (its start time, unix seconds)."""
        return self._call("set", self.layout.refreshed_key, int(when))

    @defer.inlineCallbacks
    def refresh_marked(self):
        """Whether the marker of a completed full refresh is still in Redis."""
        found = yield self._call("exists", self.layout.refreshed_key)
        return bool(found)

    def close(self) -> defer.Deferred | None:
        if self._redis is not None:
            return self._redis.disconnect()
