"""Slow SQL at fire time and idle connections closed by MariaDB (issue 10 item 6), against real
MariaDB servers: a table lock must not hold fires back, and `wait_timeout` must be invisible."""

from __future__ import annotations

import time

from twisted.internet import defer, reactor, task, threads

from tests.support import frappe_schema as fs
from tests.support.daemon import start_daemon, wait_for
from tests.support.servers import MariaDBServer, shared_mariadb, use_shared_redis
from tests.test_faults import PERIODS, InProcessFaultTestCase

LOCK_SECS = 5          # several fire instants of both schedules
IDLE_TIMEOUT_SECS = 1  # the private server's wait_timeout
CREATE = {"request_type": "create_task_schedule", "request_content": "TS-000001"}


class TableLockTests(InProcessFaultTestCase):
    """Another session holds a WRITE lock on the schedule table while fires fall due."""

    def setUp(self):
        super().setUp()
        use_shared_redis(self)
        self.logs = self.capture_logs()

    @defer.inlineCallbacks
    def test_fires_go_out_from_the_last_rows_read_while_sql_is_locked(self):
        """Every fire is enqueued on time during a 5 s table lock, status says SQL is slow, and the
        log says so once when it starts and once when it ends."""
        daemon = start_daemon(self, self.database)
        yield daemon.refreshed()
        yield wait_for(lambda: self.has_fires(self.redis, 2), 10, "two fires of each schedule")
        locker = shared_mariadb().connect(self.database)
        self.addCleanup(locker.close)
        yield threads.deferToThread(locker.cursor().execute, "LOCK TABLES `tabBTU Task Schedule` WRITE")
        locked_at = time.time()
        yield task.deferLater(reactor, LOCK_SECS, lambda: None)
        status = yield daemon.status()
        yield threads.deferToThread(locker.cursor().execute, "UNLOCK TABLES")
        unlocked_at = time.time()
        yield wait_for(lambda: self.has_fires(self.redis, 2, after=unlocked_at + 1), 10,
                       "fires after the lock")

        self.assertIs(status["sql"]["slow"], True, status)
        fires = self.queued_fires(self.redis)
        for schedule_id, period in PERIODS.items():
            self.assertContiguous(fires[schedule_id], period, f"fires of {schedule_id}")
            self.assertTrue(any(locked_at + 1 < f < unlocked_at for f in fires[schedule_id]))
        slow = [line for line in self.logs if "too slow to answer before the fire" in line]
        back = [line for line in self.logs if "answers in time again" in line]
        self.assertEqual((len(slow), len(back)), (1, 1), self.logs)


class IdleDisconnectTests(InProcessFaultTestCase):
    """A private MariaDB that closes connections idle for more than a second."""

    def setUp(self):
        self.mariadb = MariaDBServer()
        self.addCleanup(self.mariadb.cleanup)
        self.mariadb.start()
        conn = self.mariadb.connect()
        with conn.cursor() as cursor:
            cursor.execute(f"SET GLOBAL wait_timeout = {IDLE_TIMEOUT_SECS}")
        conn.close()
        super().setUp()
        use_shared_redis(self)
        # Nothing fires, so the pool's connections do sit idle.
        fs.update_schedule(self.sql, "TS-000001", cron_string="0 4 * * *")
        fs.delete_schedule(self.sql, "TS-000002")

    @defer.inlineCallbacks
    def test_idle_disconnects_are_invisible(self):
        """After the server closed the pool's idle connections, a create request is planned
        ("Next run"), never "Not scheduled", and SQL never shows as down."""
        daemon = start_daemon(self, self.database, mysql_unix_socket=self.mariadb.socket_path)
        yield daemon.refreshed()
        for _ in range(3):
            yield task.deferLater(reactor, IDLE_TIMEOUT_SECS * 2.5, lambda: None)
            reply = yield daemon.btu_app_request(CREATE)
            self.assertIn("Next run at", reply)
        status = yield daemon.status()
        self.assertIs(status["sql"]["up"], True, status)
