# -*- test-case-name: tests.test_planner -*-
"""A schedule source that records its own health: the planner, refresher and dispatcher all read
through it, so `status` shows the database's state and the log says each outage once."""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from btu_twisted.logs import OBSERVER
from btu_twisted.stats import Health


class MonitoredSource:
    """Wraps a SQLSource or FileSource; same methods, with up/down transitions recorded and logged."""

    log = Logger(observer=OBSERVER)

    def __init__(self, source, health: Health, clock):
        self._source = source
        self._health = health
        self._clock = clock
        self.description = source.description

    def enabled_ids(self) -> defer.Deferred:
        return self._watch(self._source.enabled_ids())

    def read(self, ids: list[str]) -> defer.Deferred:
        return self._watch(self._source.read(ids))

    def schema(self) -> defer.Deferred:
        return self._watch(self._source.schema())

    def close(self) -> None:
        self._source.close()

    def in_progress_tasks(self, task_ids: list[str]) -> defer.Deferred:
        return self._watch(self._source.in_progress_tasks(task_ids))

    def _watch(self, d: defer.Deferred) -> defer.Deferred:
        d.addCallbacks(self._up, self._down)
        return d

    def _up(self, result):
        was_down, down_since = self._health.up is False, self._health.since
        if not self._health.mark(True, self._clock.seconds()):
            return result
        if was_down:  # the end of an outage, with its length
            self.log.info("{source} reachable again after {took:.1f} s", source=self.description,
                          took=self._clock.seconds() - down_since)
        else:
            self.log.info("{source} reachable", source=self.description)
        return result

    def _down(self, failure):
        error = failure.getErrorMessage() or failure.type.__name__
        if self._health.mark(False, self._clock.seconds(), error):
            self.log.warn("{source} unreachable: {error}; retrying with back-off",
                          source=self.description, error=error)
        return failure
