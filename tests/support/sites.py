"""One daemon serving several sites of a bench: the bench and its site databases, the layout such a
daemon must write, and a chaos run (SIGKILLs and restarts) audited site by site.

The layout is spelled out here from the contract (README "Several sites"), not imported from
btu_twisted, so the tests notice when the daemon writes anything else: every key of site S under
`btu_scheduler:site:S:`, job ids `btu-<site escaped>-<id escaped>-<unix>`, meta `btu_site`, and
one control socket per site.

Used by tests/test_sites.py (about half a minute of chaos) and bench/sites_soak.py (minutes).
"""

from __future__ import annotations

import calendar
import json
import os
import random
import socket
import time
from dataclasses import dataclass, field
from datetime import timezone

from rq.exceptions import NoSuchJobError
from rq.job import Job

from tests.support import frappe_schema
from tests.support.bench_tree import V15_INIT, make_bench
from tests.support.chaos import (AFTER_UP_MARGIN_SECS, CRONS, DRAIN_SECS, GRACE_SECS,
                                 KILL_MARGIN_SECS, ONE_DAEMON_DOWN_SECS, ONE_DAEMON_GAP_SECS, PING,
                                 QUEUES, START_TIMEOUT_SECS, UP_POLL_SECS, WINDOW_START_MARGIN_SECS,
                                 ChaosDaemon, Enqueued, HistoryRecorder, Outage, Report, check,
                                 kill_loop, orphan_hashes, queue_pushes, start_all)
from tests.support.daemon import control_request

SITE_PREFIX = "btu_scheduler:site:"
BENCH_ID = "acme-bench"
SITE_ONE, SITE_TWO = "one.localhost", "two.localhost"
# Each site's schedules run a task of their own, so a job on the wrong site shows in its meta.
SITE_FUNCTIONS = ("btu_twisted.examples.hello", "tests.support.jobfuncs.noop")


# --- the layout --------------------------------------------------------------------------------

def site_key(site: str, name: str) -> str:
    """`btu_scheduler:site:<site>:<name>`, e.g. site_key(s, "task_execution_times")."""
    return f"{SITE_PREFIX}{site}:{name}"


def _escape(text: str, safe: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in safe) else
                   "".join(f"_{b:02X}" for b in c.encode("utf-8")) for c in text)


def site_job_id(site: str, schedule_id: str, when: int) -> str:
    """`btu-<site>-<id>-<unix>`: the site with every character outside [A-Za-z0-9] as `_XX`, the
    ID with every character outside [A-Za-z0-9-] as `_XX` (per UTF-8 byte)."""
    return f"btu-{_escape(site, '')}-{_escape(schedule_id, '-')}-{when}"


def site_socket(socket_path: str, site: str, default_site: str) -> str:
    """The control socket of `site`: `socket_path` itself for the bench's default site, else with
    `.<site>` before the suffix (or appended when there is none); `{site}` in the path is formatted."""
    if "{site}" in socket_path:
        return socket_path.format(site=site)
    if site == default_site:
        return socket_path
    root, suffix = os.path.splitext(socket_path)
    return f"{root}.{site}{suffix}"


def members(client, site: str) -> dict[str, float]:
    """{member: score} of the site's `task_execution_times`."""
    return {m.decode(): score for m, score in
            client.zrange(site_key(site, "task_execution_times"), 0, -1, withscores=True)}


def planned_ids(client, site: str) -> set[str]:
    """The schedule IDs with a member in the site's `task_execution_times`."""
    return {member.rpartition("|")[0] for member in members(client, site)}


# --- the bench ---------------------------------------------------------------------------------

def bench_queue(queue: str, frappe_init: str = V15_INIT) -> str:
    """A bench's name of queue `queue`: `<bench_id>:<queue>` from Frappe v14, bare before."""
    return f"{BENCH_ID}:{queue}" if frappe_init == V15_INIT else queue


def build_bench(path: str, mariadb, redis_url: str, databases: dict[str, str],
                current: str | None = SITE_ONE, frappe_init: str = V15_INIT) -> str:
    """A bench at `path` whose sites {name: database} live on `mariadb`, root over its socket."""
    return make_bench(path, {"redis_queue": redis_url, "bench_id": BENCH_ID},
                      {site: site_config(mariadb, database) for site, database in databases.items()},
                      current, frappe_init)


def site_config(mariadb, database: str) -> dict:
    return {"db_name": database, "db_socket": mariadb.socket_path, "db_user": "root"}


def tcp_request(port: int, payload: dict, timeout: float = 10.0) -> str:
    """One request to the daemon's loopback TCP listener; the reply read up to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(json.dumps(payload).encode("utf-8"))
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


def free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- each site's schedules ---------------------------------------------------------------------

@dataclass(frozen=True)
class SiteSchedules:
    """The schedules of one site: the same IDs on every site, crons and queues shifted by `index`."""

    site: str
    index: int
    count: int
    frappe_init: str = V15_INIT

    @property
    def task_id(self) -> str:
        return f"BTU-{self.index + 1:05d}"

    @property
    def crons(self) -> dict[str, str]:
        return {f"TS-{n:06d}": CRONS[(n + self.index) % len(CRONS)] for n in range(1, self.count + 1)}

    def queue_name(self, schedule_id: str) -> str:
        """The schedule's `queue_name` column."""
        return QUEUES[(int(schedule_id[3:]) + self.index) % len(QUEUES)]

    def queue(self, schedule_id: str) -> str:
        """The RQ queue the schedule's jobs belong on (the bench's name for it)."""
        return bench_queue(self.queue_name(schedule_id), self.frappe_init)

    def create(self, sql) -> None:
        """The task (its queue empty: the `btu` builder then takes the schedule's) and schedules."""
        frappe_schema.insert_task(sql, self.task_id, SITE_FUNCTIONS[self.index % len(SITE_FUNCTIONS)],
                                  queue_name=None, desc_short=f"task of {self.site}")
        for schedule_id, expression in self.crons.items():
            frappe_schema.insert_schedule(sql, schedule_id, self.task_id, expression,
                                          queue_name=self.queue_name(schedule_id))


# --- what was enqueued, per site ---------------------------------------------------------------

def read_sites_enqueued(client, sites: dict[str, SiteSchedules]) -> tuple[dict[str, Enqueued], list[str]]:
    """Every job id in every RQ queue list, counted per site and (schedule, fire instant) from its
    meta; (per site, anomalies): a job whose id, queue, `site` kwarg or task is not its site's."""
    found = {site: Enqueued() for site in sites}
    anomalies: list[str] = []
    pushed = queue_pushes(client)
    for (queue, job_id), times in sorted(pushed.items()):
        try:
            job = Job.fetch(job_id, connection=client)
        except NoSuchJobError:
            anomalies.append(f"{job_id} is in {queue} but has no job hash")
            continue
        meta = job.meta
        site, schedule_id = meta.get("btu_site"), meta.get("btu_task_schedule")
        if site not in sites:
            anomalies.append(f"{job_id} in {queue}: meta {meta!r} names no served site")
            continue
        try:
            when = calendar.timegm(time.strptime(meta.get("btu_scheduled_for"), "%Y-%m-%dT%H:%M:%SZ"))
        except (TypeError, ValueError):
            anomalies.append(f"{job_id}: meta {meta!r} has no usable btu_scheduled_for")
            continue
        expected, expected_id = sites[site], site_job_id(site, schedule_id, when)
        problems = [what for what, wrong in (
            (f"id is not {expected_id}", job_id != expected_id),
            (f"queue is not {expected.queue(schedule_id)}", queue != expected.queue(schedule_id)),
            (f"kwargs site is {job.kwargs.get('site')!r}", job.kwargs.get("site") != site),
            (f"task is {meta.get('btu_task')!r}", meta.get("btu_task") != expected.task_id),
        ) if wrong]
        if problems:
            anomalies.append(f"{job_id} in {queue} (site {site}): " + "; ".join(problems))
        found[site].counts[(schedule_id, when)] += times
        found[site].pushes += times
        if job.enqueued_at is not None:
            found[site].lateness[(schedule_id, when)] = (
                job.enqueued_at.replace(tzinfo=timezone.utc).timestamp() - when)
    anomalies += orphan_hashes(client, {job_id for _queue, job_id in pushed})
    return found, anomalies


# --- the daemon and a chaos run ----------------------------------------------------------------

class SitesDaemon(ChaosDaemon):
    """`twistd -n btu --config PATH --bench BENCH` serving several sites; a run is up when every
    site's socket answers ping, and `ups` records, per run, when each one first did."""

    def __init__(self, name: str, directory: str, keys: dict, bench: str, sockets: dict[str, str]):
        super().__init__(name, directory, keys, args=("--bench", bench))
        self.sockets = sockets
        self.ups: list[dict[str, float]] = []

    def wait_up(self, timeout: float = START_TIMEOUT_SECS) -> float:
        """Block until every site's socket answers ping; returns the time of the last first answer."""
        deadline = time.monotonic() + timeout
        up: dict[str, float] = {}
        while len(up) < len(self.sockets):
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode} during "
                                     f"start-up:\n{self.log_tail()}")
            for site, path in self.sockets.items():
                if site not in up and answers_ping(path):
                    up[site] = time.time()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: only {sorted(up)} of {sorted(self.sockets)} "
                                     f"answered ping within {timeout} s:\n{self.log_tail()}")
            time.sleep(UP_POLL_SECS)
        self.ups.append(up)
        return max(up.values())


def answers_ping(path: str) -> bool:
    try:
        return control_request(path, PING, timeout=0.5) == "pong"
    except OSError:
        return False


def wait_sites_planned(client, sites: dict[str, SiteSchedules], timeout: float = START_TIMEOUT_SECS) -> None:
    """Wait until each site's schedule set holds every one of its schedules."""
    deadline = time.monotonic() + timeout
    while True:
        missing = {site: len(s.crons) - len(planned_ids(client, site)) for site, s in sites.items()}
        if not any(missing.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"schedules still unplanned after {timeout} s, per site: {missing}")
        time.sleep(0.05)


@dataclass
class SitesRun:
    """A finished multi-site chaos run: a verdict per site, anomalies across sites, the daemon."""

    reports: dict[str, Report]
    anomalies: list[str]
    daemon: SitesDaemon
    seconds: float
    restarts: list[float] = field(default_factory=list)  # kill -> every site answering ping, s
    # per site, seconds: fires in the window due away from every outage (kill - 1 s to up + 1 s)
    lateness: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.anomalies and all(report.ok for report in self.reports.values())

    def details(self) -> str:
        parts = [f"{site}: {report.details()}" for site, report in self.reports.items()]
        parts += [f"anomaly: {a}" for a in self.anomalies[:15]]
        parts += [f"traceback: {tb}" for tb in self.daemon.tracebacks()[:3]]
        return "\n".join(parts + [f"daemon log: {self.daemon.log_path}"])


def run_sites_chaos(directory: str, client, redis_url: str, mariadb, databases: dict[str, str],
                    schedules: int, seconds: float, rng: random.Random, min_kills: int = 0,
                    log=lambda text: None) -> SitesRun:
    """Give each site of `databases` ({site: database holding the Frappe schema}) `schedules`
    schedules with the same IDs, run one daemon for the bench, SIGKILL and restart it for `seconds`,
    then check every site's fires: exactly once, on its own site and queue, none missing but what
    the misfire policy coalesces while the daemon is down. `client`: redis-py, Redis flushed."""
    began = time.monotonic()
    sites = {site: SiteSchedules(site, index, schedules) for index, site in enumerate(databases)}
    for site, database in databases.items():
        with mariadb.connect(database) as sql:
            sites[site].create(sql)
    default_site = next(iter(databases))
    bench = build_bench(os.path.join(directory, "frappe-bench"), mariadb, redis_url, databases, default_site)
    socket_path = os.path.join(directory, "btu.sock")
    keys = {"name": "sites chaos", "environment_name": "CHAOS", "socket_path": socket_path,
            "time_zone_string": "UTC", "misfire_grace_secs": GRACE_SECS,
            "full_refresh_internal_secs": 600, "scheduler_polling_interval": 60, "tracing_level": "INFO"}
    daemon = SitesDaemon("btu0", directory, keys, bench,
                         {site: site_socket(socket_path, site, default_site) for site in sites})
    histories = {site: HistoryRecorder(client, site_key(site, "history:")) for site in sites}
    try:
        start_all([daemon])
        wait_sites_planned(client, sites)
        window_start = time.time() + WINDOW_START_MARGIN_SECS
        window_end = window_start + seconds
        log(f"daemon up, {schedules} schedules on each of {len(sites)} sites; chaos for {seconds:.0f} s")
        outages = kill_loop([daemon], window_end, rng, ONE_DAEMON_GAP_SECS, ONE_DAEMON_DOWN_SECS,
                            min_kills, log)
        ups = daemon.ups[1:]  # the first is the start, before any kill
        last_look = max([window_end] + [max(up.values()) + AFTER_UP_MARGIN_SECS for up in ups])
        time.sleep(max(0.0, last_look + DRAIN_SECS - time.time()))
    finally:
        daemon.stop()
        coalesced = {site: recorder.stop() for site, recorder in histories.items()}
    found, anomalies = read_sites_enqueued(client, sites)
    reports = {}
    for site, expected in sites.items():
        found[site].coalesced = coalesced[site]
        site_outages = [Outage(o.daemon, o.killed_at, up[site]) for o, up in zip(outages, ups)]
        reports[site] = check(found[site], expected.crons, (window_start, window_end), site_outages,
                              single_daemon=True)
    calm = [(o.killed_at - KILL_MARGIN_SECS, max(up.values()) + AFTER_UP_MARGIN_SECS)
            for o, up in zip(outages, ups)]
    lateness = {site: sorted(late for (_sid, when), late in found[site].lateness.items()
                             if reports[site].window[0] <= when <= reports[site].window[1]
                             and not any(low <= when <= high for low, high in calm))
                for site in sites}
    return SitesRun(reports, anomalies, daemon, time.monotonic() - began,
                    [max(up.values()) - o.killed_at for o, up in zip(outages, ups)], lateness)
