"""Full refresh of 10 000 and 100 000 schedules, and the daemon's memory after it (DESIGN §9).

Ours only (no peer has a SQL-backed refresh; `rq cron` start-up with the same job count is in
bench_idle.py). MariaDB holds N enabled BTU Task Schedules (a mix of 5-field cron strings none of
which fires during the run, time zone Europe/London from BTU Configuration) inserted with batched
executemany; Redis starts empty. `twistd -n btu` starts, and its start-up refresh is read from the
`status` request: `last_refresh.seconds` (from reading the enabled IDs to the last schedule
planned in Redis). A second refresh (`reload`, everything already planned) is timed too.
RSS is VmRSS / VmHWM (peak) from /proc/<pid>/status once the refresh is done.

With `--before REV`, every count is measured twice in the same run, first with `btu_twisted/` as of
REV (common.archived_tree), then with the working tree, and both columns are printed.

Run from the repository root: `.venv/bin/python bench/bench_refresh.py [count ...] [--before REV]`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from datetime import datetime, timezone

from common import (Daemon, Servers, archived_tree, banner, insert_schedules, insert_task, memory_mb, note,
                    schedule_ids, table, verdict)
from tests.support import frappe_schema

TARGETS = {10_000: (2.0, None), 100_000: (20.0, 200.0)}  # seconds, MB
PLANNED_KEY = "btu_scheduler:planned"


def crons(count: int) -> list[str]:
    """A realistic mix of daily/weekly/monthly/yearly cron strings, all due 2+ hours from now."""
    hour = (datetime.now(timezone.utc).hour + 3) % 24
    shapes = ("{m} {h} * * *", "{m} {h} * * 1-5", "{m} {h} 1 * *", "{m} {h} * * 0", "{m} {h} 1 1 *",
              "{m} {h},{h2} * * *", "{m} {h} */2 * *", "{m} {h} 15 */3 *")
    return [shapes[i % len(shapes)].format(m=i % 60, h=hour, h2=(hour + 12) % 24) for i in range(count)]


def measure(servers: Servers, count: int, code: str | None = None) -> dict:
    servers.reset_sql()
    redis = servers.redis_client(0)
    redis.flushdb()
    with servers.sql() as conn:
        insert_task(conn)
        frappe_schema.set_cron_time_zone(conn, "Europe/London")
        insert_secs = insert_schedules(conn, list(zip(schedule_ids(count), crons(count),
                                                      ["default"] * count)))
    note(f"{count} rows inserted in {insert_secs:.1f} s (executemany, 5 000 rows per batch)")
    daemon = Daemon(servers, db=0, code=code)
    began = time.time()
    daemon.start(timeout=60)
    try:
        status = daemon.wait_refreshed(timeout=600)
        wall = time.time() - began
        rss, hwm = memory_mb(daemon.pid)
        planned = redis.hlen(PLANNED_KEY)
        again_at = time.time()
        daemon.request({"request_type": "reload", "request_content": None})
        second = daemon.wait_refreshed(timeout=600, after=again_at)
        rss2, hwm2 = memory_mb(daemon.pid)
    finally:
        daemon.stop()
        redis.close()
    refresh = status["last_refresh"]
    return {"seconds": refresh["seconds"], "schedules": refresh["schedules"], "planned": planned,
            "wall": wall, "rss": rss, "hwm": hwm, "second": second["last_refresh"]["seconds"],
            "rss2": rss2, "hwm2": hwm2, "unplannable": len(status["unplannable"])}


def main(argv: list[str]) -> None:
    before = None
    if "--before" in argv:
        before = argv.pop(argv.index("--before") + 1)
        argv.remove("--before")
    counts = [int(a) for a in argv] or [10_000, 100_000]
    banner(f"full refresh ({', '.join(str(c) for c in counts)} schedules, MariaDB source, ours only"
           + (f"; {before} then the working tree" if before else "") + ")")
    results = {}
    with Servers() as servers, (archived_tree(before) if before else contextlib.nullcontext()) as tree:
        for count in counts:
            results[count] = ([measure(servers, count, tree)] if before else []) + [measure(servers, count)]
    rows = []
    verdicts = []
    for count, runs in results.items():
        secs_target, rss_target = TARGETS.get(count, (None, None))

        def row(label, target, show):
            rows.append((f"{count} schedules: {label}", target, *(show(r) for r in runs)))

        row("start-up refresh (status last_refresh.seconds)", f"<= {secs_target:g} s" if secs_target else "",
            lambda r: f"{r['seconds']:.3f} s")
        row("twistd start -> refresh done (wall)", "", lambda r: f"{r['wall']:.2f} s")
        row("second refresh (`reload`, all planned)", "", lambda r: f"{r['second']:.3f} s")
        row("planned in Redis / enabled in SQL", f"{count}",
            lambda r: f"{r['planned']} / {r['schedules']} ({r['unplannable']} unplannable)")
        row("VmRSS / peak VmHWM after start-up refresh", "", lambda r: f"{r['rss']:.1f} / {r['hwm']:.1f} MB")
        row("VmRSS / peak VmHWM after second refresh", f"<= {rss_target:g} MB" if rss_target else "",
            lambda r: f"{r['rss2']:.1f} / {r['hwm2']:.1f} MB")
        r = runs[-1]
        if secs_target:
            verdicts.append(f"{count}: {r['seconds']:.3f} s {verdict(r['seconds'] <= secs_target)}")
        if rss_target:
            verdicts.append(f"{count}: peak RSS {r['hwm2']:.1f} MB {verdict(r['hwm2'] <= rss_target)}")
    table(rows, ("measure", "target", *((f"before ({before})",) if before else ()), "ours"))
    note("; ".join(verdicts))


if __name__ == "__main__":
    main(sys.argv[1:])
