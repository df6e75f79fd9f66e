# -*- test-case-name: tests.test_cockpit -*-
"""The checks of `btu doctor`: each precondition of a working scheduler, one verdict and hint each."""

from __future__ import annotations

import grp
import os
import stat
from zoneinfo import ZoneInfo

from btu_twisted import config as configuration
from btu_twisted.cli.socket_client import request
from btu_twisted.report import overview, queues
from btu_twisted.report.connections import ScheduleReader, redis_client
from btu_twisted.report.snapshot import FRAPPE_BUILDERS

OK, WARN, FAIL = "OK", "WARN", "FAIL"


def _check(name: str, verdict: str, detail: str, hint: str = "") -> dict:
    return {"check": name, "verdict": verdict, "detail": detail, "hint": hint}


def run_checks(cli) -> list[dict]:
    """Every check in order; a failed configuration stops the rest (they all depend on it)."""
    try:
        config, warnings = configuration.load(cli.config_path)
    except configuration.ConfigError as e:
        return [_check("config", FAIL, str(e), f"fix the file, or choose one with --config or "
                                               f"${configuration.CONFIG_ENV_VAR}")]
    if config.serves_bench:
        return [_check("config", FAIL, f"{cli.config_path} serves several sites of the bench "
                                       f"{config.frappe_bench_path}; btu checks one site",
                       "set frappe_site (e.g. BTU_SCHEDULER_FRAPPE_SITE=<site>)")]
    checks = [_check("config", WARN if warnings else OK,
                     "; ".join(warnings) if warnings else f"{cli.config_path} is valid",
                     "see the README's configuration table" if warnings else "")]
    schedules, source_check = _source(config)
    checks.append(source_check)
    checks.append(_redis(config))
    checks.append(_zones(schedules))
    checks.append(_socket(config, cli.socket_path))
    checks.append(_plannable(config, schedules, cli.now()))
    checks.append(_workers(config, schedules))
    return checks


def _source(config):
    reader = ScheduleReader(config)
    try:
        schedules = reader.schedules()
    except Exception as e:
        hint = ("check mysql_user, mysql_password, mysql_host/mysql_port or mysql_unix_socket, "
                "mysql_database" if config.uses_sql else "check schedule_file")
        return None, _check("source", FAIL, f"{reader.description} cannot be read: {e}", hint)
    enabled = sum(1 for s in schedules.values() if s.enabled)
    return schedules, _check("source", OK, f"{reader.description}: {len(schedules)} schedules, {enabled} enabled")


def _redis(config) -> dict:
    connection = redis_client(config)
    url = configuration.redact_url(config.effective_redis_url)
    try:
        connection.ping()
    except Exception as e:
        return _check("redis", FAIL, f"{url}: {e}", "check redis_url (or rq_host/rq_port) and that Redis runs")
    finally:
        connection.close()
    return _check("redis", OK, f"{url} answers")


def _zones(schedules) -> dict:
    if schedules is None:
        return _check("zones", WARN, "not checked: the schedule source cannot be read")
    bad = {}
    for s in schedules.values():
        try:
            ZoneInfo(s.time_zone)
        except Exception:
            bad.setdefault(f"{s.time_zone!r} (from {s.zone_source})", []).append(s.schedule_id)
    if bad:
        return _check("zones", FAIL, "; ".join(f"{zone}: {', '.join(ids)}" for zone, ids in bad.items()),
                      "set an IANA zone name such as Europe/Berlin")
    zones = sorted({s.time_zone for s in schedules.values()}) or ["none used"]
    return _check("zones", OK, ", ".join(zones))


def _socket(config, path: str) -> dict:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _check("socket", FAIL, f"{path} does not exist", "start the daemon: `systemctl start btu_scheduler`")
    if not stat.S_ISSOCK(st.st_mode):
        return _check("socket", FAIL, f"{path} is not a socket", "remove it or set another socket_path")
    mode = stat.S_IMODE(st.st_mode)
    problems = []
    if mode != config.socket_mode:
        problems.append(f"mode {mode:04o}, expected {config.socket_mode:04o}")
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    if config.socket_file_group_owner and group != config.socket_file_group_owner:
        problems.append(f"group {group}, expected {config.socket_file_group_owner}")
    try:
        answer = request(path, "ping")
    except OSError as e:
        answer = f"no answer ({e})"
    if answer != "pong":
        problems.append(f"ping: {answer}")
    if problems:
        return _check("socket", FAIL, f"{path}: " + "; ".join(problems),
                      "restart the daemon so it recreates the socket")
    return _check("socket", OK, f"{path} mode {mode:04o} group {group}, daemon answers")


def _plannable(config, schedules, now: float) -> dict:
    if schedules is None:
        return _check("plannable", WARN, "not checked: the schedule source cannot be read")
    connection = redis_client(config)
    try:
        planned = overview.planned_members(connection)
    except Exception as e:  # not "nothing is planned": the plan cannot be seen
        return _check("plannable", WARN, f"not checked: Redis cannot be read ({e})")
    finally:
        connection.close()
    problems = {s.schedule_id: overview.problem(s, planned.get(s.schedule_id), now)
                for s in schedules.values() if s.enabled}
    problems = {i: p for i, p in problems.items() if p}
    if problems:
        return _check("plannable", FAIL, "; ".join(f"{i}: {p}" for i, p in sorted(problems.items())),
                      "fix those rows in BTU Task Schedule, then `btu reload`")
    return _check("plannable", OK, f"every enabled schedule ({sum(1 for s in schedules.values() if s.enabled)}) "
                                   "is planned")


def _workers(config, schedules) -> dict:
    if schedules is None:
        return _check("workers", WARN, "not checked: the schedule source cannot be read")
    try:
        builder = ScheduleReader(config).builder()
    except Exception as e:
        return _check("workers", WARN, f"not checked: the job builder cannot be made ({e})")
    targeted = {builder.queue_for(s) for s in schedules.values() if s.enabled}
    connection = redis_client(config)
    try:
        states = queues.queue_states(connection, targeted)
    except Exception as e:
        return _check("workers", WARN, f"not checked: Redis cannot be read ({e})")
    finally:
        connection.close()
    missing = queues.warnings(states, config.job_builder in FRAPPE_BUILDERS)
    if missing:
        return _check("workers", FAIL, "; ".join(missing), "")
    return _check("workers", OK, ", ".join(f"{s['queue']}: {s['workers']}" for s in states) or "no queue targeted")
