"""Foreign and malformed members of `btu_scheduler:task_execution_times` (issue 10 item 5): a real
`twistd -n btu` drops each with one warning, keeps dispatching, and stops on SIGTERM at once."""

from __future__ import annotations

import os
import time

from twisted.trial import unittest

from tests.support.daemon import TwistdProcess, poll, short_dir, write_config
from tests.support.servers import use_shared_redis
from tests.support.pushes import PushMonitor
from tests.test_clock import SCHEDULE_FILE

SCHEDULE_KEY = "btu_scheduler:task_execution_times"
START_TIMEOUT_SECS = 15
STOP_TIMEOUT_SECS = 10
CLEAN_SIGTERM_EXITS = (0, -15)


class MalformedMemberTests(unittest.TestCase):
    """Members written by hand or by the Rust daemon, due now, beside one good schedule."""

    timeout = 60

    def setUp(self):
        use_shared_redis(self)
        self.dir = short_dir(self)
        with open(os.path.join(self.dir, "schedules.toml"), "w") as f:
            f.write(SCHEDULE_FILE)
        self.config_path = write_config(os.path.join(self.dir, "btu.toml"), {
            "redis_url": self.redis_server.url, "socket_path": os.path.join(self.dir, "btu.sock"),
            "schedule_file": os.path.join(self.dir, "schedules.toml"), "job_builder": "python"})
        self.monitor = PushMonitor(self.redis_server, "clock")
        self.addCleanup(self.monitor.stop)

    def test_malformed_members_are_dropped_once_and_never_waited_on(self):
        """Non-numeric, beyond year 9999, and a text time a day ahead of its score: each dropped
        with one warning, every-second fires go on, SIGTERM stops the daemon within seconds."""
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config",
                                      self.config_path], cwd=self.dir)
        poll(lambda: len(self.monitor.fires()) >= 2, START_TIMEOUT_SECS, "the first fires")
        now = int(time.time())
        bad = {"garbage": now, "TS-000001|abc": now, "TS-000001|99999999999999": now,
               f"TS-000001|{now + 86400}": now, f"|{now}": now}
        self.redis.zadd(SCHEDULE_KEY, bad)
        poll(lambda: not any(self.redis.zscore(SCHEDULE_KEY, m) is not None for m in bad),
             5, f"the malformed members to be dropped; {daemon.describe()}")
        added_at = time.time()
        poll(lambda: max(self.monitor.fires()) > added_at + 2, 10, "fires after the drop")
        # A hang (the enqueue thread waiting for the text's time) fails terminate()'s bound.
        self.assertIn(daemon.terminate(STOP_TIMEOUT_SECS), CLEAN_SIGTERM_EXITS, daemon.describe())
        output = daemon.output()

        self.assertEqual(output.count("dropping member"), len(bad), output[-4000:])
        self.assertNotIn("Traceback", output)
        fires = sorted(self.monitor.fires())
        self.assertEqual(fires, list(range(fires[0], fires[-1] + 1)), "fires stopped or repeated")
