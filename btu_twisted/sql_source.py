# -*- test-case-name: tests.test_integration -*-
"""Read BTU Task Schedules from the Frappe MariaDB database, off the reactor thread.

Every query is parameterised (schedule IDs are data, never SQL) and reads in batches, so a refresh
of N schedules costs a handful of queries, not N.
"""

from __future__ import annotations

import sys

import pymysql
from twisted.enterprise import adbapi
from twisted.internet import defer

from btu_twisted.schedules import Schedule
from btu_twisted.schema import Schema, detect_schema

SCHEDULE_TABLE = "`tabBTU Task Schedule`"
TASK_TABLE = "`tabBTU Task`"
CONNECT_TIMEOUT_SECS = 5
READ_TIMEOUT_SECS = 30  # a paused or wedged server must not hold a pool thread forever

ENABLED_IDS_SQL = f"SELECT name FROM {SCHEDULE_TABLE} WHERE enabled = 1 ORDER BY name"
ZONE_SQL = ("SELECT value FROM `tabSingles` WHERE doctype = 'BTU Configuration' "
            "AND field = 'cron_time_zone' LIMIT 1")
ROWS_SQL = (
    "SELECT s.name, s.task, s.enabled, s.queue_name, s.argument_overrides, s.cron_string, "
    "t.function_string, t.arguments, t.max_task_duration, t.desc_short, t.queue_name "
    f"FROM {SCHEDULE_TABLE} s LEFT JOIN {TASK_TABLE} t ON t.name = s.task "
    "WHERE s.name IN ({placeholders})"
)


def connect_kwargs(config) -> dict:
    """pymysql connection arguments from the Rust-compatible keys (unix socket when configured)."""
    kwargs = dict(user=config.mysql_user, password=config.mysql_password or "",
                  database=config.mysql_database, charset="utf8mb4",
                  connect_timeout=CONNECT_TIMEOUT_SECS, read_timeout=READ_TIMEOUT_SECS,
                  write_timeout=READ_TIMEOUT_SECS, autocommit=True)
    if config.mysql_unix_socket:
        kwargs["unix_socket"] = config.mysql_unix_socket
    else:
        kwargs.update(host=config.mysql_host, port=config.mysql_port)
    return kwargs


def check_connection(config) -> None:
    """Connect once, blocking (start-up only, before the reactor runs); raises pymysql errors."""
    pymysql.connect(**connect_kwargs(config)).close()


class PingingPool(adbapi.ConnectionPool):
    """An adbapi pool that pings its connection before each use and reopens it when the server
    closed it (`wait_timeout`, a restart): an idle disconnect is then no error at all, and adbapi
    logs no "Rollback failed" traceback for it."""

    def connect(self):
        connection = super().connect()
        connection.ping(reconnect=True)  # one round trip; a server that is down still fails here
        return connection


class SQLSource:
    """Schedules from MariaDB through an adbapi pool of pymysql connections."""

    description = "MariaDB"

    def __init__(self, config, pool: adbapi.ConnectionPool | None = None):
        self._fallback_zone = config.time_zone_string
        self._pool = pool or PingingPool("pymysql", cp_min=1, cp_max=3, cp_reconnect=True,
                                         cp_noisy=False, **connect_kwargs(config))

    def enabled_ids(self) -> defer.Deferred:
        """Fire with the IDs of every enabled schedule (one query)."""
        return self._pool.runInteraction(_enabled_ids)

    def read(self, ids: list[str]) -> defer.Deferred:
        """Fire with {id: Schedule} for those of `ids` that exist (enabled or not)."""
        return self._pool.runInteraction(_read_rows, list(ids), self._fallback_zone)

    def schema(self) -> defer.Deferred:
        """Fire with the Schema of the site database (which BTU generation's columns it has)."""
        return self._pool.runInteraction(detect_schema)

    def close(self) -> None:
        self._pool.close()


def _enabled_ids(cursor) -> list[str]:
    cursor.execute(ENABLED_IDS_SQL)
    return [row[0] for row in cursor.fetchall()]


def _read_rows(cursor, ids: list[str], fallback_zone: str) -> dict[str, Schedule]:
    if not ids:
        return {}
    cursor.execute(ZONE_SQL)
    found = cursor.fetchone()
    zone = (found[0] or "").strip() if found else ""
    zone = zone or fallback_zone or "UTC"
    cursor.execute(ROWS_SQL.format(placeholders=", ".join(["%s"] * len(ids))), ids)
    return {row[0]: _schedule(row, zone) for row in cursor.fetchall()}


def _schedule(row: tuple, zone: str) -> Schedule:
    (name, task, enabled, schedule_queue, overrides, cron, function_string, arguments,
     duration, desc_short, task_queue) = row
    # The last row of every schedule stays cached (the fallback while SQL is down), and most of
    # its text repeats from row to row (same task, queue, cron string): one shared copy of each
    # value more than halves the cache (100 000 rows: 63 -> 27 MB, bench/bench_refresh.py).
    return Schedule(
        schedule_id=name,
        task_id=_shared(task or ""),
        cron_string=_shared((cron or "").strip()),
        # Frappe requires the column; a row without it is invalid, so `check` reports it rather
        # than the daemon guessing a queue (the Rust daemon could not read such a row at all).
        queue_name=_shared(schedule_queue or ""),
        function_string=_shared((function_string or "").strip()),
        arguments=_shared(arguments),
        argument_overrides=_shared(overrides),
        max_task_duration=int(duration) if duration else 600,
        description=_shared(desc_short or ""),
        enabled=bool(enabled),
        time_zone=zone,
        task_queue_name=_shared(task_queue or None),
    )


def _shared(text: str | None) -> str | None:
    return sys.intern(text) if isinstance(text, str) else text
