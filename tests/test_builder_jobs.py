"""Jobs of the BTU builders on real Redis and real `rq worker --burst` processes of every rq version
Frappe uses (1.15.1, 1.16.2, 2.6.1) and the newest (the virtualenv's 3.x).

`btu` jobs run Frappe's `execute_job` (the fake on the worker's path imports `method` and calls it
with `kwargs`, as Frappe's does) into the doubles of BTU's `run_task_by_id` / `on_btu_task_failure`,
which record what they got; a failing task reaches the failure callback. `btu-web` jobs carry the
BTU app's pickled data as is. Every builder's fire, dispatched twice, gives one job.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import zlib

from rq.job import Job
from twisted.trial import unittest

from btu_twisted.builders import JobSpec, job_id, job_meta
from btu_twisted.builders.btu import BTU_ON_FAILURE, BtuBuilder
from btu_twisted.builders.frappe import FrappeBuilder
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.enqueuer import ALREADY_ENQUEUED, ENQUEUED, Enqueuer, Fire
from tests import fakes
from tests.support import rq_versions
from tests.support.servers import use_shared_redis

FAKE_FRAPPE = os.path.join(os.path.dirname(__file__), "support", "fake_frappe")
RECORD_ENV_VAR = "BTU_FAKE_RECORD"  # tests/support/fake_frappe/btu/btu_core/task_runner.py
MARKER_FUNCTION = "tests.support.jobfuncs.write_marker"
SITE = "site1.localhost"
QUEUE = "bench-1:long"
WHEN = 1_700_000_000


def btu_fires() -> list[Fire]:
    """A task that succeeds and one that fails, built by the btu builder (task queue `long`)."""
    builder = BtuBuilder(SITE, source=None, user="jobs@example.com", queue_name_template="bench-1:{queue_name}")
    fires = []
    for n, task_id in enumerate(("BTU-00001", "FAIL-00002")):
        row = fakes.schedule(f"TS-00000{n + 1}", task_id=task_id, description=f"Task {n}",
                             queue_name="default", task_queue_name="long", max_task_duration=900)
        fires.append(Fire(row.schedule_id, WHEN, builder.build(row, WHEN), WHEN + 60))
    return fires


def btu_web_fire(marker: str) -> Fire:
    """A btu-web job: its data is a pickle made elsewhere, as the BTU app's endpoint makes it."""
    row = fakes.schedule("TS-000009", description="Pickled task", queue_name="long")
    data = pickle.dumps((MARKER_FUNCTION, None, (), {"path": marker, "via": "pickle"}),
                        protocol=pickle.HIGHEST_PROTOCOL)
    spec = JobSpec(job_id=job_id(row.schedule_id, WHEN), queue=QUEUE, func=MARKER_FUNCTION, kwargs={},
                   timeout=600, description=row.description, meta=job_meta(row, WHEN), data=data)
    return Fire(row.schedule_id, WHEN, spec, WHEN + 60)


class BuilderJobsOnWorkersTests(unittest.TestCase):
    """btu and btu-web jobs run on each rq worker version."""

    timeout = 600  # the first run installs the old rq versions with pip

    def setUp(self):
        use_shared_redis(self)
        self.directory = tempfile.mkdtemp(prefix="btu_bj_")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.record = os.path.join(self.directory, "record.jsonl")
        self.marker = os.path.join(self.directory, "marker.json")
        self.fires = [*btu_fires(), btu_web_fire(self.marker)]
        self.enqueuer = Enqueuer(self.redis_server.url)
        self.addCleanup(self.enqueuer.close)

    def run_on(self, version: str) -> None:
        try:
            rq_versions.ensure_installed(version)
        except rq_versions.RegistryUnreachable as e:
            raise unittest.SkipTest(f"rq {version} is not cached and {str(e).splitlines()[0]}")
        self.assertEqual(self.enqueuer.dispatch(self.fires, not_before=0), [ENQUEUED] * 3)
        output = rq_versions.run_burst_worker(version, self.redis_server.url, [QUEUE],
                                              extra_pythonpath=[FAKE_FRAPPE],
                                              extra_env={RECORD_ENV_VAR: self.record}).stdout
        self.assertIn(f"version {version}", output)
        ok, failing, pickled = (fire.job.job_id for fire in self.fires)
        with open(self.record, encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        calls = [r for r in records if r["call"] == "run_task_by_id"]
        self.assertEqual(sorted(calls, key=lambda r: r["task_id"]), [
            {"call": "run_task_by_id", "task_id": "BTU-00001", "site_name": SITE, "schedule_id": "TS-000001",
             "rq_job_id": ok, "extra": {}, "frappe_site": SITE, "frappe_user": "jobs@example.com"},
            {"call": "run_task_by_id", "task_id": "FAIL-00002", "site_name": SITE, "schedule_id": "TS-000002",
             "rq_job_id": failing, "extra": {}, "frappe_site": SITE, "frappe_user": "jobs@example.com"},
        ], output)
        self.assertEqual([r for r in records if r["call"] == "on_btu_task_failure"], [
            {"call": "on_btu_task_failure", "job_id": failing, "error_type": "RuntimeError",
             "error": "task FAIL-00002 failed on purpose"}], output)
        self.assertEqual(Job.fetch(ok, connection=self.redis).get_status(), "finished")
        self.assertEqual(Job.fetch(failing, connection=self.redis).get_status(), "failed")
        with open(self.marker, encoding="utf-8") as f:
            self.assertEqual(json.load(f), {"via": "pickle"}, output)
        self.assertEqual(Job.fetch(pickled, connection=self.redis).get_status(), "finished")

    def test_rq_1_15_1(self):
        """An rq 1.15.1 worker (Frappe v15) runs btu jobs, calls the failure callback, runs btu-web data."""
        self.run_on("1.15.1")

    def test_rq_1_16_2(self):
        """An rq 1.16.2 worker (Frappe v15) does the same."""
        self.run_on("1.16.2")

    def test_rq_2_6_1(self):
        """An rq 2.6.1 worker (Frappe develop) does the same."""
        self.run_on("2.6.1")

    def test_rq_3_0_0(self):
        """An rq 3.0.0 worker does the same."""
        self.run_on("3.0.0")


class BuilderJobHashTests(unittest.TestCase):
    """What the enqueuer writes for each builder, and exactly-once for all of them."""

    def setUp(self):
        use_shared_redis(self)
        self.enqueuer = Enqueuer(self.redis_server.url)
        self.addCleanup(self.enqueuer.close)

    def test_btu_job_hash(self):
        """A btu job is execute_job(run_task_by_id) on the task's queue, named after desc_short,
        with BTU's failure callback in the hash."""
        fire = btu_fires()[0]
        self.enqueuer.dispatch([fire], not_before=0)
        job = Job.fetch(fire.job.job_id, connection=self.redis)
        self.assertEqual((job.func_name, job.origin, job.description, job.timeout),
                         ("frappe.utils.background_jobs.execute_job", QUEUE, "Task 0", 900))
        self.assertEqual(job.kwargs["method"], "btu.btu_core.task_runner.run_task_by_id")
        self.assertEqual(job.kwargs["job_name"], "Task 0")
        self.assertEqual(self.redis.hget(f"rq:job:{fire.job.job_id}", "failure_callback_name"),
                         BTU_ON_FAILURE.encode())
        self.assertEqual(job.meta["btu_task_schedule"], "TS-000001")

    def test_btu_web_job_data_is_the_pickle(self):
        """A btu-web job's data is exactly the fetched pickle (compressed as rq stores it), under
        our deterministic id, with our meta."""
        fire = btu_web_fire("/nonexistent")
        self.enqueuer.dispatch([fire], not_before=0)
        raw = self.redis.hget(f"rq:job:{fire.job.job_id}", "data")
        self.assertEqual(zlib.decompress(raw), fire.job.data)
        job = Job.fetch(fire.job.job_id, connection=self.redis)
        self.assertEqual((job.func_name, job.kwargs), (MARKER_FUNCTION, {"path": "/nonexistent", "via": "pickle"}))
        self.assertEqual(job.meta["btu_scheduled_for"], "2023-11-14T22:13:20Z")

    def test_same_fire_twice_is_one_job_for_every_builder(self):
        """The same (schedule, fire) dispatched twice gives one job, whatever built it."""
        row = fakes.schedule("TS-000010", description="Once")
        fires = [btu_fires()[0], btu_web_fire("/nonexistent"),
                 Fire("TS-000010", WHEN, FrappeBuilder(SITE).build(row, WHEN), WHEN + 60),
                 Fire("TS-000011", WHEN, PythonBuilder().build(row, WHEN), WHEN + 60)]
        self.assertEqual(self.enqueuer.dispatch(fires, not_before=0), [ENQUEUED] * 4)
        self.assertEqual(self.enqueuer.dispatch(fires, not_before=0), [ALREADY_ENQUEUED] * 4)
        queued = self.redis.llen(f"rq:queue:{QUEUE}") + self.redis.llen("rq:queue:default")
        self.assertEqual(queued, 4)
