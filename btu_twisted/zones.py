# -*- test-case-name: tests.test_zones -*-
"""Which time zone a schedule's cron is read in, and where that zone came from (DESIGN §4).

The first non-empty of: the schedule's `cron_timezone` (BTU 15.1.1+), BTU Configuration
`cron_time_zone`, System Settings `time_zone`, the config's `time_zone_string`, UTC. The source is
kept beside the zone so that an unknown zone can be reported where the operator can fix it.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SCHEDULE_ZONE = "schedule cron_timezone"
BTU_CONFIGURATION_ZONE = "BTU Configuration cron_time_zone"
SYSTEM_SETTINGS_ZONE = "System Settings time_zone"
CONFIG_ZONE = "time_zone_string"
DEFAULT_ZONE = "default UTC"
FILE_ZONE = "schedule file time_zone"


def first_zone(*candidates: tuple[str | None, str]) -> tuple[str, str]:
    """(zone, source) of the first candidate (value, source) whose value is not blank; else UTC."""
    for value, source in candidates:
        if isinstance(value, str) and value.strip():
            return value.strip(), source
    return "UTC", DEFAULT_ZONE


def configured_zone(config) -> tuple[str, str]:
    """The config's own fallback: `time_zone_string` when set anywhere, else the default UTC."""
    if config.origins.get("time_zone_string", "default") == "default":
        return config.time_zone_string, DEFAULT_ZONE
    return config.time_zone_string, CONFIG_ZONE


def zone_problem(zone: str, source: str) -> str | None:
    """Why `zone` cannot be used, naming it and its source; None when it is a known IANA zone."""
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {zone!r} (from {source})"
    return None
