"""Run the daemon against the private test servers and talk to it like the BTU Frappe app does.

In process: :func:`start_daemon` writes a TOML configuration for the shared private Redis (and,
given a database, the shared private MariaDB), builds ``tap.Options`` from it exactly as twistd
does, and starts ``makeService(options)`` in trial's running reactor; the test's cleanup stops it.

As a subprocess: :class:`TwistdProcess` runs ``<venv>/bin/twistd`` with its output in a file, so a
failing test can show what the daemon said.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from twisted.internet import defer, reactor, task, threads

from btu_twisted.cli import exchange
from tests.support.servers import shared_mariadb, shared_redis
from tests.support.workers import REPO_ROOT

SCHEDULE_KEY = "btu_scheduler:task_execution_times"  # the Rust daemon's key, spelled out on purpose
BTU_APP_READ_DELAY_SECS = 0.5   # the BTU app sleeps this long between sending and reading
BTU_APP_RECV_BYTES = 2048       # and reads this much, once
CLIENT_TIMEOUT_SECS = 10.0
POLL_INTERVAL_SECS = 0.05


# --- configuration ---------------------------------------------------------------------------

def short_dir(testcase) -> str:
    """A private directory under /tmp, short enough for unix socket paths; removed at cleanup."""
    path = tempfile.mkdtemp(prefix="btu_d_", dir="/tmp")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: str, keys: dict) -> str:
    """Write `keys` as a flat TOML file at `path`; returns the path."""
    with open(path, "w", encoding="utf-8") as f:
        for key, value in keys.items():
            f.write(f"{key} = {_toml_value(value)}\n")
    return path


def daemon_config(socket_path: str, database: str | None = None, **overrides) -> dict:
    """Configuration keys for the shared private servers; None values are left out of the file."""
    keys = {
        "name": "btu test daemon",
        "environment_name": "TEST",
        "redis_url": shared_redis().url,
        "socket_path": socket_path,
        "job_builder": "python",
        "time_zone_string": "UTC",
        "full_refresh_internal_secs": 600,
        "scheduler_polling_interval": 60,
        "misfire_grace_secs": 60,
        "tracing_level": "INFO",
    }
    if database is not None:
        keys.update(mysql_unix_socket=shared_mariadb().socket_path, mysql_user="root",
                    mysql_database=database)
    keys.update(overrides)
    return {key: value for key, value in keys.items() if value is not None}


# --- the in-process daemon -------------------------------------------------------------------

class Daemon:
    """A daemon running in trial's reactor: its files, its service tree, and ways to talk to it."""

    def __init__(self, config_path: str, socket_path: str, options, top):
        self.config_path = config_path
        self.socket_path = socket_path
        self.options = options
        self.service = top

    def btu_app_request(self, payload: dict) -> defer.Deferred:
        """The BTU app's request, in a thread; fires with the reply text."""
        return threads.deferToThread(btu_app_request, self.socket_path, payload)

    def query(self, payload: dict) -> defer.Deferred:
        """A quick request that reads until the daemon closes (no 0.5 s wait); fires with the text."""
        return threads.deferToThread(control_request, self.socket_path, payload)

    @defer.inlineCallbacks
    def status(self):
        reply = yield self.query({"request_type": "status", "request_content": None})
        return json.loads(reply)

    @defer.inlineCallbacks
    def status_when(self, predicate, what: str, timeout: float = 10.0):
        """Poll `status` until `predicate(report)` holds; fires with that report."""
        found = {}

        @defer.inlineCallbacks
        def check():
            found["status"] = yield self.status()
            return predicate(found["status"])

        yield wait_for(check, timeout, what)
        return found["status"]

    def refreshed(self, timeout: float = 10.0) -> defer.Deferred:
        """Wait until the start-up full refresh has completed; fires with the status report."""
        return self.status_when(lambda report: report["last_refresh"] is not None,
                                "the daemon's first full refresh", timeout)

    def job_builder_chosen(self, timeout: float = 10.0) -> defer.Deferred:
        """Wait until `auto` has read the schema and chosen; fires with status' job_builder."""
        d = self.status_when(lambda report: (report["job_builder"] or {}).get("kind") != "auto",
                             "the job builder's choice", timeout)
        return d.addCallback(lambda report: report["job_builder"])


def start_daemon(testcase, database: str | None = None, **keys) -> Daemon:
    """Start makeService(options) for a fresh config in the running reactor; stopped at cleanup."""
    from btu_twisted import tap

    directory = short_dir(testcase)
    socket_path = os.path.join(directory, "btu.sock")
    config_path = write_config(os.path.join(directory, "btu.toml"),
                               daemon_config(socket_path, database, **keys))
    options = tap.Options()
    options.parseOptions(["--config", config_path])
    top = tap.makeService(options)
    top.startService()
    testcase.addCleanup(top.stopService)
    return Daemon(config_path, socket_path, options, top)


# --- clients ---------------------------------------------------------------------------------

def btu_app_request(socket_path: str, payload: dict) -> str:
    """Exactly what the BTU Frappe app does: send JSON without a newline, sleep 0.5 s, recv once."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(CLIENT_TIMEOUT_SECS)
    try:
        client.connect(socket_path)
        client.send(json.dumps(payload).encode("utf-8"))
        time.sleep(BTU_APP_READ_DELAY_SECS)
        return client.recv(BTU_APP_RECV_BYTES).decode("utf-8")
    finally:
        client.close()


def control_request(socket_path: str, payload: dict, timeout: float = CLIENT_TIMEOUT_SECS) -> str:
    """Send one request and read the whole reply, up to the daemon closing the connection."""
    return exchange(socket_path, payload, timeout).decode("utf-8")


def schedule_members(client) -> dict[str, float]:
    """{member: score} of `btu_scheduler:task_execution_times`, read with redis-py."""
    return {member.decode("utf-8"): score
            for member, score in client.zrange(SCHEDULE_KEY, 0, -1, withscores=True)}


def members_of(client, schedule_id: str) -> dict[str, float]:
    """The members that belong to exactly this schedule ID (split at the last '|')."""
    return {member: score for member, score in schedule_members(client).items()
            if member.rpartition("|")[0] == schedule_id}


def one_shot_cron(when: int, zone: str) -> str:
    """A 7-field cron (sec min hour dom mon dow year) that fires only at unix second `when`."""
    local = datetime.fromtimestamp(when, ZoneInfo(zone))
    return f"{local.second} {local.minute} {local.hour} {local.day} {local.month} * {local.year}"


# --- polling ---------------------------------------------------------------------------------

@defer.inlineCallbacks
def wait_for(check, timeout: float, what: str, interval: float = POLL_INTERVAL_SECS):
    """Call `check` (may return a Deferred) until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = yield defer.maybeDeferred(check)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        yield task.deferLater(reactor, interval, lambda: None)


def poll(check, timeout: float, what: str, interval: float = POLL_INTERVAL_SECS):
    """Blocking `wait_for`, for tests that drive subprocesses without the reactor."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# --- twistd subprocesses ---------------------------------------------------------------------

def twistd_executable() -> str:
    """The twistd script of the running virtualenv."""
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def twistd_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("BTU_SCHEDULER_CONFIG", None)
    env.update(extra)
    return env


class TwistdProcess:
    """One twistd run; stdout and stderr go to a file (read by `output`, shown on failures)."""

    def __init__(self, testcase, args: list[str], env: dict | None = None, cwd: str | None = None):
        self.args = [twistd_executable(), *args]
        directory = cwd or short_dir(testcase)
        self.output_path = os.path.join(directory, "twistd.out")
        with open(self.output_path, "wb") as out:
            self.process = subprocess.Popen(self.args, env=env or twistd_env(), cwd=directory,
                                            stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        testcase.addCleanup(self.kill)

    def output(self) -> str:
        with open(self.output_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe(self) -> str:
        """The command, its exit status and its output, for assertion messages."""
        return (f"{' '.join(self.args)} (exit {self.process.poll()}) said:\n"
                f"{self.output()[-6000:]}")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"twistd did not exit within {timeout} s; "
                                 f"{self.describe()}") from None

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """Cleanup: SIGKILL this run's process group if it is still there."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
