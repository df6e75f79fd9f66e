# -*- test-case-name: tests.test_cockpit -*-
"""Commands that check things: doctor, print-config, the Frappe endpoints, and the offline preview."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timezone

import click

from btu_twisted import cron
from btu_twisted.cli import output
from btu_twisted.cli.context import json_option, pass_cli
from btu_twisted.cli.doctor import run_checks
from btu_twisted.cli.reading import fail

WEB_TIMEOUT_SECS = 10
PING_PATH = "/api/method/btu.btu_api.endpoints.test_ping"
PICKLER_PATH = "/api/method/btu.btu_api.endpoints.test_function_ping_now_bytes"
PICKLE_PROTOCOL_MARK = 0x80  # first byte of every pickle of protocol 2 or later
EXIT_BY_VERDICT = {"OK": 0, "WARN": 1, "FAIL": 2}


@click.command()
@json_option
@pass_cli
def doctor(cli):
    """Check every precondition of a working scheduler; exit 0 (all OK), 1 (a WARN) or 2 (a FAIL)."""
    checks = run_checks(cli)
    worst = max((c["verdict"] for c in checks), key=EXIT_BY_VERDICT.get, default="OK")
    if cli.as_json:
        output.emit_json({"verdict": worst, "checks": checks})
    else:
        for check in checks:
            hint = f"  -> {check['hint']}" if check["hint"] else ""
            verdict = check["verdict"]
            click.echo(f"{output.styled(verdict)}{' ' * (4 - len(verdict))}  {check['check']}: "
                       f"{check['detail']}{hint}")
    raise SystemExit(EXIT_BY_VERDICT[worst])


@click.command("print-config")
@json_option
@pass_cli
def print_config(cli):
    """The effective configuration, every secret masked."""
    values = cli.config.redacted()
    if cli.as_json:
        output.emit_json({"config_path": str(cli.config_path), "values": values})
        return
    click.echo(f"# {cli.config_path}")
    for key, value in values.items():
        if value is not None:
            click.echo(f"{key} = {json.dumps(list(value) if isinstance(value, tuple) else value)}")


def _web_get(config, path: str) -> tuple[int, bytes]:
    scheme = "https" if config.webserver_port == 443 else "http"
    request = urllib.request.Request(f"{scheme}://{config.webserver_ip}:{config.webserver_port}{path}")
    if config.webserver_token:
        request.add_header("Authorization", config.webserver_token)
    if config.webserver_host_header:
        request.add_header("Host", config.webserver_host_header)
    try:
        with urllib.request.urlopen(request, timeout=WEB_TIMEOUT_SECS) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        fail(f"cannot reach the Frappe web server at {request.full_url}: {getattr(e, 'reason', e)} "
             "(check webserver_ip, webserver_port)")


def _message(status: int, body: bytes, what: str):
    try:
        message = json.loads(body)["message"]
    except (ValueError, KeyError, TypeError):
        fail(f"{what}: HTTP {status}, not a Frappe reply: {body[:200]!r}")
    if status != 200:
        fail(f"{what}: HTTP {status}: {message} (check webserver_token and webserver_host_header)")
    return message


@click.command("test-ping")
@json_option
@pass_cli
def test_ping(cli):
    """Call the Frappe web server's BTU test_ping endpoint."""
    message = _message(*_web_get(cli.config, PING_PATH), "test_ping")
    if cli.as_json:
        output.emit_json({"message": message})
    else:
        click.echo(f"Frappe answered: {message}")


@click.command("test-pickler")
@json_option
@pass_cli
def test_pickler(cli):
    """Call the endpoint that returns a pickled function (what the btu-web builder fetches)."""
    message = _message(*_web_get(cli.config, PICKLER_PATH), "test_function_ping_now_bytes")
    if not isinstance(message, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in message):
        fail(f"test_function_ping_now_bytes: expected a list of byte values, got {str(message)[:200]}")
    data = bytes(message)
    pickled = bool(data) and data[0] == PICKLE_PROTOCOL_MARK
    if cli.as_json:
        output.emit_json({"bytes": len(data), "pickle": pickled})
    else:
        click.echo(f"received {len(data)} bytes, {'a pickle' if pickled else 'NOT a pickle'}")
    if not pickled:
        raise SystemExit(1)


@click.command()
@click.argument("expression")
@click.option("--zone", default="UTC", show_default=True, help="IANA time zone of the cron string")
@click.option("--count", default=10, show_default=True, type=click.IntRange(1, 1000), help="how many fires to show")
@click.option("--after", default=None, help="start instant, ISO 8601 (default: now)")
@json_option
@pass_cli
def preview(cli, expression, zone, count, after):
    """Print the next fires of EXPRESSION in ZONE, local and UTC, marking DST neighbours (no daemon needed)."""
    try:
        start = datetime.fromisoformat(after) if after else datetime.fromtimestamp(cli.now(), timezone.utc)
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 instant: {after!r}", param_hint="--after") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    try:
        fires = cron.preview(expression, zone, start, count)
    except cron.CronError as e:
        fail(str(e))
    if cli.as_json:
        output.emit_json([{"local": f.local.isoformat(), "utc": output.utc(f.utc.timestamp()), "note": f.note}
                          for f in fires])
        return
    for fire in fires:
        note = f"  <- {fire.note}" if fire.note else ""
        click.echo(f"{fire.local:%Y-%m-%d %H:%M:%S %Z%z}  {fire.utc:%Y-%m-%dT%H:%M:%SZ}{note}")


COMMANDS = [doctor, print_config, test_ping, test_pickler, preview]
