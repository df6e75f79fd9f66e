# -*- test-case-name: tests.test_commands -*-
"""Counters and health flags that the services update and the `status` request reports."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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


LATENESS_BUCKETS_SECS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)


@dataclass
class Lateness:
    """A histogram of enqueue lateness (fire instant to the transaction's return), in seconds."""

    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENESS_BUCKETS_SECS))
    count: int = 0
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        for i, bound in enumerate(LATENESS_BUCKETS_SECS):
            if seconds <= bound:
                self.buckets[i] += 1


@dataclass
class Stats:
    """Everything `status` shows that is not read live from Redis."""

    started_at: float
    counts: Counter = field(default_factory=Counter)
    problems: dict[str, str] = field(default_factory=dict)
    sql: Health = field(default_factory=Health)
    redis: Health = field(default_factory=Health)
    last_refresh: dict | None = None
    job_builder: dict | None = None  # {"kind", "reason"}: which job builder runs, and why
    by_queue: Counter = field(default_factory=Counter)  # (event, queue) -> count, for /metrics
    lateness: Lateness = field(default_factory=Lateness)
    redis_master: Any = None  # a redis_connections.MasterTracker when Redis is Sentinel-managed
    clock: dict | None = None  # the host clock against Redis time (clock.ClockWatch)

    def count(self, event: str, queue: str) -> None:
        """Count one dispatch event (enqueued, skipped_misfires, errors) in total and for its queue."""
        self.counts[event] += 1
        self.by_queue[event, queue] += 1

    def problem(self, schedule_id: str, reason: str | None) -> bool:
        """Record (or, with None, clear) why a schedule cannot be planned; True when the reason is
        new, so a row refused again on every retry or refresh is logged once, not each time."""
        if reason is None:
            self.problems.pop(schedule_id, None)
            return False
        new = self.problems.get(schedule_id) != reason
        self.problems[schedule_id] = reason
        return new
