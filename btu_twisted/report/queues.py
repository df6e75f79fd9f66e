# -*- test-case-name: tests.test_report -*-
"""Per-queue backlog and worker count from RQ's own keys, and the warnings they call for."""

from __future__ import annotations

from rq import Queue, Worker
from rq.registry import FailedJobRegistry


def queue_states(connection, names) -> list[dict]:
    """For each queue name: jobs waiting, workers listening, failed jobs kept."""
    states = []
    for name in sorted(set(names)):
        queue = Queue(name, connection=connection)
        states.append({"queue": name, "jobs": queue.count,
                       "workers": Worker.count(connection=connection, queue=queue),
                       "failed": FailedJobRegistry(queue=queue).count})
    return states


def worker_hint(queue: str, frappe: bool) -> str:
    """The command that starts a worker for `queue` (bench queues are named `<bench_id>:<queue>`)."""
    if frappe or ":" in queue:
        return f"bench worker --queue {queue.rpartition(':')[2]}"
    return f"rq worker {queue}"


def warnings(states: list[dict], frappe: bool) -> list[str]:
    """One line per queue no worker listens on, saying what to start."""
    found = []
    for state in states:
        if state["workers"] == 0:
            backlog = f"has {state['jobs']} job{'s' if state['jobs'] != 1 else ''} and" if state["jobs"] else "has"
            found.append(f"queue {state['queue']} {backlog} no worker: start "
                         f"`{worker_hint(state['queue'], frappe)}`")
    return found
