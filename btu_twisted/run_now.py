# -*- test-case-name: tests.test_cockpit -*-
"""Run a schedule's job once, now, without disturbing its plan (`btu run-now`, the dashboard)."""

from __future__ import annotations

import dataclasses

from btu_twisted.builders import iso_utc, manual_job_id
from btu_twisted.schedules import DEFAULT_TASK_DURATION_SECS, Schedule


class RunNowError(Exception):
    """The schedule cannot be run now; the message says why."""


def run_now(enqueuer, builder, schedule, now: float):
    """Build the schedule's job for instant `now` under a run-now id and enqueue it; returns the JobSpec.

    The plan (the schedule's member and watermark) is untouched, so its next planned fire still runs.
    """
    when = int(now)
    spec = builder.build(schedule, when)
    spec = dataclasses.replace(spec, job_id=manual_job_id(schedule.schedule_id, when),
                               meta={**spec.meta, "btu_run_now": True})
    if not enqueuer.enqueue_now(schedule.schedule_id, spec, when):
        raise RunNowError(f"{schedule.schedule_id} was already run now at this second ({spec.job_id})")
    return spec


def run_task_now(enqueuer, builder, task: dict, now: float):
    """Enqueue a BTU Task's job once, now, outside any schedule (`btu queue-task-now`)."""
    when = int(now)
    row = Schedule(schedule_id=task["task"], task_id=task["task"], cron_string="",
                   queue_name=task["queue"] or "default", function_string=task["function"],
                   arguments=task["arguments"], max_task_duration=task["timeout_secs"] or DEFAULT_TASK_DURATION_SECS,
                   description=task["description"])
    if not row.function_string:
        raise RunNowError(f"task {task['task']} has no function_string")
    spec = dataclasses.replace(builder.build(row, when), job_id=manual_job_id(f"task-{task['task']}", when),
                               meta={"btu_task": task["task"], "btu_scheduled_for": iso_utc(when),
                                     "btu_run_now": True})
    if not enqueuer.enqueue_now(None, spec, when):
        raise RunNowError(f"task {task['task']} was already queued now at this second ({spec.job_id})")
    return spec
