"""The TLS gate: pyOpenSSL and cryptography are loaded only when the configuration needs TLS."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

from twisted.trial import unittest

from btu_twisted import config as configuration
from btu_twisted import tls_gate
from tests.support.daemon import (TwistdProcess, control_request, short_dir, twistd_env, wait_for,
                                  write_config, daemon_config)
from tests.test_integration import PLACEHOLDER_CRON, DaemonTestCase

# Loaded by the real twistd through PYTHONPATH: on SIGUSR2 (which twistd leaves alone) it records
# what the process has imported. (Not at exit: twistd ends a SIGTERM by re-raising the signal.)
RECORDER = """\
import json, os, signal, sys

def _record(signum, frame):
    from twisted.internet import reactor
    out = os.environ["BTU_TEST_MODULES_OUT"]
    with open(out + ".part", "w") as f:
        json.dump({"modules": [name for name in ("OpenSSL", "cryptography", "cryptography.hazmat",
                                                 "twisted.internet.ssl", "txredisapi")
                               if getattr(sys.modules.get(name), "__file__", None)],
                   "reactor": type(reactor).__name__}, f)
    os.replace(out + ".part", out)

signal.signal(signal.SIGUSR2, _record)
"""


def config_of(**keys) -> configuration.Config:
    """A Config with `keys` set (unvalidated: only the keys the gate reads matter)."""
    return dataclasses.replace(configuration.Config(), **keys)


class NeedsTests(unittest.TestCase):
    """Which configurations open the gate."""

    def test_tls_only_for_rediss_or_an_https_endpoint(self):
        """rediss:// or webserver_port 443 need TLS; redis://, unix:// and port 8000 do not."""
        self.assertTrue(tls_gate.needs_tls(config_of(redis_url="rediss://h:6380/0")))
        self.assertTrue(tls_gate.needs_tls(config_of(webserver_port=443)))
        self.assertFalse(tls_gate.needs_tls(config_of(redis_url="redis://h:6379/0", webserver_port=8000)))
        self.assertFalse(tls_gate.needs_tls(config_of(redis_url="unix:///run/redis.sock")))

    def test_cryptography_also_for_mariadb_over_tcp(self):
        """MariaDB over TCP keeps cryptography (pymysql's RSA exchange); a Unix socket or a schedule file does not."""
        self.assertTrue(tls_gate.needs_cryptography(config_of(mysql_host="db", mysql_database="x")))
        self.assertFalse(tls_gate.needs_cryptography(config_of(mysql_unix_socket="/run/mysqld.sock",
                                                               mysql_database="x")))
        self.assertFalse(tls_gate.needs_cryptography(config_of(schedule_file="/etc/btu/schedules.toml")))

    def test_a_process_that_loaded_tls_keeps_it(self):
        """In a process that has imported OpenSSL (trial, btu.tac, twistd --reactor) the gate stays open."""
        self.assertIn("OpenSSL", __import__("sys").modules)
        self.assertEqual(tls_gate.close(config_of(redis_url="redis://h:6379/0")), ())
        self.assertFalse(tls_gate.closed())


class TwistdTests(DaemonTestCase):
    """The real `twistd btu`, with a recorder of its imports."""

    def test_redis_and_unix_socket_mariadb_run_without_tls(self):
        """redis:// + MariaDB on a Unix socket: the daemon plans its schedule with neither pyOpenSSL nor cryptography loaded."""
        self.add_marker_task()
        self.add_schedule("TS-000700", PLACEHOLDER_CRON)
        directory = short_dir(self)
        with open(os.path.join(directory, "sitecustomize.py"), "w") as f:
            f.write(RECORDER)
        socket_path = os.path.join(directory, "btu.sock")
        path = write_config(os.path.join(directory, "btu.toml"), daemon_config(socket_path, self.database))
        out = os.path.join(directory, "modules.json")
        env = twistd_env(BTU_TEST_MODULES_OUT=out)
        env["PYTHONPATH"] = os.pathsep.join((directory, env["PYTHONPATH"]))
        process = TwistdProcess(self, ["-n", "--pidfile=", "btu", "--config", path], env=env, cwd=directory)

        def planned():
            try:
                status = json.loads(control_request(socket_path, {"request_type": "status",
                                                                  "request_content": None}))
            except OSError:
                return None
            return status if status["planned_schedules"] == 1 else None

        d = wait_for(planned, 20, "the schedule planned")
        d.addCallback(lambda _: process.process.send_signal(signal.SIGUSR2))
        d.addCallback(lambda _: wait_for(lambda: os.path.exists(out), 10, "the modules recorded"))

        def recorded(_):
            with open(out) as f:
                self.assertEqual(json.load(f), {"modules": ["txredisapi"], "reactor": "MonotonicEPollReactor"},
                                 process.describe())
        return d.addCallback(recorded)
