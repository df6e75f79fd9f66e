# -*- test-case-name: tests.test_integration -*-
"""Which BTU generation a site database holds, read from information_schema (DESIGN §4: columns
are detected, never assumed), so the daemon can pick its zone columns and job builder."""

from __future__ import annotations

from dataclasses import dataclass

SCHEDULE_TABLE_NAME = "tabBTU Task Schedule"
TASK_LOG_TABLE_NAME = "tabBTU Task Log"
STRUCTURED_COLUMNS = ("minute", "hour", "day_of_week", "day_of_month", "month")

COLUMNS_SQL = ("SELECT table_name, column_name FROM information_schema.columns "
               "WHERE table_schema = DATABASE() AND table_name IN (%s, %s)")


@dataclass(frozen=True)
class Schema:
    """The BTU columns and tables present in one site database."""

    schedule_table: bool = False        # `tabBTU Task Schedule` exists at all
    cron_timezone: bool = False         # per-schedule zone column: BTU 15.1.1+
    structured_columns: frozenset = frozenset()  # those of STRUCTURED_COLUMNS present
    task_log: bool = False              # `tabBTU Task Log` exists (the In-Progress guard reads it)

    @property
    def generation(self) -> str:
        """A short name for logs and `status`."""
        if not self.schedule_table:
            return "no BTU tables"
        return "BTU 15.1.1+" if self.cron_timezone else "BTU <= 15.1.0"


FILE_SCHEMA = Schema()  # a schedule file has no BTU tables


def detect_schema(cursor) -> Schema:
    """Read the columns of the BTU tables in the connection's database (runs in a pool thread)."""
    cursor.execute(COLUMNS_SQL, (SCHEDULE_TABLE_NAME, TASK_LOG_TABLE_NAME))
    schedule_columns, tables = set(), set()
    for table, column in cursor.fetchall():
        tables.add(table)
        if table == SCHEDULE_TABLE_NAME:
            schedule_columns.add(column.lower())
    return Schema(
        schedule_table=SCHEDULE_TABLE_NAME in tables,
        cron_timezone="cron_timezone" in schedule_columns,
        structured_columns=frozenset(c for c in STRUCTURED_COLUMNS if c in schedule_columns),
        task_log=TASK_LOG_TABLE_NAME in tables,
    )
