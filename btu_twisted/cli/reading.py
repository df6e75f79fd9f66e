# -*- test-case-name: tests.test_cockpit -*-
"""Reading for the CLI commands: schedules and Redis, with failures turned into clear exits."""

from __future__ import annotations

import click

from btu_twisted.config import redact_url
from btu_twisted.report.connections import ScheduleReader, redis_client


def fail(message: str):
    """Stop the command: the message on stderr, exit status 1."""
    raise click.ClickException(message)


def read_schedules(cli) -> dict:
    """{schedule_id: Schedule} of every schedule in the configured source."""
    reader = ScheduleReader(cli.config)
    try:
        return reader.schedules()
    except Exception as e:
        fail(f"cannot read schedules from {reader.description}: {e}")


def read_schedule(cli, schedule_id: str):
    """One schedule; an unknown ID or an unreadable source exits 1."""
    reader = ScheduleReader(cli.config)
    try:
        schedule = reader.schedule(schedule_id)
    except Exception as e:
        fail(f"cannot read schedules from {reader.description}: {e}")
    if schedule is None:
        fail(f"no BTU Task Schedule {schedule_id!r} in {reader.description}")
    return schedule


def with_redis(cli, action):
    """`action(connection)` on a fresh redis-py client; a Redis error exits 1 naming the server."""
    connection = redis_client(cli.config)
    try:
        return action(connection)
    except click.ClickException:
        raise
    except Exception as e:
        fail(f"cannot read Redis at {redact_url(cli.config.effective_redis_url)}: {e}")
    finally:
        connection.close()


def cli_builder(cli):
    """The job builder the daemon uses on this site (as a synchronous one); errors exit 1."""
    reader = ScheduleReader(cli.config)
    try:
        return reader.builder()
    except Exception as e:
        fail(f"cannot make the {cli.config.job_builder} job builder for {reader.description}: {e}")
