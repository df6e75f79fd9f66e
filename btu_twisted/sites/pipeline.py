# -*- test-case-name: tests.test_sites -*-
"""One site's planning and dispatch: its schedule source, Redis store, internal queue, planner,
refresher, dispatcher, job builder and enqueuer, and the handler table its control requests use.

A single-site daemon runs one pipeline in the Rust daemon's key layout; a bench daemon runs one per
site, each in that site's layout (sites/layout.py), so the sites never see each other's schedules.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from btu_twisted import logs, ownership
from btu_twisted.builders.factory import make_builder
from btu_twisted.commands import Commands
from btu_twisted.dispatcher import Dispatcher
from btu_twisted.enqueuer import Enqueuer
from btu_twisted.file_source import FileSource
from btu_twisted.monitored_source import MonitoredSource
from btu_twisted.planner import Planner, RowCache
from btu_twisted.refresher import Refresher
from btu_twisted.sites.layout import KeyLayout
from btu_twisted.sql_source import SQLSource
from btu_twisted.stats import Stats
from btu_twisted.store import ScheduleStore
from btu_twisted.workqueue import UniqueQueue
from btu_twisted.zones import configured_zone

log = Logger(observer=logs.OBSERVER)


class ResourcefulService(service.MultiService):
    """A MultiService that opens its resources before its children start and closes them after
    they have stopped (waiting for in-flight work), so nothing is used once released."""

    def __init__(self, openers=(), closers=()):
        super().__init__()
        self._openers = list(openers)
        self._closers = list(closers)

    def own(self, open_=None, close=None) -> None:
        """Open `open_` before the children start and call `close` after they have stopped."""
        if open_ is not None:
            self._openers.append(open_)
        if close is not None:
            self._closers.append(close)

    def startService(self):
        # Threads and connections start here, not when composed: twistd may fork in between.
        for open_ in self._openers:
            open_()
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):
        if not self.running:
            return  # stopped already: the resources are closed
        yield super().stopService()
        for close in self._closers:
            try:
                yield defer.maybeDeferred(close)
            except Exception:
                log.failure("error while closing {close}", close=close)


class SitePipeline(ResourcefulService):
    """Everything that plans and fires one site's schedules; `commands` answers its requests."""

    def __init__(self, reactor, clock, config, redis_settings, in_thread, clock_ready: defer.Deferred,
                 layout: KeyLayout, master_tracker=None, clock_stats: Stats | None = None):
        """`clock` (a RedisClock) tells instants and `clock_ready` fires once it tells Redis time;
        `in_thread` runs blocking RQ calls on the daemon's pool; `layout` names the site's keys;
        `clock_stats` holds the clock report when the daemon's watch keeps it elsewhere (several sites)."""
        self.config = config
        self.layout = layout
        self.stats = stats = Stats(started_at=clock.seconds(), redis_master=master_tracker)
        self.source = source = MonitoredSource(
            FileSource(config.schedule_file, *configured_zone(config)) if config.schedule_file
            else SQLSource(config), stats.sql, clock)
        self.store = store = ScheduleStore(reactor, redis_settings, master_tracker=master_tracker,
                                           layout=layout)
        self.queue = queue = UniqueQueue()
        rows = RowCache()
        self.enqueuer = enqueuer = Enqueuer(
            redis_settings, now=clock.seconds, min_replicas=config.redis_min_replicas,
            replicas_timeout_secs=config.redis_min_replicas_timeout_secs,
            max_skew_secs=config.max_clock_skew_secs,
            on_distrusted=lambda *report: reactor.callFromThread(_distrusted, layout, *report),
            layout=layout)
        self.builder = builder = make_builder(config.job_builder, config, clock, source, stats,
                                              reactor=reactor, layout=layout)
        super().__init__(openers=[store.open],
                         closers=[source.close, store.close, enqueuer.close, builder.close])
        self.dispatcher = dispatcher = Dispatcher(
            clock, store, source, rows, builder, enqueuer, in_thread,
            stats, config.misfire_grace_secs, config.scheduler_polling_interval,
            on_redis_back=lambda: refresher.refresh(), clock_ready=clock_ready)
        self.planner = planner = Planner(
            clock, queue, source, store, rows, stats, on_planned=dispatcher.poke,
            batch_size=config.refresh_batch_size, max_retry_secs=config.scheduler_polling_interval,
            clock_ready=clock_ready)
        self.refresher = refresher = Refresher(
            clock, source, store, queue, planner, stats, config.full_refresh_internal_secs,
            config.scheduler_polling_interval, rows=rows, clock_ready=clock_ready)
        self.commands = Commands(clock, queue, store, refresher, stats, config, rows=rows,
                                 source=config.schedule_source, site=layout.site, clock_stats=clock_stats)
        self._reactor = reactor
        self._name_site_in_logs(source, enqueuer, builder, dispatcher, planner, refresher)

    def _name_site_in_logs(self, *parts) -> None:
        """With several sites, each part's log lines carry its site in their namespace
        (`btu_twisted.dispatcher.Dispatcher@erp.example.com`), so interleaved lines stay readable."""
        if self.layout.site is None:
            return
        for part in parts:
            if isinstance(getattr(type(part), "log", None), Logger):
                part.log = _site_logger(part, self.layout.site)

    def guard_ownership(self, checked: bool) -> None:
        """Add the ownership guard of the site's layout (its first child: it claims the layout
        before the refresher touches it); `checked` says whether the start-up check reached Redis."""
        guard = ownership.OwnershipGuard(self._reactor, self.store.run_script, self.config,
                                         self._reactor.stop, checked, key=self.layout.owner_key)
        self._name_site_in_logs(guard)
        self.addService(guard)

    def add_workers(self, *extra) -> None:
        """Add the services that do the work (after the guard), and `extra` ones (its socket)."""
        if isinstance(self.builder, service.Service):  # `auto` reads the schema at start-up
            self.addService(self.builder)
        for child in (self.planner, self.dispatcher, self.refresher, *extra):
            self.addService(child)

    def follow_master(self) -> None:
        """The daemon's own connections found a new master: the RQ writes' idle connections (to the
        old one, maybe frozen) are closed so the next asks Sentinel, and dispatch resumes now rather
        than after its back-off."""
        self.enqueuer.drop_idle_connections()
        self.dispatcher.wake()

    def resync(self) -> None:
        """Instants moved (a clock step of Redis, the first sync of a skewed host): re-plan all."""
        self.refresher.refresh()
        self.dispatcher.wake()


def _site_logger(part, site: str) -> Logger:
    kind = type(part)
    return Logger(namespace=f"{kind.__module__}.{kind.__qualname__}@{site}", source=part, observer=logs.OBSERVER)


def _distrusted(layout: KeyLayout, schedule_id: str, watermark: int, now: float) -> None:
    site = "" if layout.site is None else f" (site {layout.site})"
    log.warn("the watermark of {schedule_id}{site} is {ahead:.0f} s ahead of Redis time (left by a "
             "daemon whose clock ran fast): not trusted, its fires go out on time",
             schedule_id=schedule_id, site=site, ahead=watermark - now)
