# -*- test-case-name: tests.test_config_sources -*-
"""Settings from outside the configuration file: `BTU_SCHEDULER_<KEY>` variables, and the names
btu_scheduler_py uses for the same settings, so its deployments switch by changing the command only.

Precedence, highest first: `BTU_SCHEDULER_<KEY>`, a btu_scheduler_py name in the environment
(`SQL_HOST`), a key of our own in the file (`mysql_host`), a btu_scheduler_py name in the file
(`sql_host`), the default. This module only gathers the raw values and where each came from;
config.py types and checks them like file values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

ENV_PREFIX = "BTU_SCHEDULER_"
CONFIG_VARIABLE = "BTU_SCHEDULER_CONFIG"  # the file's path (config.config_path), not a key
EMAIL_PREFIX = "email_"  # the Rust daemon's email keys: accepted, email is not implemented

# btu_scheduler_py's settings that have no meaning here, and why (a warning says so).
IGNORED = {
    "disable_tcp_socket": "the TCP listener is off unless tcp_socket_port is set",
    "sql_type": "MariaDB is the only database (a value other than mariadb is an error)",
    "sql_schema": "a PostgreSQL setting",
    "jobs_site_prefix": ("RQ job ids are deterministic: btu-<schedule>-<unix seconds>, with the site "
                         "(btu-<site>-...) when one daemon serves several sites of a bench"),
    "slack_webhook_url": "Slack messages are not implemented",
}
# btu_scheduler_py's configuration keys (btu_py/lib/config.py) -> our key, or None for IGNORED ones.
# The environment spells them in upper case (SQL_HOST).
PY_KEYS: dict[str, str | None] = {
    "sql_host": "mysql_host",
    "sql_port": "mysql_port",
    "sql_database": "mysql_database",
    "sql_user": "mysql_user",
    "sql_password": "mysql_password",
    "disable_redis_rpc": "disable_redis_rpc",
    "disable_unix_socket": "disable_unix_socket",
    "tcp_socket_port": "tcp_socket_port",
    **dict.fromkeys(IGNORED),
}
BOOLEAN_WORDS = {"true": True, "1": True, "yes": True, "on": True,
                 "false": False, "0": False, "no": False, "off": False}


@dataclass
class Layers:
    """The settings found outside the file's own keys: {key: (raw value, origin, name)}, and warnings."""

    settings: dict[str, tuple[Any, str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def layers(file_aliases: Mapping[str, Any], environ: Mapping[str, str], keys: set[str]) -> Layers:
    """Gather btu_scheduler_py names (file, then environment) and BTU_SCHEDULER_* over them.

    Raises ValueError for a btu_scheduler_py setting this daemon cannot honour (sql_type postgres).
    """
    found = Layers()
    disable_tcp = False
    for alias, value in file_aliases.items():
        disable_tcp |= _alias(found, alias, value, f"alias {alias} (file)", alias)
    for alias in PY_KEYS:
        text = environ.get(alias.upper(), "")
        if text.strip():
            disable_tcp |= _alias(found, alias, text, f"alias {alias.upper()} (environment)",
                                  alias.upper())
    for variable, text in sorted(environ.items()):
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_VARIABLE or not text.strip():
            continue  # an empty variable counts as unset, as containers often pass them
        key = variable[len(ENV_PREFIX):].lower()
        if key in keys:
            found.settings[key] = (text, f"environment {variable}", variable)
        elif not key.startswith(EMAIL_PREFIX):
            found.warnings.append(f"unknown environment variable {variable} ignored")
    port = found.settings.get("tcp_socket_port")
    if disable_tcp and port and not port[1].startswith("environment"):
        del found.settings["tcp_socket_port"]
        found.warnings.append("tcp_socket_port ignored: btu_scheduler_py's disable_tcp_socket is true")
    return found


def _alias(found: Layers, alias: str, value: Any, origin: str, name: str) -> bool:
    """Record one btu_scheduler_py setting; returns True when it is a true disable_tcp_socket."""
    target = PY_KEYS[alias]
    if alias == "sql_type" and str(value).strip().lower() != "mariadb":
        raise ValueError(f"{name}: {value!r} is not supported; btu_twisted reads the Frappe MariaDB "
                         "database (sql_type = \"mariadb\")")
    value = py_value(alias, value)
    if target is None:
        if alias == "disable_tcp_socket":
            return value is True or BOOLEAN_WORDS.get(str(value).strip().lower(), False)
        if alias != "sql_type":
            found.warnings.append(f"{name} ignored: {IGNORED[alias]}")
        return False
    found.settings[target] = (value, origin, name)
    return False


def py_value(name: str, value: Any) -> Any:
    """btu_scheduler_py accepts 0/1 for its disable_* switches; make them the booleans we expect."""
    if name.startswith("disable_") and isinstance(value, int) and not isinstance(value, bool):
        return bool(value)
    return value


def describe(origins: Mapping[str, str]) -> str:
    """One line for the start-up log: where each non-default setting came from (never a value)."""
    return ", ".join(f"{key} from {origin}" for key, origin in sorted(origins.items())) or "all defaults"
