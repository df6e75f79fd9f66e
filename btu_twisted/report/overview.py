# -*- test-case-name: tests.test_report -*-
"""Every schedule with its plan: zone, next fires, planned member in Redis, and why it is not planned."""

from __future__ import annotations

from datetime import datetime, timezone

from btu_twisted import cron
from btu_twisted.schedules import ScheduleError
from btu_twisted.store import PLANNED_KEY, SCHEDULE_KEY, split_member

NOT_PLANNED = "enabled but not planned in Redis: is the daemon running? (`btu status`)"


def planned_members(connection) -> dict[str, int]:
    """{schedule_id: planned unix second} from the daemon's keys."""
    planned = {}
    for schedule_id, member in connection.hgetall(PLANNED_KEY).items():
        parsed = split_member(member.decode("utf-8"))
        if parsed is not None:
            planned[schedule_id.decode("utf-8")] = parsed[1]
    return planned


def upcoming(connection, count: int) -> list[tuple[str, int]]:
    """The next `count` (schedule_id, unix second) of the schedule set."""
    found = []
    for member, _score in connection.zrange(SCHEDULE_KEY, 0, count - 1, withscores=True):
        parsed = split_member(member.decode("utf-8"))
        if parsed is not None:
            found.append(parsed)
    return found


def problem(schedule, planned_at: int | None, now: float) -> str | None:
    """Why `schedule` is not planned (None when it is, or should be and can be)."""
    if not schedule.enabled:
        return "disabled (enabled = 0 in its BTU Task Schedule)"
    try:
        schedule.check()
        schedule.next_fire(now)
    except (ScheduleError, cron.CronError) as e:
        return str(e)
    return NOT_PLANNED if planned_at is None else None


def next_fires(schedule, now: float, count: int) -> list[cron.Fire]:
    """The next `count` fires after `now` (empty when the cron or zone is unusable)."""
    try:
        return cron.preview(schedule.cron_string, schedule.time_zone,
                            datetime.fromtimestamp(now, timezone.utc), count)
    except cron.CronError:
        return []


def describe(schedule, queue: str, planned_at: int | None, now: float) -> dict:
    """The plain facts about one schedule (the JSON of `show-scheduled`, `show` and the dashboard)."""
    return {"schedule_id": schedule.schedule_id, "task": schedule.task_id,
            "description": schedule.description, "function": schedule.function_string,
            "queue": queue, "cron": schedule.cron_string, "zone": schedule.time_zone,
            "zone_source": schedule.zone_source, "enabled": schedule.enabled,
            "next_unix": planned_at, "problem": problem(schedule, planned_at, now)}
