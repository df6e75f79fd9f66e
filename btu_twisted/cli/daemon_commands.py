# -*- test-case-name: tests.test_cockpit -*-
"""Commands that talk to the running daemon: ping, create, cancel, reload and the status summary."""

from __future__ import annotations

import json

import click

from btu_twisted.cli import output
from btu_twisted.cli.context import json_option, pass_cli
from btu_twisted.cli.socket_client import request
from btu_twisted.commands import CANCELLED_REPLY
from btu_twisted.report import snapshot


def ask(cli, request_type: str, content=None) -> str:
    """The daemon's reply; an unreachable daemon or an `Error:` reply exits 1."""
    try:
        reply = request(cli.socket_path, request_type, content)
    except OSError as e:
        raise click.ClickException(f"cannot talk to the daemon at {cli.socket_path}: {e} "
                                   "(is it running? `systemctl status btu_scheduler`)") from None
    if reply.startswith("Error:"):
        raise click.ClickException(reply)
    return reply


def _say(cli, reply: str, ok: bool = True) -> None:
    if cli.as_json:
        output.emit_json({"reply": reply, "ok": ok})
    else:
        click.echo(reply)
    if not ok:
        raise SystemExit(1)


@click.command()
@json_option
@pass_cli
def ping(cli):
    """Check that the daemon answers."""
    _say(cli, ask(cli, "ping"))


@click.command()
@click.argument("schedule_id")
@json_option
@pass_cli
def create(cli, schedule_id):
    """Re-plan one BTU Task Schedule (what the BTU app sends on save)."""
    _say(cli, ask(cli, "create_task_schedule", schedule_id))


@click.command()
@click.argument("schedule_id")
@json_option
@pass_cli
def cancel(cli, schedule_id):
    """Remove one BTU Task Schedule's planned fire (exit 1 when it had none)."""
    reply = ask(cli, "cancel_task_schedule", schedule_id)
    _say(cli, reply, ok=reply == CANCELLED_REPLY.format(schedule_id=schedule_id))


@click.command()
@json_option
@pass_cli
def reload(cli):
    """Start a full refresh from the database."""
    _say(cli, ask(cli, "reload"))


def daemon_status(cli) -> tuple[dict | None, str | None]:
    """The daemon's own status report, or None and why it could not be had."""
    try:
        return json.loads(ask(cli, "status")), None
    except click.ClickException as e:
        return None, e.message


@click.command()
@json_option
@pass_cli
def status(cli):
    """Health, last refresh, counts, queues and what needs attention (exit 1 when unhealthy)."""
    daemon, error = daemon_status(cli)
    now = cli.now()
    data = {"daemon": daemon, "daemon_error": error, "socket_path": cli.socket_path,
            **snapshot.gather(cli.config, now)}
    if cli.as_json:
        output.emit_json(data)
    else:
        click.echo(render_status(data, now))
    healthy = daemon is not None and all(part["up"] for part in data["health"].values())
    if not healthy:
        raise SystemExit(1)


def _health(up: bool | None) -> str:
    return output.styled("OK" if up else "FAIL")


def render_status(data: dict, now: float) -> str:
    """The human summary of `status`."""
    daemon, health, counts = data["daemon"], data["health"], data["counts"]
    lines = []
    if daemon is None:
        lines.append(f"daemon    {_health(False)}  {data['daemon_error']}")
    else:
        lines.append(f"daemon    {_health(True)}  {daemon['name']} ({daemon['environment']}), "
                     f"btu_twisted {daemon['version']}, up {output.span(daemon['uptime_secs'])}, "
                     f"socket {data['socket_path']}")
    source = health["source"]
    lines.append(f"source    {_health(source['up'])}  {source['name']}"
                 + (f": {source['error']}" if source["error"] else ""))
    lines.append(f"redis     {_health(health['redis']['up'])}"
                 + (f"  {health['redis']['error']}" if health["redis"]["error"] else ""))
    refresh = daemon and daemon.get("last_refresh")
    if refresh:
        lines.append(f"refresh   {output.ago(refresh['at'], now)} ({output.utc(refresh['at'])}), "
                     f"took {refresh['seconds']:.3f} s")
    lines.append(f"schedules {counts['schedules']} in total: {counts['enabled']} enabled, "
                 f"{counts['planned']} planned, {counts['unplannable']} unplannable")
    chosen = daemon and daemon.get("job_builder")  # the daemon's choice (auto: from the schema)
    lines.append(f"builder   {chosen['kind']} ({chosen['reason']})" if chosen else f"builder   {data['job_builder']}")
    if daemon:
        shown = ", ".join(f"{key} {value}" for key, value in sorted(daemon["counts"].items())) or "none yet"
        lines.append(f"counts    {shown}")
    planned = [s for s in data["schedules"] if s["next_unix"] is not None]
    if planned:
        first = min(planned, key=lambda s: s["next_unix"])
        lines.append(f"next fire {first['schedule_id']} {output.left(first['next_unix'], now)}: "
                     f"{output.local(first['next_unix'], first['zone'])} ({output.utc(first['next_unix'])})")
    if data["queues"]:
        lines += ["", output.table(["QUEUE", "JOBS", "WORKERS", "FAILED"],
                                   [[q["queue"], q["jobs"], q["workers"], q["failed"]] for q in data["queues"]])]
    problems = [f"{s['schedule_id']} is not planned: {s['problem']}" for s in data["schedules"]
                if s["enabled"] and s["problem"]]
    warnings = data["warnings"] + problems
    if warnings:
        lines += ["", "warnings:"] + [f"  {click.style('!', fg='yellow')} {w}" for w in warnings]
    return "\n".join(lines)


COMMANDS = [ping, status, create, cancel, reload]
