# -*- test-case-name: tests.test_commands -*-
"""Counters and health flags that the services update and the `status` request reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Health:
    """Up/down state of one dependency, with when it last changed and the last error."""

    up: bool | None = None
    since: float | None = None
    error: str | None = None
    slow: bool = False  # answering, but too late for the fires that needed it

    def mark(self, up: bool, now: float, error: str | None = None) -> bool:
        """Record the state; returns True when it changed (callers log transitions, not repeats)."""
        changed = up != self.up
        if changed:
            self.since = now
        self.up, self.error = up, (None if up else error)
        return changed

    def as_dict(self) -> dict:
        return {"up": self.up, "since": self.since, "error": self.error, "slow": self.slow}


@dataclass
class Stats:
    """Everything `status` shows that is not read live from Redis."""

    started_at: float
    counts: Counter = field(default_factory=Counter)
    problems: dict[str, str] = field(default_factory=dict)
    sql: Health = field(default_factory=Health)
    redis: Health = field(default_factory=Health)
    last_refresh: dict | None = None
    clock: dict | None = None  # the host clock against Redis time (clock.ClockWatch)

    def problem(self, schedule_id: str, reason: str | None) -> bool:
        """Record (or, with None, clear) why a schedule cannot be planned; True when the reason is
        new, so a row refused again on every retry or refresh is logged once, not each time."""
        if reason is None:
            self.problems.pop(schedule_id, None)
            return False
        new = self.problems.get(schedule_id) != reason
        self.problems[schedule_id] = reason
        return new
