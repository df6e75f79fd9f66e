# -*- test-case-name: tests.test_config -*-
"""Load the daemon's TOML configuration: the Rust daemon's keys, plus documented additive ones.

Every key has a type and a default; a bad value raises ConfigError naming the key, an unknown key
is returned as a warning (never fatal), and secrets never appear in repr() or errors.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from btu_twisted import bench, environment

DEFAULT_CONFIG_PATH = "/etc/btu_scheduler/btu_scheduler.toml"
CONFIG_ENV_VAR = "BTU_SCHEDULER_CONFIG"
EMBEDDED_CONFIG = Path(__file__).parent / "data" / "embedded.toml"

SECRET_KEYS = frozenset({"mysql_password", "webserver_token", "email_account_password", "redis_url",
                         "http_token", "redis_sentinel_password", "redis_master_password"})
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL")
JOB_BUILDERS = ("auto", "btu", "btu-web", "frappe", "python")


class ConfigError(Exception):
    """The configuration file is missing or one of its values is unusable."""


class BenchConfigError(ConfigError):
    """A file of the Frappe bench named by frappe_bench_path is missing or unusable."""


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
    job_builder: str = "auto"
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
    # --- control channels (issue 8) ---
    disable_redis_rpc: bool = False    # the Redis RPC listener of BTU 15.1.1+ (DESIGN §6b)
    disable_unix_socket: bool = False  # the unix socket of BTU <= 15.1.0
    tcp_socket_port: int = 0           # a loopback TCP listener with the socket's protocol; 0 = off
    # --- operator's cockpit: HTTP dashboard and /metrics (issue 11) ---------------------------
    http_port: int | None = None          # off unless set; 0 picks a free port (logged)
    http_interface: str = "127.0.0.1"     # loopback: the dashboard is for the operator's machine
    http_token: str | None = _secret()    # Bearer token for actions (run now); none: read-only
    # --- bench discovery (issue 9) ---
    frappe_bench_path: str | None = None  # a Frappe bench whose files supply the unset keys (bench.py)
    frappe_sites: tuple[str, ...] = ()    # its sites to serve; default: every site (one: the Rust layout)
    # --- Redis connections: Sentinel, durable claims, TLS, ACL users (issue 12) --------------
    redis_sentinels: tuple[str, ...] = ()       # "host:port" of each Sentinel; empty: no Sentinel
    redis_sentinel_service: str = "mymaster"    # the master's name in the Sentinels
    redis_sentinel_username: str | None = None
    redis_sentinel_password: str | None = _secret()
    redis_master_username: str | None = None    # default: the user of redis_url
    redis_master_password: str | None = _secret()  # default: the password of redis_url
    redis_min_replicas: int = 0                 # replicas that must acknowledge each enqueue (WAIT)
    redis_min_replicas_timeout_secs: float = 0.5
    redis_tls_ca_file: str | None = None        # rediss://: CA of the server (default: the system's)
    redis_tls_cert_file: str | None = None      # client certificate, PEM
    redis_tls_key_file: str | None = None       # its key, PEM (default: in redis_tls_cert_file)
    redis_tls_verify_hostname: bool = True
    # --- clocks (issue 10) --------------------------------------------------------------------
    max_clock_skew_secs: float = 2.0  # host clock vs Redis TIME beyond this: warned, shown in status
    # --- where each setting came from (issue 8 item 7) ------------------------------------------
    # Not a key: {key: "file" | "environment BTU_SCHEDULER_X" | "alias ..." | "command line"};
    # keys absent from it have their default. Shown by the start-up log, never with values.
    origins: dict = field(default_factory=dict, compare=False, repr=False, metadata={"setting": False})
    # Not a key: several sites of the bench are served (set by bench discovery; sites/).
    serves_bench: bool = field(default=False, metadata={"setting": False})
    # Not a key: the bench's default site (currentsite.txt, else default_site), which keeps socket_path.
    bench_default_site: str | None = field(default=None, metadata={"setting": False})

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

    @property
    def schedule_source(self) -> str:
        """Where schedules come from, as `status`, the CLI and the start-up log name it."""
        return "MariaDB" if self.uses_sql else f"schedule file {self.schedule_file}"

    def redacted(self) -> dict[str, Any]:
        """All settings as a dict, secrets replaced by '***' (for status output and logs)."""
        out = dataclasses.asdict(self)
        out.pop("origins")
        for key in SECRET_KEYS:
            if out.get(key) is not None:
                out[key] = "***"
        return out


_FIELDS = {f.name: f for f in dataclasses.fields(Config) if f.metadata.get("setting", True)}
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
    if key in ("frappe_sites", "redis_sentinels"):
        _expect(key, value, list)
        return tuple(_expect(key, v, str) for v in value)
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
    if key == "http_port":  # an int whose default (None) means "off"
        return _expect(key, value, int)
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
    _validate_builders(config)
    if config.uses_sql and not config.serves_bench:  # several sites: each from its own files
        for key in ("mysql_user", "mysql_database"):
            if not getattr(config, key):
                raise ConfigError(f"{key}: required unless schedule_file is set")
    _check_zone(config.time_zone_string)
    _validate_control_channels(config)
    _validate_bench(config)
    _validate_redis_connections(config)
    _validate_http(config)
    _validate_clocks(config)


def _validate_control_channels(config: Config) -> None:
    if not 0 <= config.tcp_socket_port < 65536:
        raise ConfigError(f"tcp_socket_port: {config.tcp_socket_port} is not a TCP port (0 turns "
                          "the TCP listener off)")


def _validate_bench(config: Config) -> None:
    if any(not site.strip() for site in config.frappe_sites):
        raise ConfigError("frappe_sites: a site name is empty")
    if config.frappe_sites and not config.frappe_bench_path:
        raise ConfigError("frappe_sites: needs frappe_bench_path (the bench the sites belong to)")
    if config.serves_bench:
        if "mysql_database" in config.origins:
            raise ConfigError("mysql_database: names one database, but the daemon serves several sites "
                              "of the bench (each from its own site_config.json): drop it, or serve one "
                              "site with --site NAME / frappe_site")
        if not config.uses_sql:
            raise ConfigError("schedule_file: a daemon serving several sites reads each site's database")
        if config.http_port is not None:
            raise ConfigError("http_port: the dashboard serves one site; with several sites, serve "
                              "the one to watch with its own daemon (--site NAME) or leave http_port unset")


FRAPPE_SITE_HINT = ('set frappe_site = "<site name>" (the directory under sites/, e.g. "erp.example.com"; '
                    "webserver_host_header is used when it is absent)")


def _validate_builders(config: Config) -> None:
    """job_builder is known, and what the chosen builder needs is set (`auto` checks at run time)."""
    if config.job_builder not in JOB_BUILDERS:
        raise ConfigError(f"job_builder: {config.job_builder!r} is not one of {', '.join(JOB_BUILDERS)}")
    if config.job_builder in ("btu", "frappe") and not config.effective_frappe_site and not config.serves_bench:
        raise ConfigError(f"frappe_site: required when job_builder is {config.job_builder!r}: "
                          f"{FRAPPE_SITE_HINT}")
    if config.job_builder == "btu-web" and not config.webserver_token:
        raise ConfigError("webserver_token: required when job_builder is 'btu-web' (the Frappe API "
                          "token, \"token <api key>:<api secret>\")")


def _validate_http(config: Config) -> None:
    """The HTTP listener's port, interface and token."""
    if config.http_port is not None and not 0 <= config.http_port < 65536:
        raise ConfigError(f"http_port: {config.http_port} is not a TCP port (0 picks a free one)")
    if not config.http_interface.strip():
        raise ConfigError("http_interface: must be an address to listen on, e.g. \"127.0.0.1\"")
    if config.http_token is not None and (len(config.http_token) < 16 or any(c.isspace() for c in config.http_token)):
        raise ConfigError("http_token: must be at least 16 characters without spaces "
                          "(e.g. the output of `openssl rand -hex 16`)")


def _validate_redis_connections(config: Config) -> None:
    """Sentinel, replica and TLS settings: parsed as the connections will use them."""
    from btu_twisted.redis_settings import RedisSettingsError, settings_from

    if config.redis_min_replicas < 0:
        raise ConfigError(f"redis_min_replicas: must not be negative, got {config.redis_min_replicas}")
    if config.redis_min_replicas_timeout_secs <= 0:
        raise ConfigError("redis_min_replicas_timeout_secs: must be greater than zero, got "
                          f"{config.redis_min_replicas_timeout_secs}")
    if config.redis_sentinels and not config.redis_sentinel_service:
        raise ConfigError("redis_sentinel_service: required with redis_sentinels (the master's name)")
    if config.redis_sentinels and config.effective_redis_url.startswith(("rediss://", "unix://")):
        raise ConfigError("redis_sentinels: Sentinel is supported with redis:// only (not TLS or a "
                          "unix socket); redis_url then gives the credentials and db")
    tls_files = ("redis_tls_ca_file", "redis_tls_cert_file", "redis_tls_key_file")
    if any(getattr(config, key) for key in tls_files) and not config.effective_redis_url.startswith("rediss://"):
        raise ConfigError("redis_tls_ca_file/redis_tls_cert_file/redis_tls_key_file: TLS files need a "
                          "rediss:// redis_url")
    for key in tls_files:
        path = getattr(config, key)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{key}: {path} does not exist or cannot be read")
    try:
        settings_from(config)
    except RedisSettingsError as e:
        raise ConfigError(str(e)) from None


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


def parse(text: str, base_dir: Path | None = None, environ: Mapping[str, str] | None = None,
          command_line: Mapping[str, Any] | None = None) -> tuple[Config, list[str]]:
    """Parse TOML text into a Config; returns it with warnings (unknown keys, ignored email keys).

    With `environ`, its BTU_SCHEDULER_<KEY> variables and btu_scheduler_py's names win over the
    file (environment.py says which wins where); `command_line` values win over both. A Frappe
    bench (frappe_bench_path) then supplies the keys still unset (bench.py).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    warnings: list[str] = []
    file_aliases: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _FIELDS:
            values[key] = _coerce(key, environment.py_value(key, value))
            origins[key] = "file"
        elif key.startswith(_EMAIL_PREFIX):
            continue  # Rust-compatible email keys: accepted, email is not implemented.
        elif key in environment.PY_KEYS:
            file_aliases[key] = value
        else:
            warnings.append(unknown_key_warning(key, _FIELDS, "configuration key"))
    try:
        layers = environment.layers(file_aliases, environ or {}, set(_FIELDS))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for key, (value, origin, name) in layers.settings.items():
        if key in values and origin.endswith("(file)"):
            continue  # a key of our own in the file wins over btu_scheduler_py's name for it
        values[key] = _named(name, lambda: _coerce(key, _typed(key, value)))
        origins[key] = origin
    warnings.extend(layers.warnings)
    for key, value in (command_line or {}).items():
        values[key] = _coerce(key, value)
        origins[key] = "command line"
    try:
        bench.fill(values, origins)
    except bench.BenchError as e:
        raise BenchConfigError(str(e)) from None
    if values.get("schedule_file") and base_dir is not None:
        values["schedule_file"] = str((base_dir / values["schedule_file"]).resolve())
    config = Config(**values, origins=origins)
    try:
        _validate(config)
    except ConfigError as e:
        raise ConfigError(_with_origin(str(e), origins)) from None
    return config, warnings


def _named(name: str, check):
    """Run `check`, naming the environment variable or alias in its error."""
    try:
        return check()
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None


def _typed(key: str, value: Any) -> Any:
    """An environment variable's text as the key's type (file values are typed by TOML already)."""
    if not isinstance(value, str) or key == "socket_mode":  # socket_mode parses its octal text
        return value
    if key == "frappe_sites":
        return [site.strip() for site in value.split(",") if site.strip()]
    kind = str(_FIELDS[key].type)
    default = _FIELDS[key].default
    text = value.strip()
    if isinstance(default, bool) or kind.startswith("bool"):
        if text.lower() not in environment.BOOLEAN_WORDS:
            raise ConfigError(f"{key}: expected true or false (or 1/0, yes/no, on/off), got {_show(key, text)}")
        return environment.BOOLEAN_WORDS[text.lower()]
    if kind.startswith("tuple"):
        convert, expected = (lambda t: [int(item) for item in t.split(",") if item.strip()],
                             "a comma-separated list of integers")
    elif isinstance(default, float) or kind.startswith("float"):
        convert, expected = float, "a number"
    elif isinstance(default, int) or kind.startswith("int"):
        convert, expected = int, "an integer"
    else:
        return value
    try:
        return convert(text)
    except ValueError:
        raise ConfigError(f"{key}: expected {expected}, got {_show(key, text)}") from None


def _with_origin(message: str, origins: dict[str, str]) -> str:
    """A validation error about a key set outside the file says where it was set."""
    key = message.split(":", 1)[0]
    origin = origins.get(key)
    return f"{message} (set by {origin})" if origin and origin != "file" else message
def unknown_key_warning(key: str, known, what: str) -> str:
    """`unknown <what> 'x' ignored`, with the nearest known key suggested when one is close."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.7)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {key!r} ignored{hint}"


def redact_url(url: str) -> str:
    """The URL with its userinfo and any `password=` query value (README: unix://...) masked."""
    head, at, tail = url.rpartition("@")
    url = f"{head.split('//')[0]}//***@{tail}" if at else url
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url)


def for_site(config: Config, site: str, settings: Mapping[str, Any], socket_path: str) -> Config:
    """The configuration of one of several served sites, checked like any: its discovered database
    settings (bench.site_settings; keys set explicitly still win, as everywhere), jobs on `site`,
    btu-web's Host header `site` (Frappe picks the site by it) and the site's control socket."""
    values = {key: setting.value for key, setting in settings.items() if key not in config.origins}
    origins = {**config.origins, **{key: settings[key].origin for key in values},
               "frappe_site": "bench sites/", "webserver_host_header": "bench sites/"}
    site_config = dataclasses.replace(config, **values, frappe_site=site, webserver_host_header=site,
                                      socket_path=socket_path, serves_bench=False, origins=origins)
    _validate(site_config)
    return site_config


def replace(config: Config, **changes: Any) -> Config:
    """A copy of `config` with command-line overrides applied and checked like file values."""
    origins = {**config.origins, **{key: "command line" for key in changes}}
    config = dataclasses.replace(config, **{key: _coerce(key, value) for key, value in changes.items()},
                                 origins=origins)
    _validate(config)
    return config


def config_path(explicit: str | None) -> Path:
    """The file to read: --config, else $BTU_SCHEDULER_CONFIG, else the Rust daemon's default path."""
    return Path(explicit or os.environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_PATH)


def load(path: Path, environ: Mapping[str, str] | None = None, command_line: Mapping[str, Any] | None = None,
         optional: bool = False) -> tuple[Config, list[str]]:
    """Read and parse the file at `path` with `environ` (default: the process environment) over it.

    A missing or unreadable file is a ConfigError naming it; with `optional` (a bench given on the
    command line supplies the settings) a missing file counts as empty.
    """
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if optional:
            return parse("", environ=environ, command_line=command_line)
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"configuration file {path} cannot be read: {e}") from None
    try:
        config, warnings = parse(text, base_dir=path.parent, environ=environ, command_line=command_line)
    except BenchConfigError:
        raise  # names the bench file already
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if _readable_by_others(path) and _has_secrets(config):
        warnings.append(f"{path} holds passwords or tokens and is readable by other users; "
                        f"run: chmod o-rwx {path}")
    return config, warnings


def _readable_by_others(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IROTH)


def _has_secrets(config: Config) -> bool:
    """True when the file itself holds a secret (a bench's or the environment's are not in it)."""
    def in_file(key: str) -> bool:
        origin = config.origins.get(key, "")  # ours, or btu_scheduler_py's name for it, in the file
        return (origin == "file" or origin.endswith("(file)")) and bool(getattr(config, key, None))
    return any(in_file(key) for key in SECRET_KEYS - {"redis_url"}) or bool(
        in_file("redis_url") and ("@" in config.redis_url or "password=" in config.redis_url))


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
