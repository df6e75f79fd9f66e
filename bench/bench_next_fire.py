"""Time `btu_twisted.cron.next_fire` per call: median and p99 in microseconds, per expression.

Run from the repository root: `.venv/bin/python bench/bench_next_fire.py`. The target is a median
of at most 50 µs per call (DESIGN §9); a full refresh plans up to 100 000 schedules.
"""

from __future__ import annotations

import random
import statistics
import time
from datetime import datetime, timedelta, timezone

from btu_twisted.cron import next_fire

ZONE = "America/New_York"
EXPRESSIONS = ("*/5 * * * *", "0 3 * * *", "30 2 * * 1-5", "0 0 1 * *", "*/30 * * * *", "@hourly")
CALLS_PER_EXPRESSION = 20_000
TARGET_MEDIAN_US = 50.0
# Instants spread over three years, so every DST change of New York is crossed many times.
SPAN = timedelta(days=3 * 365)
START = datetime(2025, 1, 1, tzinfo=timezone.utc)
SEED = 7  # same instants on every run, so runs compare


def main() -> None:
    """Print one line per expression and an overall verdict against the target."""
    rng = random.Random(SEED)
    instants = [START + SPAN * rng.random() for _ in range(CALLS_PER_EXPRESSION)]
    medians = []
    print(f"next_fire in {ZONE}, {CALLS_PER_EXPRESSION} calls each, µs per call")
    for expression in EXPRESSIONS:
        next_fire(expression, ZONE, START)  # parse once: the daemon's cache is warm in steady state
        samples = []
        for after in instants:
            began = time.perf_counter_ns()
            next_fire(expression, ZONE, after)
            samples.append((time.perf_counter_ns() - began) / 1000)
        median = statistics.median(samples)
        p99 = statistics.quantiles(samples, n=100)[98]
        medians.append(median)
        print(f"  {expression:<16} median {median:6.1f}   p99 {p99:6.1f}")
    worst = max(medians)
    verdict = "ok" if worst <= TARGET_MEDIAN_US else "OVER TARGET"
    print(f"worst median {worst:.1f} µs (target ≤ {TARGET_MEDIAN_US:.0f} µs): {verdict}")


if __name__ == "__main__":
    main()
