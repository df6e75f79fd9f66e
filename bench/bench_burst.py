"""N schedules (1 000 by default) due the same second: fire instant -> first and last of the N job
ids in the RQ queue; and the resident memory of each scheduler holding those N schedules after the
bursts (DESIGN §9, issue 13).

Ours: `twistd -n btu` with MariaDB (1 000 BTU Task Schedules `*/10 * * * * * *`, rows re-read from
SQL before each fire); the fire instant is the one in the job ids. Peers in the same run, same
private Redis (another db each): `rq cron` (1 000 `register` calls, `* * * * * */10`) and
`rqscheduler -i 1` (1 000 `Scheduler.cron` jobs, `*/10 * * * * * *`); their fire instant is the
arrival floored to the period. Every contender runs ROUNDS rounds; a watcher process BLPOPs the
queue. RSS is VmRSS (and VmHWM, the peak) from /proc/<pid>/status after the rounds. The period is
10 s up to 1 000 schedules and 30 s above (`*/30`), so that a slow peer's rounds do not overlap.

With `--before REV`, our daemon runs twice in the same run, first with `btu_twisted/` as of REV.

Run from the repository root:
`.venv/bin/python bench/bench_burst.py [rounds] [--schedules N] [--before REV]`.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
from collections import defaultdict

from common import (Daemon, RQCron, RQScheduler, Servers, Watcher, archived_tree, banner, fire_of_job_id,
                    insert_schedules, insert_task, memory_mb, ms, note, peers_available, schedule_ids, table,
                    verdict, wait_until)

QUEUE = "bench"
# count -> (last enqueued s, first enqueued s, RSS MB): DESIGN §9 and issue 13's targets
TARGETS = {1000: (0.300, 0.002, 50.0), 10_000: (1.000, None, None)}


def period_of(count: int) -> int:
    return 10 if count <= 1000 else 30


def _rounds(arrivals, fire_of) -> list[dict]:
    """Per fire instant: how many arrived, first and last arrival after the instant."""
    by_fire = defaultdict(list)
    for t, job_id in arrivals:
        by_fire[fire_of(t, job_id)].append(t)
    return [{"fire": fire, "count": len(ts), "first": min(ts) - fire, "last": max(ts) - fire}
            for fire, ts in sorted(by_fire.items())]


def _watch(servers, db: int, rounds: int, count: int, fire_of) -> list[dict]:
    # Start mid-period on an empty queue, so that every watched round is whole and fresh.
    period = period_of(count)
    middle = math.floor(time.time() / period) * period + period / 2
    wait_until(middle if middle > time.time() + 1 else middle + period)
    client = servers.redis_client(db)
    client.delete(f"rq:queue:{QUEUE}")
    client.close()
    watcher = Watcher(servers, db, QUEUE, rounds * period, expect=rounds * count)
    return _rounds(watcher.wait(rounds * period + 30), fire_of)


def measure_ours(servers: Servers, rounds: int, count: int, code: str | None = None) -> dict:
    period = period_of(count)
    servers.reset_sql()
    with servers.sql() as conn:
        insert_task(conn)
        insert_schedules(conn, [(sid, f"*/{period} * * * * * *", QUEUE)
                                for sid in schedule_ids(count, "TS-BURST")])
    client = servers.redis_client(0)
    client.flushdb()
    client.close()
    daemon = Daemon(servers, db=0, code=code).start()
    try:
        daemon.wait_refreshed(timeout=120)
        result = {"rounds": _watch(servers, 0, rounds, count, lambda t, job_id: fire_of_job_id(job_id))}
        result["rss"], result["hwm"] = memory_mb(daemon.pid)
        return result
    finally:
        daemon.stop()


def measure_peer(peer, cron: str, rounds: int, count: int) -> dict:
    period = period_of(count)
    peer.start([cron] * count)
    try:
        result = {"rounds": _watch(peer.servers, peer.db, rounds, count,
                                   lambda t, _: math.floor(t / period) * period)}
        if not peer.alive():
            raise RuntimeError(f"{peer.name} died:\n{peer.output()}")
        result["rss"], result["hwm"] = memory_mb(peer.pid)
        return result
    finally:
        peer.stop()


def main() -> None:
    argv = sys.argv[1:]
    before = count = None
    if "--before" in argv:
        before = argv.pop(argv.index("--before") + 1)
        argv.remove("--before")
    if "--schedules" in argv:
        count = int(argv.pop(argv.index("--schedules") + 1))
        argv.remove("--schedules")
    count = count or 1000
    rounds = int(argv[0]) if argv else 3
    period = period_of(count)
    target_last, target_first, target_rss = TARGETS.get(count, (None, None, None))
    banner(f"{count} schedules due the same second ({rounds} rounds each), and RSS with "
           f"{count} schedules" + (f"; ours at {before}, then the working tree" if before else ""))
    results: dict[str, dict | str] = {}
    with Servers() as servers, (archived_tree(before) if before else contextlib.nullcontext()) as tree:
        note(f"ours: twistd -n btu, MariaDB source, {count} x '*/{period} * * * * * *'")
        if before:
            results[f"ours at {before}"] = measure_ours(servers, rounds, count, tree)
        results["ours"] = measure_ours(servers, rounds, count)
        ok, info = peers_available()
        if ok:
            note(f"peers venv: {info}")
            for name, make, cron in (
                    ("rq cron", lambda: RQCron(servers, 1, QUEUE), f"* * * * * */{period}"),
                    ("rqscheduler -i 1", lambda: RQScheduler(servers, 2, QUEUE),
                     f"*/{period} * * * * * *")):
                note(f"{name}: {count} x '{cron}'")
                try:
                    results[name] = measure_peer(make(), cron, rounds, count)
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
        whole = [] if isinstance(r, str) else [x for x in r["rounds"] if x["count"] == count]
        return fn(r, whole) if whole else "-"

    def bound(value, fmt):
        return f"<= {fmt(value)}" if value is not None else ""

    rows = [
        ("last enqueued, median of rounds", bound(target_last, ms),
         *[cell(n, lambda r, w: ms(statistics.median(x["last"] for x in w))) for n in names]),
        ("last enqueued, range", "",
         *[cell(n, lambda r, w: f"{ms(min(x['last'] for x in w))} - {ms(max(x['last'] for x in w))}")
           for n in names]),
        ("first enqueued, median", bound(target_first, ms),
         *[cell(n, lambda r, w: ms(statistics.median(x["first"] for x in w))) for n in names]),
        ("whole rounds", "", *[cell(n, lambda r, w: len(w)) for n in names]),
        (f"RSS with {count} schedules, after the bursts (VmRSS)",
         bound(target_rss, lambda v: f"{v:.0f} MB"),
         *[cell(n, lambda r, w: f"{r['rss']:.1f} MB") for n in names]),
        ("peak RSS (VmHWM)", "", *[cell(n, lambda r, w: f"{r['hwm']:.1f} MB") for n in names]),
    ]
    table(rows, ("measure", "target", *names))
    ours = results["ours"]
    whole = [x for x in ours["rounds"] if x["count"] == count]
    if not whole:
        note("ours: no whole round observed: MISSED")
        return
    worst_last = max(x["last"] for x in whole)
    first = statistics.median(x["first"] for x in whole)
    verdicts = [f"last enqueued (worst round) {ms(worst_last)}"
                + (f": {verdict(worst_last <= target_last)}" if target_last else "")]
    if target_first:
        verdicts.append(f"first (median) {ms(first)}: {verdict(first <= target_first)}")
    if target_rss:
        verdicts.append(f"RSS {ours['rss']:.1f} MB: {verdict(ours['rss'] <= target_rss)}")
    note("ours " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
