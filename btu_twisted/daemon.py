# -*- test-case-name: tests.test_channels -*-
"""The daemon's composition: one `make_service` wires source, store, queue, planner, refresher,
dispatcher and control channels, and checks what must be right before twistd daemonizes."""

from __future__ import annotations

import sys

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python import threadpool

from btu_twisted import environment, logs, monotonic_reactor, ownership
from btu_twisted.builders.factory import make_builder
from btu_twisted.channels.listeners import control_channels
from btu_twisted.channels.listening import ListenerError
from btu_twisted.channels.tcp import check_tcp_port
from btu_twisted.clock import ClockWatch, RedisClock
from btu_twisted.commands import Commands
from btu_twisted.dispatcher import Dispatcher
from btu_twisted.enqueuer import Enqueuer
from btu_twisted.file_source import FileSource
from btu_twisted.monitored_source import MonitoredSource
from btu_twisted.planner import Planner, RowCache
from btu_twisted.redis_connections import MasterTracker, check_reachable, settings_from
from btu_twisted.refresher import Refresher
from btu_twisted.sql_source import SQLSource, check_connection
from btu_twisted.stats import Stats
from btu_twisted.store import ScheduleStore
from btu_twisted.workqueue import UniqueQueue
from btu_twisted.zones import configured_zone

RQ_THREADS = 4  # concurrent blocking RQ transactions; one is busy per distinct fire instant

log = Logger(observer=logs.OBSERVER)


def make_service(options, reactor=None) -> service.MultiService:
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
    redis_settings = settings_from(config)
    _check_redis(redis_settings)
    owner_checked = ownership.refuse_or_claim(config, redis_settings) if config.uses_sql else False

    if not monotonic_reactor.is_monotonic(reactor):
        log.warn("running on {reactor}, whose timers follow the wall clock: a backward step of the "
                 "host clock delays them by the step (without --reactor, twistd btu uses a monotonic one)",
                 reactor=type(reactor).__name__)
    pool = threadpool.ThreadPool(minthreads=1, maxthreads=RQ_THREADS, name="btu-rq")
    clock = RedisClock(reactor)  # instants; the reactor itself measures only delays
    stats = Stats(started_at=clock.seconds(),
                  redis_master=MasterTracker() if redis_settings.sentinels else None)
    source = MonitoredSource(
        FileSource(config.schedule_file, *configured_zone(config)) if config.schedule_file else SQLSource(config),
        stats.sql, clock)
    store = ScheduleStore(reactor, redis_settings, master_tracker=stats.redis_master)
    queue = UniqueQueue()
    rows = RowCache()
    enqueuer = Enqueuer(redis_settings, now=clock.seconds, min_replicas=config.redis_min_replicas,
                        replicas_timeout_secs=config.redis_min_replicas_timeout_secs,
                        max_skew_secs=config.max_clock_skew_secs,
                        on_distrusted=lambda *report: reactor.callFromThread(_distrusted, *report))
    builder = make_builder(config.job_builder, config, clock, source, stats, reactor=reactor)
    top = DaemonService(openers=[pool.start, store.open],
                        closers=[pool.stop, source.close, store.close, enqueuer.close, builder.close])
    watch = ClockWatch(reactor, clock, store, stats, config.max_clock_skew_secs,
                       on_resync=lambda: (refresher.refresh(), dispatcher.wake()))

    def in_thread(f, *a, **kw):
        return threads.deferToThreadPool(reactor, pool, f, *a, **kw)

    dispatcher = Dispatcher(
        clock, store, source, rows, builder, enqueuer, in_thread,
        stats, config.misfire_grace_secs, config.scheduler_polling_interval,
        on_redis_back=lambda: refresher.refresh(), clock_ready=watch.first_sync)
    if stats.redis_master is not None:
        stats.redis_master.on_moved = lambda: reactor.callLater(0, _follow_master, enqueuer, dispatcher)
    planner = Planner(clock, queue, source, store, rows, stats, on_planned=dispatcher.poke,
                      batch_size=config.refresh_batch_size, max_retry_secs=config.scheduler_polling_interval,
                      clock_ready=watch.first_sync)
    refresher = Refresher(clock, source, store, queue, planner, stats, config.full_refresh_internal_secs,
                          config.scheduler_polling_interval, rows=rows, clock_ready=watch.first_sync)
    commands = Commands(clock, queue, store, refresher, stats, config, rows=rows,
                        source=config.schedule_source)
    try:
        channels = control_channels(reactor, config, commands, redis_settings, stats.redis_master)
        if config.http_port:
            check_tcp_port(config.http_port, config.http_interface, "http_port")
    except ListenerError as e:  # before twistd forks: one line and exit 1, in -n and daemon mode
        sys.stderr.write(f"btu: {e}\n")
        raise SystemExit(1) from None
    if config.uses_sql:  # first child: it claims the layout before the refresher touches it
        top.addService(ownership.OwnershipGuard(reactor, store.run_script, config, reactor.stop,
                                                owner_checked))
    if isinstance(builder, service.Service):  # `auto` reads the schema at start-up
        top.addService(builder)
    for child in (watch, planner, dispatcher, refresher, *channels):
        top.addService(child)
    if config.http_port is not None:
        top.addService(_http_service(reactor, clock, config, stats, store, enqueuer, in_thread))
    log.info("btu_twisted {name} ({environment}) reading schedules from {source}, Redis {redis}; "
             "job builder {builder}, zone {zone} (time_zone_string; a schedule's own zone or BTU "
             "Configuration's wins), control channels {channels}, HTTP {http}; configuration {config_path}",
             name=config.name, environment=config.environment_name,
             source=config.schedule_source,
             redis=redis_settings.description, builder=config.job_builder,
             zone=config.time_zone_string, channels=_channel_summary(config),
             http="off" if config.http_port is None else f"{config.http_interface}:{config.http_port}",
             config_path=options.get("config_path"))
    log.info("settings: {origins}", origins=environment.describe(config.origins))
    return top


def _channel_summary(config) -> str:
    """The control channels a configuration enables, for the start-up line."""
    channels = [] if config.disable_unix_socket else [f"socket {config.socket_path}"]
    channels += [] if config.disable_redis_rpc else ["Redis RPC"]
    channels += [f"TCP 127.0.0.1:{config.tcp_socket_port}"] if config.tcp_socket_port else []
    return ", ".join(channels) or "none"


def _http_service(reactor, clock, config, stats, store, enqueuer, in_thread):
    """The dashboard and /metrics listener (imported only when configured)."""
    from btu_twisted.web.cockpit import Cockpit
    from btu_twisted.web.metrics import DaemonCollector
    from btu_twisted.web.resources import root
    from btu_twisted.web.service import HTTPService

    cockpit = Cockpit(clock, config, stats, store, enqueuer, in_thread, DaemonCollector(stats, clock))
    return HTTPService(reactor, config.http_interface, config.http_port, root(cockpit, config.http_token))


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


def _follow_master(enqueuer, dispatcher) -> None:
    """The daemon's own connections found a new master: the RQ writes' idle connections (to the
    old one, maybe frozen) are closed so the next asks Sentinel, and dispatch resumes now rather
    than after its back-off."""
    enqueuer.drop_idle_connections()
    dispatcher.wake()


def _check_redis(settings) -> None:
    """A Redis that refuses our TLS or credentials is a clear exit; one that is down is waited for."""
    problem = check_reachable(settings)
    if problem:
        sys.stderr.write(f"btu: {problem}\n")
        raise SystemExit(1)


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
