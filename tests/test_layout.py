"""The per-site key layout, each site's socket path, and the routing of shared-channel requests."""

from __future__ import annotations

import json
import re

from twisted.internet import defer, task
from twisted.trial import unittest

from btu_twisted.builders import job_id
from btu_twisted.channels.text_protocol import RequestError
from btu_twisted.config import parse
from btu_twisted.sites.bench_sites import site_socket_path
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout
from btu_twisted.sites.routing import RESYNC_DELAYS, SiteRouter

RQ_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class LayoutTests(unittest.TestCase):

    def test_single_site_is_the_rust_layout(self):
        """One site served: the Rust daemon's keys and job ids, byte for byte."""
        self.assertEqual((SINGLE_SITE.schedule_key, SINGLE_SITE.planned_key, SINGLE_SITE.last_fire_prefix,
                          SINGLE_SITE.history_prefix, SINGLE_SITE.owner_key),
                         ("btu_scheduler:task_execution_times", "btu_scheduler:planned",
                          "btu_scheduler:last_fire:", "btu_scheduler:history:", "btu_scheduler:owner"))
        self.assertEqual(SINGLE_SITE.job_id("TS-000001", 1764590400), "btu-TS-000001-1764590400")
        self.assertEqual(job_id("TS-000001", 1764590400), "btu-TS-000001-1764590400")

    def test_site_keys_and_job_ids(self):
        """Several sites: every key under btu_scheduler:site:<site>:, the site in every job id."""
        layout = KeyLayout("erp.example.com")
        self.assertEqual((layout.schedule_key, layout.planned_key, layout.last_fire_prefix, layout.owner_key),
                         ("btu_scheduler:site:erp.example.com:task_execution_times",
                          "btu_scheduler:site:erp.example.com:planned",
                          "btu_scheduler:site:erp.example.com:last_fire:",
                          "btu_scheduler:site:erp.example.com:owner"))
        self.assertEqual(layout.job_id("TS-000001", 1764590400), "btu-erp_2Eexample_2Ecom-TS-000001-1764590400")

    def test_site_job_ids_are_injective_and_safe(self):
        """A '-' in a site name cannot make two (site, ID) pairs share a job id."""
        ids = {KeyLayout(site).job_id(schedule_id, 1) for site, schedule_id in
               (("a-b", "TS"), ("a", "b-TS"), ("a_2Db", "TS"), ("a.b", "TS"), ("ä", "TS"))}
        self.assertEqual(len(ids), 5)
        for one in ids:
            self.assertRegex(one, RQ_SAFE_ID)


class SocketPathTests(unittest.TestCase):

    def test_default_site_keeps_the_path(self):
        """The bench's default site keeps socket_path; the others get `.<site>` before the suffix."""
        self.assertEqual(site_socket_path("/tmp/btu_scheduler.sock", "one.localhost", "one.localhost"),
                         "/tmp/btu_scheduler.sock")
        self.assertEqual(site_socket_path("/tmp/btu_scheduler.sock", "two.localhost", "one.localhost"),
                         "/tmp/btu_scheduler.two.localhost.sock")
        self.assertEqual(site_socket_path("/run/btu", "two.localhost", None), "/run/btu.two.localhost")

    def test_site_placeholder(self):
        """`{site}` in socket_path gives every site its own path, the default one too."""
        self.assertEqual(site_socket_path("/home/frappe/bench/sites/{site}/btu.sock", "one.localhost",
                                          "one.localhost"), "/home/frappe/bench/sites/one.localhost/btu.sock")


class FakeCommands:
    def __init__(self, site, upcoming=()):
        self.site = site
        self.created = []
        self._upcoming = list(upcoming)

    def create_task_schedule(self, schedule_id):
        self.created.append(schedule_id)
        return defer.succeed(f"planned on {self.site}")

    def status(self, _content):
        return defer.succeed(json.dumps({"site": self.site}))

    def upcoming(self, count):
        return defer.succeed(json.dumps(self._upcoming[:count]))


class FakeQueue:
    def __init__(self):
        self.put_ids = []

    def put(self, schedule_id):
        self.put_ids.append(schedule_id)
        return defer.Deferred()


class FakeRefresher:
    refreshed = 0

    def refresh(self):
        self.refreshed += 1


class FakePipeline:
    def __init__(self, site, upcoming=()):
        self.commands = FakeCommands(site, upcoming)
        self.queue = FakeQueue()
        self.refresher = FakeRefresher()


class RouterTests(unittest.TestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.pipelines = {"a.localhost": FakePipeline("a.localhost", [{"schedule_id": "TS-2", "unix": 20}]),
                          "b.localhost": FakePipeline("b.localhost", [{"schedule_id": "TS-1", "unix": 10},
                                                                      {"schedule_id": "TS-3", "unix": 30}])}
        self.router = SiteRouter(self.clock, parse('schedule_file = "x.toml"\n')[0], lambda: self.pipelines)

    def test_create_and_cancel_reach_every_site_and_read_again(self):
        """BTU's requests name no site: each site re-reads its own row now and after each delay."""
        for request in ("create_task_schedule", "cancel_task_schedule"):
            reply = self.successResultOf(self.router.handlers()[request]("TS-000001"))
            self.assertIn("a.localhost: planned on a.localhost; b.localhost: planned on b.localhost", reply)
        for pipeline in self.pipelines.values():
            self.assertEqual(pipeline.commands.created, ["TS-000001", "TS-000001"])
            self.assertEqual(pipeline.queue.put_ids, [])
        self.clock.advance(RESYNC_DELAYS[0])
        self.assertEqual(self.pipelines["a.localhost"].queue.put_ids, ["TS-000001"] * 2)
        self.clock.advance(RESYNC_DELAYS[1])
        self.assertEqual(self.pipelines["b.localhost"].queue.put_ids, ["TS-000001"] * 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_cancels_the_later_reads(self):
        self.successResultOf(self.router.resync("TS-000001"))
        self.router.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_status_and_upcoming_of_all_sites(self):
        status = json.loads(self.successResultOf(self.router.status(None)))
        self.assertEqual(status["sites"], {"a.localhost": {"site": "a.localhost"},
                                           "b.localhost": {"site": "b.localhost"}})
        upcoming = json.loads(self.successResultOf(self.router.upcoming(2)))
        self.assertEqual([(e["site"], e["schedule_id"]) for e in upcoming],
                         [("b.localhost", "TS-1"), ("a.localhost", "TS-2")])

    def test_a_site_s_request_error_reaches_the_client_as_such(self):
        """One site's Redis down: `upcoming` fails with that site's RequestError, not a wrapper."""
        def down(_count):
            return defer.fail(RequestError("Redis unavailable (connection refused)"))
        self.pipelines["b.localhost"].commands.upcoming = down
        failure = self.failureResultOf(self.router.upcoming(2), RequestError)
        self.assertEqual(str(failure.value), "Redis unavailable (connection refused)")

    def test_reload_refreshes_every_site(self):
        self.router.reload(None)
        self.assertEqual([p.refresher.refreshed for p in self.pipelines.values()], [1, 1])

    def test_bad_id_is_refused(self):
        self.failureResultOf(self.router.resync(""))
