# -*- test-case-name: tests.test_schedules -*-
"""The schedule record the daemon plans and dispatches: a BTU Task Schedule joined with its BTU Task.

Both sources (MariaDB and the schedule file) produce these; everything downstream reads only them.
"""

from __future__ import annotations

import ast
import functools
import marshal
from dataclasses import dataclass
from datetime import datetime, timezone

from btu_twisted import cron, frequencies
from btu_twisted.zones import zone_problem

MAX_ARGUMENTS_CHARS = 65536  # literal_eval on web-user text: bound its size before parsing
MAX_ARGUMENTS_DEPTH = 32     # and its nesting, so the parser cannot recurse without limit
# Every refresh checks every row's argument texts, and most rows repeat their task's text: parsed
# texts are kept by text (LRU), bounded in count and length, so the cache is a few MB at most.
ARGUMENTS_CACHE_ENTRIES = 2048
ARGUMENTS_CACHE_MAX_CHARS = 2048  # longer texts are rare and parsed every time
DEFAULT_TASK_DURATION_SECS = 600


class ScheduleError(ValueError):
    """A schedule row cannot be planned or dispatched; the message says which column and why."""


@dataclass(frozen=True, slots=True)
class Schedule:
    """One BTU Task Schedule with the fields of its task that a job needs, and the zone of its cron."""

    schedule_id: str
    task_id: str
    cron_string: str
    queue_name: str
    function_string: str
    arguments: str | None = None
    argument_overrides: str | None = None
    max_task_duration: int = DEFAULT_TASK_DURATION_SECS
    description: str = ""
    enabled: bool = True
    time_zone: str = "UTC"
    zone_source: str = "time_zone_string"  # where time_zone came from (DESIGN §4 fallback chain)
    task_queue_name: str | None = None     # the task's own queue (BTU's enqueue prefers it)
    run_frequency: str | None = None       # BTU's `Cron Style`, Hourly, Daily, ... (None: Cron Style)
    structured: frequencies.StructuredFields | None = None  # the fields a non-Cron-Style row uses

    def cron(self) -> str:
        """The cron evaluated in `time_zone`: derived from the structured fields unless Cron Style."""
        if not frequencies.is_structured(self.run_frequency):
            return self.cron_string
        try:
            return frequencies.local_cron(self.run_frequency, self.structured or frequencies.StructuredFields())
        except frequencies.FrequencyError as e:
            raise ScheduleError(str(e)) from None

    def kwargs(self) -> dict:
        """Task `arguments` overridden key by key by the schedule's `argument_overrides`."""
        merged = parse_arguments(self.arguments, "arguments")
        merged.update(parse_arguments(self.argument_overrides, "argument_overrides"))
        return merged

    def next_fire(self, after: float) -> int:
        """Unix second of the first fire strictly after unix time `after`, in the schedule's zone."""
        start = datetime.fromtimestamp(after, timezone.utc)
        try:
            return int(cron.next_fire(self.cron(), self.time_zone, start).timestamp())
        except cron.CronError:
            problem = zone_problem(self.time_zone, self.zone_source)  # only on failure: no cost per fire
            if problem:
                raise ScheduleError(problem) from None
            raise

    def check(self) -> None:
        """Raise ScheduleError when a column a job needs is missing or unusable."""
        if not self.task_id:
            raise ScheduleError("task is empty")
        if not self.function_string:
            raise ScheduleError(f"task {self.task_id!r} does not exist or has no function_string")
        if not self.cron():
            raise ScheduleError("cron_string is empty")
        if not self.queue_name:
            raise ScheduleError("queue_name is empty")
        problem = zone_problem(self.time_zone, self.zone_source)
        if problem:
            raise ScheduleError(problem)
        if self.max_task_duration <= 0:
            raise ScheduleError(f"max_task_duration must be positive, got {self.max_task_duration}")
        self.kwargs()


def parse_arguments(text: str | None, column: str) -> dict:
    """Parse a Python-literal dict (Frappe stores arguments this way); never eval, never pickle.

    Each call returns new objects, so a job can never change the kwargs of another through the cache.
    """
    if text is None or not text.strip():
        return {}
    try:
        frozen = _frozen_cached(text) if len(text) <= ARGUMENTS_CACHE_MAX_CHARS else _frozen(text)
    except ScheduleError as e:
        raise ScheduleError(f"{column}: {e}") from None
    return marshal.loads(frozen)


@functools.lru_cache(maxsize=ARGUMENTS_CACHE_ENTRIES)
def _frozen_cached(text: str) -> bytes:
    """`_frozen`, remembered by text (errors are not cached: a bad row is parsed again)."""
    return _frozen(text)


def _frozen(text: str) -> bytes:
    """The checked dict of `text` as marshal bytes: they hold exactly the types literal_eval makes,
    and loading them builds a fresh copy faster than copy.deepcopy (we wrote them: no untrusted input).

    The ScheduleError message leaves out the column; `parse_arguments` puts it in front.
    """
    if len(text) > MAX_ARGUMENTS_CHARS:
        raise ScheduleError(f"{len(text)} characters, more than the {MAX_ARGUMENTS_CHARS} allowed")
    if _nesting(text) > MAX_ARGUMENTS_DEPTH:
        raise ScheduleError(f"nested deeper than {MAX_ARGUMENTS_DEPTH} levels")
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ScheduleError(f"not a Python literal ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise ScheduleError(f"expected a dict, got {type(value).__name__}")
    if _depth(value) > MAX_ARGUMENTS_DEPTH:  # brackets inside strings can hide depth from _nesting
        raise ScheduleError(f"nested deeper than {MAX_ARGUMENTS_DEPTH} levels")
    if not all(isinstance(key, str) for key in value):
        raise ScheduleError("every key must be a string (they become keyword arguments)")
    return marshal.dumps(value)


def _nesting(text: str) -> int:
    """Bracket nesting, a cheap guard before parsing (strings are not skipped, so it is approximate).

    Closing brackets inside a string can make it under-count; `_depth` checks the parsed value.
    """
    depth = deepest = 0
    for char in text:
        if char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def _depth(value) -> int:
    """Container nesting of a parsed literal, the outer dict being 1 (iterative: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = (*item.keys(), *item.values())
        if isinstance(item, (list, tuple, set, frozenset)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest
