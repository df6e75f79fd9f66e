# -*- test-case-name: tests.test_builders -*-
"""The `btu` job builder (BTU 15.1.1+): what BTU's own `push_task_into_queue` enqueues, so the
job runs through BTU's task runner (BTU Task Log, captured stdout, success/failure emails).

Like BTU's own enqueue, a task that still has an `In-Progress` BTU Task Log is not enqueued again:
one query per dispatch batch finds them, and those fires are skipped (logged, counted).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.logger import Logger

from btu_twisted.builders import FRAPPE_EXECUTE_JOB, JobSpec, LocalBuilder, Skip, iso_utc
from btu_twisted.logs import OBSERVER
from btu_twisted.schedules import Schedule
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout

BTU_RUN_TASK = "btu.btu_core.task_runner.run_task_by_id"
BTU_ON_FAILURE = "btu.btu_core.task_runner.on_btu_task_failure"
BTU_DEFAULT_TIMEOUT_SECS = 3600  # BTU's push_task_into_queue: `max_task_duration or 3600`
IN_PROGRESS_COUNTER = "skipped_in_progress"


class BtuBuilder(LocalBuilder):
    """Jobs that run `execute_job(method=run_task_by_id, kwargs={task_id, site_name, schedule_id,
    rq_job_id})` on the task's queue, with BTU's failure callback."""

    kind = "btu"
    log = Logger(observer=OBSERVER)

    def __init__(self, site: str, source, user: str = "Administrator",
                 queue_name_template: str = "{queue_name}", layout: KeyLayout = SINGLE_SITE):
        super().__init__(queue_name_template, layout)
        self._site = site
        self._source = source
        self._user = user
        self._guard_down = False  # the In-Progress query failed; logged once per outage

    def build(self, schedule: Schedule, when: int) -> JobSpec:
        rq_job_id = self.job_id(schedule, when)
        return JobSpec(
            job_id=rq_job_id,
            queue=self.queue_for(schedule),
            func=FRAPPE_EXECUTE_JOB,
            kwargs={"site": self._site, "user": self._user, "method": BTU_RUN_TASK, "event": None,
                    "job_name": schedule.description, "is_async": True,
                    "kwargs": {"task_id": schedule.task_id, "site_name": self._site,
                               "schedule_id": schedule.schedule_id, "rq_job_id": rq_job_id}},
            timeout=schedule.max_task_duration or BTU_DEFAULT_TIMEOUT_SECS,
            description=schedule.description or schedule.task_id,
            meta=self.job_meta(schedule, when),
            on_failure=BTU_ON_FAILURE,
            builder=self.kind,
        )

    def queue_for(self, schedule: Schedule) -> str:
        """BTU's own enqueue uses the task's queue, the schedule's only when the task has none."""
        return self.queue_name(schedule.task_queue_name or schedule.queue_name)

    @defer.inlineCallbacks
    def build_batch(self, fires: list[tuple[Schedule, int]]):
        busy = yield self._in_progress(sorted({schedule.task_id for schedule, _ in fires}))
        outcomes = yield super().build_batch(fires)
        for n, (schedule, when) in enumerate(fires):
            if schedule.task_id in busy and isinstance(outcomes[n], JobSpec):
                self.log.info("{schedule_id} due at {due} not enqueued: task {task_id} has a BTU Task "
                              "Log still In-Progress", schedule_id=schedule.schedule_id,
                              due=iso_utc(when), task_id=schedule.task_id)
                outcomes[n] = Skip(f"task {schedule.task_id} is In-Progress", IN_PROGRESS_COUNTER)
        return outcomes

    @defer.inlineCallbacks
    def _in_progress(self, task_ids: list[str]):
        """The tasks with an In-Progress log; none (no guard) while the database cannot answer."""
        try:
            busy = yield self._source.in_progress_tasks(task_ids)
        except Exception as e:
            if not self._guard_down:
                self.log.warn("cannot read BTU Task Logs ({error}); enqueuing without the In-Progress "
                              "guard until the database answers", error=e)
            self._guard_down = True
            return set()
        self._guard_down = False
        return set(busy)
