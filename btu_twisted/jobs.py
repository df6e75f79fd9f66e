# -*- test-case-name: tests.test_jobs -*-
"""Turn a (schedule, fire instant) into the description of one RQ job: what to call, where, as whom.

The job id is deterministic per (schedule, fire instant) and uses only `[A-Za-z0-9_-]`, the
characters every RQ version from 1.15 to 3.x accepts, so the same fire always maps to the same job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from btu_twisted.schedules import Schedule

FRAPPE_EXECUTE_JOB = "frappe.utils.background_jobs.execute_job"
JOB_ID_PREFIX = "btu"
_SAFE = re.compile(r"[A-Za-z0-9-]")


@dataclass(frozen=True)
class JobSpec:
    """Everything `Queue.enqueue_call` needs, as plain builtins."""

    job_id: str
    queue: str
    func: str
    kwargs: dict
    timeout: int
    description: str
    meta: dict = field(default_factory=dict)
    builder: str = ""  # the job builder that made it (shown in the fire history)


def job_id(schedule_id: str, when: int) -> str:
    """`btu-<escaped id>-<unix seconds>`: injective, readable for plain IDs like TS-000001.

    Characters outside [A-Za-z0-9-] (and '_' itself, the escape) become `_XX` per UTF-8 byte.
    """
    escaped = "".join(c if _SAFE.match(c) else "".join(f"_{b:02X}" for b in c.encode("utf-8"))
                      for c in schedule_id)
    return f"{JOB_ID_PREFIX}-{escaped}-{when}"


def manual_job_id(schedule_id: str, when: int) -> str:
    """The id of a run-now job: `job_id` plus `-now`, so it never equals a planned fire's id
    (those end in digits)."""
    return f"{job_id(schedule_id, when)}-now"


def iso_utc(when: int) -> str:
    """A unix instant as ISO 8601 UTC ending in Z (the `btu_scheduled_for` meta value)."""
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobBuilder:
    """Builds JobSpecs for one daemon configuration (job builder kind, site, queue names)."""

    def __init__(self, kind: str, queue_name_template: str = "{queue_name}", site: str | None = None,
                 user: str = "Administrator"):
        if kind not in ("frappe", "python"):
            raise ValueError(f"job_builder {kind!r} cannot build jobs locally")
        self.kind = kind
        self._template = queue_name_template
        self._site = site
        self._user = user

    def queue_name(self, schedule: Schedule) -> str:
        """The RQ queue: the schedule's `queue_name` through `queue_name_template`."""
        return self._template.format(queue_name=schedule.queue_name)

    def build(self, schedule: Schedule, when: int) -> JobSpec:
        """The job for `schedule` firing at unix second `when` (raises ScheduleError on bad rows)."""
        kwargs = schedule.kwargs()
        if self.kind == "frappe":
            func = FRAPPE_EXECUTE_JOB
            kwargs = {"site": self._site, "user": self._user, "method": schedule.function_string,
                      "event": None, "job_name": schedule.function_string, "is_async": True,
                      "kwargs": kwargs}
        else:
            func = schedule.function_string
        return JobSpec(
            job_id=job_id(schedule.schedule_id, when),
            queue=self.queue_name(schedule),
            func=func,
            kwargs=kwargs,
            timeout=schedule.max_task_duration,
            description=schedule.description or schedule.function_string,
            meta={"btu_task_schedule": schedule.schedule_id, "btu_task": schedule.task_id,
                  "btu_scheduled_for": iso_utc(when)},
            builder=self.kind,
        )


def builder_for(config) -> JobBuilder:
    """The job builder a daemon with `config` uses (the daemon, the CLI and run-now share it)."""
    return JobBuilder(config.job_builder, config.queue_name_template, config.effective_frappe_site,
                      config.frappe_user)
