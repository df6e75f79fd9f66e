"""The slice of the Frappe schema the daemon reads (DESIGN §4), and helpers to fill it.

Tables are shaped like Frappe's: the standard columns (``name`` varchar(140) primary key,
``creation``, ``modified``, ``modified_by``, ``owner``, ``docstatus``, ``idx``) plus the BTU
fields.  All helpers use parameterised SQL, so IDs may contain quotes, ``%``, backslashes and
unicode.  Helpers do not commit: pass an autocommit connection (as
``MariaDBServer.connect`` returns) or commit yourself.
"""

from __future__ import annotations

import datetime

_TABLE_OPTIONS = "ENGINE=InnoDB ROW_FORMAT=DYNAMIC CHARACTER SET=utf8mb4 COLLATE=utf8mb4_unicode_ci"

_STANDARD_COLUMNS = """
  `name` varchar(140) NOT NULL,
  `creation` datetime(6) DEFAULT NULL,
  `modified` datetime(6) DEFAULT NULL,
  `modified_by` varchar(140) DEFAULT NULL,
  `owner` varchar(140) DEFAULT NULL,
  `docstatus` int(1) NOT NULL DEFAULT 0,
  `idx` int(8) NOT NULL DEFAULT 0,
"""

SCHEMA_SQL: list[str] = [
    f"""CREATE TABLE IF NOT EXISTS `tabBTU Task Schedule` ({_STANDARD_COLUMNS}
  `task` varchar(140) DEFAULT NULL,
  `task_description` varchar(140) DEFAULT NULL,
  `enabled` int(1) NOT NULL DEFAULT 0,
  `queue_name` varchar(140) DEFAULT NULL,
  `redis_job_id` varchar(140) DEFAULT NULL,
  `argument_overrides` longtext DEFAULT NULL,
  `schedule_description` varchar(140) DEFAULT NULL,
  `cron_string` varchar(140) DEFAULT NULL,
  `run_frequency` varchar(140) DEFAULT NULL,
  PRIMARY KEY (`name`),
  KEY `modified` (`modified`)
) {_TABLE_OPTIONS}""",
    f"""CREATE TABLE IF NOT EXISTS `tabBTU Task` ({_STANDARD_COLUMNS}
  `desc_short` varchar(140) DEFAULT NULL,
  `desc_long` longtext DEFAULT NULL,
  `function_string` varchar(140) DEFAULT NULL,
  `arguments` longtext DEFAULT NULL,
  `max_task_duration` int(11) DEFAULT 600,
  `queue_name` varchar(140) DEFAULT NULL,
  PRIMARY KEY (`name`),
  KEY `modified` (`modified`)
) {_TABLE_OPTIONS}""",
    f"""CREATE TABLE IF NOT EXISTS `tabSingles` (
  `doctype` varchar(255) DEFAULT NULL,
  `field` varchar(255) DEFAULT NULL,
  `value` longtext DEFAULT NULL,
  KEY `singles_doctype_field_index` (`doctype`, `field`)
) {_TABLE_OPTIONS}""",
]

SCHEDULE_TABLE = "`tabBTU Task Schedule`"
TASK_TABLE = "`tabBTU Task`"

# The structured-frequency fields of btu_task_schedule.json (v13 to v15), in Frappe's column types:
# Int is `int(11) NOT NULL DEFAULT 0` (so 0 is "empty"), Data and Select are varchar(140).
STRUCTURED_COLUMNS_SQL = {
    "minute": "int(11) NOT NULL DEFAULT 0",
    "hour": "varchar(140) DEFAULT NULL",          # Data: BTU keeps the hour as text
    "day_of_week": "varchar(140) DEFAULT NULL",   # Select: Monday ... Sunday
    "day_of_month": "int(11) NOT NULL DEFAULT 0",
    "month": "varchar(140) DEFAULT NULL",         # Select: JAN ... DEC
}
CRON_TIMEZONE_SQL = {"cron_timezone": "varchar(140) DEFAULT NULL"}  # BTU 15.1.1+: IANA name or empty
# The columns each generation's `tabBTU Task Schedule` has beyond SCHEMA_SQL's: "minimal" is the
# slice the daemon always reads (the default of create_schema), the others are BTU's real tables.
GENERATIONS = {
    "minimal": {},
    "15.1.0": STRUCTURED_COLUMNS_SQL,                         # v13, v14, 15.0 to 15.1.0
    "15.1.1": {**STRUCTURED_COLUMNS_SQL, **CRON_TIMEZONE_SQL},  # 15.1.1+
}

_SCHEDULE_COLUMNS = frozenset({
    "name", "creation", "modified", "modified_by", "owner", "docstatus", "idx",
    "task", "task_description", "enabled", "queue_name", "redis_job_id", "argument_overrides",
    "schedule_description", "cron_string", "run_frequency", *GENERATIONS["15.1.1"],
})


def _now() -> datetime.datetime:
    return datetime.datetime.now()


def create_schema(conn, generation: str = "minimal") -> None:
    """Create the three tables (idempotent) in the connection's current database, shaped like
    `generation`'s (a key of GENERATIONS)."""
    with conn.cursor() as cur:
        for stmt in SCHEMA_SQL:
            cur.execute(stmt)
    upgrade_schema(conn, generation)


def upgrade_schema(conn, generation: str) -> None:
    """Add the schedule columns `generation` has and the table lacks, as a BTU migration would."""
    with conn.cursor() as cur:
        cur.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = DATABASE()"
                    " AND table_name = 'tabBTU Task Schedule'")
        present = {row[0].lower() for row in cur.fetchall()}
        for column, definition in GENERATIONS[generation].items():
            if column not in present:
                cur.execute(f"ALTER TABLE {SCHEDULE_TABLE} ADD COLUMN `{column}` {definition}")


def insert_task(conn, name: str, function_string: str, arguments: str | None = None,
                max_task_duration: int | None = 600, queue_name: str | None = "default",
                desc_short: str | None = None, desc_long: str | None = None,
                docstatus: int = 0) -> None:
    """Insert a `tabBTU Task` row.  ``arguments`` is Python-literal dict text (or None)."""
    now = _now()
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {TASK_TABLE} (`name`, `creation`, `modified`, `modified_by`, `owner`,"
            " `docstatus`, `desc_short`, `desc_long`, `function_string`, `arguments`,"
            " `max_task_duration`, `queue_name`)"
            " VALUES (%s, %s, %s, 'Administrator', 'Administrator', %s, %s, %s, %s, %s, %s, %s)",
            (name, now, now, docstatus,
             desc_short if desc_short is not None else f"Task {name}",
             desc_long, function_string, arguments, max_task_duration, queue_name),
        )


def insert_schedule(conn, name: str, task: str, cron_string: str, enabled: int = 1,
                    queue_name: str | None = "default", argument_overrides: str | None = None,
                    task_description: str | None = None, schedule_description: str | None = None,
                    run_frequency: str | None = "Cron Style", redis_job_id: str | None = None,
                    docstatus: int = 0, **generation_columns) -> None:
    """Insert a `tabBTU Task Schedule` row; `generation_columns` are the structured fields and
    `cron_timezone` (the table must have them: create_schema's `generation`)."""
    unknown = set(generation_columns) - set(GENERATIONS["15.1.1"])
    if unknown:
        raise ValueError(f"unknown `tabBTU Task Schedule` columns: {sorted(unknown)}")
    now = _now()
    extra = "".join(f", `{column}`" for column in generation_columns)
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {SCHEDULE_TABLE} (`name`, `creation`, `modified`, `modified_by`,"
            " `owner`, `docstatus`, `task`, `task_description`, `enabled`, `queue_name`,"
            " `redis_job_id`, `argument_overrides`, `schedule_description`, `cron_string`,"
            f" `run_frequency`{extra})"
            " VALUES (%s, %s, %s, 'Administrator', 'Administrator', %s, %s, %s, %s, %s,"
            f" %s, %s, %s, %s, %s{', %s' * len(generation_columns)})",
            (name, now, now, docstatus, task,
             task_description if task_description is not None else f"Task {task}",
             int(enabled), queue_name, redis_job_id, argument_overrides,
             schedule_description if schedule_description is not None else cron_string,
             cron_string, run_frequency, *generation_columns.values()),
        )


def update_schedule(conn, name: str, **columns) -> int:
    """UPDATE the given columns of one schedule (and `modified`); returns affected rows."""
    if not columns:
        raise ValueError("update_schedule needs at least one column")
    unknown = set(columns) - _SCHEDULE_COLUMNS
    if unknown:
        raise ValueError(f"unknown `tabBTU Task Schedule` columns: {sorted(unknown)}")
    columns.setdefault("modified", _now())
    assignments = ", ".join(f"`{col}` = %s" for col in columns)
    with conn.cursor() as cur:
        return cur.execute(
            f"UPDATE {SCHEDULE_TABLE} SET {assignments} WHERE `name` = %s",
            (*columns.values(), name),
        )


def delete_schedule(conn, name: str) -> int:
    """DELETE one schedule; returns affected rows."""
    with conn.cursor() as cur:
        return cur.execute(f"DELETE FROM {SCHEDULE_TABLE} WHERE `name` = %s", (name,))


def set_cron_time_zone(conn, zone: str | None) -> None:
    """Set (or with None, remove) the BTU Configuration `cron_time_zone` single value."""
    set_single(conn, "BTU Configuration", "cron_time_zone", zone)


def set_system_time_zone(conn, zone: str | None) -> None:
    """Set (or with None, remove) the System Settings `time_zone` single value."""
    set_single(conn, "System Settings", "time_zone", zone)


def set_single(conn, doctype: str, field: str, value: str | None) -> None:
    """Set (or with None, remove) one `tabSingles` value."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM `tabSingles` WHERE `doctype` = %s AND `field` = %s", (doctype, field))
        if value is not None:
            cur.execute("INSERT INTO `tabSingles` (`doctype`, `field`, `value`) VALUES (%s, %s, %s)",
                        (doctype, field, value))


def get_schedule(conn, name: str) -> dict | None:
    """The schedule row as a dict (or None)."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {SCHEDULE_TABLE} WHERE `name` = %s", (name,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip((d[0] for d in cur.description), row))


# -- BTU Task Log (the In-Progress guard) and the BTU 15.1.1+ schedule column ------------------

TASK_LOG_TABLE = "`tabBTU Task Log`"


def create_task_log_table(conn) -> None:
    """Create `tabBTU Task Log` (the columns the daemon reads: `task`, `success_fail`), idempotent."""
    with conn.cursor() as cur:
        cur.execute(f"""CREATE TABLE IF NOT EXISTS {TASK_LOG_TABLE} ({_STANDARD_COLUMNS}
  `task` varchar(140) DEFAULT NULL,
  `task_desc_short` varchar(140) DEFAULT NULL,
  `schedule` varchar(140) DEFAULT NULL,
  `success_fail` varchar(140) DEFAULT NULL,
  `stdout` longtext DEFAULT NULL,
  PRIMARY KEY (`name`),
  KEY `modified` (`modified`)
) {_TABLE_OPTIONS}""")


def insert_task_log(conn, name: str, task: str, success_fail: str = "In-Progress",
                    schedule: str | None = None) -> None:
    """Insert a `tabBTU Task Log` row (`success_fail`: In-Progress, Success, Failed or Timeout)."""
    now = _now()
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {TASK_LOG_TABLE} (`name`, `creation`, `modified`, `modified_by`, `owner`,"
            " `task`, `schedule`, `success_fail`)"
            " VALUES (%s, %s, %s, 'Administrator', 'Administrator', %s, %s, %s)",
            (name, now, now, task, schedule, success_fail),
        )


def add_cron_timezone_column(conn) -> None:
    """Make the schedule table BTU 15.1.1+'s: add its per-schedule `cron_timezone` column."""
    with conn.cursor() as cur:
        cur.execute(f"ALTER TABLE {SCHEDULE_TABLE} ADD COLUMN IF NOT EXISTS `cron_timezone` varchar(140) DEFAULT NULL")
