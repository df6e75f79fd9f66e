# -*- test-case-name: tests.test_config -*-
"""Load the daemon's TOML configuration: the Rust daemon's keys, plus documented additive ones.

Every key has a type and a default; a bad value raises ConfigError naming the key, an unknown key
is returned as a warning (never fatal), and secrets never appear in repr() or errors.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

DEFAULT_CONFIG_PATH = "/etc/btu_scheduler/btu_scheduler.toml"
CONFIG_ENV_VAR = "BTU_SCHEDULER_CONFIG"
EMBEDDED_CONFIG = Path(__file__).parent / "data" / "embedded.toml"

SECRET_KEYS = frozenset({"mysql_password", "webserver_token", "email_account_password", "redis_url"})
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")
JOB_BUILDERS = ("frappe", "python")


class ConfigError(Exception):
    """The configuration file is missing or one of its values is unusable."""


def _secret(default: Any = None) -> Any:
    return field(default=default, repr=False)


@dataclass(frozen=True)
class Config:
    """Typed settings; the first block is the Rust daemon's set, with its meanings."""

    # --- Rust btu_scheduler_daemon keys -------------------------------------------------------
    name: str = "BTU Scheduler Daemon"
    environment_name: str = "DEV"
    full_refresh_internal_secs: int = 900
    scheduler_polling_interval: int = 60
    time_zone_string: str = "UTC"
    tracing_level: str = "INFO"
    startup_without_database_connections: bool = False
    mysql_user: str | None = None
    mysql_password: str | None = _secret()
    mysql_host: str = "127.0.0.1"
    mysql_port: int = 3306
    mysql_database: str | None = None
    rq_host: str = "127.0.0.1"
    rq_port: int = 6379
    socket_path: str = "/tmp/btu_scheduler.sock"
    socket_file_group_owner: str | None = None
    webserver_ip: str = "127.0.0.1"
    webserver_port: int = 8000
    webserver_host_header: str | None = None
    webserver_token: str | None = _secret()
    # --- additive keys ------------------------------------------------------------------------
    redis_url: str | None = _secret()
    mysql_unix_socket: str | None = None
    schedule_file: str | None = None
    job_builder: str = "frappe"
    frappe_site: str | None = None
    frappe_user: str = "Administrator"
    queue_name_template: str = "{queue_name}"
    misfire_grace_secs: int = 300
    refresh_batch_size: int = 500
    socket_mode: int = 0o660
    socket_max_request_bytes: int = 65536
    socket_idle_timeout_secs: float = 10.0
    socket_max_connections: int = 4096
    socket_allowed_uids: tuple[int, ...] = ()
    socket_allowed_gids: tuple[int, ...] = ()
    # --- clocks (issue 10) --------------------------------------------------------------------
    max_clock_skew_secs: float = 2.0  # host clock vs Redis TIME beyond this: warned, shown in status

    @property
    def effective_redis_url(self) -> str:
        """`redis_url` when set, else the Rust daemon's `rq_host`/`rq_port` pair."""
        return self.redis_url or f"redis://{quote(self.rq_host)}:{self.rq_port}/0"

    @property
    def effective_frappe_site(self) -> str | None:
        """The Frappe site jobs run on: `frappe_site`, else the Rust config's `webserver_host_header`."""
        return self.frappe_site or self.webserver_host_header

    @property
    def uses_sql(self) -> bool:
        """True when schedules come from MariaDB rather than a schedule file."""
        return self.schedule_file is None

    def redacted(self) -> dict[str, Any]:
        """All settings as a dict, secrets replaced by '***' (for status output and logs)."""
        out = dataclasses.asdict(self)
        for key in SECRET_KEYS:
            if out.get(key) is not None:
                out[key] = "***"
        return out


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
_EMAIL_PREFIX = "email_"


def _expect(key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    # bool is an int subclass: reject True where a number is expected and 1 where a bool is.
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{key}: expected {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ConfigError(f"{key}: expected {_kind_name(kind)}, got {type(value).__name__} {_show(key, value)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _show(key: str, value: Any) -> str:
    return "(hidden)" if key in SECRET_KEYS else repr(value)


def _coerce(key: str, value: Any) -> Any:
    """Check one raw TOML value against the field's type and bounds, returning the typed value."""
    if key in ("socket_allowed_uids", "socket_allowed_gids"):
        _expect(key, value, list)
        return tuple(_expect(key, v, int) for v in value)
    if key == "socket_mode":
        if isinstance(value, str):
            try:
                value = int(value, 8)
            except ValueError:
                raise ConfigError(f"socket_mode: expected an octal string like \"0660\", got {value!r}") from None
        _expect(key, value, int)
        if not 0 <= value <= 0o777:
            raise ConfigError(f"socket_mode: {oct(value)} is not a file mode")
        return value
    default = _FIELDS[key].default
    if isinstance(default, bool):
        return _expect(key, value, bool)
    if isinstance(default, float):
        return float(_expect(key, value, (int, float)))
    if isinstance(default, int):
        return _expect(key, value, int)
    return _expect(key, value, str)


_POSITIVE = ("full_refresh_internal_secs", "scheduler_polling_interval", "refresh_batch_size",
             "socket_max_request_bytes", "socket_idle_timeout_secs", "socket_max_connections")


def _validate(config: Config) -> None:
    """Cross-field and range checks that a single value's type cannot express."""
    for key in _POSITIVE:
        if getattr(config, key) <= 0:
            raise ConfigError(f"{key}: must be greater than zero, got {getattr(config, key)}")
    if config.misfire_grace_secs < 0:
        raise ConfigError(f"misfire_grace_secs: must not be negative, got {config.misfire_grace_secs}")
    for key in ("mysql_port", "rq_port", "webserver_port"):
        if not 0 < getattr(config, key) < 65536:
            raise ConfigError(f"{key}: {getattr(config, key)} is not a TCP port")
    if config.tracing_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"tracing_level: {config.tracing_level!r} is not one of {', '.join(LOG_LEVELS)}")
    if config.job_builder not in JOB_BUILDERS:
        raise ConfigError(f"job_builder: {config.job_builder!r} is not one of {', '.join(JOB_BUILDERS)}")
    if "{queue_name}" not in config.queue_name_template:
        raise ConfigError("queue_name_template: must contain {queue_name}, got "
                          f"{config.queue_name_template!r}")
    try:  # jobs format it with queue_name only: another placeholder would fail every dispatch
        config.queue_name_template.format(queue_name="default")
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ConfigError(f"queue_name_template: {config.queue_name_template!r} cannot be formatted "
                          f"with {{queue_name}} alone ({type(e).__name__}: {e}); write a literal brace "
                          "as {{ or }}") from None
    if config.redis_url is not None and not config.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis_url: must start with redis://, rediss:// or unix://")
    if config.job_builder == "frappe" and not config.effective_frappe_site:
        raise ConfigError("frappe_site: required when job_builder is 'frappe' (the Frappe site name, "
                          "e.g. \"erp.example.com\"); webserver_host_header is used when it is absent")
    if config.uses_sql:
        for key in ("mysql_user", "mysql_database"):
            if not getattr(config, key):
                raise ConfigError(f"{key}: required unless schedule_file is set")
    _check_zone(config.time_zone_string)
    _validate_clocks(config)


def _validate_clocks(config: Config) -> None:
    """The skew bound must be positive: zero would call every host clock wrong."""
    if config.max_clock_skew_secs <= 0:
        raise ConfigError(f"max_clock_skew_secs: must be greater than zero, got {config.max_clock_skew_secs}")


def _check_zone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"time_zone_string: {name!r} is not a known IANA time zone") from None


def parse(text: str, base_dir: Path | None = None) -> tuple[Config, list[str]]:
    """Parse TOML text into a Config; returns it with warnings (unknown keys, ignored email keys)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in raw.items():
        if key in _FIELDS:
            values[key] = _coerce(key, value)
        elif key.startswith(_EMAIL_PREFIX):
            continue  # Rust-compatible email keys: accepted, email is not implemented.
        else:
            warnings.append(f"unknown configuration key {key!r} ignored")
    if values.get("schedule_file") and base_dir is not None:
        values["schedule_file"] = str((base_dir / values["schedule_file"]).resolve())
    config = Config(**values)
    _validate(config)
    return config, warnings


def replace(config: Config, **changes: Any) -> Config:
    """A copy of `config` with command-line overrides applied and checked like file values."""
    config = dataclasses.replace(config, **{key: _coerce(key, value) for key, value in changes.items()})
    _validate(config)
    return config


def config_path(explicit: str | None) -> Path:
    """The file to read: --config, else $BTU_SCHEDULER_CONFIG, else the Rust daemon's default path."""
    return Path(explicit or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def load(path: Path) -> tuple[Config, list[str]]:
    """Read and parse the file at `path`; a missing or unreadable file is a ConfigError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"configuration file {path} cannot be read: {e}") from None
    try:
        config, warnings = parse(text, base_dir=path.parent)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if _readable_by_others(path) and _has_secrets(config):
        warnings.append(f"{path} holds passwords or tokens and is readable by other users; "
                        f"run: chmod o-rwx {path}")
    return config, warnings


def _readable_by_others(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IROTH)


def _has_secrets(config: Config) -> bool:
    return any(getattr(config, key) for key in ("mysql_password", "webserver_token")) or bool(
        config.redis_url and ("@" in config.redis_url or "password=" in config.redis_url))


SAMPLE_CONFIG = """\
# /etc/btu_scheduler/btu_scheduler.toml -- the Rust btu_scheduler_daemon's format
name = "BTU Scheduler Daemon"
environment_name = "PROD"
full_refresh_internal_secs = 900
scheduler_polling_interval = 60
time_zone_string = "America/New_York"
tracing_level = "INFO"
startup_without_database_connections = true

mysql_user = "frappe_db_user"
mysql_password = "secret"
mysql_host = "127.0.0.1"
mysql_port = 3306
mysql_database = "_0123456789abcdef"

rq_host = "127.0.0.1"
rq_port = 11000

socket_path = "/tmp/btu_scheduler.sock"
socket_file_group_owner = "frappe"

webserver_ip = "127.0.0.1"
webserver_port = 8000
webserver_host_header = "erp.example.com"
webserver_token = "token abc:def"

# btu_twisted additions (all optional)
frappe_site = "erp.example.com"
queue_name_template = "{queue_name}"   # Frappe v14+: "<bench_id>:{queue_name}"
misfire_grace_secs = 300
"""
