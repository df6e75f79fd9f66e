# -*- test-case-name: tests.test_history -*-
"""The fire history: for each schedule, a capped Redis list of its last enqueued fires.

`btu_scheduler:history:<schedule_id>` holds JSON entries, newest first, written inside the
enqueuer's exactly-once transaction, so an entry exists exactly when its job was enqueued.
"""

from __future__ import annotations

import json

from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout

HISTORY_PREFIX = SINGLE_SITE.history_prefix
HISTORY_LENGTH = 50                  # entries kept per schedule
HISTORY_TTL_SECS = 90 * 24 * 3600    # a deleted schedule's history goes after 90 days of no fires


def history_key(schedule_id: str, layout: KeyLayout = SINGLE_SITE) -> str:
    """The Redis key of one schedule's history (of one site's, when several are served)."""
    return layout.history_prefix + schedule_id


def entry(when: int, job, late_secs: float, manual: bool = False,
          coalesced_from: int | None = None) -> str:
    """One history entry (JSON) for `job` (a JobSpec) fired for unix second `when`; a catch-up
    that coalesced the fires from `coalesced_from` (the planned one) up to `when` says so, so
    that every fire the misfire policy merged is accounted for."""
    record = {"at": when, "job_id": job.job_id, "queue": job.queue,
              "late_secs": round(late_secs, 4), "builder": job.builder, "manual": manual}
    if coalesced_from is not None:
        record["coalesced_from"] = coalesced_from
    return json.dumps(record, sort_keys=True)


def append(pipe, layout: KeyLayout, schedule_id: str, record: str) -> None:
    """Queue, on a redis-py pipeline, the commands that add `record` and cap the list."""
    key = history_key(schedule_id, layout)
    pipe.lpush(key, record)
    pipe.ltrim(key, 0, HISTORY_LENGTH - 1)
    pipe.expire(key, HISTORY_TTL_SECS)


def read(connection, schedule_id: str, count: int = HISTORY_LENGTH,
         layout: KeyLayout = SINGLE_SITE) -> list[dict]:
    """The last `count` entries of a schedule, newest first (blocking redis-py call)."""
    return [parse(raw) for raw in connection.lrange(history_key(schedule_id, layout), 0, count - 1)]


def parse(raw: bytes | str) -> dict:
    """One stored entry as a dict."""
    return json.loads(raw)
