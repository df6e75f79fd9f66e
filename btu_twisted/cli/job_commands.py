# -*- test-case-name: tests.test_cockpit -*-
"""Commands about RQ jobs: list them, show one, push one again, run a schedule now."""

from __future__ import annotations

import click
from rq import Queue
from rq.job import Job

from btu_twisted.cli import output
from btu_twisted.cli.context import json_option, pass_cli
from btu_twisted.cli.reading import cli_builder, fail, read_schedule, with_redis
from btu_twisted.enqueuer import Enqueuer
from btu_twisted.report.outcomes import iso, job_outcome
from btu_twisted.report.connections import ScheduleReader
from btu_twisted.run_now import RunNowError, run_now, run_task_now
from btu_twisted.schedules import ScheduleError

MAX_JOBS_LISTED = 1000
JOB_KEY_PREFIX = b"rq:job:"


def _job_ids(connection) -> list[str]:
    ids = []
    for key in connection.scan_iter(match=JOB_KEY_PREFIX + b"*", count=500):
        rest = key[len(JOB_KEY_PREFIX):]
        if b":" not in rest:  # rq:job:<id>:deps and friends are not jobs
            ids.append(rest.decode("utf-8"))
        if len(ids) >= MAX_JOBS_LISTED:
            break
    return sorted(ids)


def _describe(job: Job) -> dict:
    return {"job_id": job.id, "queue": job.origin, "function": job.func_name,
            "description": job.description, "created_at": iso(job.created_at),
            "enqueued_at": iso(job.enqueued_at), "meta": job.meta, **job_outcome(job)}


@click.command("list-jobs")
@json_option
@pass_cli
def list_jobs(cli):
    """Every RQ job in Redis (at most 1000): queue, status, function, schedule."""
    def read(connection):
        ids = _job_ids(connection)
        return [_describe(job) for job in Job.fetch_many(ids, connection=connection) if job is not None]
    jobs = with_redis(cli, read)
    if cli.as_json:
        output.emit_json(jobs)
        return
    click.echo(output.table(["JOB", "QUEUE", "STATUS", "CREATED (UTC)", "SCHEDULE", "FUNCTION"],
                            [[j["job_id"], j["queue"], j["status"], j["created_at"],
                              j["meta"].get("btu_task_schedule"), j["function"]] for j in jobs], coloured=(2,)))


def _fetch(connection, job_id: str) -> Job:
    job = Job.fetch_many([job_id], connection=connection)[0]
    if job is None:
        fail(f"no RQ job {job_id!r} in Redis (finished jobs are kept for their result_ttl only)")
    return job


@click.command("show-job")
@click.argument("job_id")
@json_option
@pass_cli
def show_job(cli, job_id):
    """Everything about one RQ job: function, arguments, times, status, result or error."""
    def read(connection):
        job = _fetch(connection, job_id)
        return {**_describe(job), "kwargs": job.kwargs, "timeout": job.timeout}
    data = with_redis(cli, read)
    if cli.as_json:
        output.emit_json(data)
        return
    click.echo(output.fields([(key, output.styled(str(data[key])) if key == "status" else data[key])
                              for key in ("job_id", "status", "queue", "function", "description", "kwargs",
                                          "timeout", "meta", "created_at", "enqueued_at", "started_at",
                                          "ended_at", "duration_secs", "result", "traceback")]))


@click.command("queue-job-now")
@click.argument("job_id")
@json_option
@pass_cli
def queue_job_now(cli, job_id):
    """Put an existing RQ job back at the end of its queue, to run again now."""
    def push(connection):
        job = _fetch(connection, job_id)
        Queue(job.origin, connection=connection).enqueue_job(job)
        return {"job_id": job.id, "queue": job.origin}
    data = with_redis(cli, push)
    if cli.as_json:
        output.emit_json(data)
    else:
        click.echo(f"queued {data['job_id']} in {data['queue']}")


def _enqueue_now(cli, what: str, enqueue, **shown) -> None:
    """Run `enqueue(enqueuer, builder, now)` and report the job it enqueued; errors exit 1."""
    enqueuer = Enqueuer(cli.config.effective_redis_url)
    try:
        spec = enqueue(enqueuer, cli_builder(cli), cli.now())
    except (RunNowError, ScheduleError) as e:
        fail(str(e))
    except Exception as e:
        fail(f"cannot enqueue {what}: {type(e).__name__}: {e}")
    finally:
        enqueuer.close()
    if cli.as_json:
        output.emit_json({**shown, "job_id": spec.job_id, "queue": spec.queue, "function": spec.func})
    else:
        click.echo(f"enqueued {spec.job_id} in queue {spec.queue}")


@click.command("run-now")
@click.argument("schedule_id")
@json_option
@pass_cli
def run_now_command(cli, schedule_id):
    """Enqueue a schedule's job once, now, leaving its planned fires as they are."""
    schedule = read_schedule(cli, schedule_id)
    _enqueue_now(cli, schedule_id, lambda enqueuer, builder, now: run_now(enqueuer, builder, schedule, now),
                 schedule_id=schedule_id)


@click.command("queue-task-now")
@click.argument("task_id")
@json_option
@pass_cli
def queue_task_now(cli, task_id):
    """Enqueue a BTU Task's job once, now, through the configured job builder (no schedule)."""
    reader = ScheduleReader(cli.config)
    try:
        task = next((t for t in reader.tasks() if t["task"] == task_id), None)
    except Exception as e:
        fail(f"cannot read tasks from {reader.description}: {e}")
    if task is None:
        fail(f"no BTU Task {task_id!r} in {reader.description}")
    _enqueue_now(cli, f"task {task_id}", lambda enqueuer, builder, now: run_task_now(enqueuer, builder, task, now),
                 task=task_id)


COMMANDS = [list_jobs, show_job, queue_job_now, run_now_command, queue_task_now]
