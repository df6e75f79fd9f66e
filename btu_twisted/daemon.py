# -*- test-case-name: tests.test_channels -*-
"""The daemon's composition: one `make_service` wires source, store, queue, planner, refresher,
dispatcher and control channels, and checks what must be right before twistd daemonizes."""

from __future__ import annotations

import sys

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python import threadpool

from btu_twisted import environment, logs, memory, monotonic_reactor, ownership
from btu_twisted.channels.listeners import control_channels
from btu_twisted.channels.listening import ListenerError
from btu_twisted.channels.tcp import check_tcp_port
from btu_twisted.clock import ClockWatch, RedisClock
from btu_twisted.redis_connections import MasterTracker, check_reachable, settings_from
from btu_twisted.sites import bench_sites
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout
from btu_twisted.sites.pipeline import ResourcefulService, SitePipeline
from btu_twisted.sites.routing import SiteRouter
from btu_twisted.sql_source import check_connection
from btu_twisted.stats import Stats
from btu_twisted.store import ScheduleStore

RQ_THREADS = 4  # concurrent blocking RQ transactions; one is busy per distinct fire instant

log = Logger(observer=logs.OBSERVER)


def make_service(options, reactor=None) -> service.MultiService:
    """Wire the daemon: one site's pipeline (or one per site of a bench), the clock watch, the
    control channels and the HTTP listener, after the checks that must pass before twistd forks."""
    if reactor is None:
        from twisted.internet import reactor
    config = options["loaded"]
    logs.set_level(config.tracing_level)
    for warning in options.get("warnings", ()):
        # Not a field named "warning": legacy observers (trial's reporter) take that for a
        # warnings.warn() event and fail looking up its filename and lineno.
        log.warn("{config_path}: {problem}", config_path=options.get("config_path"), problem=warning)
    redis_settings = settings_from(config)
    if not monotonic_reactor.is_monotonic(reactor):
        log.warn("running on {reactor}, whose timers follow the wall clock: a backward step of the "
                 "host clock delays them by the step (without --reactor, twistd btu uses a monotonic one)",
                 reactor=type(reactor).__name__)
    memory.one_arena()  # before the first thread
    pool = threadpool.ThreadPool(minthreads=1, maxthreads=RQ_THREADS, name="btu-rq")
    clock = RedisClock(reactor)  # instants; the reactor itself measures only delays
    tracker = MasterTracker() if redis_settings.sentinels else None
    clock_ready = defer.Deferred()  # fires once `clock` tells Redis time

    def in_thread(f, *a, **kw):
        return threads.deferToThreadPool(reactor, pool, f, *a, **kw)

    def pipeline_for(site_config, layout, clock_stats=None):
        return SitePipeline(reactor, clock, site_config, redis_settings, in_thread, clock_ready, layout,
                            master_tracker=tracker, clock_stats=clock_stats)

    top = ResourcefulService(openers=[pool.start], closers=[pool.stop])
    compose = _bench_daemon if config.serves_bench else _single_site_daemon
    pipelines, watch_store, watch_stats = compose(top, reactor, clock, config, redis_settings, tracker,
                                                  pipeline_for, in_thread)
    watch = ClockWatch(reactor, clock, watch_store, watch_stats, config.max_clock_skew_secs,
                       on_resync=lambda: [p.resync() for p in pipelines().values()])
    watch.first_sync.addCallback(clock_ready.callback)
    top.addService(watch)
    if tracker is not None:
        tracker.on_moved = lambda: reactor.callLater(0, lambda: [p.follow_master() for p in pipelines().values()])
    log.info("btu_twisted {name} ({environment}) reading schedules from {source}, Redis {redis}; "
             "job builder {builder}, zone {zone} (time_zone_string; a schedule's own zone or BTU "
             "Configuration's wins), control channels {channels}, HTTP {http}; configuration {config_path}",
             name=config.name, environment=config.environment_name,
             source=_source_summary(config), redis=redis_settings.description, builder=config.job_builder,
             zone=config.time_zone_string, channels=_channel_summary(config),
             http="off" if config.http_port is None else f"{config.http_interface}:{config.http_port}",
             config_path=options.get("config_path"))
    log.info("settings: {origins}", origins=environment.describe(config.origins))
    return top


def _single_site_daemon(top, reactor, clock, config, redis_settings, tracker, pipeline_for, in_thread):
    """One pipeline in the Rust daemon's key layout, every channel and the HTTP listener for it."""
    _check_database(config)
    _check_redis(redis_settings)
    owner_checked = ownership.refuse_or_claim(config, redis_settings) if config.uses_sql else False
    pipeline = pipeline_for(config, SINGLE_SITE)
    channels = _listening(lambda: control_channels(reactor, config, pipeline.commands, redis_settings, tracker))
    if config.http_port:
        _listening(lambda: check_tcp_port(config.http_port, config.http_interface, "http_port"))
    if config.uses_sql:
        pipeline.guard_ownership(owner_checked)
    pipeline.add_workers()
    for child in (pipeline, *channels):
        top.addService(child)
    if config.http_port is not None:
        top.addService(_http_service(reactor, clock, config, pipeline.stats, pipeline.store,
                                     pipeline.enqueuer, in_thread))
    return (lambda: {None: pipeline}), pipeline.store, pipeline.stats


def _bench_daemon(top, reactor, clock, config, redis_settings, tracker, pipeline_for, _in_thread):
    """One pipeline per served site of the bench, each in its own key layout with its own socket,
    and the shared channels (Redis RPC, TCP) routing to all of them."""
    _check_redis(redis_settings)
    found = bench_sites.claim(bench_sites.scan(config, set()), redis_settings)
    named = bool(config.frappe_sites) and not config.startup_without_database_connections
    for item in found:
        if item.refused or (item.problem and named):
            sys.stderr.write(f"btu: site {item.site}: {item.problem}\n")
            raise SystemExit(1)
    daemon_stats = Stats(started_at=clock.seconds(), redis_master=tracker)

    def make_pipeline(site_config):
        pipeline = pipeline_for(site_config, KeyLayout(site_config.frappe_site), clock_stats=daemon_stats)
        channels = control_channels(reactor, site_config, pipeline.commands, redis_settings, tracker,
                                    shared=False)
        pipeline.guard_ownership(True)
        pipeline.add_workers(*channels)
        return pipeline

    sites = _listening(lambda: bench_sites.BenchSites(reactor, config, make_pipeline, redis_settings, found))
    router = SiteRouter(clock, config, lambda: dict(sites.pipelines))
    channels = _listening(lambda: control_channels(reactor, config, router, redis_settings, tracker, socket=False))
    watch_store = ScheduleStore(reactor, redis_settings, master_tracker=tracker)  # Redis TIME only
    top.own(open_=watch_store.open, close=watch_store.close)
    top.own(close=router.stop)
    for child in (sites, *channels):
        top.addService(child)
    return (lambda: dict(sites.pipelines)), watch_store, daemon_stats


def _listening(check):
    """`check()`, with a channel that cannot listen turned into one line and exit 1 (before
    twistd forks, in -n and daemon mode alike)."""
    try:
        return check()
    except ListenerError as e:
        sys.stderr.write(f"btu: {e}\n")
        raise SystemExit(1) from None


def _source_summary(config) -> str:
    if config.serves_bench:
        sites = ", ".join(config.frappe_sites) or "every site with BTU tables"
        return f"the MariaDB of each site of bench {config.frappe_bench_path} ({sites})"
    return config.schedule_source


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


def _check_redis(settings) -> None:
    """A Redis that refuses our TLS or credentials is a clear exit; one that is down is waited for."""
    problem = check_reachable(settings)
    if problem:
        sys.stderr.write(f"btu: {problem}\n")
        raise SystemExit(1)
