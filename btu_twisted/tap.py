# -*- test-case-name: tests.test_tap -*-
"""`twistd btu`: command-line options and `makeService`, the one place the daemon is composed."""

from __future__ import annotations

import re
import sys

from btu_twisted import monotonic_reactor

monotonic_reactor.install()  # before the imports below pull in the default (wall-clock) reactor

# ruff: noqa: E402

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python import threadpool, usage

from btu_twisted import config as configuration
from btu_twisted import logs
from btu_twisted.clock import ClockWatch, RedisClock
from btu_twisted.commands import Commands
from btu_twisted.control import ControlFactory
from btu_twisted.dispatcher import Dispatcher
from btu_twisted.enqueuer import Enqueuer
from btu_twisted.file_source import FileSource
from btu_twisted.jobs import JobBuilder
from btu_twisted.monitored_source import MonitoredSource
from btu_twisted.planner import Planner, RowCache
from btu_twisted.refresher import Refresher
from btu_twisted.socketfile import ControlSocketService
from btu_twisted.sql_source import SQLSource, check_connection
from btu_twisted.stats import Stats
from btu_twisted.store import ScheduleStore
from btu_twisted.workqueue import UniqueQueue

RQ_THREADS = 4  # concurrent blocking RQ transactions; one is busy per distinct fire instant

log = Logger(observer=logs.OBSERVER)


class Options(usage.Options):
    """Options of `twistd btu`; everything else comes from the TOML configuration file."""

    synopsis = "[--config PATH | --embedded] [--socket PATH] [--log-level LEVEL]"
    longdesc = ("BTU scheduler daemon: turns BTU Task Schedules (Frappe MariaDB or a schedule file) "
                "into Python RQ jobs at their cron times, exactly once. Drop-in for the Rust "
                "btu_scheduler_daemon: same config file, socket protocol and Redis keys.")
    optParameters = [
        ["config", "c", None, "configuration file (default: $BTU_SCHEDULER_CONFIG, else "
                              f"{configuration.DEFAULT_CONFIG_PATH})"],
        ["socket", "s", None, "control socket path (overrides socket_path)"],
        ["log-level", "l", None, "TRACE, DEBUG, INFO, WARN or ERROR (overrides tracing_level)"],
    ]
    optFlags = [["embedded", "e", "run on the embedded default: local Redis, example schedule file"]]

    def postOptions(self):
        """Load and check the configuration now, so a bad file stops twistd before it daemonizes."""
        path = configuration.EMBEDDED_CONFIG if self["embedded"] else configuration.config_path(self["config"])
        try:
            loaded, warnings = configuration.load(path)
        except configuration.ConfigError as e:
            sys.stderr.write(f"btu: {e}\n\nA configuration file looks like this:\n\n"
                             f"{configuration.SAMPLE_CONFIG}")
            raise SystemExit(1) from None
        overrides = {}
        if self["socket"]:
            overrides["socket_path"] = self["socket"]
        if self["log-level"]:
            overrides["tracing_level"] = self["log-level"]
        try:
            self["loaded"] = configuration.replace(loaded, **overrides)
        except configuration.ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self["warnings"] = warnings
        self["config_path"] = str(path)


def makeService(options, reactor=None) -> service.MultiService:
    """Wire the daemon: source, store, queue, planner, refresher, dispatcher and control socket."""
    if reactor is None:
        from twisted.internet import reactor
    config = options["loaded"]
    logs.set_level(config.tracing_level)
    for warning in options.get("warnings", ()):
        # Not a field named "warning": legacy observers (trial's reporter) take that for a
        # warnings.warn() event and fail looking up its filename and lineno.
        log.warn("{config_path}: {problem}", config_path=options.get("config_path"), problem=warning)
    _check_database(config)

    if not monotonic_reactor.is_monotonic(reactor):
        log.warn("running on {reactor}, whose timers follow the wall clock: a backward step of the "
                 "host clock delays them by the step (without --reactor, twistd btu uses a monotonic one)",
                 reactor=type(reactor).__name__)
    pool = threadpool.ThreadPool(minthreads=1, maxthreads=RQ_THREADS, name="btu-rq")
    clock = RedisClock(reactor)  # instants; the reactor itself measures only delays
    stats = Stats(started_at=clock.seconds())
    source = MonitoredSource(
        FileSource(config.schedule_file, config.time_zone_string) if config.schedule_file else SQLSource(config),
        stats.sql, clock)
    store = ScheduleStore(reactor, config.effective_redis_url)
    queue = UniqueQueue()
    rows = RowCache()
    enqueuer = Enqueuer(config.effective_redis_url, now=clock.seconds, max_skew_secs=config.max_clock_skew_secs,
                        on_distrusted=lambda *report: reactor.callFromThread(_distrusted, *report))
    top = DaemonService(openers=[pool.start, store.open],
                        closers=[pool.stop, source.close, store.close, enqueuer.close])
    watch = ClockWatch(reactor, clock, store, stats, config.max_clock_skew_secs,
                       on_resync=lambda: (refresher.refresh(), dispatcher.wake()))
    dispatcher = Dispatcher(
        clock, store, source, rows,
        JobBuilder(config.job_builder, config.queue_name_template, config.effective_frappe_site,
                   config.frappe_user),
        enqueuer,
        lambda f, *a, **kw: threads.deferToThreadPool(reactor, pool, f, *a, **kw),
        stats, config.misfire_grace_secs, config.scheduler_polling_interval,
        on_redis_back=lambda: refresher.refresh(), clock_ready=watch.first_sync)
    planner = Planner(clock, queue, source, store, rows, stats, on_planned=dispatcher.poke,
                      batch_size=config.refresh_batch_size, max_retry_secs=config.scheduler_polling_interval,
                      clock_ready=watch.first_sync)
    refresher = Refresher(clock, source, store, queue, planner, stats, config.full_refresh_internal_secs,
                          config.scheduler_polling_interval)
    commands = Commands(clock, queue, store, refresher, stats, config)
    commands.control = ControlFactory(
        commands.handlers(), reactor, max_request_bytes=config.socket_max_request_bytes,
        idle_timeout=config.socket_idle_timeout_secs, max_connections=config.socket_max_connections,
        allowed_uids=config.socket_allowed_uids, allowed_gids=config.socket_allowed_gids)
    for child in (watch, planner, dispatcher, refresher,
                  ControlSocketService(reactor, config.socket_path, commands.control,
                                       mode=config.socket_mode, group=config.socket_file_group_owner)):
        top.addService(child)
    log.info("btu_twisted {name} ({environment}) reading schedules from {source}, Redis {redis}",
             name=config.name, environment=config.environment_name, source=source.description,
             redis=_redact_url(config.effective_redis_url))
    return top


def _distrusted(schedule_id: str, watermark: int, now: float) -> None:
    log.warn("the watermark of {schedule_id} is {ahead:.0f} s ahead of Redis time (left by a daemon "
             "whose clock ran fast): not trusted, its fires go out on time",
             schedule_id=schedule_id, ahead=watermark - now)


def _check_database(config) -> None:
    """Without startup_without_database_connections, a database that is down is a clear exit."""
    if not config.uses_sql or config.startup_without_database_connections:
        return
    try:
        check_connection(config)
    except Exception as e:
        sys.stderr.write(f"btu: cannot connect to MariaDB {config.mysql_database!r} as "
                         f"{config.mysql_user!r}: {e}\n(set startup_without_database_connections = "
                         "true to start anyway and wait for it)\n")
        raise SystemExit(1) from None


def _redact_url(url: str) -> str:
    """The URL with its userinfo and any `password=` query value (README: unix://...) masked."""
    head, at, tail = url.rpartition("@")
    url = f"{head.split('//')[0]}//***@{tail}" if at else url
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


class DaemonService(service.MultiService):
    """The daemon: stops its children (waiting for in-flight work), then releases the pools."""

    def __init__(self, openers=(), closers=()):
        super().__init__()
        self._openers = list(openers)
        self._closers = list(closers)

    def startService(self):
        # Threads and connections start here, not in makeService: twistd may fork in between.
        for open_ in self._openers:
            open_()
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):
        if not self.running:
            return  # stopped already: the pools are closed
        yield super().stopService()
        for close in self._closers:
            try:
                yield defer.maybeDeferred(close)
            except Exception:
                log.failure("error while closing {close}", close=close)
