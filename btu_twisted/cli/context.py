# -*- test-case-name: tests.test_cockpit -*-
"""What every `btu` command shares: the configuration (read once, errors made clear), the socket
path, the output mode and the clock."""

from __future__ import annotations

import time
from functools import cached_property

import click

from btu_twisted import config as configuration


class Cli:
    """The state of one `btu` invocation (click's ctx.obj)."""

    def __init__(self, config_path: str | None, socket_path: str | None, as_json: bool, now=time.time):
        self._config_path = config_path
        self._socket_path = socket_path
        self.as_json = as_json
        self._now = now

    def now(self) -> float:
        return self._now()

    @cached_property
    def config_path(self):
        return configuration.config_path(self._config_path)

    @cached_property
    def config(self) -> configuration.Config:
        """The configuration; a missing or invalid file stops the command with exit 1 (no fallback)."""
        try:
            loaded, warnings = configuration.load(self.config_path)
        except configuration.ConfigError as e:
            raise click.ClickException(f"cannot use the configuration: {e} (choose a file with "
                                       f"--config or ${configuration.CONFIG_ENV_VAR})") from None
        for warning in warnings:
            click.echo(f"btu: warning: {self.config_path}: {warning}", err=True)
        if loaded.serves_bench:
            raise click.ClickException(
                f"{self.config_path} serves several sites of the bench {loaded.frappe_bench_path}; btu "
                "reads one site's layout: set frappe_site (e.g. BTU_SCHEDULER_FRAPPE_SITE=<site>) for a "
                "daemon that serves that site alone")
        return loaded

    @property
    def socket_path(self) -> str:
        """--socket, else the configuration's socket_path."""
        return self._socket_path or self.config.socket_path


pass_cli = click.make_pass_decorator(Cli)


def json_option(command):
    """`--json` on a command, same as `btu --json COMMAND`."""
    def enable(ctx, _param, value):
        if value:
            ctx.find_object(Cli).as_json = True
        return value
    return click.option("--json", "as_json", is_flag=True, expose_value=False, callback=enable,
                        help="print the same data as JSON")(command)
