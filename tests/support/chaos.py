"""Chaos harness for the exactly-once contract (DESIGN §8): real `twistd -n btu` daemons sharing one
Redis and one MariaDB, killed with SIGKILL at random moments and restarted, and a checker that
counts, per (schedule, fire instant), how many times a job was pushed onto an RQ queue.

No RQ worker runs, so every job id the daemons enqueued stays in its `rq:queue:<name>` list: a fire
enqueued twice shows there as a repeated id, even though its `rq:job:<id>` hash was just overwritten.
The fire instant of each pushed id is read back from the job's `meta` (`btu_task_schedule`,
`btu_scheduled_for`) and checked against the id.

Used by tests/test_exactly_once.py (about a minute) and bench/chaos_long.py (several minutes), and
through tests/support/sites.py by the multi-site chaos of tests/test_sites.py and bench/sites_soak.py.
"""

from __future__ import annotations

import calendar
import json
import math
import os
import pickle
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

import redis

from btu_twisted import cron
from btu_twisted.history import HISTORY_PREFIX
from btu_twisted.builders import job_id as job_id_of
from tests.support import frappe_schema
from tests.support.daemon import control_request, twistd_env, twistd_executable, write_config
from tests.support.pushes import faketime_env, set_faketime_offset

SCHEDULE_KEY = "btu_scheduler:task_execution_times"
TASK_ID = "BTU-CHAOS"
JOB_FUNCTION = "btu_twisted.examples.hello"
ZONE = "UTC"
QUEUES = ("default", "short", "long")
# 7-field crons (sec min hour dom mon dow year) firing every 1, 2 or 3 s with staggered offsets;
# in a minute, `*/2` and `1/2` take turns, and so do `*/3`, `1/3` and `2/3`.
CRONS = ("* * * * * * *", "*/2 * * * * * *", "1/2 * * * * * *",
         "*/3 * * * * * *", "1/3 * * * * * *", "2/3 * * * * * *")
GRACE_SECS = 3600          # misfire_grace_secs: every restart here is well within it
PING = {"request_type": "ping", "request_content": None}
STATUS = {"request_type": "status", "request_content": None}
PING_TIMEOUT_SECS = 0.5
UP_POLL_SECS = 0.01
START_TIMEOUT_SECS = 30
STOP_TIMEOUT_SECS = 10

# Conservative margins for attributing a missing fire to an outage (single-daemon runs).
# A fire up to KILL_MARGIN_SECS before a kill may have been in flight (rows are read and the job
# built 0.5 s ahead, the transaction runs at the instant) and be caught up after the restart.
KILL_MARGIN_SECS = 1.0
# A fire up to UP_MARGIN_SECS before the restarted daemon first answered ping may already have been
# dispatched on time by it (its dispatcher and socket start in the same reactor turn).
UP_MARGIN_SECS = 0.5
# Fires up to AFTER_UP_MARGIN_SECS after that answer are still looked at with the outage.
AFTER_UP_MARGIN_SECS = 1.0

# Kill rhythms. Two daemons: the next kill soon after the restarted one answers (often during its
# start-up refresh). One daemon: the next kill only once the last outage's attribution window has
# closed, and a pause before each restart so that outages span several every-second fires.
TWO_DAEMONS_GAP_SECS = (0.1, 1.2)
ONE_DAEMON_GAP_SECS = (KILL_MARGIN_SECS + AFTER_UP_MARGIN_SECS + 0.2, 3.2)
ONE_DAEMON_DOWN_SECS = (2.0, 3.0)  # >= 2 s: every outage spans two or more every-second fires


# --- schedules -------------------------------------------------------------------------------

def chaos_crons(count: int) -> dict[str, str]:
    """{schedule_id: cron} for `count` schedules cycling through CRONS."""
    return {f"TS-CHAOS-{n:03d}": CRONS[n % len(CRONS)] for n in range(count)}


def create_schedules(sql, crons: dict[str, str]) -> None:
    """One python task calling JOB_FUNCTION and one enabled schedule per cron, over three queues."""
    frappe_schema.insert_task(sql, TASK_ID, JOB_FUNCTION, arguments="{'greeting': 'chaos'}",
                              queue_name="default", desc_short="chaos test task")
    for n, (schedule_id, expression) in enumerate(crons.items()):
        frappe_schema.insert_schedule(sql, schedule_id, TASK_ID, expression,
                                      queue_name=QUEUES[n % len(QUEUES)],
                                      argument_overrides=f"{{'name': {schedule_id!r}}}")


def fires_between(expression: str, start: float, end: float, zone: str = ZONE) -> list[int]:
    """Unix seconds of every fire of `expression` in [start, end], computed with the daemon's cron."""
    fires = []
    after = datetime.fromtimestamp(start - 1e-3, timezone.utc)
    while True:
        after = cron.next_fire(expression, zone, after)
        when = after.timestamp()
        if when > end:
            return fires
        fires.append(int(when))


# --- daemons ---------------------------------------------------------------------------------

def daemon_keys(name: str, socket_path: str, redis_url: str, mariadb_socket: str, database: str,
                **overrides) -> dict:
    """Configuration of one chaos daemon; every daemon shares Redis and the database."""
    keys = {
        "name": name,
        "environment_name": "CHAOS",
        "redis_url": redis_url,
        "mysql_unix_socket": mariadb_socket,
        "mysql_user": "root",
        "mysql_database": database,
        "socket_path": socket_path,
        "job_builder": "python",
        "time_zone_string": ZONE,
        "full_refresh_internal_secs": 600,
        "scheduler_polling_interval": 60,
        "misfire_grace_secs": GRACE_SECS,
        "tracing_level": "INFO",
    }
    keys.update(overrides)
    return keys


class ChaosDaemon:
    """One `twistd -n btu` daemon that can be SIGKILLed and started again with the same config.

    Every run appends its output to one log file, so a failing check can show what was said.
    """

    def __init__(self, name: str, directory: str, keys: dict, clock_offset: float | None = None,
                 args: tuple[str, ...] = ()):
        """With `clock_offset`, every run's wall clock is that many seconds off (libfaketime),
        and `set_clock` moves it while the daemon runs; `args` follow `btu --config PATH`."""
        self.name = name
        self.args = tuple(args)
        self.directory = directory
        self.socket_path = keys["socket_path"]
        self.config_path = write_config(os.path.join(directory, f"{name}.toml"), keys)
        self.log_path = os.path.join(directory, f"{name}.log")
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.ready = False  # this run has finished its first full refresh (see wait_ready)
        self.clock_file = None if clock_offset is None else os.path.join(directory, f"{name}.faketime")
        self.clock_offset = clock_offset
        if self.clock_file:
            set_faketime_offset(self.clock_file, clock_offset)

    def set_clock(self, offset: float) -> None:
        """Step this daemon's wall clock to `offset` seconds from the real one."""
        set_faketime_offset(self.clock_file, offset)

    def spawn(self) -> None:
        """Start a new twistd process (does not wait for it)."""
        with open(self.log_path, "ab") as out:
            out.write(f"\n=== chaos: start #{self.starts + 1} at {time.time():.3f} ===\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [twistd_executable(), "-n", "--pidfile=", "--logfile=-", "btu",
                 "--config", self.config_path, *self.args],
                env=twistd_env(**(faketime_env(self.clock_file) if self.clock_file else {})),
                cwd=self.directory, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        self.starts += 1
        self.ready = False

    def answers_ping(self) -> bool:
        try:
            return control_request(self.socket_path, PING, timeout=PING_TIMEOUT_SECS) == "pong"
        except OSError:
            return False

    def wait_up(self, timeout: float = START_TIMEOUT_SECS) -> float:
        """Block until this run answers ping; returns the wall-clock time of the first answer."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode} during "
                                     f"start-up:\n{self.log_tail()}")
            if self.answers_ping():
                return time.time()
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not answer ping within {timeout} s:\n"
                                     f"{self.log_tail()}")
            time.sleep(UP_POLL_SECS)

    def wait_ready(self, timeout: float = START_TIMEOUT_SECS) -> float:
        """Block until this run dispatches: its `status` shows a finished full refresh. Answering
        ping comes seconds earlier on a loaded machine (under libfaketime up to 4 s): until its
        first refresh has read the rows, the dispatcher's re-read waits behind it on SQL, so fires
        falling due then are caught up late and coalesced. Returns the seconds waited."""
        if self.ready:
            return 0.0
        began = time.monotonic()
        while not self.ready:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode} during "
                                     f"start-up:\n{self.log_tail()}")
            try:
                self.ready = json.loads(control_request(self.socket_path, STATUS,
                                                        timeout=PING_TIMEOUT_SECS))["last_refresh"] is not None
            except (OSError, ValueError):
                pass
            if not self.ready:
                if time.monotonic() - began > timeout:
                    raise AssertionError(f"{self.name} finished no full refresh within {timeout} s:"
                                         f"\n{self.log_tail()}")
                time.sleep(UP_POLL_SECS)
        return time.monotonic() - began

    def kill(self) -> float:
        """SIGKILL the process group now; returns the wall-clock time of the kill."""
        killed_at = time.time()
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        return killed_at

    def stop(self) -> int | None:
        """SIGTERM and wait (SIGKILL if it lingers); returns the exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def log(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def log_count(self, text: str) -> int:
        """How many log lines contain `text`."""
        return sum(text in line for line in self.log().splitlines())

    def tracebacks(self) -> list[str]:
        """Each logged traceback with the lines around it (a healthy run logs none)."""
        lines = self.log().splitlines()
        return ["\n".join(lines[max(0, n - 3):n + 25]) for n, line in enumerate(lines)
                if "Traceback" in line]


@dataclass(frozen=True)
class Outage:
    """One SIGKILL of a daemon: when it was killed and when its next run first answered ping."""

    daemon: str
    killed_at: float
    up_at: float
    held_secs: float = 0.0  # the kill waited this long for the peers to finish starting up


def start_all(daemons: list[ChaosDaemon]) -> None:
    for daemon in daemons:
        daemon.spawn()
    for daemon in daemons:
        daemon.wait_up()


def wait_planned(client, count: int, timeout: float = START_TIMEOUT_SECS) -> None:
    """Wait until the schedule set holds one member per schedule (the first full refresh is done)."""
    deadline = time.monotonic() + timeout
    while client.zcard(SCHEDULE_KEY) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {client.zcard(SCHEDULE_KEY)} of {count} schedules planned "
                                 f"after {timeout} s")
        time.sleep(0.05)


def _kill_moment(rng: random.Random, earliest: float, latest: float) -> float:
    """A random moment in [earliest, latest]; half of them moved next to a whole second, where the
    daemons run their enqueue transactions (fires are whole seconds), or half a second before it,
    where they read rows and build jobs."""
    moment = rng.uniform(earliest, latest)
    if rng.random() < 0.5:
        offset = rng.uniform(-0.003, 0.012) if rng.random() < 0.7 else rng.uniform(-0.55, -0.45)
        snapped = math.ceil(moment) + offset
        if earliest <= snapped:
            moment = snapped
    return moment


def kill_loop(daemons: list[ChaosDaemon], until: float, rng: random.Random,
              gap_secs: tuple[float, float], down_secs: tuple[float, float] = (0.0, 0.0),
              min_kills: int = 0, log=lambda text: None) -> list[Outage]:
    """Until wall-clock `until`, SIGKILL one daemon at a time at random moments and start it again.

    Between kills every daemon is up (answering ping), and a daemon is killed only once every
    other one dispatches (`ChaosDaemon.wait_ready`), so with two daemons one always dispatches;
    the restarted daemon itself may be killed again during its start-up.
    After each restart the next kill comes `gap_secs` (uniform) later; a killed daemon stays down
    for `down_secs` (uniform) before it is started again. With `min_kills`, the gaps shrink when
    the run falls behind that many kills.
    """
    outages: list[Outage] = []
    restart_estimate = 1.0
    while True:
        now = time.time()
        low, high = gap_secs
        if min_kills > len(outages):
            per_kill = (until - now) / (min_kills - len(outages))
            high = max(low, min(high, 2 * (per_kill - restart_estimate - sum(down_secs) / 2) - low))
        moment = _kill_moment(rng, now + low, now + high)
        if moment >= until:
            return outages
        time.sleep(max(0.0, moment - time.time()))
        victim = rng.choice(daemons)
        held = sum(peer.wait_ready() for peer in daemons if peer is not victim)
        killed_at = victim.kill()
        pause = rng.uniform(*down_secs)
        if pause:
            time.sleep(pause)
        victim.spawn()
        up_at = victim.wait_up()
        restart_estimate = up_at - killed_at - pause
        outages.append(Outage(victim.name, killed_at, up_at, held))
        log(f"kill #{len(outages)}: {victim.name} at {killed_at:.3f} (held {held:.2f} s for its "
            f"peers' start-up), up again after {up_at - killed_at:.2f} s")


# --- the checker -----------------------------------------------------------------------------

@dataclass
class Enqueued:
    """What is in Redis: pushes per (schedule, fire instant), and anything inconsistent."""

    counts: Counter = field(default_factory=Counter)
    pushes: int = 0
    anomalies: list[str] = field(default_factory=list)
    lateness: dict = field(default_factory=dict)  # {(schedule, when): enqueued_at - when, seconds}
    # {(schedule, planned, at)}: catch-ups whose history entry says they coalesced the fires from
    # `planned` up to `at` (the misfire policy: a daemon that came to them late)
    coalesced: set = field(default_factory=set)


def read_coalesced(client, prefix: str = HISTORY_PREFIX) -> set:
    """{(schedule, planned, at)} of the catch-ups in the fire histories (the last 50 fires of each)."""
    found = set()
    for key in client.scan_iter(match=prefix + "*", count=1000):
        schedule_id = key.decode()[len(prefix):]
        for raw in client.lrange(key, 0, -1):
            record = json.loads(raw)
            if "coalesced_from" in record:
                found.add((schedule_id, record["coalesced_from"], record["at"]))
    return found


class HistoryRecorder:
    """Reads every schedule's fire history every POLL_SECS (it keeps only the last 50 fires, so a
    long run is read while it goes) and keeps the catch-ups that say they coalesced fires."""

    POLL_SECS = 5.0

    def __init__(self, client, prefix: str = HISTORY_PREFIX):
        """`prefix`: the history keys read (a multi-site daemon keeps one set per site)."""
        self._client = client
        self._prefix = prefix
        self.coalesced: set = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.POLL_SECS):
            try:
                self.read()
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # Redis restarting (RedisRestart): its persisted lists are read next time

    def read(self) -> set:
        self.coalesced |= read_coalesced(self._client, self._prefix)
        return self.coalesced

    def stop(self) -> set:
        """Stop polling; returns every coalescing catch-up seen, a last read included."""
        self._stop.set()
        self._thread.join()
        return self.read()


def read_enqueued(client) -> Enqueued:
    """Every job id in every RQ queue list, mapped to (schedule, fire instant) through its meta."""
    found = Enqueued()
    pushed: Counter = Counter({job: n for (_queue, job), n in queue_pushes(client).items()})
    found.pushes = sum(pushed.values())
    ids = sorted(pushed)
    pipe = client.pipeline(transaction=False)
    for job in ids:
        pipe.hmget(f"rq:job:{job}", "meta", "enqueued_at")
    for job, (raw, enqueued_at) in zip(ids, pipe.execute()):
        if raw is None:
            found.anomalies.append(f"{job} is in a queue but has no job hash")
            continue
        meta = pickle.loads(raw)
        schedule_id, scheduled_for = meta.get("btu_task_schedule"), meta.get("btu_scheduled_for")
        try:
            when = calendar.timegm(time.strptime(scheduled_for, "%Y-%m-%dT%H:%M:%SZ"))
        except (TypeError, ValueError):
            found.anomalies.append(f"{job}: meta {meta!r} has no usable btu_scheduled_for")
            continue
        if job_id_of(schedule_id, when) != job:
            found.anomalies.append(f"{job}: meta says {schedule_id} at {scheduled_for}")
        found.counts[(schedule_id, when)] += pushed[job]
        if enqueued_at:
            at = datetime.strptime(enqueued_at.decode(), "%Y-%m-%dT%H:%M:%S.%fZ")
            found.lateness[(schedule_id, when)] = at.replace(tzinfo=timezone.utc).timestamp() - when
    found.anomalies += orphan_hashes(client, set(pushed))
    return found


def queue_pushes(client) -> Counter:
    """{(queue name, job id): times pushed} over every `rq:queue:<name>` list."""
    pushed: Counter = Counter()
    for key in client.scan_iter(match="rq:queue:*", count=1000):
        if client.type(key) == b"list":
            queue = key.decode()[len("rq:queue:"):]
            pushed.update((queue, i.decode()) for i in client.lrange(key, 0, -1))
    return pushed


def orphan_hashes(client, pushed: set) -> list[str]:
    """An anomaly per `rq:job:<id>` hash whose id is in no queue list (the push was lost)."""
    hashes = {key.decode()[len("rq:job:"):] for key in client.scan_iter(match="rq:job:*", count=1000)
              if client.type(key) == b"hash"}
    return [f"job hash {job} was written but its id is in no queue" for job in sorted(hashes - pushed)]


@dataclass
class Report:
    """The verdict of one chaos run over its measurement window."""

    window: tuple[int, int]
    kills: int
    expected: int = 0
    enqueued: int = 0                    # expected fires enqueued at least once
    pushes: int = 0                      # job ids pushed in the whole run (inside and outside the window)
    duplicates: list = field(default_factory=list)   # [((schedule, when), pushes)], whole run
    losses: list = field(default_factory=list)       # [(schedule, when)] missing, not explained
    coalesced: list = field(default_factory=list)    # [(schedule, when)] missing, coalesced by policy
    catch_ups: int = 0                   # (outage, schedule) pairs whose missed fires were coalesced
    unexpected: list = field(default_factory=list)   # [(schedule, when)] enqueued, not a fire
    violations: list = field(default_factory=list)   # outage patterns the misfire policy forbids
    anomalies: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.losses or self.unexpected or self.violations
                    or self.anomalies)

    def summary(self) -> str:
        return (f"window {self.window[1] - self.window[0]} s, kills {self.kills}: fires expected "
                f"{self.expected}, enqueued {self.enqueued} (job ids pushed in the whole run: "
                f"{self.pushes}), duplicates {len(self.duplicates)}, losses {len(self.losses)}, "
                f"coalesced by the misfire policy {len(self.coalesced)} (catch-ups "
                f"{self.catch_ups}), unexpected {len(self.unexpected)}, policy violations "
                f"{len(self.violations)}, anomalies {len(self.anomalies)}")

    def details(self, limit: int = 15) -> str:
        parts = [self.summary()]
        for title, items in (("duplicates", self.duplicates), ("losses", self.losses),
                             ("unexpected", self.unexpected), ("violations", self.violations),
                             ("anomalies", self.anomalies)):
            if items:
                parts.append(f"{title} (first {min(limit, len(items))}):")
                parts += [f"  {item}" for item in items[:limit]]
        return "\n".join(parts)


def check(found: Enqueued, crons: dict[str, str], window: tuple[float, float],
          outages: list[Outage] = (), single_daemon: bool = False) -> Report:
    """Compare what was enqueued with the fires due in `window`.

    With several daemons (one always dispatching) every fire must be enqueued exactly once, or be
    coalesced by a catch-up that its history entry names (`Enqueued.coalesced`). With a single
    daemon, fires that fell due while it was down may be missing, as the misfire policy coalesces
    them: per schedule and outage, exactly the latest of them is caught up, once (see
    `_explain_outage`).
    """
    start, end = int(math.ceil(window[0])), int(window[1])
    report = Report(window=(start, end), kills=len(outages), pushes=found.pushes,
                    anomalies=list(found.anomalies))
    report.duplicates = sorted((key, n) for key, n in found.counts.items() if n > 1)
    expected = {sid: fires_between(expression, start, end) for sid, expression in crons.items()}
    report.expected = sum(map(len, expected.values()))
    due = {(sid, when) for sid, fires in expected.items() for when in fires}
    for sid, when in sorted(found.counts):
        if start <= when <= end and (sid, when) not in due:
            report.unexpected.append((sid, when))
    # A fire is missing by the misfire policy where its history says a late catch-up coalesced it
    # (a daemon that stalled a whole period, or came back after the next fire was due too).
    by_history = {(sid, when) for sid, planned, at in found.coalesced
                  for when in expected.get(sid, ()) if planned <= when < at}
    explained: set = set()
    if single_daemon:
        for sid, expression in crons.items():
            for outage in outages:
                explained |= _explain_outage(report, found.counts, sid, expression, outage, start,
                                             by_history)
    else:  # one daemon always dispatches: only a catch-up's history explains a missing fire
        explained = by_history
    for sid, fires in expected.items():
        for when in fires:
            if found.counts[(sid, when)]:
                report.enqueued += 1
            elif (sid, when) in explained:
                report.coalesced.append((sid, when))
            else:
                report.losses.append((sid, when))
    return report


def _explain_outage(report: Report, counts: Counter, sid: str, expression: str, outage: Outage,
                    start: int, by_history: set = frozenset()) -> set:
    """The missing fires of `sid` that the misfire policy explains for one single-daemon outage.

    F: the schedule's fires from KILL_MARGIN_SECS before the kill to AFTER_UP_MARGIN_SECS after the
    restarted daemon answered ping. The daemon enqueued on time some prefix of F (fires at or
    before the kill: a job is never enqueued before its instant) and some suffix (fires at least
    UP_MARGIN_SECS before it answered ping, or later); the fires in between fell due while it was
    down, and of those exactly the latest is caught up. A catch-up that came after F's end (the
    daemon resumed once the next fire was due too) is seen in `by_history`, the fires whose
    history says a catch-up coalesced them. Any other pattern is a violation.
    """
    fires = [f for f in fires_between(expression, outage.killed_at - KILL_MARGIN_SECS,
                                      outage.up_at + AFTER_UP_MARGIN_SECS) if f >= start]
    enqueued = {f for f in fires if counts[(sid, f)]}
    n = len(fires)
    for i in range(n + 1):
        if i and fires[i - 1] > outage.killed_at:
            break
        for j in range(i, n + 1):
            if j < n and fires[j] < outage.up_at - UP_MARGIN_SECS:
                continue
            allowed = set(fires[:i]) | set(fires[j:]) | ({fires[j - 1]} if j > i else set())
            if enqueued == allowed:
                if j - i >= 2:
                    report.catch_ups += 1
                return {(sid, f) for f in fires[i:j - 1]}
    missing = {(sid, f) for f in fires if not counts[(sid, f)]}
    if missing and missing <= by_history:
        report.catch_ups += 1
        return missing
    report.violations.append(
        f"{sid} ({expression}) around the kill of {outage.daemon} at {outage.killed_at:.3f} "
        f"(up at {outage.up_at:.3f}): fires {fires}, enqueued {sorted(enqueued)}")
    return set()


# --- one run, start to verdict ---------------------------------------------------------------

WINDOW_START_MARGIN_SECS = 1.0   # after every schedule is planned, before fires are counted
DRAIN_SECS = 1.5                 # daemons keep running this long after the last fire looked at


@dataclass
class Run:
    """A finished chaos run: its verdict, its outages and its daemons (for their logs)."""

    report: Report
    outages: list[Outage]
    daemons: list[ChaosDaemon]
    seconds: float
    # of the fires in the window, seconds: by Redis time with a push monitor, else rq's enqueued_at
    # (the enqueuing daemon's host clock, off by its skew)
    lateness: list[float] = field(default_factory=list)
    early: list[str] = field(default_factory=list)  # pushes before their instant by Redis time
    unmonitored: list[str] = field(default_factory=list)  # job ids pushed while MONITOR was away
    redis_outages: list["RedisOutage"] = field(default_factory=list)
    # per Redis restart, seconds from Redis answering again to the first job pushed (MONITOR)
    redis_resumed: list[float] = field(default_factory=list)

    def tracebacks(self) -> list[str]:
        return [f"{d.name}: {tb}" for d in self.daemons for tb in d.tracebacks()]

    def restart_seconds(self) -> list[float]:
        return [o.up_at - o.killed_at for o in self.outages]


def run_chaos(directory: str, client, redis_url: str, mariadb_socket: str, sql, database: str,
              daemons: int, seconds: float, schedules: int, rng: random.Random,
              gap_secs: tuple[float, float], down_secs: tuple[float, float] = (0.0, 0.0),
              min_kills: int = 0, log=lambda text: None, clock_offsets: tuple[float, ...] = (),
              clock_step: tuple[float, float, float] | None = None, pushes=None,
              redis_restart: "RedisRestart | None" = None) -> Run:
    """Create `schedules` schedules, start `daemons` daemons, kill them for `seconds`, then check.

    `client` is a redis-py client of the (flushed) Redis at `redis_url`; `sql` an autocommit
    connection to `database`, which holds the Frappe schema and nothing else. `clock_offsets`
    runs the daemons under libfaketime, each its offset off the real clock; `clock_step`
    (seconds into the window, size, held seconds) steps the first daemon's clock by `size` and
    back; `redis_restart` stops that Redis and starts it again while the daemons run; `pushes`
    (a `pushes.PushMonitor`) gives `Run.early` and `Run.unmonitored`.
    """
    began = time.monotonic()
    crons = chaos_crons(schedules)
    create_schedules(sql, crons)
    offsets = list(clock_offsets) + [None] * (daemons - len(clock_offsets))
    fleet = [ChaosDaemon(f"btu{n}", directory,
                         daemon_keys(f"chaos daemon {n}", os.path.join(directory, f"btu{n}.sock"),
                                     redis_url, mariadb_socket, database), offsets[n])
             for n in range(daemons)]
    stepper = restarter = None
    histories = HistoryRecorder(client)
    redis_outages: list[RedisOutage] = []
    try:
        start_all(fleet)
        wait_planned(client, schedules)
        window_start = time.time() + WINDOW_START_MARGIN_SECS
        window_end = window_start + seconds
        if clock_step is not None:
            stepper = _step_clock(fleet[0], window_start + clock_step[0], *clock_step[1:], log)
        if redis_restart is not None:
            restarter = _restart_redis(redis_restart, window_start, redis_outages, log)
        log(f"{daemons} daemon(s) up, {schedules} schedules planned; chaos for {seconds:.0f} s")
        outages = kill_loop(fleet, window_end, rng, gap_secs, down_secs, min_kills, log)
        last_look = max([window_end] + [o.up_at + AFTER_UP_MARGIN_SECS for o in outages])
        time.sleep(max(0.0, last_look + DRAIN_SECS - time.time()))
    finally:
        for thread in (stepper, restarter):
            if thread is not None:
                thread.join()
        for daemon in fleet:
            daemon.stop()
        coalesced = histories.stop()
    found = read_enqueued(client)
    found.coalesced = coalesced
    report = check(found, crons, (window_start, window_end), outages, single_daemon=daemons == 1)
    lateness = [late for (_sid, when), late in found.lateness.items()
                if report.window[0] <= when <= report.window[1]]
    run = Run(report, outages, fleet, time.monotonic() - began, sorted(lateness),
              redis_outages=redis_outages)
    if pushes is not None:
        run.early = pushes.early()
        run.unmonitored = pushes.unseen(job_id_of(sid, when) for sid, when in found.counts)
        run.redis_resumed = [min((at for _, at in pushes.pushes if at >= o.started_at),
                                 default=math.inf) - o.started_at for o in redis_outages]
        pushed = ((int(job.rsplit("-", 1)[1]), at) for job, at in list(pushes.pushes))
        run.lateness = sorted(at - when for when, at in pushed
                              if report.window[0] <= when <= report.window[1])
    return run


def _step_clock(daemon: ChaosDaemon, at: float, size: float, held: float, log) -> threading.Thread:
    """At wall-clock `at`, step `daemon`'s clock by `size` seconds, and back after `held` seconds."""
    def step():
        time.sleep(max(0.0, at - time.time()))
        daemon.set_clock(daemon.clock_offset + size)
        log(f"{daemon.name}: clock stepped by {size:+.0f} s")
        time.sleep(held)
        daemon.set_clock(daemon.clock_offset)
        log(f"{daemon.name}: clock right again")

    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class RedisRestart:
    """A restart of the shared Redis with persistence while the daemons run: `at` seconds into the
    window it is shut down gracefully (SIGTERM: a `persistent=True` servers.RedisServer writes its
    RDB snapshot and its append-only file on the way down, as SHUTDOWN SAVE does), stays down
    `down_secs`, and starts again on the same socket and directory, from its files."""

    server: object  # a tests.support.servers.RedisServer(persistent=True)
    at: float
    down_secs: float


@dataclass(frozen=True)
class RedisOutage:
    """One RedisRestart as it happened: wall-clock times and the keys before and after."""

    stopped_at: float
    started_at: float
    keys_before: int  # DBSIZE just before the shutdown
    keys_after: int   # DBSIZE as soon as it answers again: what the files restored


def _restart_redis(restart: RedisRestart, window_start: float, outages: list[RedisOutage],
                   log) -> threading.Thread:
    """About `restart.at` seconds into the window, restart the Redis; appends to `outages`."""
    def dbsize() -> int:
        client = restart.server.client()
        try:
            return client.dbsize()
        finally:
            client.close()

    def run():
        # Just after a whole second: while the daemons run that second's enqueue transactions.
        time.sleep(max(0.0, math.ceil(window_start + restart.at) + 0.002 - time.time()))
        before = dbsize()
        stopped_at = time.time()
        restart.server.stop()
        log(f"Redis shut down (saving) with {before} keys")
        time.sleep(max(0.0, stopped_at + restart.down_secs - time.time()))
        restart.server.start()
        started_at = time.time()
        after = dbsize()
        outages.append(RedisOutage(stopped_at, started_at, before, after))
        log(f"Redis started again after {started_at - stopped_at:.2f} s with {after} keys")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread
