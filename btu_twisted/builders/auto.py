# -*- test-case-name: tests.test_builders -*-
"""The `auto` job builder (the default): the BTU generation of the site database picks the builder.

`btu` when `tabBTU Task Schedule` has `cron_timezone` (BTU 15.1.1+), else `btu-web` when
`webserver_token` is configured (BTU <= 15.1.0, as the Rust daemon), else `frappe`; a schedule file
(no BTU tables) gets `python`. The schema is read at start-up, and again until the database first
answers (it may be down with `startup_without_database_connections`); the choice and its reason
are logged and shown by `status`.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from btu_twisted.builders import Retry
from btu_twisted.logs import OBSERVER
from btu_twisted.schema import Schema

SCHEMA_RETRY_MIN_SECS = 1.0   # first re-read of the schema after the database failed to answer
SCHEMA_RETRY_MAX_SECS = 60.0  # doubled up to this


class BuilderUnavailable(Exception):
    """The chosen builder cannot be made with this configuration; the message says what to set."""


def choose(schema: Schema, has_webserver_token: bool) -> tuple[str, str]:
    """(builder kind, the reason for it) for a site database's schema."""
    if not schema.schedule_table:
        return "python", "no BTU tables (schedule file): jobs call function_string directly"
    if schema.cron_timezone:
        return "btu", ("`tabBTU Task Schedule` has cron_timezone (BTU 15.1.1+): jobs run BTU's "
                       "task runner (run_task_by_id)")
    if has_webserver_token:
        return "btu-web", ("BTU <= 15.1.0 (no cron_timezone column) and webserver_token is set: jobs "
                           "are BTU's pickled task runner from get_pickled_task, as the Rust daemon's")
    return "frappe", ("BTU <= 15.1.0 (no cron_timezone column) and no webserver_token: jobs call the "
                      "task's function through execute_job, without BTU Task Logs (set webserver_* "
                      "for BTU's task runner)")


class AutoBuilder(service.Service):
    """Resolves to a concrete builder once the schema is known; until then fires wait (Retry)."""

    kind = "auto"
    log = Logger(observer=OBSERVER)

    def __init__(self, clock, source, make, has_webserver_token: bool, stats):
        self._clock = clock
        self._source = source
        self._make = make  # kind -> builder; raises BuilderUnavailable
        self._has_token = has_webserver_token
        self._stats = stats
        self._chosen = None
        self._unusable: str | None = None
        self._waiters: list[defer.Deferred] = []  # build_batch calls waiting for the schema
        self._retry = None
        self._delay = SCHEMA_RETRY_MIN_SECS
        stats.job_builder = {"kind": "auto", "reason": "waiting for the site database's schema"}

    def startService(self):
        super().startService()
        self._resolve()

    def stopService(self):
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    @defer.inlineCallbacks
    def build_batch(self, fires):
        if self._chosen is None:
            yield self._resolve()
        if self._chosen is None:
            reason = self._unusable or "the site database's schema is not known yet"
            return [Retry(reason, self._clock.seconds() + self._delay) for _ in fires]
        outcomes = yield self._chosen.build_batch(fires)
        return outcomes

    def queue_for(self, schedule) -> str:
        """The chosen builder's queue; the schedule's own queue name until the schema is known."""
        return self._chosen.queue_for(schedule) if self._chosen is not None else schedule.queue_name

    def _resolve(self) -> defer.Deferred:
        """Read the schema (one read at a time); on failure, read it again later with back-off."""
        if self._chosen is not None or self._unusable is not None:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._source.schema().addCallbacks(self._choose, self._failed).addBoth(self._wake)
        return waiter

    def _wake(self, _result) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _choose(self, schema: Schema) -> None:
        kind, reason = choose(schema, self._has_token)
        try:
            self._chosen = self._make(kind)
        except BuilderUnavailable as e:
            self._unusable = f"job_builder auto chose {kind} but {e}"
            self.log.error("job builder: {problem}; no job is enqueued until the configuration is "
                           "fixed", problem=self._unusable)
            self._stats.job_builder = {"kind": kind, "reason": f"{reason}; UNUSABLE: {e}"}
            return
        self.log.info("job builder: {kind}, because {reason}", kind=kind, reason=reason)
        self._stats.job_builder = {"kind": kind, "reason": reason}

    def _failed(self, failure) -> None:
        # MonitoredSource has logged the outage; retry until the database answers.
        if self.running and (self._retry is None or not self._retry.active()):
            self._retry = self._clock.callLater(self._delay, self._resolve)
        self._delay = min(self._delay * 2, SCHEMA_RETRY_MAX_SECS)

    def close(self):
        """Release the chosen builder's connections."""
        if self._chosen is not None:
            return self._chosen.close()
        return None
