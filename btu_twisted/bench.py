# -*- test-case-name: tests.test_bench -*-
"""Frappe bench discovery: the settings a bench's own files already hold, so a daemon needs no other.

Reads `sites/common_site_config.json`, `sites/currentsite.txt`, `sites/<site>/site_config.json` and
the Frappe version in `apps/frappe/frappe/__init__.py`, the way Frappe itself does: a site's
settings are the common ones overridden by its own (`frappe.get_site_config`), the RQ connection
is `redis_queue` with ACL credentials when `use_rq_auth` is set (`get_redis_conn`), and queue
names are `<bench_id>:<queue>` from Frappe v14 on (`generate_qname`), bare before.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

COMMON_CONFIG = "sites/common_site_config.json"
CURRENT_SITE = "sites/currentsite.txt"
VERSION_FILE = "apps/frappe/frappe/__init__.py"
FIRST_PREFIXED_VERSION = 14  # Frappe v14 began naming queues <bench_id>:<queue>
# Frappe's Sentinel settings (frappe/utils/redis_queue.py, RedisQueue.get_connection) and our keys.
SENTINEL_ENABLED = "redis_queue_sentinel_enabled"
SENTINEL_SETTINGS = {"redis_queue_sentinels": "redis_sentinels",
                     "redis_queue_master_service": "redis_sentinel_service",
                     "redis_queue_sentinel_username": "redis_sentinel_username",
                     "redis_queue_sentinel_password": "redis_sentinel_password",
                     "redis_queue_master_username": "redis_master_username",
                     "redis_queue_master_password": "redis_master_password"}
_VERSION = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.MULTILINE)


class BenchError(Exception):
    """A bench file is missing, unreadable, or lacks a key the daemon needs; the message names both."""


@dataclass(frozen=True)
class Setting:
    """One discovered value and the bench file (or choice) it came from."""

    value: Any = field(repr=False)  # may be a password
    origin: str


@dataclass(frozen=True)
class Bench:
    """What discovery found: the served site (None when the daemon serves several), every site of
    the bench, and the settings by config key (the site's too when one is served)."""

    path: Path
    site: str | None
    sites: tuple[str, ...]
    frappe_version: str
    settings: dict[str, Setting]
    default_site: str | None = None  # currentsite.txt, else default_site: keeps socket_path itself


def discover(path: str | os.PathLike, wanted: tuple[str, ...] = (), explicit_site: str | None = None) -> Bench:
    """Read the bench at `path` and return its settings.

    One site is served when `explicit_site` (frappe_site) or a single name in `wanted` (--site /
    frappe_sites) names it, or when the bench has only one site; otherwise the daemon serves
    several (the names in `wanted`, else every site), each read by `site_settings`, and only the
    settings they share (Redis, queue names) are returned.
    """
    root = Path(path).expanduser()
    if not (root / "sites").is_dir():
        raise BenchError(f"frappe_bench_path: {root} is not a Frappe bench (it has no sites/ directory)")
    common = _read_json(root, COMMON_CONFIG)
    sites = site_names(root)
    version = _frappe_version(root)
    site, site_origin = _choose_site(root, sites, wanted, explicit_site)
    default = _default_site(root, common, sites)
    if site is None:  # several sites: each must be readable now, so a broken one stops start-up
        for name in wanted or sites:
            site_settings(root, _known(root, name, sites, "--site / frappe_sites"), common)
        return Bench(root, None, sites, version, shared_settings(root, common, {}, version), default)
    site_file = f"sites/{site}/site_config.json"
    own = _read_json(root, site_file)
    settings = {"frappe_site": Setting(site, site_origin), **site_settings(root, site, common, own),
                **shared_settings(root, common, own, version, site_file)}
    return Bench(root, site, sites, version, settings, default)


def site_settings(root: Path, site: str, common: dict | None = None, own: dict | None = None) -> dict[str, Setting]:
    """The database settings of one site: its site_config.json over common_site_config.json."""
    site_file = f"sites/{site}/site_config.json"
    common = _read_json(root, COMMON_CONFIG) if common is None else common
    own = _read_json(root, site_file) if own is None else own
    conf = {**common, **own}  # Frappe's get_site_config: the site's own keys win

    def where(key: str) -> str:
        return f"bench {site_file}" if key in own else f"bench {COMMON_CONFIG}"

    if not conf.get("db_name"):
        raise BenchError(f"{root / site_file}: db_name is missing (the site's database name)")
    settings = {"mysql_database": Setting(_text(root, site_file, conf, "db_name"), where("db_name"))}
    user_key = "db_user" if conf.get("db_user") else "db_name"  # Frappe's default user is the db name
    settings["mysql_user"] = Setting(_text(root, site_file, conf, user_key), where(user_key))
    for key, target in (("db_password", "mysql_password"), ("db_host", "mysql_host"),
                        ("db_socket", "mysql_unix_socket")):
        if conf.get(key):
            settings[target] = Setting(_text(root, site_file, conf, key), where(key))
    if conf.get("db_port"):
        settings["mysql_port"] = Setting(_port(root / site_file, conf["db_port"]), where("db_port"))
    return settings


def shared_settings(root: Path, common: dict, own: dict, version: str,
                    site_file: str = "") -> dict[str, Setting]:
    """The RQ Redis and queue naming (common to the bench's sites; `own` is the served site's file,
    whose keys win when one site is served)."""
    conf = {**common, **own}
    bench_id = common.get("bench_id") or str(root.resolve()).strip("/").replace("/", "-")

    def where(key: str) -> str:
        return f"bench {site_file}" if key in own else f"bench {COMMON_CONFIG}"

    if not conf.get("redis_queue"):
        raise BenchError(f"{root / COMMON_CONFIG}: redis_queue is missing (the RQ Redis URL, e.g. "
                         "\"redis://127.0.0.1:11000\")")
    url = _text(root, COMMON_CONFIG, conf, "redis_queue")
    if conf.get("use_rq_auth"):
        url = _with_credentials(url, conf.get("rq_username") or bench_id, conf.get("rq_password"))
    settings = {"redis_url": Setting(url, where("redis_queue"))}
    if _major(version) >= FIRST_PREFIXED_VERSION:
        template = bench_id.replace("{", "{{").replace("}", "}}") + ":{queue_name}"
        settings["queue_name_template"] = Setting(template, f"bench {VERSION_FILE} (Frappe {version})")
    if conf.get(SENTINEL_ENABLED):
        settings.update(_sentinel_settings(root, conf, where))
    return settings


def _sentinel_settings(root: Path, conf: dict, where) -> dict[str, Setting]:
    """Our Sentinel keys from Frappe's, which it reads only when redis_queue_sentinel_enabled is set.

    Frappe takes `redis_queue_sentinels` as a list of "host:port" strings and needs
    `redis_queue_master_service`; without master credentials it uses the RQ ACL user, and so does
    our redis_url (use_rq_auth).
    """
    def file_of(key: str) -> str:
        return where(key).removeprefix("bench ")

    for key, what in (("redis_queue_sentinels", 'a list of "host:port"'),
                      ("redis_queue_master_service", "the Sentinel name of the RQ master")):
        if not conf.get(key):
            raise BenchError(f"{root / file_of(SENTINEL_ENABLED)}: redis_queue_sentinel_enabled is set "
                             f"but {key} is missing ({what})")
    sentinels = conf["redis_queue_sentinels"]
    if not isinstance(sentinels, list) or not all(isinstance(s, str) for s in sentinels):
        raise BenchError(f"{root / file_of('redis_queue_sentinels')}: redis_queue_sentinels must be a "
                         f"list of \"host:port\" strings, got {sentinels!r}")
    settings = {"redis_sentinels": Setting(tuple(sentinels), where("redis_queue_sentinels"))}
    for key, target in SENTINEL_SETTINGS.items():
        if key != "redis_queue_sentinels" and conf.get(key) is not None:
            settings[target] = Setting(_text(root, file_of(key), conf, key), where(key))
    return settings


def _read_json(root: Path, relative: str) -> dict:
    """The JSON object in a bench file; a missing file, bad JSON or a non-object names the file."""
    path = root / relative
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BenchError(f"{path}: cannot be read: {e}") from None
    try:
        data = json.loads(text)
    except ValueError as e:
        raise BenchError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def site_names(root: Path) -> tuple[str, ...]:
    """The bench's sites: directories under sites/ that hold a site_config.json."""
    return tuple(sorted(entry.name for entry in (root / "sites").iterdir()
                        if (entry / "site_config.json").is_file()))


def _choose_site(root: Path, sites: tuple[str, ...], wanted: tuple[str, ...],
                 explicit: str | None) -> tuple[str | None, str]:
    """(the one site served, where the choice came from), or (None, "") when several are served."""
    if explicit:
        return _known(root, explicit, sites, "frappe_site"), "frappe_site"
    if len(wanted) == 1:
        return _known(root, wanted[0], sites, "--site / frappe_sites"), "--site / frappe_sites"
    if not sites:
        raise BenchError(f"{root / 'sites'}: no site (no sites/<name>/site_config.json)")
    if len(sites) == 1 and not wanted:
        return sites[0], "the only site of the bench"
    return None, ""


def _default_site(root: Path, common: dict, sites: tuple[str, ...]) -> str | None:
    """The bench's default site: currentsite.txt, else common_site_config's `default_site`."""
    current = root / CURRENT_SITE
    if current.is_file():
        name = current.read_text(encoding="utf-8").strip()
        if name:
            return _known(root, name, sites, str(current))
    if common.get("default_site"):
        return _known(root, common["default_site"], sites, f"{root / COMMON_CONFIG}: default_site")
    return None


def _known(root: Path, name: str, sites: tuple[str, ...], named_by: str) -> str:
    if name not in sites:
        raise BenchError(f"{named_by}: site {name!r} has no {root / 'sites' / name / 'site_config.json'}"
                         f" (sites on this bench: {', '.join(sites) or 'none'})")
    return name


def _text(root: Path, relative: str, conf: dict, key: str) -> str:
    value = conf[key]
    if not isinstance(value, str):
        raise BenchError(f"{root / relative}: {key} must be a string, got {type(value).__name__}")
    return value


def _port(path: Path, value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise BenchError(f"{path}: db_port must be a TCP port number, got {value!r}") from None
    if isinstance(value, bool) or not 0 < port < 65536:
        raise BenchError(f"{path}: db_port must be a TCP port number, got {value!r}")
    return port


def _frappe_version(root: Path) -> str:
    """`__version__` of the bench's Frappe, which decides its queue naming."""
    path = root / VERSION_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BenchError(f"{path}: cannot read the Frappe version: {e.strerror or e}") from None
    match = _VERSION.search(text)
    if not match:
        raise BenchError(f"{path}: no __version__ = \"...\" line (the Frappe version)")
    if _major(match.group(1)) is None:
        raise BenchError(f"{path}: __version__ {match.group(1)!r} does not start with a major version")
    return match.group(1)


def _major(version: str) -> int | None:
    head = re.match(r"\d+", version)
    return int(head.group()) if head else None


def _with_credentials(url: str, username: str, password: str | None) -> str:
    """`url` with Frappe's RQ ACL user (use_rq_auth) as its userinfo."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    userinfo = quote(username, safe="") + (f":{quote(password, safe='')}" if password else "")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def fill(values: dict[str, Any], origins: dict[str, str]) -> None:
    """Set every key the bench knows and `values` lacks (explicit keys win).

    Does nothing without `frappe_bench_path`; `origins` records "bench <file>" for each key set;
    `serves_bench` says whether several sites are served (each then read by `site_settings`) and
    `bench_default_site` which of them keeps `socket_path`.
    """
    path = values.get("frappe_bench_path")
    if not path:
        return
    found = discover(path, tuple(values.get("frappe_sites", ())), values.get("frappe_site"))
    for key, setting in found.settings.items():
        if key not in values:
            values[key] = setting.value
            origins[key] = setting.origin
    values["serves_bench"] = found.site is None
    values["bench_default_site"] = found.default_site
