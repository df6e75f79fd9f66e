# -*- test-case-name: tests.test_file_source -*-
"""Read tasks and schedules from a TOML schedule file, so the daemon runs with no Frappe database.

The file is re-read whenever it changes; its tables use the Frappe column names:

    time_zone = "Europe/London"
    [tasks.BTU-00001]
    function_string = "btu_twisted.examples.hello"
    arguments = { greeting = "hello" }     # a table, or Python-literal text as Frappe stores it
    [schedules.TS-000001]
    task = "BTU-00001"
    cron_string = "*/10 * * * * * *"
    [schedules.TS-000002]                  # BTU's structured fields, as in its Frappe form
    task = "BTU-00001"
    run_frequency = "Weekly"
    day_of_week = "Monday"
    hour = 9
    minute = 30
    cron_timezone = "America/New_York"     # per schedule, over the file's time_zone
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from twisted.internet import defer, threads
from twisted.logger import Logger

from btu_twisted import zones
from btu_twisted.frequencies import STRUCTURED_FIELD_NAMES, StructuredFields, is_structured
from btu_twisted.config import unknown_key_warning
from btu_twisted.logs import OBSERVER
from btu_twisted.schedules import DEFAULT_TASK_DURATION_SECS, Schedule
from btu_twisted.schema import FILE_SCHEMA

TOP_KEYS = frozenset({"time_zone", "tasks", "schedules"})
TASK_KEYS = frozenset({"function_string", "arguments", "max_task_duration", "desc_short", "desc_long",
                       "queue_name"})
SCHEDULE_KEYS = frozenset({"task", "cron_string", "queue_name", "argument_overrides", "enabled"})

log = Logger(observer=OBSERVER)


class ScheduleFileError(ValueError):
    """The schedule file cannot be read or one of its entries is malformed."""


class FileSource:
    """Schedules from a TOML file; reads happen in a thread, results are cached by mtime."""

    description = "schedule file"

    def __init__(self, path: str, fallback_zone: str = "UTC", fallback_source: str = zones.DEFAULT_ZONE):
        self.path = Path(path)
        self._fallback_zone = (fallback_zone, fallback_source)
        self._cache: tuple[tuple[int, int, int], dict[str, Schedule]] | None = None

    def enabled_ids(self) -> defer.Deferred:
        """Fire with the IDs of the enabled schedules in the file."""
        return threads.deferToThread(lambda: [s.schedule_id for s in self._load().values() if s.enabled])

    def read(self, ids: list[str]) -> defer.Deferred:
        """Fire with {id: Schedule} for those of `ids` present in the file."""
        return threads.deferToThread(lambda: _pick(self._load(), ids))

    def schema(self) -> defer.Deferred:
        """A schedule file has no BTU tables: no per-schedule zone column, no task log."""
        return defer.succeed(FILE_SCHEMA)

    def close(self) -> None:
        """Nothing to release; present so both sources can be closed alike."""

    def in_progress_tasks(self, task_ids: list[str]) -> defer.Deferred:
        """A schedule file has no BTU Task Log: no task is ever In-Progress."""
        return defer.succeed(set())

    def _load(self) -> dict[str, Schedule]:
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise ScheduleFileError(f"schedule file {self.path}: {e.strerror}") from None
        # mtime alone misses a rewrite within one timestamp tick (coarse on many kernels), such as
        # a read between an editor's truncate and write; size and inode catch those and renames.
        version = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._cache is None or self._cache[0] != version:
            raw = read_schedule_file(self.path)  # read once: the rows and the warnings agree
            self._cache = (version, load_schedule_file(self.path, *self._fallback_zone, raw=raw))
            for problem in schedule_file_warnings(raw):  # once per version of the file
                log.warn("{path}: {problem}", path=str(self.path), problem=problem)
        return self._cache[1]


def _pick(schedules: dict[str, Schedule], ids: list[str]) -> dict[str, Schedule]:
    return {i: schedules[i] for i in ids if i in schedules}


def read_schedule_file(path: Path) -> dict:
    """The file's TOML table; a file that cannot be read or parsed is a ScheduleFileError naming it."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ScheduleFileError(f"schedule file {path}: {e}") from None


def load_schedule_file(path: Path, fallback_zone: str = "UTC", fallback_source: str = zones.DEFAULT_ZONE,
                       raw: dict | None = None) -> dict[str, Schedule]:
    """Parse the whole file (or its table `raw`, already read) into {schedule_id: Schedule};
    errors name the file and the entry."""
    if raw is None:
        raw = read_schedule_file(path)

    def need(where: str, value, kind: type | tuple[type, ...], what: str):
        # bool is an int subclass: `max_task_duration = true` is not a duration
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ScheduleFileError(f"schedule file {path}: {where} must be {what}, got {value!r}")
        return value

    file_zone = zones.first_zone((need("time_zone", raw.get("time_zone", ""), str, "a time zone name"),
                                  zones.FILE_ZONE), (fallback_zone, fallback_source))
    tasks = need("tasks", raw.get("tasks", {}), dict, "a table")
    schedules = {}
    for schedule_id, entry in need("schedules", raw.get("schedules", {}), dict, "a table").items():
        if not isinstance(entry, dict):
            raise ScheduleFileError(f"schedule file {path}: schedules.{schedule_id} is not a table")
        task_id = need(f"schedules.{schedule_id}.task", entry.get("task", ""), str, "a task name")
        task = need(f"tasks.{task_id}", tasks.get(task_id, {}), dict, "a table")
        zone, zone_source = zones.first_zone(
            (need(f"schedules.{schedule_id}.cron_timezone", entry.get("cron_timezone", ""), str,
                  "a time zone name"), zones.SCHEDULE_ZONE), file_zone)
        run_frequency = need(f"schedules.{schedule_id}.run_frequency", entry.get("run_frequency", ""),
                             str, "a run frequency name") or None
        schedules[schedule_id] = Schedule(
            schedule_id=schedule_id,
            task_id=task_id,
            cron_string=str(entry.get("cron_string", "")).strip(),
            queue_name=entry.get("queue_name") or task.get("queue_name") or "default",
            function_string=task.get("function_string", ""),
            arguments=literal_text(task.get("arguments")),
            argument_overrides=literal_text(entry.get("argument_overrides")),
            max_task_duration=need(f"tasks.{task_id}.max_task_duration",
                                   task.get("max_task_duration", DEFAULT_TASK_DURATION_SECS), int,
                                   "an integer number of seconds"),
            description=task.get("desc_short", ""),
            enabled=need(f"schedules.{schedule_id}.enabled", entry.get("enabled", True), bool,
                         "true or false"),
            time_zone=zone,
            zone_source=zone_source,
            run_frequency=run_frequency,
            # checked when planned, as SQL rows are: a bad field makes only this schedule unplannable
            structured=(StructuredFields(**{name: entry.get(name) for name in STRUCTURED_FIELD_NAMES})
                        if is_structured(run_frequency) else None),
        )
    return schedules


def schedule_file_warnings(raw: dict) -> list[str]:
    """Keys of the schedule file's table `raw` that nothing reads (typos), each with the nearest known key."""
    found = [unknown_key_warning(key, TOP_KEYS, "key") for key in raw if key not in TOP_KEYS]
    for table, known in (("tasks", TASK_KEYS), ("schedules", SCHEDULE_KEYS)):
        entries = raw.get(table)
        for name, entry in (entries.items() if isinstance(entries, dict) else ()):
            if isinstance(entry, dict):
                found += [unknown_key_warning(key, known, f"key of {table}.{name}:")
                          for key in entry if key not in known]
    return found


def literal_text(value) -> str | None:
    """Arguments may be a TOML table or Frappe's Python-literal text; keep the text form."""
    if value is None or isinstance(value, str):
        return value
    return repr(value)
