# -*- test-case-name: tests.test_cockpit -*-
"""How the `btu` CLI shows things: aligned tables, local time with zone and UTC, relative durations.

Colour comes from click.style; click.echo drops it when stdout is not a terminal.
"""

from __future__ import annotations

import json

import click

from btu_twisted.report.times import local, utc  # noqa: F401 (the CLI's formatting, in one place)

STATUS_COLOURS = {"finished": "green", "failed": "red", "stopped": "red", "canceled": "red",
                  "started": "yellow", "queued": "yellow", "expired": "bright_black",
                  "OK": "green", "WARN": "yellow", "FAIL": "red"}
MINUTE, HOUR, DAY = 60, 3600, 86400


def emit_json(data) -> None:
    """The `--json` form: the same data, unformatted."""
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def span(seconds: float) -> str:
    """A duration the way people say it: `12 ms`, `12 s`, `3 min`, `2 h 5 min`, `3 d 4 h`."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.001 else f"{seconds * 1000:.1f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s" if seconds % 1 else f"{int(seconds)} s"
    if seconds < MINUTE:
        return f"{int(seconds)} s"
    if seconds < HOUR:
        return f"{int(seconds // MINUTE)} min"
    if seconds < DAY:
        hours, rest = divmod(int(seconds), HOUR)
        return f"{hours} h {rest // MINUTE} min" if rest >= MINUTE else f"{hours} h"
    days, rest = divmod(int(seconds), DAY)
    return f"{days} d {rest // HOUR} h" if rest >= HOUR else f"{days} d"


def left(unix: float | None, now: float) -> str:
    """Time to a planned fire: `in 3 min`, or `12 s late` when it is overdue."""
    if unix is None:
        return "-"
    return f"in {span(unix - now)}" if unix >= now else f"{span(now - unix)} late"


def ago(unix: float | None, now: float) -> str:
    """Time since a past event: `3 min ago`."""
    if unix is None:
        return "-"
    return f"{span(now - unix)} ago" if unix <= now else f"in {span(unix - now)}"


def styled(text: str) -> str:
    """`text` in its status colour, if it has one."""
    colour = STATUS_COLOURS.get(text)
    return click.style(text, fg=colour) if colour else text


def table(headers: list[str], rows: list[list], coloured: tuple[int, ...] = ()) -> str:
    """An aligned table; the columns in `coloured` are status words shown in colour."""
    texts = [[("-" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in texts]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row in texts:
        cells = [(styled(c) if i in coloured else c) + " " * (w - len(c))
                 for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def fields(pairs: list[tuple[str, object]]) -> str:
    """`label  value` lines with the labels aligned."""
    width = max(len(label) for label, _ in pairs)
    return "\n".join(f"{label.ljust(width)}  {'-' if value is None else value}" for label, value in pairs)


def outcome_text(fire: dict) -> str:
    """The result or error of one fire, for the RESULT column."""
    if fire.get("error"):
        return fire["error"]
    return fire.get("result") or ""


def duration(fire: dict) -> str:
    return "-" if fire.get("duration_secs") is None else span(fire["duration_secs"])
