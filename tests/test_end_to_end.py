"""The daemon as operators run it: `twistd -n btu` and `twistd -ny btu.tac` subprocesses against
private MariaDB and Redis, spoken to over the control socket and stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import time

from rq import Queue
from twisted.trial import unittest

from tests.support import frappe_schema as fs
from tests.support.daemon import (TwistdProcess, btu_app_request, control_request, daemon_config,
                                  one_shot_cron, poll, short_dir, twistd_env, write_config)
from tests.support.servers import use_shared_servers
from tests.support.workers import REPO_ROOT

PING = {"request_type": "ping", "request_content": None}
START_TIMEOUT_SECS = 15
DUE_IN_SECS = 2  # counted once the daemon answers, so twistd's start-up time does not matter
# twistd stops the reactor on SIGTERM, runs every stopService, then re-raises the signal on itself
# (twisted.scripts.twistd -> app._exitWithSignal, Twisted >= 20.3) so that supervisors see how it
# ended; systemd counts SIGTERM as a clean exit. Older twistd exits 0.
CLEAN_SIGTERM_EXITS = (0, -signal.SIGTERM)


class TwistdTests(unittest.TestCase):
    """One twistd subprocess per test, with its own config and socket in a short private dir."""

    def setUp(self):
        use_shared_servers(self)
        self.dir = short_dir(self)
        self.socket_path = os.path.join(self.dir, "btu.sock")
        self.config_path = write_config(os.path.join(self.dir, "btu.toml"),
                                        daemon_config(self.socket_path, self.database))

    def answers_ping(self, daemon: TwistdProcess) -> None:
        """Wait for the socket, then ping it as the BTU app would."""
        def listening():
            if daemon.process.poll() is not None:
                self.fail(f"twistd exited early; {daemon.describe()}")
            try:
                return control_request(self.socket_path, PING, timeout=1)
            except OSError:
                return None

        poll(listening, START_TIMEOUT_SECS, "the control socket to answer")
        self.assertEqual(btu_app_request(self.socket_path, PING), "pong", daemon.describe())

    def stops_cleanly(self, daemon: TwistdProcess) -> None:
        """SIGTERM: services stopped without errors, socket removed, a clean exit status."""
        self.assertIn(daemon.terminate(), CLEAN_SIGTERM_EXITS, daemon.describe())
        output = daemon.output()
        self.assertIn("Server Shut Down.", output)
        self.assertNotIn("Traceback", output)
        self.assertFalse(os.path.exists(self.socket_path), daemon.describe())

    def test_twistd_plugin_pings_enqueues_and_stops_on_sigterm(self):
        """`twistd -n btu --config` answers ping, enqueues a job due after create_task_schedule, and stops cleanly on SIGTERM, removing its socket."""
        fs.insert_task(self.sql, "BTU-00001", "tests.support.jobfuncs.noop")
        fs.insert_schedule(self.sql, "TS-000001", "BTU-00001", "0 4 * * *")
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config",
                                      self.config_path], cwd=self.dir)

        self.answers_ping(daemon)
        due = int(time.time()) + DUE_IN_SECS
        fs.update_schedule(self.sql, "TS-000001", cron_string=one_shot_cron(due, "UTC"))
        reply = btu_app_request(self.socket_path, {"request_type": "create_task_schedule",
                                                   "request_content": "TS-000001"})
        self.assertIn("TS-000001", reply, daemon.describe())
        job_id = f"btu-TS-000001-{due}"
        poll(lambda: job_id in Queue("default", connection=self.redis).job_ids, DUE_IN_SECS + 8,
             f"{job_id} in the RQ queue; {daemon.describe()}")

        self.stops_cleanly(daemon)

    def test_tac_file_starts_from_environment_config(self):
        """`twistd -ny btu.tac` with BTU_SCHEDULER_CONFIG starts the same daemon and answers ping."""
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "-y",
                                      os.path.join(REPO_ROOT, "btu.tac")],
                               env=twistd_env(BTU_SCHEDULER_CONFIG=self.config_path), cwd=self.dir)

        self.answers_ping(daemon)
        self.stops_cleanly(daemon)


class MissingConfigTests(unittest.TestCase):
    """Start-up failures are a clear message and exit status 1."""

    def test_missing_config_file_exits_1_naming_the_file(self):
        """`twistd -n btu --config /nonexistent/...` exits 1 with a message naming the file."""
        missing = "/nonexistent/btu_scheduler.toml"
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "btu", "--config", missing])

        self.assertEqual(daemon.wait(START_TIMEOUT_SECS), 1, daemon.describe())
        self.assertIn(missing, daemon.output())
