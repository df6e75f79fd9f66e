# -*- test-case-name: tests.test_builders -*-
"""Turn a (schedule, fire instant) into the description of one RQ job: what to call, where, as whom.

One module per job builder (`btu`, `btu_web`, `frappe`, `python`; `auto` picks one from the site
schema). Every builder answers `build_batch([(schedule, when), ...])` with a Deferred firing one
outcome per fire: a JobSpec, a Skip (not enqueued, the schedule moves on), a Retry (cannot be built
yet) or a ScheduleError (the row is unusable); the dispatcher enqueues the JobSpecs in its one
exactly-once transaction, whatever built them.

The job id is deterministic per (schedule, fire instant) and uses only `[A-Za-z0-9_-]`, the
characters every RQ version from 1.15 to 3.x accepts, so the same fire always maps to the same job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from twisted.internet import defer

from btu_twisted.schedules import Schedule, ScheduleError
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout

FRAPPE_EXECUTE_JOB = "frappe.utils.background_jobs.execute_job"


@dataclass(frozen=True)
class JobSpec:
    """Everything `Queue.enqueue_call` needs, as plain builtins.

    `data`, when set, is the job's already pickled `(func_name, instance, args, kwargs)` (btu-web:
    made by the BTU app), stored as the job's data in place of `func`/`kwargs`; `on_failure` is the
    dotted path of the failure callback, for the rq versions that carry one.
    """

    job_id: str
    queue: str
    func: str
    kwargs: dict
    timeout: int
    description: str
    meta: dict = field(default_factory=dict)
    data: bytes | None = field(default=None, repr=False)
    on_failure: str | None = None
    builder: str = ""  # the job builder that made it (kept in the fire history)


@dataclass(frozen=True)
class Skip:
    """The fire is not enqueued and its schedule moves on to its next fire; `counter` is the
    `status` count it adds to."""

    reason: str
    counter: str


@dataclass(frozen=True)
class Retry:
    """The fire's job cannot be built yet (its data source failed); try again at clock time `at`."""

    reason: str
    at: float


def job_id(schedule_id: str, when: int) -> str:
    """`btu-<escaped id>-<unix seconds>`: injective, readable for plain IDs like TS-000001.

    Characters outside [A-Za-z0-9-] (and '_' itself, the escape) become `_XX` per UTF-8 byte.
    """
    return SINGLE_SITE.job_id(schedule_id, when)


def manual_job_id(schedule_id: str, when: int) -> str:
    """The id of a run-now job: `job_id` plus `-now`, so it never equals a planned fire's id
    (those end in digits)."""
    return f"{job_id(schedule_id, when)}-now"


def iso_utc(when: int) -> str:
    """A unix instant as ISO 8601 UTC ending in Z (the `btu_scheduled_for` meta value)."""
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_meta(schedule: Schedule, when: int, layout: KeyLayout = SINGLE_SITE) -> dict:
    """The meta every builder's job carries (DESIGN §8), and `btu_site` when several sites are served."""
    meta = {"btu_task_schedule": schedule.schedule_id, "btu_task": schedule.task_id,
            "btu_scheduled_for": iso_utc(when)}
    if layout.site is not None:
        meta["btu_site"] = layout.site
    return meta


class LocalBuilder:
    """A builder that needs nothing but the row: `build` each fire, synchronously."""

    kind = ""

    def __init__(self, queue_name_template: str = "{queue_name}", layout: KeyLayout = SINGLE_SITE):
        self._template = queue_name_template
        self._layout = layout  # the site's job ids and meta

    def job_id(self, schedule: Schedule, when: int) -> str:
        """The id of `schedule`'s job for unix second `when`, in this builder's site layout."""
        return self._layout.job_id(schedule.schedule_id, when)

    def job_meta(self, schedule: Schedule, when: int) -> dict:
        """The meta of that job."""
        return job_meta(schedule, when, self._layout)

    def queue_name(self, queue_name: str) -> str:
        """The RQ queue for a BTU queue name, through `queue_name_template`."""
        return self._template.format(queue_name=queue_name)

    def queue_for(self, schedule: Schedule) -> str:
        """The RQ queue this builder's jobs of `schedule` go to."""
        return self.queue_name(schedule.queue_name)

    def build(self, schedule: Schedule, when: int) -> JobSpec:
        """The job for `schedule` firing at unix second `when` (raises ScheduleError on bad rows)."""
        raise NotImplementedError

    def build_batch(self, fires: list[tuple[Schedule, int]]) -> defer.Deferred:
        """Fire with one outcome per (schedule, when): a JobSpec, or the ScheduleError of a bad row."""
        outcomes = []
        for schedule, when in fires:
            try:
                outcomes.append(self.build(schedule, when))
            except ScheduleError as e:
                outcomes.append(e)
        return defer.succeed(outcomes)

    def close(self) -> None:
        """Nothing to release; present so every builder can be closed alike."""
