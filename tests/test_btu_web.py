"""The btu-web job builder (BTU <= 15.1.0): the pickle check, the reply parser, fetches from a
`twisted.web` stand-in of BTU's `get_pickled_task` over real TCP, and the daemon end to end
(a real rq worker runs the fetched job; bad answers never become jobs and other schedules go on)."""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
import types

from rq import Queue
from rq.job import Job
from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from btu_twisted.builders import JobSpec, Retry, job_id
from btu_twisted.builders.btu_web import BtuWebBuilder, FetchError, endpoint_url, parse_reply
from btu_twisted.builders.pickled import PickleError, check_job_pickle
from tests import fakes
from tests.support import frappe_schema as fs
from tests.support.btu_endpoint import SITE, TOKEN, PickledTaskEndpoint, listen, pickled_job
from tests.support.daemon import one_shot_cron, start_daemon, wait_for
from tests.support.servers import use_shared_servers
from tests.support.workers import run_burst_worker

MARKER_FUNCTION = "tests.support.jobfuncs.write_marker"
WHEN = 1_772_953_200


def reply(data: bytes) -> bytes:
    return json.dumps({"message": list(data)}).encode()


def btu_like_pickle() -> bytes:
    """A pickle shaped like the BTU app's: execute_job's name and a bound method of a class from a
    module this process cannot import (the check must not need it)."""
    module = types.ModuleType("btu_not_installed_here")

    class TaskRunner:
        def function_wrapper(self):
            return None

    TaskRunner.__module__, TaskRunner.__qualname__ = module.__name__, "TaskRunner"
    module.TaskRunner = TaskRunner
    sys.modules[module.__name__] = module
    try:
        runner = TaskRunner()
        runner.btu_task = {"name": "BTU-00001", "arguments": {"a": 1}}
        return pickle.dumps(("btu.btu_api.execute_job", None, (),
                             {"site": SITE, "method": runner.function_wrapper, "event": None,
                              "job_name": "A task", "is_async": True, "kwargs": None}),
                            protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        del sys.modules[module.__name__]


class _Tripwire:
    """Unpickling this for real would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


class PickleCheckTests(unittest.SynchronousTestCase):
    """check_job_pickle checks the structure of RQ job data without running anything."""

    def test_btu_pickle_accepted_without_importing_it(self):
        """The BTU app's shape is accepted although its classes are not importable here."""
        self.assertEqual(check_job_pickle(btu_like_pickle()), "btu.btu_api.execute_job")

    def test_nothing_is_executed(self):
        """A pickle that would call open() when really unpickled creates nothing."""
        path = os.path.abspath(self.mktemp())
        check_job_pickle(pickle.dumps(("m.f", None, (), {"x": _Tripwire(path)})))
        self.assertFalse(os.path.exists(path))

    def test_rejections_name_the_problem(self):
        """Garbage, other shapes, bad func_name, args or kwargs are refused with a reason."""
        cases = {b"\x80\x05garbage": "not a valid pickle", pickle.dumps(["a"]): "expected a 4-tuple",
                 pickle.dumps(("a", None, ())): "expected a 4-tuple",
                 pickle.dumps((1, None, (), {})): "func_name", pickle.dumps(("a b", None, (), {})): "func_name",
                 pickle.dumps(("m.f", None, "x", {})): "args", pickle.dumps(("m.f", None, (), [])): "kwargs",
                 pickle.dumps(("m.f", None, (), {1: 2})): "kwargs", b"": "not a valid pickle"}
        for data, expected in cases.items():
            self.assertIn(expected, str(self.assertRaises(PickleError, check_job_pickle, data)), data)


class ReplyTests(unittest.SynchronousTestCase):
    """parse_reply turns the endpoint's answer into job data, or a FetchError saying what was wrong."""

    def test_good_reply(self):
        """{"message": [<bytes as ints>]} holding a job pickle gives those bytes."""
        data = pickled_job(MARKER_FUNCTION, {"a": 1})
        self.assertEqual(parse_reply(200, reply(data)), (data, MARKER_FUNCTION))

    def test_bad_replies(self):
        """403 (with what to check), other codes, not JSON, wrong shapes and bad pickles are refused."""
        cases = [(403, b"{}", "webserver_token"), (500, b"{}", "HTTP 500"), (200, b"<html>", "not JSON"),
                 (200, b'["x"]', '{"message"'), (200, b'{"message": "abc"}', '{"message"'),
                 (200, b'{"message": [1, 256]}', '{"message"'), (200, b'{"message": [true]}', '{"message"'),
                 (200, reply(b"junk"), "not a pickled RQ job")]
        for code, body, expected in cases:
            self.assertIn(expected, str(self.assertRaises(FetchError, parse_reply, code, body)), body)

    def test_url_like_the_rust_daemon(self):
        """Port 443 means https without a port; any other port is http with it."""
        self.assertEqual(endpoint_url("10.0.0.5", 443),
                         "https://10.0.0.5/api/method/btu.btu_api.endpoints.get_pickled_task")
        self.assertEqual(endpoint_url("127.0.0.1", 8000),
                         "http://127.0.0.1:8000/api/method/btu.btu_api.endpoints.get_pickled_task")


class FetchTests(unittest.TestCase):
    """BtuWebBuilder against the stand-in endpoint over TCP on loopback."""

    timeout = 20

    @defer.inlineCallbacks
    def setUp(self):
        self.endpoint = PickledTaskEndpoint()
        self.endpoint.jobs["BTU-00001"] = (MARKER_FUNCTION, {"path": "/tmp/x"})
        self.port = yield listen(self, self.endpoint)
        self.builder = self.make_builder(self.port)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def make_builder(self, port, token=TOKEN):
        builder = BtuWebBuilder(reactor, endpoint_url("127.0.0.1", port), token, SITE,
                                "bench:{queue_name}", fetch_timeout=0.5)
        self.addCleanup(builder.close)
        return builder

    def logged(self) -> str:
        return "\n".join(formatEvent(event) for event in self.events)

    @defer.inlineCallbacks
    def test_fetches_job_data_under_our_id_and_meta(self):
        """The job's data is the served pickle; id, queue, meta and description are ours."""
        row = fakes.schedule("TS-000001", description="Nightly", queue_name="long")
        [spec] = yield self.builder.build_batch([(row, WHEN)])
        self.assertIsInstance(spec, JobSpec)
        self.assertEqual(spec.data, pickled_job(MARKER_FUNCTION, {"path": "/tmp/x",
                                                                  "task_schedule_id": "TS-000001"}))
        self.assertEqual((spec.job_id, spec.queue, spec.func, spec.description),
                         (job_id("TS-000001", WHEN), "bench:long", MARKER_FUNCTION, "Nightly"))
        self.assertEqual(spec.meta["btu_task_schedule"], "TS-000001")

    @defer.inlineCallbacks
    def test_request_is_the_rust_daemons(self):
        """GET with Authorization, the Host header and the JSON body {task_id, task_schedule_id}."""
        yield self.builder.build_batch([(fakes.schedule("TS-000001"), WHEN)])
        [request] = self.endpoint.requests
        self.assertEqual((request["method"], request["authorization"], request["host"]), ("GET", TOKEN, SITE))
        self.assertEqual(json.loads(request["body"]), {"task_id": "BTU-00001", "task_schedule_id": "TS-000001"})

    @defer.inlineCallbacks
    def assertRetried(self, builder, expected: str, task_id="BTU-00001"):
        before = reactor.seconds()
        [outcome] = yield builder.build_batch([(fakes.schedule("TS-000001", task_id=task_id), WHEN)])
        self.assertIsInstance(outcome, Retry)
        self.assertIn(expected, outcome.reason)
        self.assertGreater(outcome.at, before)
        self.assertIn("cannot fetch the job of TS-000001", self.logged())
        self.assertIn(expected, self.logged())

    def test_wrong_token(self):
        """A token the site refuses: 403, retried, the log says to check webserver_token."""
        return self.assertRetried(self.make_builder(self.port, token="token wrong:wrong"), "webserver_token")

    def test_each_bad_answer_is_retried(self):
        """403, 500, not JSON, wrong shape, a bad pickle, a pickle of something else: Retry, logged."""
        expected = {"forbidden": "403", "error": "HTTP 500", "not-json": "not JSON", "wrong-shape": '{"message"',
                    "bad-pickle": "not a valid pickle", "not-a-job": "expected a 4-tuple"}
        d = defer.succeed(None)
        for n, (mode, text) in enumerate(expected.items()):
            task_id = f"BTU-1000{n}"
            self.endpoint.misbehave[task_id] = mode
            d.addCallback(lambda _, text=text, task_id=task_id: self.assertRetried(self.builder, text, task_id))
        return d

    def test_slow_answer_times_out(self):
        """An endpoint that does not answer within the fetch timeout: Retry, logged."""
        self.endpoint.misbehave["BTU-00001"] = "slow"
        return self.assertRetried(self.builder, "no complete answer within 0.5 s")

    @defer.inlineCallbacks
    def test_web_server_down(self):
        """Nothing listening on the port: Retry with the connection error, logged."""
        listener = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory())
        free = listener.getHost().port
        yield listener.stopListening()
        yield self.assertRetried(self.make_builder(free), "ConnectionRefusedError")

    @defer.inlineCallbacks
    def test_one_bad_task_does_not_stop_the_others(self):
        """In one batch, a task whose answer is bad is retried while the others get their jobs."""
        self.endpoint.jobs["BTU-00002"] = (MARKER_FUNCTION, {})
        self.endpoint.misbehave["BTU-00003"] = "bad-pickle"
        rows = [fakes.schedule(f"TS-00000{n}", task_id=f"BTU-0000{n}") for n in (1, 2, 3)]
        outcomes = yield self.builder.build_batch([(row, WHEN) for row in rows])
        self.assertEqual([type(o) for o in outcomes], [JobSpec, JobSpec, Retry])

    @defer.inlineCallbacks
    def test_retry_backs_off_per_fire(self):
        """Each failed attempt for the same fire waits twice as long as the one before."""
        self.endpoint.misbehave["BTU-00001"] = "error"
        row = fakes.schedule("TS-000001")
        delays = []
        for _ in range(3):
            now = reactor.seconds()
            [outcome] = yield self.builder.build_batch([(row, WHEN)])
            delays.append(round(outcome.at - now))
        self.assertEqual(delays, [1, 2, 4])


class DaemonTests(unittest.TestCase):
    """The daemon, auto-choosing btu-web for a BTU <= 15.1.0 database with webserver_* set."""

    timeout = 45

    @defer.inlineCallbacks
    def setUp(self):
        use_shared_servers(self)
        self.endpoint = PickledTaskEndpoint()
        self.port = yield listen(self, self.endpoint)

    @defer.inlineCallbacks
    def test_fetched_job_runs_and_a_refused_one_never_becomes_a_job(self):
        """A fire whose pickle is served is enqueued and a real rq worker runs it; a fire the site
        refuses (403) is logged, retried within the grace, then skipped, and never enqueued."""
        marker = os.path.abspath(self.mktemp())
        self.endpoint.jobs["BTU-00001"] = (MARKER_FUNCTION, {"path": marker})
        self.endpoint.misbehave["BTU-00002"] = "forbidden"
        for task in ("BTU-00001", "BTU-00002"):
            fs.insert_task(self.sql, task, "unused.by.btu_web")
        due = int(time.time()) + 3
        for n in (1, 2):
            fs.insert_schedule(self.sql, f"TS-00000{n}", f"BTU-0000{n}", one_shot_cron(due, "UTC"))
        daemon = start_daemon(self, self.database, job_builder="auto", webserver_ip="127.0.0.1",
                              webserver_port=self.port, webserver_token=TOKEN,
                              webserver_host_header=SITE, misfire_grace_secs=2)
        chosen = yield daemon.job_builder_chosen()
        self.assertEqual(chosen["kind"], "btu-web", chosen)
        self.assertIn("BTU <= 15.1.0", chosen["reason"])

        good, refused = job_id("TS-000001", due), job_id("TS-000002", due)
        yield wait_for(lambda: good in Queue("default", connection=self.redis).job_ids, 15, f"job {good}")

        @defer.inlineCallbacks
        def skipped():
            found = yield daemon.status()
            return found["counts"].get("skipped_misfires", 0) >= 1
        yield wait_for(skipped, 15, "the refused fire to be skipped once beyond the grace")
        attempts = [r for r in self.endpoint.requests if '"BTU-00002"' in r["body"]]
        self.assertGreaterEqual(len(attempts), 2)  # retried within the grace
        self.assertFalse(Job.exists(refused, connection=self.redis))

        yield threads.deferToThread(run_burst_worker, self.redis_server.url, ["default"], timeout=30)
        with open(marker, encoding="utf-8") as f:
            self.assertEqual(json.load(f), {"task_schedule_id": "TS-000001"})
        job = Job.fetch(good, connection=self.redis)
        self.assertEqual((job.get_status(), job.meta["btu_task_schedule"]), ("finished", "TS-000001"))
