# -*- test-case-name: tests.test_builders -*-
"""The `frappe` job builder: Frappe's `execute_job` calls the task's function directly on a site.

No BTU Task Log, captured stdout or emails (those come from BTU's task runner, the `btu` and
`btu-web` builders): for sites that want exactly that.
"""

from __future__ import annotations

from btu_twisted.builders import FRAPPE_EXECUTE_JOB, JobSpec, LocalBuilder
from btu_twisted.schedules import Schedule
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout


class FrappeBuilder(LocalBuilder):
    """Jobs that run `execute_job(site, method=function_string, kwargs=merged arguments, ...)`."""

    kind = "frappe"

    def __init__(self, site: str, user: str = "Administrator", queue_name_template: str = "{queue_name}",
                 layout: KeyLayout = SINGLE_SITE):
        super().__init__(queue_name_template, layout)
        self._site = site
        self._user = user

    def build(self, schedule: Schedule, when: int) -> JobSpec:
        name = schedule.description or schedule.function_string
        return JobSpec(
            job_id=self.job_id(schedule, when),
            queue=self.queue_name(schedule.queue_name),
            func=FRAPPE_EXECUTE_JOB,
            kwargs={"site": self._site, "user": self._user, "method": schedule.function_string,
                    "event": None, "job_name": name, "is_async": True, "kwargs": schedule.kwargs()},
            timeout=schedule.max_task_duration,
            description=name,
            meta=self.job_meta(schedule, when),
            builder=self.kind,
        )
