# -*- test-case-name: tests.test_bench -*-
"""`twistd btu`: command-line options and `makeService`, which the plugin and btu.tac both call.

The daemon's modules are imported inside `makeService`, not here: `twistd` imports this module
and runs `Options.postOptions` before it installs the reactor, so what they import at module
level is decided after the options are known. postOptions closes the TLS gate (tls_gate.py)
when the configuration needs no TLS, then installs the monotonic reactor.
"""

from __future__ import annotations

import sys
from pathlib import Path

from twisted.python import usage

from btu_twisted import config as configuration
from btu_twisted import tls_gate


class Options(usage.Options):
    """Options of `twistd btu`; everything else comes from the TOML configuration file."""

    synopsis = ("[--config PATH | --embedded] [--bench PATH [--site NAME ...]] [--socket PATH] "
                "[--log-level LEVEL]")
    longdesc = ("BTU scheduler daemon: turns BTU Task Schedules (Frappe MariaDB or a schedule file) "
                "into Python RQ jobs at their cron times, exactly once. Drop-in for the Rust "
                "btu_scheduler_daemon: same config file, socket protocol and Redis keys.")
    optParameters = [
        ["config", "c", None, "configuration file (default: $BTU_SCHEDULER_CONFIG, else "
                              f"{configuration.DEFAULT_CONFIG_PATH})"],
        ["socket", "s", None, "control socket path (overrides socket_path)"],
        ["log-level", "l", None, "TRACE, DEBUG, INFO, WARN or ERROR (overrides tracing_level)"],
        ["bench", "b", None, "a Frappe bench directory: its sites/ files supply database, Redis and "
                             "queue names (overrides frappe_bench_path)"],
    ]
    optFlags = [["embedded", "e", "run on the embedded default: local Redis, example schedule file"],
                ["check-config", None, "validate the configuration, print what is wrong, exit (0: valid)"]]

    def __init__(self):
        super().__init__()
        self["sites"] = []

    def opt_site(self, name):
        """a site of the bench to serve, repeatable (default: every site with BTU's tables; one --site:
        that site alone, in the single-site key layout)"""
        self["sites"].append(name)

    def postOptions(self):
        """Load and check the configuration now, so a bad file stops twistd before it daemonizes."""
        path = configuration.EMBEDDED_CONFIG if self["embedded"] else configuration.config_path(self["config"])
        command_line = {}
        if self["bench"]:
            command_line["frappe_bench_path"] = self["bench"]
        if self["sites"]:
            command_line["frappe_sites"] = list(self["sites"])
        # With --bench and no config named anywhere, the bench alone is enough.
        optional = bool(self["bench"]) and not self["config"] and path == Path(configuration.DEFAULT_CONFIG_PATH)
        try:
            loaded, warnings = configuration.load(path, command_line=command_line, optional=optional)
        except configuration.BenchConfigError as e:
            sys.stderr.write(f"btu: {e}\n")
            raise SystemExit(1) from None
        except configuration.ConfigError as e:
            sys.stderr.write(f"btu: {e}\n\nA configuration file looks like this:\n\n"
                             f"{configuration.SAMPLE_CONFIG}")
            raise SystemExit(1) from None
        overrides = {}
        if self["socket"]:
            overrides["socket_path"] = self["socket"]
        if self["log-level"]:
            overrides["tracing_level"] = self["log-level"]
        try:
            self["loaded"] = configuration.replace(loaded, **overrides)
        except configuration.ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self["warnings"] = warnings
        self["config_path"] = str(path)
        tls_gate.close(self["loaded"])
        _install_reactor()
        if self["check-config"]:
            for warning in warnings:
                sys.stderr.write(f"btu: warning: {path}: {warning}\n")
            sys.stdout.write(f"btu: {path} is valid ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})\n")
            raise SystemExit(0)


def makeService(options, reactor=None):
    """The daemon's top service for parsed `options` (composed in btu_twisted.daemon)."""
    _install_reactor()  # an Options parsed outside twistd may not have
    from btu_twisted.daemon import make_service

    return make_service(options, reactor)


def _install_reactor() -> None:
    """The monotonic reactor, before any daemon module pulls in the default (wall-clock) one;
    imported here, not at module level, because the epoll reactor's modules try-import TLS."""
    from btu_twisted import monotonic_reactor

    monotonic_reactor.install()
