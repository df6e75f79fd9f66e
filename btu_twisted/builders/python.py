# -*- test-case-name: tests.test_builders -*-
"""The `python` job builder: the task's `function_string` itself, with its merged arguments
(for RQ users without Frappe, and the schedule file's examples)."""

from __future__ import annotations

from btu_twisted.builders import JobSpec, LocalBuilder
from btu_twisted.schedules import Schedule


class PythonBuilder(LocalBuilder):
    """Jobs that call `function_string(**kwargs)`."""

    kind = "python"

    def build(self, schedule: Schedule, when: int) -> JobSpec:
        return JobSpec(
            job_id=self.job_id(schedule, when),
            queue=self.queue_name(schedule.queue_name),
            func=schedule.function_string,
            kwargs=schedule.kwargs(),
            timeout=schedule.max_task_duration,
            description=schedule.description or schedule.function_string,
            meta=self.job_meta(schedule, when),
            builder=self.kind,
        )
