# -*- test-case-name: tests.test_sites -*-
"""The sites a bench daemon serves, followed while it runs.

Every `full_refresh_internal_secs` the bench's `sites/` directory is read again: a site that
appeared (or got BTU's tables) starts being served, one that disappeared (or was taken off
`frappe_sites`) is stopped. A site without BTU's tables, or whose files or database cannot be read,
is named once in the log and checked again each time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger

from btu_twisted import bench, logs, ownership
from btu_twisted import config as configuration
from btu_twisted.channels.listening import ListenerError
from btu_twisted.sites.layout import KeyLayout
from btu_twisted.sql_source import has_btu_tables

log = Logger(observer=logs.OBSERVER)


def site_socket_path(socket_path: str, site: str, default_site: str | None) -> str:
    """The control socket of `site`: `socket_path` formatted with `{site}` when it has one; else
    the bench's default site keeps `socket_path` itself and every other site gets it with
    `.<site>` before its suffix (`/tmp/btu_scheduler.sock` -> `/tmp/btu_scheduler.two.example.sock`),
    the path each site's BTU Configuration names."""
    if "{site}" in socket_path:
        return socket_path.replace("{site}", site)
    if site == default_site:
        return socket_path
    path = Path(socket_path)
    return str(path.with_name(f"{path.stem}.{site}{path.suffix}"))


@dataclass(frozen=True)
class Found:
    """One site as a scan found it: its configuration, or why it is not served."""

    site: str
    config: object | None = None
    problem: str | None = None
    refused: bool = False  # the site's layout is owned by another database


def scan(config, served: set[str]) -> list[Found]:
    """The bench's sites to serve, checked (blocking: files and each new site's database).

    Sites in `served` are only checked to still exist; a new one needs readable files and BTU's
    tables."""
    root = Path(config.frappe_bench_path).expanduser()
    names = bench.site_names(root)
    if config.frappe_sites:
        names = tuple(name for name in config.frappe_sites if name in names)
    found = []
    for site in names:
        if site in served:
            found.append(Found(site))
            continue
        try:
            site_config = configuration.for_site(config, site, bench.site_settings(root, site),
                                                 site_socket_path(config.socket_path, site,
                                                                  config.bench_default_site))
        except (bench.BenchError, configuration.ConfigError) as e:
            found.append(Found(site, problem=str(e)))
            continue
        try:
            tables = has_btu_tables(site_config)
        except Exception as e:
            found.append(Found(site, problem=f"database {site_config.mysql_database!r} unreachable: {e}"))
            continue
        if not tables:
            found.append(Found(site, problem=f"database {site_config.mysql_database!r} has no BTU tables "
                                             "(BTU is not installed on this site)"))
            continue
        found.append(Found(site, site_config))
    return found


def claim(found: list[Found], redis_settings) -> list[Found]:
    """Claim each new site's layout (blocking); one owned by another database is refused."""
    out = []
    for item in found:
        if item.config is not None:
            try:
                ownership.check_at_start(redis_settings, ownership.identity(item.config), item.site,
                                         KeyLayout(item.site).owner_key)
            except ownership.OwnershipError as e:
                item = Found(item.site, problem=str(e), refused=True)
        out.append(item)
    return out


class BenchSites(service.MultiService):
    """The served sites' pipelines as children, kept in step with the bench."""

    def __init__(self, reactor, config, make_pipeline, redis_settings, initial: list[Found]):
        """`make_pipeline(site_config)` builds a site's pipeline (raising ListenerError when its
        socket cannot listen); `initial` is the start-up scan, claimed, made before twistd forks."""
        super().__init__()
        self._reactor = reactor
        self._config = config
        self._make_pipeline = make_pipeline
        self._redis_settings = redis_settings
        self._told: dict[str, str] = {}  # site -> the problem last logged for it
        self._loop = None
        self.pipelines: dict[str, object] = {}
        self._scanning = False
        self._apply(initial, at_start=True)

    def startService(self):
        super().startService()
        self._loop = task.LoopingCall(self.rescan)
        self._loop.clock = self._reactor
        self._loop.start(self._config.full_refresh_internal_secs, now=False)

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return super().stopService()

    def _in_thread(self, f, *args):
        """Blocking bench and database reads, on the reactor's own pool (not the RQ writes' one)."""
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), f, *args)

    @defer.inlineCallbacks
    def rescan(self):
        """Read the bench again and start or stop sites to match (one scan at a time)."""
        if self._scanning:
            return
        self._scanning = True
        try:
            found = yield self._in_thread(scan, self._config, set(self.pipelines))
            claimed = yield self._in_thread(claim, found, self._redis_settings)
        except Exception as e:
            log.warn("reading the bench {path} failed: {error}", path=self._config.frappe_bench_path, error=e)
            return
        finally:
            self._scanning = False
        if self.running:
            self._apply(claimed)

    def _apply(self, found: list[Found], at_start: bool = False) -> None:
        """Start and stop sites to match `found`; a socket that cannot listen stops start-up
        (ListenerError, before twistd forks) and later only skips its site."""
        seen = set()
        for item in found:
            seen.add(item.site)
            if item.problem is not None:
                if self._told.get(item.site) != item.problem:
                    self._told[item.site] = item.problem
                    log.warn("site {site} is not served: {problem}; checked again every {secs} s",
                             site=item.site, problem=item.problem, secs=self._config.full_refresh_internal_secs)
                continue
            self._told.pop(item.site, None)
            if item.config is not None and item.site not in self.pipelines:
                try:
                    pipeline = self._make_pipeline(item.config)
                except ListenerError as e:
                    if at_start:
                        raise
                    self._told[item.site] = str(e)
                    log.warn("site {site} is not served: {problem}", site=item.site, problem=e)
                    continue
                self.pipelines[item.site] = pipeline
                pipeline.setServiceParent(self)
                log.info("serving site {site}: database {database}, socket {socket}", site=item.site,
                         database=item.config.mysql_database,
                         socket="off" if item.config.disable_unix_socket else item.config.socket_path)
        for site in [site for site in self.pipelines if site not in seen]:
            log.info("site {site} is gone from the bench: no longer served", site=site)
            self.pipelines.pop(site).disownServiceParent()
