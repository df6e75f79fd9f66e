"""1 000 schedules due the same second: fire instant -> last of the 1 000 job ids in the RQ queue;
and the resident memory of each scheduler holding those 1 000 schedules (DESIGN §9).

Ours: `twistd -n btu` with MariaDB (1 000 BTU Task Schedules `*/10 * * * * * *`, rows re-read from
SQL before each fire); the fire instant is the one in the job ids. Peers in the same run, same
private Redis (another db each): `rq cron` (1 000 `register` calls, `* * * * * */10`) and
`rqscheduler -i 1` (1 000 `Scheduler.cron` jobs, `*/10 * * * * * *`); their fire instant is the
arrival floored to 10 s. Every contender runs ROUNDS rounds; a watcher process BLPOPs the queue.
RSS is VmRSS (and VmHWM, the peak) from /proc/<pid>/status after the rounds.

Run from the repository root: `.venv/bin/python bench/bench_burst.py [rounds]`.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections import defaultdict

from common import (Daemon, RQCron, RQScheduler, Servers, Watcher, banner, fire_of_job_id, insert_schedules,
                    insert_task, memory_mb, ms, note, peers_available, schedule_ids, table, verdict,
                    wait_until)

SCHEDULES = 1000
PERIOD_SECS = 10
TARGET_LAST_SECS = 0.300
TARGET_RSS_MB = 60.0
QUEUE = "bench"


def _rounds(arrivals, fire_of) -> list[dict]:
    """Per fire instant: how many arrived, first and last arrival after the instant."""
    by_fire = defaultdict(list)
    for t, job_id in arrivals:
        by_fire[fire_of(t, job_id)].append(t)
    return [{"fire": fire, "count": len(ts), "first": min(ts) - fire, "last": max(ts) - fire}
            for fire, ts in sorted(by_fire.items())]


def _watch(servers, db: int, rounds: int, fire_of) -> list[dict]:
    # Start mid-period on an empty queue, so that every watched round is whole and fresh.
    middle = math.floor(time.time() / PERIOD_SECS) * PERIOD_SECS + PERIOD_SECS / 2
    wait_until(middle if middle > time.time() + 1 else middle + PERIOD_SECS)
    client = servers.redis_client(db)
    client.delete(f"rq:queue:{QUEUE}")
    client.close()
    watcher = Watcher(servers, db, QUEUE, rounds * PERIOD_SECS, expect=rounds * SCHEDULES)
    return _rounds(watcher.wait(rounds * PERIOD_SECS + 30), fire_of)


def measure_ours(servers: Servers, rounds: int) -> dict:
    with servers.sql() as conn:
        insert_task(conn)
        insert_schedules(conn, [(sid, f"*/{PERIOD_SECS} * * * * * *", QUEUE)
                                for sid in schedule_ids(SCHEDULES, "TS-BURST")])
    daemon = Daemon(servers, db=0).start()
    try:
        daemon.wait_refreshed()
        result = {"rounds": _watch(servers, 0, rounds, lambda t, job_id: fire_of_job_id(job_id))}
        result["rss"], result["hwm"] = memory_mb(daemon.pid)
        return result
    finally:
        daemon.stop()


def measure_peer(peer, cron: str, rounds: int) -> dict:
    peer.start([cron] * SCHEDULES)
    try:
        result = {"rounds": _watch(peer.servers, peer.db, rounds,
                                   lambda t, _: math.floor(t / PERIOD_SECS) * PERIOD_SECS)}
        if not peer.alive():
            raise RuntimeError(f"{peer.name} died:\n{peer.output()}")
        result["rss"], result["hwm"] = memory_mb(peer.pid)
        return result
    finally:
        peer.stop()


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    banner(f"{SCHEDULES} schedules due the same second ({rounds} rounds each), and RSS with "
           f"{SCHEDULES} schedules")
    results: dict[str, dict | str] = {}
    with Servers() as servers:
        note(f"ours: twistd -n btu, MariaDB source, {SCHEDULES} x '*/{PERIOD_SECS} * * * * * *'")
        results["ours"] = measure_ours(servers, rounds)
        ok, info = peers_available()
        if ok:
            note(f"peers venv: {info}")
            for name, make, cron in (
                    ("rq cron", lambda: RQCron(servers, 1, QUEUE), f"* * * * * */{PERIOD_SECS}"),
                    ("rqscheduler -i 1", lambda: RQScheduler(servers, 2, QUEUE),
                     f"*/{PERIOD_SECS} * * * * * *")):
                note(f"{name}: {SCHEDULES} x '{cron}'")
                try:
                    results[name] = measure_peer(make(), cron, rounds)
                except Exception as e:  # a peer that cannot run here is reported, not fatal
                    results[name] = f"could not run: {e}"
        else:
            results["rq cron"] = results["rqscheduler -i 1"] = f"not run: {info}"

    names = list(results)
    for name in names:
        r = results[name]
        if isinstance(r, str):
            note(f"{name}: {r}")
            continue
        for rnd in r["rounds"]:
            note(f"{name:17} fire {time.strftime('%H:%M:%S', time.gmtime(rnd['fire']))}: "
                 f"{rnd['count']} jobs, first {ms(rnd['first'])}, last {ms(rnd['last'])}")

    def cell(name, fn):
        r = results[name]
        whole = [] if isinstance(r, str) else [x for x in r["rounds"] if x["count"] == SCHEDULES]
        return fn(r, whole) if whole else "-"

    rows = [
        ("last enqueued, median of rounds", f"<= {ms(TARGET_LAST_SECS)}",
         *[cell(n, lambda r, w: ms(statistics.median(x["last"] for x in w))) for n in names]),
        ("last enqueued, range", "",
         *[cell(n, lambda r, w: f"{ms(min(x['last'] for x in w))} - {ms(max(x['last'] for x in w))}")
           for n in names]),
        ("first enqueued, median", "",
         *[cell(n, lambda r, w: ms(statistics.median(x["first"] for x in w))) for n in names]),
        ("whole rounds", "", *[cell(n, lambda r, w: len(w)) for n in names]),
        (f"RSS with {SCHEDULES} schedules (VmRSS)", f"<= {TARGET_RSS_MB:.0f} MB",
         *[cell(n, lambda r, w: f"{r['rss']:.1f} MB") for n in names]),
        ("peak RSS (VmHWM)", "", *[cell(n, lambda r, w: f"{r['hwm']:.1f} MB") for n in names]),
    ]
    table(rows, ("measure", "target", *names))
    ours = results["ours"]
    whole = [x for x in ours["rounds"] if x["count"] == SCHEDULES]
    if whole:
        worst = max(x["last"] for x in whole)
        note(f"ours last enqueued (worst round) {ms(worst)}: {verdict(worst <= TARGET_LAST_SECS)}; "
             f"RSS {ours['rss']:.1f} MB: {verdict(ours['rss'] <= TARGET_RSS_MB)}")
    else:
        note("ours: no whole round observed: MISSED")


if __name__ == "__main__":
    main()
