"""Smoke tests for the private-server test support (tests/support)."""

import json
import os
import time

import redis
from rq import Queue
from twisted.trial import unittest

from tests.support import frappe_schema as fs
from tests.support.servers import MariaDBServer, RedisServer, fresh_database, shared_mariadb
from tests.support.workers import run_burst_worker

TRICKY_ID = "TS-'quote\" 100% \\back ünïcødé ☃ `tick`"


class RedisServerTests(unittest.TestCase):
    def setUp(self):
        self.server = RedisServer(self.mktemp())
        self.addCleanup(self.server.cleanup)

    def test_lifecycle(self):
        """A private Redis starts, answers, pauses, resumes and restarts on its unix socket."""
        server = self.server
        t0 = time.monotonic()
        server.start()
        self.assertLess(time.monotonic() - t0, 5)
        self.assertTrue(server.url.startswith("unix:///"))
        self.assertTrue(server.url.endswith("?db=0"))
        client = server.client(socket_timeout=0.3)
        self.addCleanup(client.close)
        self.assertTrue(client.ping())
        client.set("k", "v")

        server.pause()
        t0 = time.monotonic()
        self.assertRaises(redis.exceptions.TimeoutError, client.get, "k")
        self.assertLess(time.monotonic() - t0, 2)
        server.resume()
        self.assertTrue(server.client().ping())

        server.restart()
        fresh = server.client()
        self.addCleanup(fresh.close)
        self.assertTrue(fresh.ping())
        self.assertIsNone(fresh.get("k"), "ephemeral: no data across restarts")

        pid = server.pid
        server.kill()
        self.assertFalse(server.is_running())
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)
        self.assertRaises(redis.exceptions.ConnectionError, fresh.ping)

    def test_flush_and_stop_when_paused(self):
        """flush() empties this private server; stop() works on a paused server."""
        server = self.server
        server.start()
        c = server.client()
        self.addCleanup(c.close)
        c.set("a", 1)
        server.flush()
        self.assertEqual(c.dbsize(), 0)
        server.pause()
        server.stop()
        self.assertFalse(server.is_running())


class MariaDBServerTests(unittest.TestCase):
    def test_private_server_restart_keeps_data(self):
        """A private MariaDB starts, holds the schema, round-trips a tricky ID across restart/kill."""
        server = MariaDBServer(self.mktemp())
        self.addCleanup(server.cleanup)
        server.start()
        server.create_database("frappe_db")
        conn = server.connect("frappe_db")
        fs.create_schema(conn)
        fs.insert_task(conn, "BTU-'1%", "tests.support.jobfuncs.noop", arguments="{'a': 1}")
        fs.insert_schedule(conn, TRICKY_ID, "BTU-'1%", "*/5 * * * *",
                           argument_overrides="{'b': '\\\\x'}")
        fs.set_cron_time_zone(conn, "Europe/Paris")
        conn.close()

        server.restart()
        conn = server.connect("frappe_db")
        row = fs.get_schedule(conn, TRICKY_ID)
        self.assertEqual(row["name"], TRICKY_ID)
        self.assertEqual(row["task"], "BTU-'1%")
        self.assertEqual(row["argument_overrides"], "{'b': '\\\\x'}")
        self.assertEqual(row["enabled"], 1)
        fs.update_schedule(conn, TRICKY_ID, enabled=0, cron_string="0 0 * * *")
        conn.close()

        server.kill()  # crash: committed data must survive InnoDB recovery
        server.start()
        conn = server.connect("frappe_db")
        self.addCleanup(conn.close)
        row = fs.get_schedule(conn, TRICKY_ID)
        self.assertEqual((row["enabled"], row["cron_string"]), (0, "0 0 * * *"))
        with conn.cursor() as cur:
            cur.execute("SELECT `value` FROM `tabSingles` WHERE `doctype` = %s AND `field` = %s",
                        ("BTU Configuration", "cron_time_zone"))
            self.assertEqual(cur.fetchall(), (("Europe/Paris",),))
            cur.execute("SELECT @@skip_networking, @@port")
            self.assertEqual(cur.fetchone()[0], 1)
        self.assertEqual(fs.delete_schedule(conn, TRICKY_ID), 1)
        self.assertIsNone(fs.get_schedule(conn, TRICKY_ID))

    def test_shared_fresh_database(self):
        """fresh_database() on the shared MariaDB yields an isolated Frappe-schema database."""
        name = fresh_database("smoke", testcase=self)
        other = fresh_database("smoke", testcase=self)
        self.assertNotEqual(name, other)
        conn = shared_mariadb().connect(name)
        self.addCleanup(conn.close)
        fs.insert_task(conn, "BTU-1", "tests.support.jobfuncs.noop")
        with conn.cursor() as cur:
            cur.execute("SELECT `max_task_duration`, `queue_name` FROM `tabBTU Task`")
            self.assertEqual(cur.fetchall(), ((600, "default"),))
            cur.execute("SHOW TABLES")
            self.assertEqual(sorted(r[0] for r in cur.fetchall()),
                             ["tabBTU Task", "tabBTU Task Schedule", "tabSingles"])


class BurstWorkerTests(unittest.TestCase):
    def test_burst_worker_runs_job(self):
        """An rq burst worker on the private Redis runs an enqueued write_marker job."""
        server = RedisServer(self.mktemp())
        self.addCleanup(server.cleanup)
        server.start()
        marker = os.path.abspath(self.mktemp())
        conn = server.client()
        self.addCleanup(conn.close)
        job = Queue("short", connection=conn).enqueue_call(
            "tests.support.jobfuncs.write_marker", kwargs={"path": marker, "x": "ü'%", "n": 3},
            job_id="TS-1_smoke",
        )
        result = run_burst_worker(server.url, ["short"], timeout=60)
        self.assertTrue(os.path.exists(marker), result.stdout)
        with open(marker, encoding="utf-8") as f:
            self.assertEqual(json.load(f), {"x": "ü'%", "n": 3})
        job.refresh()
        self.assertEqual(job.get_status(), "finished")
