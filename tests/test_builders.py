"""Specification of RQ job descriptions: deterministic safe job ids, the local job builders
(`python`, `frappe`, `btu` with its In-Progress guard) and `auto`'s choice."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from btu_twisted.builders import FRAPPE_EXECUTE_JOB, iso_utc, job_id
from btu_twisted.builders.frappe import FrappeBuilder
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.schedules import Schedule, ScheduleError

RQ_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]+$")  # what every RQ version from 1.15 to 3.x accepts
WHEN = 1772953200  # 2026-03-08T07:00:00Z
FUZZ = settings(max_examples=300, deadline=None, database=None)

# Fire instants are unix seconds after the epoch; a negative `when` is outside job_id's domain.
instants = st.integers(min_value=0, max_value=2**40)


def schedule(**changes) -> Schedule:
    fields = dict(schedule_id="TS-000001", task_id="BTU-00001", cron_string="0 3 * * *",
                  queue_name="long", function_string="myapp.tasks.run",
                  arguments="{'a': 1, 'b': 2}", argument_overrides="{'b': 20, 'c': 30}",
                  max_task_duration=1200, description="Nightly run")
    fields.update(changes)
    return Schedule(**fields)


class JobIdTests(unittest.SynchronousTestCase):
    """job_id is safe for every RQ version, deterministic and injective."""

    def test_readable(self):
        """A plain Frappe name stays readable."""
        self.assertEqual(job_id("TS-000001", WHEN), f"btu-TS-000001-{WHEN}")

    def test_deterministic(self):
        """The same schedule and instant always give the same id."""
        self.assertEqual(job_id("TS-1", WHEN), job_id("TS-1", WHEN))

    def test_awkward_ids_are_safe(self):
        """Quotes, backslashes, %, |, :, spaces, underscores and unicode are escaped to safe characters."""
        for schedule_id in ("TS-'1'", 'TS-"1"', "TS\\1", "100%", "a|1", "a||b", "bench:TS-1", "TS 1",
                            "TS_1", "Zeitplan-ÄÖÜ", "日程-1", "🙂", "", "\n\t"):
            self.assertRegex(job_id(schedule_id, WHEN), RQ_SAFE_ID, schedule_id)

    def test_underscore_escaped(self):
        """'_' is the escape character, so a literal underscore is escaped too."""
        self.assertNotEqual(job_id("a_3A", WHEN), job_id("a:", WHEN))

    @FUZZ
    @given(st.text(), instants)
    def test_always_safe(self, schedule_id, when):
        """Any ID gives an RQ-safe job id."""
        self.assertRegex(job_id(schedule_id, when), RQ_SAFE_ID)

    @FUZZ
    @given(st.tuples(st.text(max_size=12), instants), st.tuples(st.text(max_size=12), instants))
    def test_injective(self, first, second):
        """Distinct (schedule ID, instant) pairs give distinct job ids."""
        if first != second:
            self.assertNotEqual(job_id(*first), job_id(*second))

    @FUZZ
    @given(st.text(alphabet="-_a1:|", max_size=6), instants, st.text(alphabet="-_a1:|", max_size=6), instants)
    def test_injective_on_separators(self, id1, when1, id2, when2):
        """Injective even for IDs made only of dashes, underscores, digits and separators."""
        if (id1, when1) != (id2, when2):
            self.assertNotEqual(job_id(id1, when1), job_id(id2, when2))

    def test_iso_utc(self):
        """btu_scheduled_for is ISO 8601 UTC ending in Z."""
        self.assertEqual(iso_utc(WHEN), "2026-03-08T07:00:00Z")


class FrappeBuilderTests(unittest.SynchronousTestCase):
    """The frappe builder runs the task through Frappe's execute_job."""

    def setUp(self):
        self.builder = FrappeBuilder("erp.example.com", "Administrator", "mybench:{queue_name}")
        self.job = self.builder.build(schedule(), WHEN)

    def test_func(self):
        """The RQ function is frappe.utils.background_jobs.execute_job."""
        self.assertEqual(self.job.func, "frappe.utils.background_jobs.execute_job")
        self.assertEqual(FRAPPE_EXECUTE_JOB, self.job.func)

    def test_kwargs(self):
        """execute_job gets site, user, method, event, job_name (desc_short, as BTU's), is_async and
        the merged kwargs."""
        self.assertEqual(self.job.kwargs, {
            "site": "erp.example.com", "user": "Administrator", "method": "myapp.tasks.run",
            "event": None, "job_name": "Nightly run", "is_async": True,
            "kwargs": {"a": 1, "b": 20, "c": 30},
        })

    def test_queue_template(self):
        """The queue is the schedule's queue_name through queue_name_template."""
        self.assertEqual(self.job.queue, "mybench:long")

    def test_timeout_description_id(self):
        """Timeout is max_task_duration, description the task's desc_short, id deterministic."""
        self.assertEqual((self.job.timeout, self.job.description, self.job.job_id),
                         (1200, "Nightly run", f"btu-TS-000001-{WHEN}"))

    def test_meta(self):
        """meta names the schedule, the task and the fire instant in UTC."""
        self.assertEqual(self.job.meta, {"btu_task_schedule": "TS-000001", "btu_task": "BTU-00001",
                                         "btu_scheduled_for": "2026-03-08T07:00:00Z"})

    def test_custom_user(self):
        """The configured frappe_user runs the job."""
        job = FrappeBuilder("s", user="jobs@example.com").build(schedule(), WHEN)
        self.assertEqual(job.kwargs["user"], "jobs@example.com")


class PythonBuilderTests(unittest.SynchronousTestCase):
    """The python builder calls the function_string itself."""

    def setUp(self):
        self.job = PythonBuilder().build(schedule(), WHEN)

    def test_func_and_kwargs(self):
        """func is the function_string and kwargs are the merged arguments."""
        self.assertEqual((self.job.func, self.job.kwargs), ("myapp.tasks.run", {"a": 1, "b": 20, "c": 30}))

    def test_default_queue_template(self):
        """Without a template the queue is the schedule's queue_name."""
        self.assertEqual(self.job.queue, "long")

    def test_description_fallback(self):
        """Without desc_short the description is the function_string."""
        self.assertEqual(PythonBuilder().build(schedule(description=""), WHEN).description, "myapp.tasks.run")

    def test_same_meta(self):
        """meta is the same for both builders."""
        self.assertEqual(self.job.meta["btu_scheduled_for"], "2026-03-08T07:00:00Z")
        self.assertEqual(self.job.meta["btu_task_schedule"], "TS-000001")


class BuilderErrorTests(unittest.SynchronousTestCase):
    """Bad rows and unknown kinds."""

    def test_bad_arguments(self):
        """A row whose arguments cannot be parsed raises ScheduleError."""
        self.assertRaises(ScheduleError, PythonBuilder().build, schedule(arguments="{'a'"), WHEN)
