"""Shared helpers for the DESIGN §9 benchmarks: private servers, the daemon as a real `twistd`
subprocess, the peers (RQ's CronScheduler `rq cron`, rq-scheduler's `rqscheduler`), a queue
watcher process, and /proc readers for RSS and CPU.

Everything runs against private redis-server / mariadbd processes on unix sockets in temporary
directories (tests/support/servers.py); the system Redis and MariaDB are never touched.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime

import redis

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from btu_twisted.cli import exchange  # noqa: E402
from tests.support import frappe_schema  # noqa: E402
from tests.support.servers import MariaDBServer, RedisServer  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(VENV_BIN, "twistd")
PEERS_VENV = os.environ.get("BTU_BENCH_PEERS_VENV", "/tmp/btu_bench_peers")
PEER_REQUIREMENTS = ("rq-scheduler==0.14.*", "rq==3.0.*")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TASK_ID = "BTU-BENCH-1"
JOB_FUNCTION = "btu_twisted.examples.hello"


# --- output ----------------------------------------------------------------------------------

def banner(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)
    note(f"{os.cpu_count()} cores, load average {load_average()} (other work on the machine "
         "skews latencies)")


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def note(text: str) -> None:
    print(f"  {text}", flush=True)


def table(rows: list[tuple], headers: tuple) -> None:
    """Print a plain, aligned table."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    line = "  " + "-+-".join("-" * w for w in widths)
    for n, row in enumerate(cells):
        print("  " + " | ".join(c.ljust(w) for c, w in zip(row, widths)))
        if n == 0:
            print(line)
    sys.stdout.flush()


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.2f} ms"


# --- /proc readers ---------------------------------------------------------------------------

def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds (resolution 1/CLK_TCK)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of proc(5)


def run_seconds(pid: int) -> float:
    """Time a process's threads have run on a CPU, in seconds, from the scheduler's own
    nanosecond accounting (/proc/<pid>/task/*/schedstat, first field): an idle process uses less
    than one clock tick a minute, which `cpu_seconds` cannot tell from none."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass  # a thread that ended meanwhile
    return total / 1e9


# --- private servers -------------------------------------------------------------------------

class Servers:
    """A private Redis and (optionally) a private MariaDB with one Frappe-schema database."""

    def __init__(self, mariadb: bool = True):
        self.dir = tempfile.mkdtemp(prefix="btu_bench_", dir="/tmp")
        self.redis = RedisServer(os.path.join(self.dir, "redis"))
        self.mariadb = MariaDBServer(os.path.join(self.dir, "mariadb")) if mariadb else None
        self.database = "btu_bench"

    def __enter__(self):
        self.redis.start()
        if self.mariadb is not None:
            self.mariadb.start()
            self.mariadb.create_database(self.database)
            with self.sql() as conn:
                frappe_schema.create_schema(conn)
        return self

    def __exit__(self, *exc):
        self.redis.cleanup()
        if self.mariadb is not None:
            self.mariadb.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def redis_url(self, db: int = 0) -> str:
        return f"unix://{self.redis.socket_path}?db={db}"

    def redis_client(self, db: int = 0, timeout: float = 10.0) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.redis.socket_path, db=db, socket_timeout=timeout,
                           socket_connect_timeout=timeout)

    def sql(self):
        return _Closing(self.mariadb.connect(self.database))

    def reset_sql(self) -> None:
        """Empty the BTU tables."""
        with self.sql() as conn, conn.cursor() as cur:
            for table_name in ("`tabBTU Task Schedule`", "`tabBTU Task`", "`tabSingles`"):
                cur.execute(f"DELETE FROM {table_name}")


class _Closing:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


def insert_task(conn, task_id: str = TASK_ID, function: str = JOB_FUNCTION) -> None:
    frappe_schema.insert_task(conn, task_id, function, arguments="{'greeting': 'hi'}",
                              max_task_duration=60, queue_name="default", desc_short="bench task")


def insert_schedules(conn, rows: list[tuple[str, str, str]], batch: int = 5000,
                     task_id: str = TASK_ID) -> float:
    """Insert (schedule_id, cron_string, queue_name) rows with batched executemany; returns seconds."""
    began = time.monotonic()
    now = datetime.now()
    sql = ("INSERT INTO `tabBTU Task Schedule` (`name`, `creation`, `modified`, `modified_by`, "
           "`owner`, `docstatus`, `task`, `task_description`, `enabled`, `queue_name`, "
           "`argument_overrides`, `schedule_description`, `cron_string`, `run_frequency`) "
           "VALUES (%s, %s, %s, 'Administrator', 'Administrator', 0, %s, 'bench', 1, %s, %s, %s, "
           "%s, 'Cron Style')")
    with conn.cursor() as cur:
        for start in range(0, len(rows), batch):
            cur.executemany(sql, [(sid, now, now, task_id, queue, "{'name': 'bench'}", cron, cron)
                                  for sid, cron, queue in rows[start:start + batch]])
    return time.monotonic() - began


def schedule_ids(count: int, prefix: str = "TS") -> list[str]:
    return [f"{prefix}-{i:07d}" for i in range(1, count + 1)]


@contextlib.contextmanager
def archived_tree(revision: str):
    """A temporary directory holding `btu_twisted/` as of `revision`, to run before/after comparisons
    side by side in one run (put it first on a child's PYTHONPATH)."""
    with tempfile.TemporaryDirectory(prefix="btu_bench_tree_") as tree:
        archive = subprocess.run(["git", "-C", REPO_ROOT, "archive", revision, "btu_twisted"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        yield tree


# --- the daemon --------------------------------------------------------------------------------

def daemon_config(servers: Servers, socket_path: str, db: int = 0, **overrides) -> dict:
    keys = {
        "name": "btu bench daemon",
        "environment_name": "BENCH",
        "redis_url": servers.redis_url(db),
        "socket_path": socket_path,
        "job_builder": "python",
        "time_zone_string": "UTC",
        "full_refresh_internal_secs": 3600,
        "scheduler_polling_interval": 60,
        "misfire_grace_secs": 60,
        "tracing_level": "INFO",
    }
    if servers.mariadb is not None:
        keys.update(mysql_unix_socket=servers.mariadb.socket_path, mysql_user="root",
                    mysql_database=servers.database)
    keys.update(overrides)
    return {k: v for k, v in keys.items() if v is not None}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


class Daemon:
    """`twistd -n --pidfile= btu --config <toml>` as a subprocess; log in <dir>/twistd.log."""

    def __init__(self, servers: Servers, name: str = "ours", db: int = 0, code: str | None = None, **overrides):
        self.code = code  # a directory holding another btu_twisted/ to run (archived_tree), or the repository's
        self.dir = tempfile.mkdtemp(prefix=f"btu_bench_{name}_", dir="/tmp")
        self.socket_path = os.path.join(self.dir, "btu.sock")
        self.config_path = os.path.join(self.dir, "btu.toml")
        self.log_path = os.path.join(self.dir, "twistd.log")
        with open(self.config_path, "w") as f:
            for key, value in daemon_config(servers, self.socket_path, db, **overrides).items():
                f.write(f"{key} = {_toml_value(value)}\n")
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None

    @property
    def command(self) -> list[str]:
        return [TWISTD, "-n", "--pidfile=", f"--logfile={self.log_path}", "btu",
                "--config", self.config_path]

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self, timeout: float = 30.0) -> "Daemon":
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (self.code, REPO_ROOT, os.environ.get("PYTHONPATH")) if p), PYTHONUNBUFFERED="1")
        env.pop("BTU_SCHEDULER_CONFIG", None)
        self.started_at = time.time()
        with open(os.path.join(self.dir, "twistd.out"), "wb") as out:
            self.process = subprocess.Popen(self.command, env=env, cwd=self.dir,
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.process.returncode}):\n{self.output()}")
            try:
                if self.request({"request_type": "ping", "request_content": None}, 1.0) == "pong":
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not answer ping within {timeout} s:\n{self.output()}")
            time.sleep(0.02)

    def output(self) -> str:
        text = ""
        for name in ("twistd.out", "twistd.log"):
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    text += f.read().decode("utf-8", "replace")[-4000:]
            except OSError:
                pass
        return text

    def request(self, payload: dict, timeout: float = 10.0) -> str:
        return control_request(self.socket_path, payload, timeout)

    def status(self) -> dict:
        return json.loads(self.request({"request_type": "status", "request_content": None}))

    def wait_refreshed(self, timeout: float = 120.0, after: float | None = None) -> dict:
        """Wait for a completed full refresh (one started at or after `after`, if given)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            refresh = status.get("last_refresh")
            if refresh is not None and (after is None or refresh["at"] >= after):
                return status
            if time.monotonic() > deadline:
                raise RuntimeError(f"no full refresh within {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


def terminate(process: subprocess.Popen | None) -> None:
    """SIGTERM a contender and wait; SIGKILL its process group if it does not stop in 15 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def control_request(socket_path: str, payload: dict, timeout: float = 10.0) -> str:
    """One request on the control socket; read the reply until the daemon closes."""
    return exchange(socket_path, payload, timeout).decode("utf-8")


# --- peers -----------------------------------------------------------------------------------

def peers_available() -> tuple[bool, str]:
    """Make sure the peers' venv exists (creating it with pip if needed); (ok, reason or versions)."""
    rqscheduler = os.path.join(PEERS_VENV, "bin", "rqscheduler")
    python = os.path.join(PEERS_VENV, "bin", "python")
    if not os.path.exists(rqscheduler):
        try:
            subprocess.run(["python3", "-m", "venv", PEERS_VENV], check=True, capture_output=True,
                           timeout=120)
            subprocess.run([python, "-m", "pip", "install", "--quiet", *PEER_REQUIREMENTS],
                           check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as e:
            detail = getattr(e, "stderr", b"") or b""
            return False, f"cannot install peers into {PEERS_VENV}: {e} {detail.decode()[-500:]}"
    try:
        versions = subprocess.run(
            [python, "-c", "import importlib.metadata as m; print(' '.join(f'{p} {m.version(p)}' "
                           "for p in ('rq', 'rq-scheduler', 'redis', 'croniter', 'crontab')))"],
            check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    except subprocess.SubprocessError as e:
        return False, f"peers venv {PEERS_VENV} is broken: {e}"
    return True, versions


PEER_JOB_MODULE = '''\
def hello(**kwargs):
    """The job the peers enqueue (never run here: nothing consumes the queues)."""
    return kwargs
'''


class Peer:
    """A peer scheduler process; `dir` holds its config and the job module on its PYTHONPATH."""

    name = "peer"

    def __init__(self, servers: Servers, db: int, queue: str):
        self.servers = servers
        self.db = db
        self.queue = queue
        self.url = servers.redis_url(db)
        self.dir = tempfile.mkdtemp(prefix=f"btu_bench_{self.name.replace(' ', '_')}_", dir="/tmp")
        with open(os.path.join(self.dir, "benchjobs.py"), "w") as f:
            f.write(PEER_JOB_MODULE)
        self.log_path = os.path.join(self.dir, "peer.log")
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict:
        env = dict(os.environ, PYTHONPATH=self.dir, PYTHONUNBUFFERED="1")
        env.pop("RQ_REDIS_URL", None)
        return env

    def _spawn(self, command: list[str]) -> None:
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(command, env=self.env(), cwd=self.dir,
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        terminate(self.process)
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class RQCron(Peer):
    """RQ's CronScheduler: `rq cron --url <url> <config.py>`, one `register` per job.

    croniter's 6-field layout puts seconds LAST: `* * * * * */10` is every 10 seconds.
    """

    name = "rq cron"

    def start(self, crons: list[str], ready_timeout: float = 120.0) -> "RQCron":
        config = os.path.join(self.dir, "cron_config.py")
        with open(config, "w") as f:
            f.write("from rq import cron\nfrom benchjobs import hello\n")
            f.write(f"CRONS = {crons!r}\n")
            f.write(f"for i, expr in enumerate(CRONS):\n"
                    f"    cron.register(hello, {self.queue!r}, cron=expr, name=f'bench-{{i}}')\n")
        self._spawn([os.path.join(PEERS_VENV, "bin", "rq"), "cron", "--url", self.url, config])
        # Ready once it registered itself (register_birth happens after loading the config).
        client = self.servers.redis_client(self.db)
        deadline = time.monotonic() + ready_timeout
        while not client.zcard("rq:cron_schedulers"):
            if not self.alive():
                raise RuntimeError(f"rq cron exited:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"rq cron not ready within {ready_timeout} s:\n{self.output()}")
            time.sleep(0.05)
        client.close()
        return self


class RQScheduler(Peer):
    """rq-scheduler 0.14: jobs added with `Scheduler.cron`, then `rqscheduler -i <interval>`.

    Its cron strings are parsed by `crontab` (7 fields: sec min hour dom mon dow year).
    """

    name = "rqscheduler"

    def start(self, crons: list[str], interval: float = 1.0) -> "RQScheduler":
        loader = os.path.join(self.dir, "load_jobs.py")
        with open(loader, "w") as f:
            f.write("import sys, warnings\nwarnings.simplefilter('ignore')\n"
                    "from redis import Redis\nfrom rq_scheduler import Scheduler\n"
                    f"scheduler = Scheduler(connection=Redis.from_url({self.url!r}))\n"
                    f"CRONS = {crons!r}\n"
                    "for expr in CRONS:\n"
                    f"    scheduler.cron(expr, func='benchjobs.hello', queue_name={self.queue!r})\n")
        subprocess.run([os.path.join(PEERS_VENV, "bin", "python"), loader], env=self.env(),
                       cwd=self.dir, check=True, capture_output=True, timeout=600)
        self._spawn([os.path.join(PEERS_VENV, "bin", "rqscheduler"), "-i", str(interval),
                     "--url", self.url, "--path", self.dir])
        time.sleep(0.5)
        if not self.alive():
            raise RuntimeError(f"rqscheduler exited:\n{self.output()}")
        return self


# --- the queue watcher -----------------------------------------------------------------------

class Watcher:
    """bench/watch_queue.py in its own process: BLPOPs `rq:queue:<queue>` and records when each
    job id arrived (wall clock, the same clock the fire instants are on)."""

    def __init__(self, servers: Servers, db: int, queue: str, duration: float, expect: int = 0):
        self.out_path = tempfile.mktemp(prefix="btu_bench_watch_", suffix=".jsonl", dir="/tmp")
        self.process = subprocess.Popen(
            [sys.executable, os.path.join(BENCH_DIR, "watch_queue.py"), servers.redis.socket_path,
             str(db), queue, str(duration), str(expect), self.out_path],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"watcher did not start: {line!r}")

    def wait(self, timeout: float | None = None) -> list[tuple[float, str]]:
        """Wait for the watcher to finish; [(arrival unix time, job id)] in arrival order."""
        self.process.wait(timeout)
        arrivals = []
        with open(self.out_path) as f:
            for line in f:
                t, job_id = json.loads(line)
                arrivals.append((t, job_id))
        os.unlink(self.out_path)
        return arrivals

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def fire_of_job_id(job_id: str) -> int | None:
    """The fire instant our daemon encodes in its job ids (`btu-<schedule>-<unix seconds>`)."""
    tail = job_id.rpartition("-")[2]
    return int(tail) if job_id.startswith("btu-") and tail.isdigit() else None


def wait_until(instant: float) -> None:
    delay = instant - time.time()
    if delay > 0:
        time.sleep(delay)
