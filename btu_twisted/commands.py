# -*- test-case-name: tests.test_commands -*-
"""What each control-socket request does: the handlers behind `ControlFactory`.

`create_task_schedule` and `cancel_task_schedule` keep the Rust daemon's reply texts, which the BTU
app shows to its users; the other requests are btu_twisted additions that answer JSON.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from twisted.internet import defer
from twisted.logger import Logger

from btu_twisted import __version__, cron
from btu_twisted.channels.text_protocol import RequestError
from btu_twisted.logs import OBSERVER
from btu_twisted.store import split_member
from btu_twisted.planner import RowCache

REPLY_WAIT_SECS = 0.3      # the BTU app reads its reply 0.5 s after sending
MAX_SCHEDULE_ID_CHARS = 140  # Frappe's `name` column is varchar(140)
MAX_LISTED = 1000          # upper bound for `upcoming` and `preview_cron` counts
# `status` lists this many unplannable schedules (and says how many there are): a reply stays a
# few tens of KiB, which the socket's kernel buffer takes whole even from a client that never reads.
MAX_UNPLANNABLE_LISTED = 100
CANCELLED_REPLY = "Successfully cancelled BTU Task Schedule {schedule_id} in Python RQ."
NOT_CANCELLED_REPLY = "BTU Task Schedule {schedule_id} had no planned fire in Python RQ; nothing to cancel."

log = Logger(observer=OBSERVER)


def _schedule_id(content) -> str:
    if not isinstance(content, str) or not content.strip():
        raise RequestError("request_content must be a BTU Task Schedule ID (a non-empty string)")
    if len(content) > MAX_SCHEDULE_ID_CHARS:
        raise RequestError(f"schedule ID longer than {MAX_SCHEDULE_ID_CHARS} characters")
    try:  # JSON "\ud800" decodes to a lone surrogate, which neither MariaDB nor Redis can be sent
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError("schedule ID is not valid Unicode (it holds a lone surrogate)") from None
    return content


def _count(content, default: int) -> int:
    if content is None:
        return default
    if isinstance(content, bool) or not isinstance(content, int) or not 0 < content <= MAX_LISTED:
        raise RequestError(f"count must be an integer from 1 to {MAX_LISTED}")
    return content


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Commands:
    """Handlers bound to the running daemon's parts."""

    def __init__(self, clock, queue, store, refresher, stats, config, control=None, rows=None,
                 source: str | None = None, site: str | None = None, clock_stats=None):
        self._clock = clock
        self._rows = rows if rows is not None else RowCache()  # the planner's: each schedule's zone
        self._queue = queue
        self._store = store
        self._refresher = refresher
        self._stats = stats
        self._config = config
        self.control = control  # the ControlFactory, set once built (for its connection count)
        self._source = source   # where schedules come from ("MariaDB", "schedule file <path>")
        self.site = site        # the site, when the daemon serves several
        self._clock_stats = clock_stats or stats  # where ClockWatch reports the clock
    def handlers(self) -> dict:
        """request_type -> handler, as ControlFactory expects."""
        return {
            "create_task_schedule": self.create_task_schedule,
            "cancel_task_schedule": self.cancel_task_schedule,
            "status": self.status,
            "upcoming": self.upcoming,
            "reload": self.reload,
            "preview_cron": self.preview_cron,
        }

    def create_task_schedule(self, content) -> defer.Deferred:
        """Queue the schedule for re-planning; reply with its next fire if planned in time."""
        schedule_id = _schedule_id(content)
        base = f"BTU Scheduler now re-processing Task Schedule {schedule_id} in Python RQ."
        outcome = self._queue.put(schedule_id)
        outcome.addTimeout(REPLY_WAIT_SECS, self._clock)
        outcome.addCallbacks(lambda result: f"{base} {result.describe()}",
                             lambda _failure: f"{base} Planning continues in the background.")
        return outcome

    @defer.inlineCallbacks
    def cancel_task_schedule(self, content):
        """Remove exactly this schedule's planned fire."""
        schedule_id = _schedule_id(content)
        try:
            removed = yield self._store.cancel([schedule_id])
        except Exception as e:
            raise RequestError(f"could not cancel {schedule_id}: Redis unavailable ({e})") from None
        if not removed:  # not the success text, so `btu cancel` (and the app's user) can tell
            return NOT_CANCELLED_REPLY.format(schedule_id=schedule_id)
        log.info("cancelled {schedule_id} on request", schedule_id=schedule_id)
        return CANCELLED_REPLY.format(schedule_id=schedule_id)

    @defer.inlineCallbacks
    def status(self, _content):
        """JSON: uptime, queue, last refresh, planned count, next due, counters, health."""
        now = self._clock.seconds()
        report = {
            "name": self._config.name,
            "environment": self._config.environment_name,
            "version": __version__,
            "uptime_secs": round(now - self._stats.started_at, 3),
            "internal_queue_length": len(self._queue),
            "last_refresh": self._stats.last_refresh,
            "counts": dict(self._stats.counts),
            "job_builder": self._stats.job_builder,
            "unplannable": dict(sorted(self._stats.problems.items())[:MAX_UNPLANNABLE_LISTED]),
            "unplannable_total": len(self._stats.problems),
            "unplannable_truncated": len(self._stats.problems) > MAX_UNPLANNABLE_LISTED,
            "sql": self._stats.sql.as_dict(),
            "redis": self._stats.redis.as_dict(),
            "redis_master": self._stats.redis_master.as_dict() if self._stats.redis_master else None,
            "clock": self._clock_stats.clock,
            "socket_connections": self.control.open_connections if self.control else None,
            "source": self._source,
            "planned_schedules": None,
            "next_due": None,
            "zones": self._rows.zone_counts(),
            "settings_from": dict(sorted(self._config.origins.items())),  # where, never the values
        }
        if self.site is not None:
            report["site"] = self.site
        try:
            report["planned_schedules"] = yield self._store.count()
            earliest = yield self._store.earliest()
        except Exception as e:
            report["redis"] = {"up": False, "since": self._stats.redis.since, "error": str(e)}
        else:
            if earliest is not None:
                report["next_due"] = _fire_entry(*earliest, self._rows)
        return json.dumps(report, sort_keys=True)

    @defer.inlineCallbacks
    def upcoming(self, content):
        """JSON list of the next N planned fires (N = request_content, default 10)."""
        count = _count(content, 10)
        try:
            found = yield self._store.upcoming(count)
        except Exception as e:
            raise RequestError(f"Redis unavailable ({e})") from None
        return json.dumps([_fire_entry(member, score, self._rows) for member, score in found])

    def reload(self, _content) -> str:
        """Start a full refresh now."""
        self._refresher.refresh()
        return "Full refresh started."

    def preview_cron(self, content) -> str:
        """JSON of the next fires of {"cron_string", "time_zone", "count"}, marking DST neighbours."""
        return preview_cron(content, self._clock.seconds(), self._config.time_zone_string)


def preview_cron(content, now: float, default_zone: str) -> str:
    """The `preview_cron` reply: the next fires after `now` (unix seconds) in the request's zone,
    else `default_zone`."""
    if not isinstance(content, dict):
        raise RequestError('request_content must be {"cron_string": ..., "time_zone": ..., "count": N}')
    expression, zone = content.get("cron_string"), content.get("time_zone", default_zone)
    if not isinstance(expression, str) or not isinstance(zone, str):
        raise RequestError("cron_string and time_zone must be strings")
    count = _count(content.get("count"), 10)
    after = datetime.fromtimestamp(now, timezone.utc)
    try:
        fires = cron.preview(expression, zone, after, count)
    except cron.CronError as e:
        raise RequestError(str(e)) from None
    return json.dumps([{"utc": f.utc.strftime("%Y-%m-%dT%H:%M:%SZ"), "local": f.local.isoformat(),
                        "note": f.note} for f in fires])


def _fire_entry(member: str, score: float, rows) -> dict:
    parsed = split_member(member)
    schedule_id = parsed[0] if parsed else member
    entry = {"schedule_id": schedule_id, "at": _iso(score), "unix": int(score)}
    row = rows.get(schedule_id)
    if row is not None:  # a member planned by another daemon may not be in this one's cache
        entry.update(time_zone=row.time_zone, zone_source=row.zone_source)
    return entry
