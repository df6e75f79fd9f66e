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

from btu_twisted import zones
from btu_twisted.frequencies import StructuredFields, is_structured
from btu_twisted.schedules import Schedule
from btu_twisted.schema import STRUCTURED_COLUMNS, Schema, detect_schema

SCHEDULE_TABLE = "`tabBTU Task Schedule`"
TASK_TABLE = "`tabBTU Task`"
CONNECT_TIMEOUT_SECS = 5
READ_TIMEOUT_SECS = 30  # a paused or wedged server must not hold a pool thread forever

ENABLED_IDS_SQL = f"SELECT name FROM {SCHEDULE_TABLE} WHERE enabled = 1 ORDER BY name"
# Both zone singles of the fallback chain (DESIGN §4) in one query per batch.
ZONE_SINGLES = (("BTU Configuration", "cron_time_zone"), ("System Settings", "time_zone"))
ZONE_SQL = ("SELECT doctype, field, value FROM `tabSingles` WHERE (doctype, field) IN "
            f"({', '.join(['(%s, %s)'] * len(ZONE_SINGLES))})")
ZONE_SOURCES = {ZONE_SINGLES[0]: zones.BTU_CONFIGURATION_ZONE, ZONE_SINGLES[1]: zones.SYSTEM_SETTINGS_ZONE}
# Columns a BTU generation may lack are selected as NULL, so every row has the same shape.
OPTIONAL_COLUMNS = ("cron_timezone", *STRUCTURED_COLUMNS)
ROWS_SQL = (
    "SELECT s.name, s.task, s.enabled, s.queue_name, s.argument_overrides, s.cron_string, "
    "s.run_frequency, {optional}, "
    "t.function_string, t.arguments, t.max_task_duration, t.desc_short, t.queue_name "
    f"FROM {SCHEDULE_TABLE} s LEFT JOIN {TASK_TABLE} t ON t.name = s.task "
    "WHERE s.name IN ({placeholders})"
)


def rows_sql(schema: Schema, count: int) -> str:
    """ROWS_SQL for `count` IDs, reading the optional columns `schema` has (names from a fixed list)."""
    present = {"cron_timezone"} if schema.cron_timezone else set()
    present |= schema.structured_columns
    optional = ", ".join(f"s.`{c}`" if c in present else "NULL" for c in OPTIONAL_COLUMNS)
    return ROWS_SQL.format(optional=optional, placeholders=", ".join(["%s"] * count))


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
    """Schedules from MariaDB through an adbapi pool of pymysql connections.

    The Schema (which optional columns to read) is cached and detected again at every full
    refresh (`enabled_ids`), so a column added by a BTU upgrade is read from the next one on.
    """

    description = "MariaDB"

    def __init__(self, config, pool: adbapi.ConnectionPool | None = None):
        self._fallback_zone = zones.configured_zone(config)
        self._schema: Schema | None = None
        self._pool = pool or PingingPool("pymysql", cp_min=1, cp_max=3, cp_reconnect=True,
                                         cp_noisy=False, **connect_kwargs(config))

    def enabled_ids(self) -> defer.Deferred:
        """Fire with the IDs of every enabled schedule (one query), detecting the Schema again."""
        d = self._pool.runInteraction(_enabled_ids)
        d.addCallback(lambda found: self.schema().addCallback(lambda _schema: found))
        return d

    def read(self, ids: list[str]) -> defer.Deferred:
        """Fire with {id: Schedule} for those of `ids` that exist (enabled or not)."""
        d = defer.succeed(self._schema) if self._schema is not None else self.schema()
        return d.addCallback(lambda schema: self._pool.runInteraction(
            _read_rows, list(ids), schema, self._fallback_zone))

    def schema(self) -> defer.Deferred:
        """Fire with the Schema of the site database (which BTU generation's columns it has)."""
        return self._pool.runInteraction(detect_schema).addCallback(self._remember)

    def _remember(self, schema: Schema) -> Schema:
        self._schema = schema
        return schema

    def close(self) -> None:
        self._pool.close()

    def in_progress_tasks(self, task_ids: list[str]) -> defer.Deferred:
        """Fire with the set of `task_ids` that have a BTU Task Log still `In-Progress` (one query;
        none when the site has no `tabBTU Task Log`, so no guard)."""
        return self._pool.runInteraction(_in_progress_tasks, list(task_ids))


def _enabled_ids(cursor) -> list[str]:
    cursor.execute(ENABLED_IDS_SQL)
    return [row[0] for row in cursor.fetchall()]


def _read_rows(cursor, ids: list[str], schema: Schema, fallback_zone: tuple[str, str]) -> dict[str, Schedule]:
    if not ids:
        return {}
    cursor.execute(ZONE_SQL, [value for single in ZONE_SINGLES for value in single])
    singles = {(doctype, field): value for doctype, field, value in cursor.fetchall()}
    site_zone = zones.first_zone(*((singles.get(single), ZONE_SOURCES[single]) for single in ZONE_SINGLES),
                                 fallback_zone)
    cursor.execute(rows_sql(schema, len(ids)), ids)
    requested = {schedule_id: schedule_id for schedule_id in ids}
    return {row[0]: _schedule(row, site_zone, requested.get(row[0])) for row in cursor.fetchall()}


def _schedule(row: tuple, site_zone: tuple[str, str], schedule_id: str | None = None) -> Schedule:
    """The Schedule of one ROWS_SQL row; `schedule_id` is the caller's equal ID string, used instead
    of the row's own copy so the row cache holds each ID once (100 000 IDs: 5.9 MB less)."""
    (name, task, enabled, schedule_queue, overrides, cron, run_frequency, cron_timezone,
     minute, hour, day_of_week, day_of_month, month,
     function_string, arguments, duration, desc_short, task_queue) = row
    zone, zone_source = zones.first_zone((cron_timezone, zones.SCHEDULE_ZONE), site_zone)
    # The last row of every schedule stays cached (the fallback while SQL is down), and most of
    # its text repeats from row to row (same task, queue, cron string): one shared copy of each
    # value more than halves the cache (100 000 rows: 63 -> 27 MB, bench/bench_refresh.py).
    return Schedule(
        schedule_id=schedule_id or name,
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
        time_zone=_shared(zone),
        zone_source=zone_source,
        task_queue_name=_shared(task_queue or None),
        run_frequency=_shared(run_frequency or None),
        structured=_structured(run_frequency, minute, hour, day_of_week, day_of_month, month),
    )


def _structured(run_frequency, minute, hour, day_of_week, day_of_month, month) -> StructuredFields | None:
    """The structured fields of a non-Cron-Style row (Frappe's empty Int is 0: kept, checked later)."""
    if not is_structured(run_frequency):
        return None
    return StructuredFields(minute=minute, hour=_shared(hour), day_of_week=_shared(day_of_week),
                            day_of_month=day_of_month, month=_shared(month))


def _shared(text: str | None) -> str | None:
    return sys.intern(text) if isinstance(text, str) else text


IN_PROGRESS_SQL = ("SELECT DISTINCT task FROM `tabBTU Task Log` WHERE success_fail = 'In-Progress' "
                   "AND task IN ({placeholders})")
NO_SUCH_TABLE = 1146  # MariaDB ER_NO_SUCH_TABLE


def _in_progress_tasks(cursor, task_ids: list[str]) -> set[str]:
    if not task_ids:
        return set()
    try:
        cursor.execute(IN_PROGRESS_SQL.format(placeholders=", ".join(["%s"] * len(task_ids))), task_ids)
    except pymysql.err.ProgrammingError as e:
        if e.args and e.args[0] == NO_SUCH_TABLE:
            return set()
        raise
    return {row[0] for row in cursor.fetchall()}


def has_btu_tables(config) -> bool:
    """Whether the site's database holds BTU's tables (blocking): a bench's sites without BTU
    installed are not served."""
    connection = pymysql.connect(**connect_kwargs(config))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() "
                           "AND table_name = %s", ("tabBTU Task Schedule",))
            return cursor.fetchone()[0] > 0
    finally:
        connection.close()
