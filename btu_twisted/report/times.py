# -*- test-case-name: tests.test_cockpit -*-
"""Instants as operators read them: local time with the zone's abbreviation, and UTC beside it."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo


def local(unix: float | None, zone: str = "UTC") -> str:
    """`2026-03-08 03:00:00 EDT` in `zone` ("-" for no instant)."""
    if unix is None:
        return "-"
    try:
        tz = ZoneInfo(zone)
    except Exception:  # an unknown zone is reported elsewhere; show UTC rather than nothing
        tz = timezone.utc
    return datetime.fromtimestamp(unix, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def utc(unix: float | None) -> str:
    """`2026-03-08T07:00:00Z` ("-" for no instant)."""
    if unix is None:
        return "-"
    return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
