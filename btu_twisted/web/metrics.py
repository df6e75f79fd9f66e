# -*- test-case-name: tests.test_dashboard -*-
"""Prometheus metrics of the running daemon, exposed with prometheus_client from its own registry.

A custom collector reads the daemon's Stats at scrape time, so the dispatch path keeps its plain
counters and nothing is registered globally.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from btu_twisted.stats import LATENESS_BUCKETS_SECS

EVENTS = ("enqueued", "skipped_misfires", "errors")


class DaemonCollector:
    """Collects from Stats; `planned` and `clock_skew` are set from Redis just before each scrape."""

    def __init__(self, stats, clock):
        self._stats = stats
        self._clock = clock
        self.planned: int | None = None
        self.clock_skew: float | None = None

    def collect(self):
        stats = self._stats
        yield GaugeMetricFamily("btu_uptime_seconds", "Seconds since the daemon started.",
                                value=self._clock.seconds() - stats.started_at)
        if self.planned is not None:
            yield GaugeMetricFamily("btu_planned_schedules", "Schedules with a planned fire in Redis.",
                                    value=self.planned)
        yield GaugeMetricFamily("btu_unplannable_schedules", "Enabled schedules that cannot be planned.",
                                value=len(stats.problems))
        events = CounterMetricFamily("btu_dispatch_events", "Fires enqueued, skipped (beyond the misfire "
                                     "grace) or failed, by RQ queue.", labels=["event", "queue"])
        for (event, queue), count in sorted(stats.by_queue.items()):
            events.add_metric([event, queue], count)
        yield events
        lateness = stats.lateness
        cumulative = []
        for bound, count in zip(LATENESS_BUCKETS_SECS, lateness.buckets):
            cumulative.append((repr(bound), count))
        cumulative.append(("+Inf", lateness.count))
        yield HistogramMetricFamily("btu_enqueue_lateness_seconds", "Fire instant to the enqueue "
                                    "transaction's return, as seen by the dispatcher.",
                                    buckets=cumulative, sum_value=lateness.total)
        if stats.last_refresh is not None:
            yield GaugeMetricFamily("btu_last_refresh_duration_seconds", "Duration of the last full refresh.",
                                    value=stats.last_refresh["seconds"])
            yield GaugeMetricFamily("btu_last_refresh_timestamp_seconds", "Start of the last full refresh.",
                                    value=stats.last_refresh["at"])
        up = GaugeMetricFamily("btu_dependency_up", "1 when the dependency answered last time, 0 when "
                               "not, absent before the first try.", labels=["dependency"])
        for name, health in (("sql", stats.sql), ("redis", stats.redis)):
            if health.up is not None:
                up.add_metric([name], 1.0 if health.up else 0.0)
        yield up
        if self.clock_skew is not None:
            yield GaugeMetricFamily("btu_clock_skew_seconds", "This host's clock minus Redis's clock.",
                                    value=self.clock_skew)


def registry_for(collector: DaemonCollector) -> CollectorRegistry:
    """A registry of its own holding only the daemon's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format."""
    return generate_latest(registry)
