# -*- test-case-name: tests.test_cockpit -*-
"""Run a schedule's job once, now, without disturbing its plan (`btu run-now`, the dashboard)."""

from __future__ import annotations

import dataclasses

from btu_twisted.jobs import manual_job_id


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
