"""The three kinds of full refresh of 10 000, 100 000 (and 150 000) schedules, with the daemon's
memory (DESIGN §9, issue 13).

Ours only (no peer has a SQL-backed refresh; `rq cron` start-up with the same job count is in
bench_idle.py). MariaDB holds N enabled BTU Task Schedules (a mix of 5-field cron strings none of
which fires during the run, time zone Europe/London from BTU Configuration) inserted once per count
with batched executemany. Then `twistd -n btu`:
- starts on an empty Redis (start-up refresh);
- is asked to `reload` (everything already planned, the row cache full);
- is stopped and a new process started on the Redis it left (restart on a populated Redis).
Each refresh is read from the `status` request: `last_refresh.seconds` (from reading the enabled
IDs to the last schedule planned in Redis); RSS is VmRSS / VmHWM (peak of the process so far)
from /proc/<pid>/status once it is done.

With `--before REV`, every count is measured twice in the same run on the same rows, first with
`btu_twisted/` as of REV (common.archived_tree), then with the working tree, both columns printed.

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

# Seconds and peak MB of each kind of refresh: DESIGN §9 for 10 000 (2 s); issue 13's for 100 000
# (3 s, 120 MB; DESIGN §9 asks 20 s, 200 MB) and 150 000 (200 MB).
TARGETS = {10_000: (2.0, None), 100_000: (3.0, 120.0), 150_000: (None, 200.0)}
KINDS = (("startup", "start-up, empty Redis"), ("reload", "`reload` of the running daemon"),
         ("restart", "restart on the populated Redis"))
PLANNED_KEY = "btu_scheduler:planned"
REFRESH_LINE = "full refresh: "  # the Refresher's line for each completed refresh


def crons(count: int) -> list[str]:
    """A realistic mix of daily/weekly/monthly/yearly cron strings, all due 2+ hours from now."""
    hour = (datetime.now(timezone.utc).hour + 3) % 24
    shapes = ("{m} {h} * * *", "{m} {h} * * 1-5", "{m} {h} 1 * *", "{m} {h} * * 0", "{m} {h} 1 1 *",
              "{m} {h},{h2} * * *", "{m} {h} */2 * *", "{m} {h} 15 */3 *")
    return [shapes[i % len(shapes)].format(m=i % 60, h=hour, h2=(hour + 12) % 24) for i in range(count)]


def log_count(daemon: Daemon, text: str) -> int:
    """How many times `text` is in the daemon's log."""
    try:
        with open(daemon.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace").count(text)
    except OSError:
        return 0


def refreshed(daemon: Daemon, number: int) -> dict:
    """The figures of the daemon's `number`th completed refresh. Waited for in its log, then one
    `status` read: polling `status` (it counts the zones of every cached row) cost the daemon
    0.9 s of its reactor thread during a 100 000-schedule `reload`."""
    deadline = time.monotonic() + 600
    while log_count(daemon, REFRESH_LINE) < number:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no full refresh {number} within 600 s:\n{daemon.output()}")
        time.sleep(0.05)
    status = daemon.status()
    rss, hwm = memory_mb(daemon.pid)
    return {"seconds": status["last_refresh"]["seconds"], "schedules": status["last_refresh"]["schedules"],
            "rss": rss, "hwm": hwm, "unplannable": len(status["unplannable"])}


def insert(servers: Servers, count: int) -> None:
    """`count` enabled schedules in MariaDB, and nothing else."""
    servers.reset_sql()
    with servers.sql() as conn:
        insert_task(conn)
        frappe_schema.set_cron_time_zone(conn, "Europe/London")
        insert_secs = insert_schedules(conn, list(zip(schedule_ids(count), crons(count),
                                                      ["default"] * count)))
    note(f"{count} rows inserted in {insert_secs:.1f} s (executemany, 5 000 rows per batch)")


def measure(servers: Servers, code: str | None = None) -> dict:
    """Start-up on an empty Redis, `reload` of the running daemon, then a restart (a new process)
    on the plan it left: the three kinds of full refresh."""
    redis = servers.redis_client(0)
    redis.flushdb()
    try:
        daemon = Daemon(servers, db=0, code=code)
        began = time.time()
        daemon.start(timeout=60)
        try:
            startup = refreshed(daemon, 1)
            startup["wall"] = time.time() - began
            startup["planned"] = redis.hlen(PLANNED_KEY)
            daemon.request({"request_type": "reload", "request_content": None})
            reload = refreshed(daemon, 2)
        finally:
            daemon.stop()
        daemon = Daemon(servers, db=0, code=code)
        daemon.start(timeout=60)
        try:
            restart = refreshed(daemon, 1)
            restart["planned"] = redis.hlen(PLANNED_KEY)
        finally:
            daemon.stop()
    finally:
        redis.close()
    return {"startup": startup, "reload": reload, "restart": restart}


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
            insert(servers, count)
            results[count] = ([measure(servers, tree)] if before else []) + [measure(servers)]
    rows = []
    verdicts = []
    for count, runs in results.items():
        secs_target, rss_target = TARGETS.get(count, (None, None))

        def row(label, target, show):
            rows.append((f"{count}: {label}", target, *(show(r) for r in runs)))

        for kind, label in KINDS:
            row(f"{label}: last_refresh.seconds", f"<= {secs_target:g} s" if secs_target else "",
                lambda r: f"{r[kind]['seconds']:.3f} s")
            row(f"{label}: VmRSS / peak VmHWM after it", f"peak <= {rss_target:g} MB" if rss_target else "",
                lambda r: f"{r[kind]['rss']:.1f} / {r[kind]['hwm']:.1f} MB")
        row("twistd start -> start-up refresh done (wall)", "", lambda r: f"{r['startup']['wall']:.2f} s")
        row("planned in Redis / enabled in SQL (start-up; restart)", f"{count}",
            lambda r: f"{r['startup']['planned']} / {r['startup']['schedules']} "
                      f"({r['startup']['unplannable']} unplannable); {r['restart']['planned']}")
        r = runs[-1]
        for kind, label in KINDS:
            if secs_target:
                verdicts.append(f"{count} {kind}: {r[kind]['seconds']:.3f} s "
                                f"{verdict(r[kind]['seconds'] <= secs_target)}")
            if rss_target:
                verdicts.append(f"{count} {kind}: peak {r[kind]['hwm']:.1f} MB "
                                f"{verdict(r[kind]['hwm'] <= rss_target)}")
    table(rows, ("measure", "target", *((f"before ({before})",) if before else ()), "ours"))
    for line in verdicts:
        note(line)


if __name__ == "__main__":
    main(sys.argv[1:])
