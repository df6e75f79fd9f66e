# -*- test-case-name: tests.test_report -*-
"""How each RQ job ended: the fire history joined with RQ's own job hashes and results."""

from __future__ import annotations

from datetime import datetime, timezone

from rq.job import Job

from btu_twisted import history

MAX_TEXT_CHARS = 400  # a result or error is cut to this in tables and JSON


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # rq < 2 stores naive UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _short(text) -> str | None:
    if text is None:
        return None
    text = str(text).strip()
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS - 1] + "…"


def _last_line(text: str | None) -> str | None:
    """The exception line of a traceback: what an operator reads first."""
    if not text:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return _short(lines[-1]) if lines else None


def job_outcome(job: Job | None) -> dict:
    """Status, start, end, duration, result or error of one RQ job (None: its hash is gone)."""
    if job is None:
        return {"status": "expired", "started_at": None, "ended_at": None, "duration_secs": None,
                "result": None, "error": None, "traceback": None}
    status = job.get_status(refresh=False)
    status = getattr(status, "value", status)
    result = error = None
    try:
        latest = job.latest_result()
    except Exception:  # rq < 1.12 keeps no result records; the job hash alone tells
        latest = None
    if latest is not None and latest.type == latest.Type.FAILED:
        error = latest.exc_string
    elif latest is not None and latest.type == latest.Type.SUCCESSFUL:
        try:
            result = repr(latest.return_value)
        except Exception as e:  # an unpicklable return value must not hide the rest
            result = f"<result unreadable: {type(e).__name__}>"
    error = error or getattr(job, "_exc_info", None)
    started, ended = job.started_at, job.ended_at
    duration = (ended - started).total_seconds() if started and ended else None
    return {"status": status, "started_at": iso(started), "ended_at": iso(ended),
            "duration_secs": None if duration is None else round(duration, 3),
            "result": _short(result), "error": _last_line(error), "traceback": error}


def fires(connection, schedule_id: str, count: int = history.HISTORY_LENGTH) -> list[dict]:
    """The schedule's last fires, newest first, each with its RQ job's outcome."""
    entries = history.read(connection, schedule_id, count)
    jobs = Job.fetch_many([e["job_id"] for e in entries], connection=connection) if entries else []
    return [{**e, **job_outcome(job)} for e, job in zip(entries, jobs)]


def last_fires(connection, schedule_ids: list[str]) -> dict[str, dict]:
    """{schedule_id: its newest fire with outcome} for those that have fired (two round trips)."""
    pipe = connection.pipeline(transaction=False)
    for schedule_id in schedule_ids:
        pipe.lindex(history.history_key(schedule_id), 0)
    found = {}
    for schedule_id, raw in zip(schedule_ids, pipe.execute()):
        if raw is not None:
            found[schedule_id] = history.parse(raw)
    jobs = Job.fetch_many([e["job_id"] for e in found.values()], connection=connection) if found else []
    return {schedule_id: {**e, **job_outcome(job)} for (schedule_id, e), job in zip(found.items(), jobs)}
