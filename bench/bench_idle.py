"""Idle CPU with 10 000 schedules planned and none due, side by side with the peers (DESIGN §9).

All three run at the same time, each against its own db of one private Redis, for the same window:
ours (`twistd -n btu`, MariaDB, 10 000 BTU Task Schedules, yearly cron strings months away),
`rq cron` (10 000 `register` calls with the same cron strings) and `rqscheduler -i 1` (10 000
`Scheduler.cron` jobs, same strings). After all are up and a settling pause, CPU is the time the
process's threads ran over WINDOW seconds, from the kernel's nanosecond accounting
(/proc/<pid>/task/*/schedstat); utime + stime from /proc/<pid>/stat is printed too, in clock ticks
of 1/CLK_TCK s, too coarse to rank processes that idle at one tick a minute. Also printed: start-up with 10 000 schedules (ours: twistd start
-> first full refresh done; rq cron: spawn -> registered in Redis; rqscheduler: loading the jobs is
done by a separate script, so its start-up is not comparable) and RSS.

Run from the repository root: `.venv/bin/python bench/bench_idle.py [window seconds]`.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone

from common import (CLK_TCK, Daemon, RQCron, RQScheduler, Servers, banner, cpu_seconds, insert_schedules,
                    insert_task, memory_mb, note, peers_available, run_seconds, schedule_ids, table, verdict)

SCHEDULES = 10_000
TARGET_PERCENT = 0.05
SETTLE_SECS = 5.0
QUEUE = "bench"


def far_crons(count: int) -> list[str]:
    """Yearly 5-field cron strings five to six months ahead: nothing is due during the run."""
    month = (datetime.now(timezone.utc).month + 5) % 12 + 1
    return [f"{i % 60} {(i // 60) % 24} {1 + (i // 1440) % 28} {month} *" for i in range(count)]


def main() -> None:
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    banner(f"idle CPU, {SCHEDULES} schedules planned and none due ({window:.0f} s window, all "
           f"contenders at once), and start-up / RSS with {SCHEDULES} schedules")
    crons = far_crons(SCHEDULES)
    procs: dict[str, object] = {}
    results: dict[str, dict | str] = {}
    with Servers() as servers:
        with servers.sql() as conn:
            insert_task(conn)
            insert_schedules(conn, list(zip(schedule_ids(SCHEDULES), crons, [QUEUE] * SCHEDULES)))
        try:
            daemon = Daemon(servers, db=0)
            began = time.time()
            daemon.start(timeout=60)
            status = daemon.wait_refreshed(timeout=120)
            procs["ours"] = daemon
            results["ours"] = {"startup": time.time() - began,
                               "note": f"refresh {status['last_refresh']['seconds']:.3f} s, "
                                       f"{status['planned_schedules']} planned"}
            ok, info = peers_available()
            if ok:
                note(f"peers venv: {info}")
                for name, make in (("rq cron", lambda: RQCron(servers, 1, QUEUE)),
                                   ("rqscheduler -i 1", lambda: RQScheduler(servers, 2, QUEUE))):
                    peer = make()
                    try:
                        began = time.time()
                        peer.start(crons)
                        procs[name] = peer
                        results[name] = {"startup": time.time() - began if name == "rq cron" else None,
                                         "note": ""}
                    except Exception as e:  # a peer that cannot run here is reported, not fatal
                        peer.stop()
                        results[name] = f"could not run: {e}"
            else:
                results["rq cron"] = results["rqscheduler -i 1"] = f"not run: {info}"
            time.sleep(SETTLE_SECS)
            before = {name: (run_seconds(p.pid), cpu_seconds(p.pid)) for name, p in procs.items()}
            began = time.monotonic()
            time.sleep(window)
            elapsed = time.monotonic() - began
            for name, p in procs.items():
                used = run_seconds(p.pid) - before[name][0]
                ticks = cpu_seconds(p.pid) - before[name][1]
                rss, hwm = memory_mb(p.pid)
                results[name].update(cpu=used, ticks=ticks, percent=100 * used / elapsed, rss=rss, hwm=hwm,
                                     alive=p.process.poll() is None)
        finally:
            for p in procs.values():
                p.stop()

    names = list(results)

    def cell(name, fn):
        r = results[name]
        return "-" if isinstance(r, str) or "cpu" not in r else fn(r)

    rows = [
        (f"idle CPU ({window:.0f} s window, schedstat)", f"<= {TARGET_PERCENT} %",
         *[cell(n, lambda r: f"{r['percent']:.4f} %") for n in names]),
        (f"CPU ms in the window; utime + stime ticks (1 tick = {100 / CLK_TCK / window:.3f} %)", "",
         *[cell(n, lambda r: f"{1000 * r['cpu']:.2f} ms; {round(r['ticks'] * CLK_TCK)}") for n in names]),
        (f"start-up with {SCHEDULES} schedules", "",
         *[cell(n, lambda r: "n/a" if r["startup"] is None else f"{r['startup']:.2f} s") for n in names]),
        (f"VmRSS / VmHWM with {SCHEDULES} schedules", "",
         *[cell(n, lambda r: f"{r['rss']:.1f} / {r['hwm']:.1f} MB") for n in names]),
    ]
    table(rows, ("measure", "target", *names))
    for name in names:
        r = results[name]
        if isinstance(r, str):
            note(f"{name}: {r}")
        elif r.get("note"):
            note(f"{name}: {r['note']}")
    ours = results["ours"]
    note(f"ours idle CPU {ours['percent']:.4f} % over {window:.0f} s: "
         f"{verdict(ours['percent'] <= TARGET_PERCENT)}")


if __name__ == "__main__":
    main()
