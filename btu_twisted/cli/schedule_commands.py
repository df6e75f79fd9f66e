# -*- test-case-name: tests.test_cockpit -*-
"""Commands about schedules, read from Redis, RQ and the schedule source (no daemon needed)."""

from __future__ import annotations

import click

from btu_twisted.cli import output
from btu_twisted.cli.context import json_option, pass_cli
from btu_twisted.cli.reading import cli_builder, fail, read_schedule, read_schedules, with_redis
from btu_twisted.report import outcomes, overview, snapshot
from btu_twisted.report.connections import ScheduleReader

NEXT_FIRES_SHOWN = 5
LAST_FIRES_SHOWN = 5


@click.command("show-scheduled")
@json_option
@pass_cli
def show_scheduled(cli):
    """Every schedule with its next fire (local and UTC), zone, task, function, queue and last run."""
    now = cli.now()
    data = snapshot.gather(cli.config, now)
    if cli.as_json:
        output.emit_json(data["schedules"])
    else:
        rows = []
        for s in data["schedules"]:
            last = s["last"] or {}
            rows.append([s["schedule_id"], output.local(s["next_unix"], s["zone"]), output.utc(s["next_unix"]),
                         output.left(s["next_unix"], now), s["zone"], s["task"], s["function"], s["queue"],
                         output.ago(last.get("at"), now), last.get("status"),
                         "" if s["problem"] is None else s["problem"]])
        click.echo(output.table(["SCHEDULE", "NEXT (LOCAL)", "NEXT (UTC)", "LEFT", "ZONE", "TASK",
                                 "FUNCTION", "QUEUE", "LAST", "STATUS", "NOTE"], rows, coloured=(9,)))
    broken = [name for name, part in data["health"].items() if not part["up"]]
    if broken:
        fail(" and ".join(f"{name} unreadable ({data['health'][name]['error']})" for name in broken))


@click.command()
@click.argument("count", type=click.IntRange(1, 1000), default=10)
@json_option
@pass_cli
def upcoming(cli, count):
    """The next COUNT planned fires, soonest first."""
    now = cli.now()
    fires = with_redis(cli, lambda r: overview.upcoming(r, count))
    rows = read_schedules(cli)
    builder = cli_builder(cli)
    items = []
    for schedule_id, when in fires:
        row = rows.get(schedule_id)
        items.append({"schedule_id": schedule_id, "at_unix": when, "at_utc": output.utc(when),
                      "zone": row.time_zone if row else "UTC",
                      "at_local": output.local(when, row.time_zone if row else "UTC"),
                      "task": row.task_id if row else None,
                      "function": row.function_string if row else None,
                      "queue": builder.queue_for(row) if row else None})
    if cli.as_json:
        output.emit_json(items)
        return
    click.echo(output.table(["NEXT (LOCAL)", "NEXT (UTC)", "LEFT", "SCHEDULE", "TASK", "FUNCTION", "QUEUE"],
                            [[i["at_local"], i["at_utc"], output.left(i["at_unix"], now), i["schedule_id"],
                              i["task"], i["function"], i["queue"]] for i in items]))


def _history_rows(fires: list[dict], zone: str, now: float) -> list[list]:
    return [[output.local(f["at"], zone), output.utc(f["at"]), output.ago(f["at"], now),
             output.span(f["late_secs"]),
             f["job_id"], f["queue"], f["status"], output.duration(f), output.outcome_text(f)]
            for f in fires]


HISTORY_HEADERS = ["FIRED FOR (LOCAL)", "UTC", "WHEN", "LATE", "JOB", "QUEUE", "STATUS", "DURATION",
                   "RESULT / ERROR"]


def explain_data(cli, schedule_id: str) -> dict:
    """Everything about one schedule (the data of `show`)."""
    now = cli.now()
    schedule = read_schedule(cli, schedule_id)
    builder = cli_builder(cli)
    planned = with_redis(cli, overview.planned_members).get(schedule_id)
    fires = with_redis(cli, lambda r: outcomes.fires(r, schedule_id, LAST_FIRES_SHOWN))
    data = overview.describe(schedule, builder.queue_for(schedule), planned, now)
    data["next_fires"] = [{"local": f.local.strftime("%Y-%m-%d %H:%M:%S %Z"), "local_iso": f.local.isoformat(),
                           "utc": output.utc(f.utc.timestamp()), "unix": int(f.utc.timestamp()), "note": f.note}
                          for f in overview.next_fires(schedule, now, NEXT_FIRES_SHOWN)]
    data["last_fires"] = fires
    data["job_builder"] = cli.config.job_builder
    return data


@click.command()
@click.argument("schedule_id")
@json_option
@pass_cli
def show(cli, schedule_id):
    """Everything about one schedule: cron, zone and its source, next fires, last fires, problems."""
    now = cli.now()
    data = explain_data(cli, schedule_id)
    if cli.as_json:
        output.emit_json(data)
        return
    state = output.styled("OK") if data["enabled"] else click.style("disabled", fg="yellow")
    click.echo(output.fields([
        ("schedule", f"{data['schedule_id']}  {state}"),
        ("task", f"{data['task']}  {data['description']}".rstrip()),
        ("function", data["function"]),
        ("queue", data["queue"]),
        ("builder", data["job_builder"]),
        ("cron", data["cron"]),
        ("zone", f"{data['zone']} (from {data['zone_source']})"),
        ("planned", "-" if data["next_unix"] is None else
         f"{output.local(data['next_unix'], data['zone'])}  {output.utc(data['next_unix'])}  "
         f"{output.left(data['next_unix'], now)}"),
    ]))
    if data["problem"]:
        click.echo(f"why not planned: {click.style(data['problem'], fg='yellow')}")
    click.echo("\nnext fires:")
    click.echo(output.table(["LOCAL", "UTC", "LEFT", "NOTE"],
                            [[f["local"], f["utc"], output.left(f["unix"], now), f["note"] or ""]
                             for f in data["next_fires"]]) if data["next_fires"] else "  none")
    click.echo("\nlast fires:")
    click.echo(output.table(HISTORY_HEADERS, _history_rows(data["last_fires"], data["zone"], now), coloured=(6,))
               if data["last_fires"] else "  none recorded")


show_alias = click.Command("explain", callback=show.callback, params=show.params,
                           help="Same as `show`.")


@click.command()
@click.argument("schedule_id")
@click.argument("count", type=click.IntRange(1, 50), default=10)
@json_option
@pass_cli
def history(cli, schedule_id, count):
    """The last COUNT fires of a schedule with their RQ job status, duration, result or error."""
    now = cli.now()
    row = read_schedules(cli).get(schedule_id)
    fires = with_redis(cli, lambda r: outcomes.fires(r, schedule_id, count))
    if row is None and not fires:
        fail(f"no BTU Task Schedule {schedule_id!r} and no fire history for it")
    if cli.as_json:
        output.emit_json(fires)
        return
    zone = row.time_zone if row else "UTC"
    click.echo(output.table(HISTORY_HEADERS, _history_rows(fires, zone, now), coloured=(6,))
               if fires else f"{schedule_id} has no recorded fires yet")


@click.command("list-tasks")
@json_option
@pass_cli
def list_tasks(cli):
    """Every BTU Task: function, queue and timeout."""
    try:
        tasks = ScheduleReader(cli.config).tasks()
    except Exception as e:
        fail(f"cannot read tasks from {ScheduleReader(cli.config).description}: {e}")
    if cli.as_json:
        output.emit_json(tasks)
        return
    click.echo(output.table(["TASK", "DESCRIPTION", "FUNCTION", "QUEUE", "TIMEOUT"],
                            [[t["task"], t["description"], t["function"], t["queue"],
                              None if t["timeout_secs"] is None else f"{t['timeout_secs']} s"] for t in tasks]))


COMMANDS = [show_scheduled, upcoming, show, show_alias, history, list_tasks]
