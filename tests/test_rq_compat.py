"""The jobs we enqueue run on the RQ workers Frappe uses, and our enqueuer runs on their rq library.

Workers: rq 1.15.1 and 1.16.2 (Frappe v15), 2.6.1 (Frappe develop, the virtualenv's own by
constraints.txt) and 3.0.0, each in its own process with that version (and its redis-py) first on the path
(:mod:`tests.support.rq_versions`), against the private test Redis.  Each test enqueues, in one
batch, a job whose schedule ID holds quotes, ``|``, ``:``, ``||``, spaces and non-ASCII text (so
the escaped job id is what the worker sees) and a plain one, then runs a burst worker and checks
the marker files, the job hashes and the queue.

Library: the same batch dispatched by :class:`btu_twisted.enqueuer.Enqueuer` imported in a process
whose ``rq`` and ``redis`` are the old versions, then run by a worker of that version (and once by
the newest worker).

The old versions are installed with pip on first use (cached under /tmp); the tests skip only when
pip cannot reach the package index.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from rq.job import Job
from twisted.trial import unittest

from btu_twisted.enqueuer import ENQUEUED, Enqueuer, Fire
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.schedules import Schedule
from tests.support import rq_versions
from tests.support.servers import shared_redis

MARKER_FUNCTION = "tests.support.jobfuncs.write_marker"
QUEUE = "compat-bench:default"  # Frappe v14+ names queues <bench>:<queue>
WHEN = 1_700_000_000
AWKWARD_ID = "TS 'single' \"double\" |pipe| a||b key:value é ü 日本 💥 end"
#: (schedule ID, the task's keyword arguments): plain builtins, some of them awkward text.
CASES = (
    (AWKWARD_ID, {"text": "quotes ' \" | || : é 日本 💥", "number": 42, "ratio": 2.5,
                  "flags": [True, False, None], "nested": {"list": [1, "two", {"three": 3}]}}),
    ("TS-000001", {"number": -1, "empty": {}}),
)
RESULT_PREFIX = "BTU-COMPAT-RESULT "

# Run with <venv>/bin/python and an old rq first on PYTHONPATH: dispatch the batch, report.
LIBRARY_SCRIPT = f"""
import json, sys
import redis, rq
from btu_twisted.enqueuer import Enqueuer
from tests.test_rq_compat import marker_fires

url, directory, queue = sys.argv[1:4]
enqueuer = Enqueuer(url)
try:
    outcomes = enqueuer.dispatch(marker_fires(directory, queue), not_before=0)
finally:
    enqueuer.close()
print({RESULT_PREFIX!r} + json.dumps({{"rq": rq.VERSION, "rq_file": rq.__file__,
                                       "redis": redis.__version__, "outcomes": outcomes}}))
"""


def marker_fires(directory: str, queue: str) -> list[Fire]:
    """One batch of fires built with the `python` job builder, each writing its own marker file.

    Deterministic, so the test and a subprocess build the same fires.  The schedule's
    `argument_overrides` replace the task's `greeting`, as the builder merges them.
    """
    builder = PythonBuilder()
    fires = []
    for n, (schedule_id, kwargs) in enumerate(CASES):
        path = os.path.join(directory, f"marker-{n}.json")
        schedule = Schedule(
            schedule_id=schedule_id, task_id="BTU-00001", cron_string="* * * * *", queue_name=queue,
            function_string=MARKER_FUNCTION,
            arguments=repr({"path": path, "greeting": "from the task", **kwargs}),
            argument_overrides=repr({"greeting": "from the schedule"}),
            max_task_duration=120, description=f"rq compatibility check {n}")
        fires.append(Fire(schedule_id, WHEN + n, builder.build(schedule, WHEN + n), WHEN + 60 + n))
    return fires


class RqCompatTestCase(unittest.TestCase):
    """A flushed private Redis, a short marker directory, and the checks common to all tests."""

    timeout = 600  # the first run installs the old rq versions with pip

    def setUp(self):
        self.redis_server = shared_redis()
        self.redis_server.flush()
        self.redis = self.redis_server.client()
        self.addCleanup(self.redis.close)
        self.directory = tempfile.mkdtemp(prefix="btu_rqc_")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.fires = marker_fires(self.directory, QUEUE)

    def require(self, version: str) -> None:
        """Install rq `version` unless cached; skip only when pip cannot reach the index."""
        try:
            rq_versions.ensure_installed(version)
        except rq_versions.RegistryUnreachable as e:
            raise unittest.SkipTest(f"rq {version} is not cached and {str(e).splitlines()[0]}")

    def run_worker(self, version: str) -> str:
        """A burst worker of rq `version` on QUEUE; returns its output after checking its version."""
        self.require(version)
        output = rq_versions.run_burst_worker(version, self.redis_server.url, [QUEUE]).stdout
        self.assertIn(f"version {version}", output, f"not an rq {version} worker:\n{output}")
        return output

    def assert_all_ran(self, worker_output: str) -> None:
        """Every fire's job ran with its kwargs and finished; nothing is left queued or failed."""
        for fire in self.fires:
            spec = fire.job
            expected = {key: value for key, value in spec.kwargs.items() if key != "path"}
            self.assertEqual(expected["greeting"], "from the schedule")
            path = spec.kwargs["path"]
            self.assertTrue(os.path.exists(path),
                            f"job {spec.job_id} wrote no marker; worker said:\n{worker_output}")
            with open(path, encoding="utf-8") as f:
                self.assertEqual(json.load(f), json.loads(json.dumps(expected)))
            raw = self.redis.hgetall(f"rq:job:{spec.job_id}")
            self.assertEqual(raw.get(b"status"), b"finished", f"{spec.job_id}: {raw}")
            self.assertEqual(raw.get(b"origin"), QUEUE.encode())
            job = Job.fetch(spec.job_id, connection=self.redis)  # the newest rq reads it back
            self.assertEqual(job.get_status(), "finished")
            self.assertEqual(job.meta["btu_task_schedule"], fire.schedule_id)
            self.assertEqual(job.meta["btu_scheduled_for"], spec.meta["btu_scheduled_for"])
            self.assertEqual(job.description, spec.description)
            self.assertEqual(job.timeout, 120)
        self.assertEqual(self.redis.llen(f"rq:queue:{QUEUE}"), 0)
        self.assertEqual(self.redis.zcard(f"rq:failed:{QUEUE}"), 0)

    def assert_escaped_ids(self) -> None:
        for fire in self.fires:
            self.assertRegex(fire.job.job_id, r"\A[A-Za-z0-9_-]+\Z")
        self.assertNotEqual(self.fires[0].job.job_id, f"btu-{AWKWARD_ID}-{WHEN}")


class WorkerVersionTests(RqCompatTestCase):
    """Jobs enqueued by the real Enqueuer (in process, the virtualenv's rq) on each worker."""

    def enqueue_and_work(self, version: str) -> None:
        self.require(version)  # before enqueueing: a skip leaves nothing behind
        self.assert_escaped_ids()
        enqueuer = Enqueuer(self.redis_server.url)
        self.addCleanup(enqueuer.close)
        self.assertEqual(enqueuer.dispatch(self.fires, not_before=0), [ENQUEUED] * len(self.fires))
        self.assertEqual(self.redis.llen(f"rq:queue:{QUEUE}"), len(self.fires))
        self.assert_all_ran(self.run_worker(version))

    def test_worker_rq_1_15_1(self):
        """An rq 1.15.1 worker (Frappe v15, redis-py 4.5) runs our jobs, awkward schedule IDs too."""
        self.enqueue_and_work("1.15.1")

    def test_worker_rq_1_16_2(self):
        """An rq 1.16.2 worker (Frappe v15, redis-py 5.0) runs our jobs."""
        self.enqueue_and_work("1.16.2")

    def test_worker_rq_2_6_1(self):
        """An rq 2.6.1 worker (Frappe develop, redis-py 7.1) runs our jobs."""
        self.enqueue_and_work("2.6.1")

    def test_worker_rq_3_0_0(self):
        """An rq 3.0.0 worker (redis-py 8.1) runs our jobs."""
        self.enqueue_and_work("3.0.0")


class LibraryVersionTests(RqCompatTestCase):
    """The Enqueuer's transaction run with an old rq and redis-py library, then worked."""

    def dispatch_with(self, version: str) -> dict:
        self.require(version)
        output = rq_versions.run_python(
            version, ["-c", LIBRARY_SCRIPT, self.redis_server.url, self.directory, QUEUE]).stdout
        lines = [line for line in output.splitlines() if line.startswith(RESULT_PREFIX)]
        self.assertEqual(len(lines), 1, output)
        result = json.loads(lines[0][len(RESULT_PREFIX):])
        self.assertEqual(result["rq"], version, output)
        if version != rq_versions.VENV_VERSION:
            self.assertTrue(result["rq_file"].startswith(rq_versions.target_dir(version)), result)
        self.assertEqual(result["outcomes"], [ENQUEUED] * len(self.fires), output)
        self.assertEqual(self.redis.llen(f"rq:queue:{QUEUE}"), len(self.fires))
        return result

    def test_library_rq_1_15_1(self):
        """With rq 1.15.1 and redis-py 4.5.5 the Enqueuer enqueues a batch; a 1.15.1 worker runs it."""
        result = self.dispatch_with("1.15.1")
        self.assertTrue(result["redis"].startswith("4.5."), result)
        self.assert_all_ran(self.run_worker("1.15.1"))

    def test_library_rq_1_16_2(self):
        """With rq 1.16.2 and redis-py 5.0 the Enqueuer enqueues a batch; a 1.16.2 worker runs it."""
        self.dispatch_with("1.16.2")
        self.assert_all_ran(self.run_worker("1.16.2"))

    def test_library_rq_2_6_1(self):
        """With rq 2.6.1 and redis-py 7.1 the Enqueuer enqueues a batch; a 2.6.1 worker runs it."""
        self.dispatch_with("2.6.1")
        self.assert_all_ran(self.run_worker("2.6.1"))

    def test_library_rq_3_0_0(self):
        """With rq 3.0.0 and redis-py 8.1 the Enqueuer enqueues a batch; a 3.0.0 worker runs it."""
        self.dispatch_with("3.0.0")
        self.assert_all_ran(self.run_worker("3.0.0"))

    def test_library_rq_1_15_1_worker_3_0_0(self):
        """Jobs written by the rq 1.15.1 library run on the newest worker too."""
        self.dispatch_with("1.15.1")
        self.assert_all_ran(self.run_worker("3.0.0"))

    def test_second_dispatch_is_already_enqueued(self):
        """An old library sees the watermarks the newest one wrote: no fire is enqueued twice."""
        enqueuer = Enqueuer(self.redis_server.url)
        self.addCleanup(enqueuer.close)
        self.assertEqual(enqueuer.dispatch(self.fires, not_before=0), [ENQUEUED] * len(self.fires))
        self.require("1.15.1")
        output = rq_versions.run_python(
            "1.15.1", ["-c", LIBRARY_SCRIPT, self.redis_server.url, self.directory, QUEUE]).stdout
        self.assertIn('"outcomes": ["already enqueued", "already enqueued"]', output)
        self.assertEqual(self.redis.llen(f"rq:queue:{QUEUE}"), len(self.fires))
