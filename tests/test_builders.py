"""Specification of RQ job descriptions: deterministic safe job ids, the local job builders
(`python`, `frappe`, `btu` with its In-Progress guard) and `auto`'s choice."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from twisted.internet import defer, task

from btu_twisted.builders import FRAPPE_EXECUTE_JOB, Retry, iso_utc, job_id
from btu_twisted.builders.auto import choose
from btu_twisted.builders.btu import BTU_ON_FAILURE, BTU_RUN_TASK, BtuBuilder
from btu_twisted.builders.btu_web import BtuWebBuilder
from btu_twisted.builders.factory import make_builder
from btu_twisted.builders.frappe import FrappeBuilder
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.config import parse
from btu_twisted.schedules import Schedule, ScheduleError
from btu_twisted.schema import FILE_SCHEMA, Schema
from btu_twisted.stats import Stats

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


class BtuBuilderTests(unittest.SynchronousTestCase):
    """The btu builder makes what BTU's own push_task_into_queue enqueues."""

    def setUp(self):
        self.builder = BtuBuilder("erp.example.com", FakeGuardSource(), "jobs@example.com", "mybench:{queue_name}")
        self.job = self.builder.build(schedule(task_queue_name="short"), WHEN)

    def test_execute_job_of_run_task_by_id(self):
        """execute_job runs run_task_by_id with {task_id, site_name, schedule_id, rq_job_id}."""
        self.assertEqual(self.job.func, FRAPPE_EXECUTE_JOB)
        self.assertEqual(self.job.kwargs, {
            "site": "erp.example.com", "user": "jobs@example.com", "method": BTU_RUN_TASK, "event": None,
            "job_name": "Nightly run", "is_async": True,
            "kwargs": {"task_id": "BTU-00001", "site_name": "erp.example.com", "schedule_id": "TS-000001",
                       "rq_job_id": f"btu-TS-000001-{WHEN}"}})
        self.assertEqual(self.job.kwargs["kwargs"]["rq_job_id"], self.job.job_id)

    def test_task_queue_then_schedule_queue(self):
        """The queue is the task's queue_name, else the schedule's, through queue_name_template."""
        self.assertEqual(self.job.queue, "mybench:short")
        self.assertEqual(self.builder.build(schedule(), WHEN).queue, "mybench:long")

    def test_timeout_callback_meta(self):
        """Timeout max_task_duration (3600 when empty), BTU's failure callback, the common meta."""
        self.assertEqual((self.job.timeout, self.job.on_failure), (1200, BTU_ON_FAILURE))
        self.assertEqual(self.builder.build(schedule(max_task_duration=0), WHEN).timeout, 3600)
        self.assertEqual(self.job.meta, {"btu_task_schedule": "TS-000001", "btu_task": "BTU-00001",
                                         "btu_scheduled_for": "2026-03-08T07:00:00Z"})

    def test_task_arguments_are_not_the_jobs(self):
        """BTU's task runner reads the task's arguments itself: a bad literal does not stop the job."""
        self.assertEqual(self.builder.build(schedule(arguments="{'a'"), WHEN).kwargs["kwargs"]["task_id"],
                         "BTU-00001")


class FakeGuardSource:
    """in_progress_tasks from a set; `failing` makes it fail like an unreachable database."""

    def __init__(self, busy=()):
        self.busy = set(busy)
        self.failing = False
        self.asked: list[list[str]] = []

    def in_progress_tasks(self, task_ids):
        self.asked.append(list(task_ids))
        if self.failing:
            return defer.fail(ConnectionError("database down"))
        return defer.succeed(self.busy & set(task_ids))


class InProgressGuardTests(unittest.SynchronousTestCase):
    """The btu builder skips fires whose task has an In-Progress BTU Task Log."""

    def setUp(self):
        self.source = FakeGuardSource(busy={"BTU-00001"})
        self.builder = BtuBuilder("s", self.source)
        self.rows = [schedule(schedule_id="TS-1"), schedule(schedule_id="TS-2"),
                     schedule(schedule_id="TS-3", task_id="BTU-00003")]

    def test_busy_task_skipped_others_built(self):
        """One query per batch; the busy task's fires are Skips counted as skipped_in_progress."""
        outcomes = self.successResultOf(self.builder.build_batch([(row, WHEN) for row in self.rows]))
        self.assertEqual(self.source.asked, [["BTU-00001", "BTU-00003"]])
        self.assertEqual([type(o).__name__ for o in outcomes], ["Skip", "Skip", "JobSpec"])
        self.assertEqual(outcomes[0].counter, "skipped_in_progress")

    def test_database_down_no_guard(self):
        """When the logs cannot be read, jobs are built without the guard (as with cached rows)."""
        self.source.failing = True
        outcomes = self.successResultOf(self.builder.build_batch([(row, WHEN) for row in self.rows]))
        self.assertEqual([type(o).__name__ for o in outcomes], ["JobSpec"] * 3)


class AutoChoiceTests(unittest.SynchronousTestCase):
    """auto: the schema (and webserver_token) picks the builder, with a reason."""

    def test_three_generations(self):
        """15.1.1+ -> btu; <= 15.1.0 with a token -> btu-web; <= 15.1.0 without -> frappe."""
        new = Schema(schedule_table=True, cron_timezone=True)
        old = Schema(schedule_table=True)
        self.assertEqual(choose(new, True)[0], "btu")
        self.assertEqual(choose(new, False)[0], "btu")
        self.assertEqual(choose(old, True)[0], "btu-web")
        self.assertEqual(choose(old, False)[0], "frappe")
        self.assertIn("BTU 15.1.1+", choose(new, False)[1])

    def test_schedule_file_is_python(self):
        """A schedule file (no BTU tables) gets plain python jobs."""
        self.assertEqual(choose(FILE_SCHEMA, True)[0], "python")


class FakeSchemaSource(FakeGuardSource):
    def __init__(self, schema):
        super().__init__()
        self.schema_value = schema
        self.schema_reads = 0

    def schema(self):
        self.schema_reads += 1
        if self.failing:
            return defer.fail(ConnectionError("database down"))
        return defer.succeed(self.schema_value)


class AutoBuilderTests(unittest.SynchronousTestCase):
    """AutoBuilder reads the schema at start-up, again while the database is down, then delegates."""

    def make(self, schema, **keys):
        self.clock = task.Clock()
        self.stats = Stats(started_at=0)
        self.source = FakeSchemaSource(schema)
        config, _ = parse('schedule_file = "s.toml"\n' + "".join(f'{k} = "{v}"\n' for k, v in keys.items()))
        return make_builder("auto", config, self.clock, self.source, self.stats)

    def test_resolves_at_start_and_reports(self):
        """At start-up the choice is made and shown in status' job_builder."""
        builder = self.make(Schema(schedule_table=True, cron_timezone=True), frappe_site="s")
        self.assertEqual(self.stats.job_builder["kind"], "auto")
        builder.startService()
        self.assertEqual(self.stats.job_builder["kind"], "btu")
        [job] = self.successResultOf(builder.build_batch([(schedule(), WHEN)]))
        self.assertEqual(job.kwargs["method"], BTU_RUN_TASK)

    def test_database_down_at_start(self):
        """While the schema cannot be read fires are retried; once it answers, the choice is made."""
        builder = self.make(Schema(schedule_table=True))
        self.source.failing = True
        builder.startService()
        self.addCleanup(builder.stopService)
        [outcome] = self.successResultOf(builder.build_batch([(schedule(), WHEN)]))
        self.assertIsInstance(outcome, Retry)
        self.source.failing = False
        self.clock.advance(60)
        self.assertEqual(self.stats.job_builder["kind"], "frappe")
        self.assertEqual(self.source.schema_reads, 3)  # start-up, the fire, the retry

    def test_site_missing_for_the_choice(self):
        """A choice that needs frappe_site without one: logged, shown, fires retried with the reason."""
        builder = self.make(Schema(schedule_table=True, cron_timezone=True))
        builder.startService()
        [outcome] = self.successResultOf(builder.build_batch([(schedule(), WHEN)]))
        self.assertIsInstance(outcome, Retry)
        self.assertIn('set frappe_site = "<site name>"', outcome.reason)
        self.assertIn("UNUSABLE", self.stats.job_builder["reason"])


class FactoryTests(unittest.SynchronousTestCase):
    """make_builder gives each configured kind its builder and a reason for status."""

    def test_kinds(self):
        """btu, btu-web, frappe and python are made as configured."""
        stats = Stats(started_at=0)
        for kind, extra, expected in [("btu", 'frappe_site = "s"\n', BtuBuilder),
                                      ("btu-web", 'webserver_token = "token a:b"\n', BtuWebBuilder),
                                      ("frappe", 'frappe_site = "s"\n', FrappeBuilder),
                                      ("python", "", PythonBuilder)]:
            config, _ = parse(f'schedule_file = "s.toml"\njob_builder = "{kind}"\n{extra}')
            builder = make_builder(kind, config, task.Clock(), FakeGuardSource(), stats)
            self.addCleanup(builder.close)
            self.assertIsInstance(builder, expected)
            self.assertEqual(stats.job_builder, {"kind": kind, "reason": f'job_builder = "{kind}" in the configuration'})
