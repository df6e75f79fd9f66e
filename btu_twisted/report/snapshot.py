# -*- test-case-name: tests.test_report -*-
"""One read of everything an operator asks about: schedules, their last fires, queues, health.

`status`, `show-scheduled` and the dashboard all format this one structure.
"""

from __future__ import annotations

from datetime import datetime, timezone

from btu_twisted.report import outcomes, overview, queues
from btu_twisted.report.connections import ScheduleReader, redis_client

TIMELINE_SECS = 24 * 3600       # the dashboard's timeline covers the next 24 hours
TIMELINE_MAX_FIRES = 96         # per schedule (every 15 min); denser crons are marked "+ more"
FRAPPE_BUILDERS = ("frappe", "btu", "btu-web", "auto")


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def _queue(builder, schedule) -> str:
    """The RQ queue of the schedule's jobs; its BTU queue name when no builder could be made."""
    return builder.queue_for(schedule) if builder is not None else schedule.queue_name


def gather(config, now: float, timeline: bool = False) -> dict:
    """The snapshot (JSON-ready); a source or Redis that cannot be read is reported, not raised."""
    reader = ScheduleReader(config)
    health = {"source": {"name": reader.description, "up": True, "error": None},
              "redis": {"up": True, "error": None}}
    try:
        rows = reader.schedules()
    except Exception as e:
        rows = {}
        health["source"].update(up=False, error=_error(e))
    try:
        builder = reader.builder()
    except Exception as e:  # the database is down (reported above) or the builder is unusable
        builder = None
        health["source"].update(up=False, error=_error(e))
    connection = redis_client(config)
    planned, last, states = {}, {}, []
    try:
        planned = overview.planned_members(connection)
        last = outcomes.last_fires(connection, list(rows))
        targeted = {_queue(builder, s) for s in rows.values() if s.enabled}
        states = queues.queue_states(connection, targeted)
    except Exception as e:
        health["redis"].update(up=False, error=_error(e))
    finally:
        connection.close()
    schedules = []
    for schedule in rows.values():
        item = overview.describe(schedule, _queue(builder, schedule), planned.get(schedule.schedule_id), now)
        item["last"] = last.get(schedule.schedule_id)
        if timeline and schedule.enabled:
            item["timeline"] = _timeline(schedule, now)
        schedules.append(item)
    frappe = config.job_builder in FRAPPE_BUILDERS
    warnings = queues.warnings(states, frappe)
    warnings += [f"{name} is {'down' if name == 'redis' else 'unreadable'}: {state['error']}"
                 for name, state in health.items() if not state["up"]]
    return {"now_unix": int(now), "source": reader.description, "job_builder": config.job_builder,
            "health": health, "schedules": schedules, "queues": states, "warnings": warnings,
            "counts": {"schedules": len(rows), "enabled": sum(1 for s in rows.values() if s.enabled),
                       "planned": len(planned),
                       "unplannable": sum(1 for s in schedules if s["enabled"] and s["problem"])}}


def _timeline(schedule, now: float) -> list[int]:
    """Unix seconds of the schedule's fires in the next TIMELINE_SECS."""
    fires = overview.next_fires(schedule, now, TIMELINE_MAX_FIRES)
    end = datetime.fromtimestamp(now + TIMELINE_SECS, timezone.utc)
    return [int(f.utc.timestamp()) for f in fires if f.utc <= end]
