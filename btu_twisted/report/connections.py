# -*- test-case-name: tests.test_report -*-
"""Blocking connections to the daemon's Redis and schedule source, from the configuration."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pymysql
import redis
from twisted.internet import defer
from twisted.python.failure import Failure

from btu_twisted.builders.factory import local_builder
from btu_twisted.redis_connections import redis_py_client, settings_from
from btu_twisted.schema import FILE_SCHEMA, Schema, detect_schema
from btu_twisted.file_source import literal_text, load_schedule_file
from btu_twisted.schedules import Schedule
from btu_twisted.sql_source import SCHEDULE_TABLE, TASK_TABLE, SQLSource, connect_kwargs

SOCKET_TIMEOUT_SECS = 5
ALL_IDS_SQL = f"SELECT name FROM {SCHEDULE_TABLE} ORDER BY name"
TASKS_SQL = (f"SELECT name, desc_short, function_string, queue_name, max_task_duration, arguments "
             f"FROM {TASK_TABLE} ORDER BY name")


def redis_client(config) -> redis.Redis:
    """A redis-py client (bytes replies, as rq needs) with socket timeouts, built like the daemon's
    RQ writes: the same user, TLS files and Sentinel master."""
    return redis_py_client(settings_from(config), SOCKET_TIMEOUT_SECS)


class _BlockingPool:
    """Stands in for adbapi's pool so SQLSource's own queries run synchronously on one connection."""

    def __init__(self, connection):
        self._connection = connection

    def runInteraction(self, interaction, *args, **kwargs) -> defer.Deferred:
        with self._connection.cursor() as cursor:
            return defer.maybeDeferred(interaction, cursor, *args, **kwargs)

    def close(self) -> None:
        self._connection.close()


def _result(d: defer.Deferred):
    """The result of an already-fired Deferred (raising its exception)."""
    box = []
    d.addBoth(box.append)
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


class ScheduleReader:
    """Every schedule (enabled or not) and every task, read the way the daemon reads them."""

    def __init__(self, config):
        self._config = config
        self.description = config.schedule_source

    def schedules(self) -> dict[str, Schedule]:
        """{schedule_id: Schedule} of every schedule, sorted by ID."""
        if not self._config.uses_sql:
            found = load_schedule_file(Path(self._config.schedule_file), self._config.time_zone_string)
            return dict(sorted(found.items()))
        pool = _BlockingPool(pymysql.connect(**connect_kwargs(self._config)))
        try:
            ids = _result(pool.runInteraction(_all_ids))
            rows = _result(SQLSource(self._config, pool=pool).read(ids)) if ids else {}
        finally:
            pool.close()
        return {schedule_id: rows[schedule_id] for schedule_id in ids if schedule_id in rows}

    def schedule(self, schedule_id: str) -> Schedule | None:
        """One schedule (enabled or not), or None when there is no such row."""
        if not self._config.uses_sql:
            return self.schedules().get(schedule_id)
        pool = _BlockingPool(pymysql.connect(**connect_kwargs(self._config)))
        try:
            return _result(SQLSource(self._config, pool=pool).read([schedule_id])).get(schedule_id)
        finally:
            pool.close()

    def schema(self) -> Schema:
        """Which BTU generation the site database holds (a schedule file has no BTU tables)."""
        if not self._config.uses_sql:
            return FILE_SCHEMA
        pool = _BlockingPool(pymysql.connect(**connect_kwargs(self._config)))
        try:
            return _result(pool.runInteraction(detect_schema))
        finally:
            pool.close()

    def builder(self):
        """The job builder the daemon uses on this site, as a synchronous one (run-now, queue names)."""
        return local_builder(self._config, self.schema())

    def tasks(self) -> list[dict]:
        """Every BTU Task: name, description, function, queue, timeout."""
        if not self._config.uses_sql:
            raw = tomllib.loads(Path(self._config.schedule_file).read_text(encoding="utf-8"))
            return [{"task": name, "description": task.get("desc_short", ""),
                     "function": task.get("function_string", ""), "queue": task.get("queue_name"),
                     "timeout_secs": task.get("max_task_duration"), "arguments": literal_text(task.get("arguments"))}
                    for name, task in sorted(raw.get("tasks", {}).items())]
        connection = pymysql.connect(**connect_kwargs(self._config))
        try:
            with connection.cursor() as cursor:
                cursor.execute(TASKS_SQL)
                rows = cursor.fetchall()
        finally:
            connection.close()
        return [{"task": name, "description": desc or "", "function": function or "", "queue": queue,
                 "timeout_secs": duration, "arguments": arguments}
                for name, desc, function, queue, duration, arguments in rows]


def _all_ids(cursor) -> list[str]:
    cursor.execute(ALL_IDS_SQL)
    return [row[0] for row in cursor.fetchall()]
