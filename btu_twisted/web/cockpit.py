# -*- test-case-name: tests.test_dashboard -*-
"""What the web listener asks of the daemon: the dashboard's data, the metrics, a run-now.

The blocking report functions run in the daemon's thread pool; the reactor thread only waits.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from btu_twisted.logs import OBSERVER
from btu_twisted.report import snapshot
from btu_twisted.report.connections import ScheduleReader
from btu_twisted.report.times import local, utc
from btu_twisted.run_now import run_now

log = Logger(observer=OBSERVER)


class UnknownSchedule(LookupError):
    """run-now named a schedule the source does not have."""


class Cockpit:
    """The daemon's parts the dashboard reads, and the one action it may take."""

    def __init__(self, clock, config, stats, store, enqueuer, run_in_thread, collector):
        self._clock = clock
        self._store = store
        self._config = config
        self._stats = stats
        self._enqueuer = enqueuer
        self._run_in_thread = run_in_thread
        self.collector = collector

    @defer.inlineCallbacks
    def dashboard(self):
        """The snapshot with timeline, formatted times, and the daemon's own view of its health."""
        now = self._clock.seconds()
        data = yield self._run_in_thread(snapshot.gather, self._config, now, True)
        for item in data["schedules"]:
            item["next_local"], item["next_utc"] = local(item["next_unix"], item["zone"]), utc(item["next_unix"])
            last = item["last"]
            if last:
                last["local"], last["utc"] = local(last["at"], item["zone"]), utc(last["at"])
        data["daemon"] = {"name": self._config.name, "environment": self._config.environment_name,
                          "uptime_secs": round(now - self._stats.started_at, 3),
                          "last_refresh": self._stats.last_refresh, "counts": dict(self._stats.counts),
                          "sql": self._stats.sql.as_dict(), "redis": self._stats.redis.as_dict(),
                          "actions": self._config.http_token is not None}
        return data

    @defer.inlineCallbacks
    def refresh_metrics(self):
        """The planned count for the next scrape, on the daemon's own Redis connection; the clock
        skew is the one the daemon's clock watch measured against Redis TIME."""
        self.collector.clock_skew = (self._stats.clock or {}).get("host_offset_secs")
        try:
            self.collector.planned = yield self._store.count()
        except Exception:
            self.collector.planned = None  # Redis down: its gauge says so

    @defer.inlineCallbacks
    def run_now(self, schedule_id: str):
        """Enqueue the schedule's job once, now (plan untouched); fires with the JobSpec."""
        def enqueue():
            reader = ScheduleReader(self._config)
            schedule = reader.schedule(schedule_id)
            if schedule is None:
                raise UnknownSchedule(schedule_id)
            return run_now(self._enqueuer, reader.builder(), schedule, self._clock.seconds())
        spec = yield self._run_in_thread(enqueue)
        log.info("run-now of {schedule_id} from the dashboard: {job_id} in queue {queue}",
                 schedule_id=schedule_id, job_id=spec.job_id, queue=spec.queue)
        return spec
