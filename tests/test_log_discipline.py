"""Log discipline (issue 10 item 12): a real `twistd -n btu` during a real MariaDB outage logs the
outage once when it starts and once when it ends, no tracebacks, and backs off its retries."""

from __future__ import annotations

import os
import re
import time

from twisted.trial import unittest

from tests.support.daemon import (TwistdProcess, control_request, daemon_config, poll, short_dir,
                                  write_config)
from tests.support.servers import MariaDBServer, fresh_database, use_shared_redis
from tests.test_faults import add_firing_schedules

OUTAGE_SECS = 10
POLL_SECS = 4  # scheduler_polling_interval: the longest back-off, kept short for the test
START_TIMEOUT_SECS = 15
CREATE = {"request_type": "create_task_schedule", "request_content": "TS-000001"}
RELOAD = {"request_type": "reload", "request_content": None}
NOT_INFO = re.compile(r"#(warn|error|critical)\]|Traceback")


class MariaDBOutageLogTests(unittest.TestCase):
    """A private MariaDB stopped for 10 s under a running daemon that is asked to plan meanwhile."""

    timeout = 90

    def setUp(self):
        use_shared_redis(self)
        self.mariadb = MariaDBServer()
        self.addCleanup(self.mariadb.cleanup)
        self.mariadb.start()
        database = fresh_database(testcase=self, server=self.mariadb)
        sql = self.mariadb.connect(database)
        add_firing_schedules(sql)
        sql.close()
        self.dir = short_dir(self)
        self.socket_path = os.path.join(self.dir, "btu.sock")
        self.config_path = write_config(os.path.join(self.dir, "btu.toml"), daemon_config(
            self.socket_path, database, mysql_unix_socket=self.mariadb.socket_path,
            redis_url=self.redis_server.url, scheduler_polling_interval=POLL_SECS))

    def test_an_outage_is_two_lines(self):
        """10 s without MariaDB, with a create and a reload asked meanwhile: one line when it starts
        (and one saying fires go on from the last rows), one when it ends with its duration."""
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config",
                                      self.config_path], cwd=self.dir)
        poll(lambda: self.redis.llen("rq:queue:default") >= 4, START_TIMEOUT_SECS,
             "the first fires")
        self.mariadb.stop()
        stopped_at = time.time()
        control_request(self.socket_path, CREATE)
        control_request(self.socket_path, RELOAD)
        time.sleep(max(0.0, stopped_at + OUTAGE_SECS - time.time()))
        self.mariadb.start()
        poll(lambda: "MariaDB reachable again" in daemon.output(), POLL_SECS * 3,
             f"the end of the outage; {daemon.describe()}")
        daemon.terminate()
        output = daemon.output()

        noisy = [line for line in output.splitlines() if NOT_INFO.search(line)]
        self.assertEqual(len(noisy), 2, "\n".join(noisy))
        self.assertTrue(any("MariaDB unreachable" in line for line in noisy), noisy)
        self.assertTrue(any("dispatching from the last rows read" in line for line in noisy), noisy)
        ended = re.findall(r"MariaDB reachable again after ([0-9.]+) s", output)
        self.assertEqual(len(ended), 1, output[-3000:])
        self.assertGreaterEqual(float(ended[0]), OUTAGE_SECS - 2)


class RedisErrorTextTests(unittest.TestCase):
    """Redis failures read as what happened where, not as `(5, 'Deferred')`."""

    def test_errors_name_the_server_and_the_problem(self):
        """Timeouts, refusals and authentication failures, for TCP and unix URLs, no password."""
        from twisted.internet import defer

        from btu_twisted.redis_connections import settings_for_url
        from btu_twisted.store import describe_error

        url = settings_for_url("redis://user:secret@127.0.0.1:6379/0")
        self.assertEqual(describe_error(url, defer.TimeoutError(5, "Deferred")),
                         "Redis 127.0.0.1:6379: no reply within 5 s")
        self.assertEqual(describe_error(url, ConnectionRefusedError(111, "Connection refused")),
                         "Redis 127.0.0.1:6379: connection refused")
        self.assertEqual(describe_error(url, Exception("WRONGPASS invalid username-password pair")),
                         "Redis 127.0.0.1:6379: authentication failed")
        self.assertEqual(describe_error(settings_for_url("unix:///run/redis.sock?db=0"), defer.CancelledError()),
                         "Redis /run/redis.sock: no reply within 5 s")
