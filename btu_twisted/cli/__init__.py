# -*- test-case-name: tests.test_cockpit -*-
"""`btu` (alias `btu-ctl`): the operator's command line.

Commands that need the daemon talk to its socket; the others read Redis, RQ and the schedule
source themselves (so `show-scheduled` works while the daemon is down). Human tables by default,
`--json` for scripts; the exit status is non-zero on every failure.
"""

from __future__ import annotations

import click

from btu_twisted import __version__
from btu_twisted.cli.context import Cli
from btu_twisted.cli.socket_client import exchange, request

__all__ = ["main", "exchange", "request"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", default=None, metavar="PATH",
              help="configuration file (default: $BTU_SCHEDULER_CONFIG, else "
                   "/etc/btu_scheduler/btu_scheduler.toml)")
@click.option("--socket", "socket_path", default=None, metavar="PATH",
              help="daemon socket (default: socket_path of the configuration)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of tables")
@click.version_option(__version__, prog_name="btu")
@click.pass_context
def main(ctx, config_path, socket_path, as_json):
    """Operate the BTU scheduler: what is planned, what ran and how it ended, and why."""
    ctx.obj = Cli(config_path, socket_path, as_json)


def _register() -> None:
    from btu_twisted.cli import check_commands, daemon_commands, job_commands, schedule_commands

    for module in (daemon_commands, schedule_commands, job_commands, check_commands):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
