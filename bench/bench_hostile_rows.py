"""Memory of a daemon whose database holds hostile rows (issue 10 item 8), before and after a change.

MariaDB holds 50 000 enabled BTU Task Schedules (bench_refresh.py's cron mix, none firing during the
run) and, in the second half of the run, 200 more whose `argument_overrides` is 1 MiB of text
(interleaved with the others in ID order, so they share the planner's batches). Such a row is
refused (`argument_overrides: ... characters, more than the 65536 allowed`) and listed under
`unplannable`. A real `twistd -n btu` starts on a flushed private Redis; VmRSS / VmHWM (peak) of
its process are read from /proc once its start-up refresh is done, and again after a second full
refresh (`reload`, which reads every row again). Required: refused rows are not kept whole; memory
is bounded by what is planned.

Each configuration runs twice in the same run: first with `btu_twisted/` as of REV (default
dcfef33, the commit before "refused rows not cached"; common.archived_tree), then with the working
tree.

Run from the repository root: `.venv/bin/python bench/bench_hostile_rows.py [--before REV]
[--count 50000] [--hostile 200]`.
"""

from __future__ import annotations

import argparse
import time

from bench_refresh import crons
from common import (Daemon, Servers, archived_tree, banner, insert_schedules, insert_task, memory_mb, note,
                    schedule_ids, table)
from tests.support import frappe_schema

DEFAULT_BEFORE = "dcfef33"
HOSTILE_CHARS = 1 << 20  # 1 MiB of text in each hostile row's argument_overrides
RELOAD = {"request_type": "reload", "request_content": None}


def hostile_ids(count: int, among: int) -> list[str]:
    """IDs that sort between the bench's own (`TS-0000250-HOSTILE` after `TS-0000250`)."""
    step = max(1, among // count)
    return [f"TS-{(n + 1) * step:07d}-HOSTILE" for n in range(count)]


def insert_hostile(servers: Servers, ids: list[str]) -> float:
    """One row per ID, 1 MiB of overrides each, each text its own (equal texts would share one
    string: the SQL source interns column values); one INSERT each, far below max_allowed_packet."""
    began = time.monotonic()
    with servers.sql() as conn:
        for schedule_id in ids:
            text = "{'x': '" + schedule_id + "A" * (HOSTILE_CHARS - len(schedule_id)) + "'}"
            frappe_schema.insert_schedule(conn, schedule_id, "BTU-BENCH-1", "0 3 * * *",
                                          argument_overrides=text)
    return time.monotonic() - began


def measure(servers: Servers, code: str | None) -> dict:
    """Start a daemon (of `code`, or the working tree), refresh twice, read its memory each time."""
    redis = servers.redis_client(0)
    redis.flushdb()
    daemon = Daemon(servers, code=code)
    daemon.start(timeout=60)
    try:
        status = daemon.wait_refreshed(timeout=600)
        rss, hwm = memory_mb(daemon.pid)
        daemon.request(RELOAD)
        # Any later refresh than the first (its `at` is Redis time as the daemon knows it, which
        # may lag this process's clock by a busy reactor's delay: not comparable with ours).
        second = daemon.wait_refreshed(timeout=600, after=status["last_refresh"]["at"] + 1e-3)
        rss2, hwm2 = memory_mb(daemon.pid)
        reasons = second["unplannable"]
    finally:
        daemon.stop()
        redis.close()
    return {"rss": rss, "hwm": hwm, "rss2": rss2, "hwm2": hwm2,
            "seconds": status["last_refresh"]["seconds"], "planned": status["last_refresh"]["schedules"],
            "unplannable": second.get("unplannable_total", len(reasons)),  # status lists 100
            "reason_chars": max((len(r) for r in reasons.values()), default=0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default=DEFAULT_BEFORE)
    parser.add_argument("--count", type=int, default=50_000, help="ordinary schedules")
    parser.add_argument("--hostile", type=int, default=200, help="rows with 1 MiB overrides")
    args = parser.parse_args()
    banner(f"daemon memory with {args.count} schedules, without and with {args.hostile} rows of 1 MiB "
           f"argument_overrides; {args.before} (before) and the working tree (after)")
    results = {}
    with Servers() as servers, archived_tree(args.before) as tree:
        with servers.sql() as conn:
            insert_task(conn)
            secs = insert_schedules(conn, list(zip(schedule_ids(args.count), crons(args.count),
                                                   ["default"] * args.count)))
        note(f"{args.count} rows inserted in {secs:.1f} s")
        for label, code in (("before", tree), ("after", None)):
            results[("clean", label)] = measure(servers, code)
        secs = insert_hostile(servers, hostile_ids(args.hostile, args.count))
        note(f"{args.hostile} hostile rows inserted in {secs:.1f} s")
        for label, code in (("before", tree), ("after", None)):
            results[("hostile", label)] = measure(servers, code)
    rows = []
    for rows_label, key in ((f"{args.count} rows", "clean"),
                            (f"{args.count} rows + {args.hostile} of 1 MiB", "hostile")):
        before, after = results[(key, "before")], results[(key, "after")]
        for measure_label, show in (
                ("VmRSS / VmHWM after start-up refresh", lambda r: f"{r['rss']:.1f} / {r['hwm']:.1f} MB"),
                ("VmRSS / VmHWM after second refresh", lambda r: f"{r['rss2']:.1f} / {r['hwm2']:.1f} MB"),
                ("start-up refresh (last_refresh.seconds)", lambda r: f"{r['seconds']:.2f} s"),
                ("enabled / unplannable (longest reason)",
                 lambda r: f"{r['planned']} / {r['unplannable']} ({r['reason_chars']} chars)")):
            rows.append((f"{rows_label}: {measure_label}", show(before), show(after)))
    table(rows, ("measure", f"before ({args.before})", "after (working tree)"))


if __name__ == "__main__":
    main()
