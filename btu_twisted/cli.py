# -*- test-case-name: tests.test_cli -*-
"""`btu-ctl`: talk to a running daemon over its socket, and preview cron fire times offline."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

import click

from btu_twisted import config as configuration
from btu_twisted import cron

CLIENT_TIMEOUT_SECS = 10.0
MAX_REPLY_BYTES = 1 << 20


def exchange(socket_path: str, payload: dict, timeout: float = CLIENT_TIMEOUT_SECS) -> bytes:
    """Send one JSON request and read the raw reply until the daemon closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(json.dumps(payload).encode("utf-8"))
        chunks = []
        while sum(map(len, chunks)) < MAX_REPLY_BYTES:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def request(socket_path: str, request_type: str, content=None) -> str:
    """Send one request the way the BTU app does and return the daemon's text reply."""
    reply = exchange(socket_path, {"request_type": request_type, "request_content": content})
    return reply.decode("utf-8", "replace")


def _default_socket() -> str:
    try:
        loaded, _ = configuration.load(configuration.config_path(None))
        return loaded.socket_path
    except configuration.ConfigError:
        return configuration.Config.socket_path


@click.group()
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="daemon socket (default: socket_path of the configuration file)")
@click.pass_context
def main(ctx, socket_path):
    """Control a running btu_twisted daemon."""
    ctx.obj = socket_path


def _send(ctx, request_type: str, content=None) -> None:
    path = ctx.obj or _default_socket()
    try:
        reply = request(path, request_type, content)
    except OSError as e:
        raise click.ClickException(f"cannot talk to the daemon at {path}: {e}") from None
    if reply.startswith(("[", "{")):
        reply = json.dumps(json.loads(reply), indent=2, sort_keys=True)
    click.echo(reply)
    if reply.startswith("Error:"):
        ctx.exit(1)


@main.command()
@click.pass_context
def ping(ctx):
    """Check that the daemon answers."""
    _send(ctx, "ping")


@main.command()
@click.pass_context
def status(ctx):
    """Show the daemon's status (JSON)."""
    _send(ctx, "status")


@main.command()
@click.argument("count", type=int, default=10)
@click.pass_context
def upcoming(ctx, count):
    """List the next COUNT planned fires."""
    _send(ctx, "upcoming", count)


@main.command()
@click.argument("schedule_id")
@click.pass_context
def create(ctx, schedule_id):
    """Re-plan one BTU Task Schedule (what the BTU app sends on save)."""
    _send(ctx, "create_task_schedule", schedule_id)


@main.command()
@click.argument("schedule_id")
@click.pass_context
def cancel(ctx, schedule_id):
    """Remove one BTU Task Schedule's planned fire."""
    _send(ctx, "cancel_task_schedule", schedule_id)


@main.command()
@click.pass_context
def reload(ctx):
    """Start a full refresh from the database."""
    _send(ctx, "reload")


@main.command()
@click.argument("expression")
@click.option("--zone", default="UTC", show_default=True, help="IANA time zone of the cron string")
@click.option("--count", default=10, show_default=True, help="how many fires to show")
@click.option("--after", default=None, help="start instant, ISO 8601 (default: now)")
def preview(expression, zone, count, after):
    """Print the next fires of EXPRESSION in ZONE, local and UTC, marking DST neighbours.

    Runs locally: no daemon needed.
    """
    try:
        start = datetime.fromisoformat(after) if after else datetime.now(timezone.utc)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 instant: {after!r}", param_hint="--after") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    try:
        fires = cron.preview(expression, zone, start, count)
    except cron.CronError as e:
        raise click.ClickException(str(e)) from None
    for fire in fires:
        note = f"  <- {fire.note}" if fire.note else ""
        click.echo(f"{fire.local:%Y-%m-%d %H:%M:%S %Z%z}  {fire.utc:%Y-%m-%dT%H:%M:%SZ}{note}")
