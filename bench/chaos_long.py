"""Exactly-once under chaos, for minutes (DESIGN §8; the long form of tests/test_exactly_once.py).

Part A: two `twistd -n btu` daemons share one private Redis and one private MariaDB holding 50
schedules that fire every 1-3 s; one of the two, chosen at random, is SIGKILLed at random moments
and started again at once, never both down. Every fire in the window must be enqueued exactly once.

Part B: a single daemon, SIGKILLed at random moments and started again after a random pause of
0.5-1.5 s. No fire may be enqueued twice; the only missing fires are those the misfire policy
coalesces (fires that fell due while no daemon ran, except the latest one per schedule and
outage, which is caught up once).

No RQ worker runs: every job id stays in its queue list, where a duplicate push shows as a repeated
id. Everything runs against private unix-socket servers (tests/support/servers.py).

Part C: as A, but the two daemons' wall clocks are 1.5 s apart (libfaketime), the first one's is
stepped back 1 h for 4 s a third of the way in, and two thirds of the way in their Redis (a private
persistent one: RDB and append-only file) is shut down, saving, and started again 2 s later from
its files while the daemons run; also no job may be pushed before its fire instant by Redis time
(Redis MONITOR, which reconnects at once and must have seen every push). With two daemons a missing
fire passes only where the history entry of a late catch-up says it coalesced it (the misfire
policy: the fires that fell due while Redis was down, or a daemon stalled a whole period).

Run from the repository root: `.venv/bin/python bench/chaos_long.py [--seconds-a 300]
[--seconds-b 180] [--seconds-c 120] [--schedules 50] [--seed N]`. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.support import frappe_schema  # noqa: E402
from tests.support.chaos import (ONE_DAEMON_DOWN_SECS, ONE_DAEMON_GAP_SECS,  # noqa: E402
                                 TWO_DAEMONS_GAP_SECS, RedisRestart, run_chaos)
from tests.support.pushes import PushMonitor  # noqa: E402
from tests.support.servers import MariaDBServer, RedisServer  # noqa: E402

DATABASE = "btu_chaos"


def part(title: str, redis_server: RedisServer, mariadb: MariaDBServer, daemons: int,
         seconds: float, schedules: int, rng: random.Random, keep_logs: bool, **chaos) -> bool:
    print(f"\n=== {title} ===", flush=True)
    redis_server.flush()
    mariadb.drop_database(DATABASE)
    mariadb.create_database(DATABASE)
    sql = mariadb.connect(DATABASE)
    client = redis_server.client()
    directory = tempfile.mkdtemp(prefix="btu_chaos_", dir="/tmp")
    pushes = PushMonitor(redis_server) if chaos.get("clock_offsets") else None
    try:
        frappe_schema.create_schema(sql)
        run = run_chaos(directory, client, redis_server.url, mariadb.socket_path, sql, DATABASE,
                        daemons, seconds, schedules, rng, pushes=pushes, **chaos)
    finally:
        if pushes is not None:
            pushes.stop()
        sql.close()
        client.close()
    report = run.report
    restarts = run.restart_seconds()
    print(f"  schedules          {schedules}, daemons {daemons}, chaos {seconds:.0f} s "
          f"(run {run.seconds:.0f} s)")
    print(f"  kills              {report.kills}")
    held = [o.held_secs for o in run.outages if o.held_secs > 0]
    if daemons > 1:
        print(f"  kills held         {len(held)} waited for the peer to finish starting up"
              + (f" (max {max(held):.2f} s)" if held else ""))
    if restarts:
        print(f"  kill -> ping       median {statistics.median(restarts):.2f} s, "
              f"max {max(restarts):.2f} s")
    print(f"  fires expected     {report.expected}")
    print(f"  fires enqueued     {report.enqueued}  (job ids pushed in the whole run: "
          f"{report.pushes})")
    print(f"  duplicates         {len(report.duplicates)}")
    print(f"  losses             {len(report.losses)}")
    if daemons == 1:
        print(f"  coalesced          {len(report.coalesced)} missed fires, in {report.catch_ups} "
              f"(outage, schedule) catch-ups")
        print(f"  policy violations  {len(report.violations)}")
    else:
        print(f"  coalesced          {len(report.coalesced)} missing fires, each named by the history "
              f"entry of a late catch-up (coalesced_from): a daemon stalled a whole period")
    if run.lateness:
        late = run.lateness
        print(f"  lateness           p50 {late[len(late) // 2] * 1000:.1f} ms, p99 "
              f"{late[int(len(late) * 0.99)] * 1000:.1f} ms, max {late[-1] * 1000:.0f} ms "
              + ("(fire instant -> push, Redis time)" if pushes is not None
                 else "(fire instant -> rq enqueued_at)"))
    for daemon in run.daemons:
        print(f"  {daemon.name}               started {daemon.starts} times; its log says "
              f"{daemon.log_count('] enqueued ')} enqueued, "
              f"{daemon.log_count('was already enqueued')} already enqueued by the peer "
              f"(a kill loses the lines of the batch in flight)")
    print(f"  unexpected         {len(report.unexpected)}")
    print(f"  anomalies          {len(report.anomalies)}")
    if pushes is not None:
        print(f"  early pushes       {len(run.early)}  (before the fire instant by Redis time)")
        print(f"  unmonitored        {len(run.unmonitored)} pushes MONITOR missed "
              f"(it reconnected {pushes.reconnects} times)")
    for outage, resumed in zip(run.redis_outages, run.redis_resumed):
        print(f"  Redis restart      down {outage.started_at - outage.stopped_at:.2f} s, "
              f"{outage.keys_before} keys before the shutdown, {outage.keys_after} restored; "
              f"first push {resumed:.2f} s after it answered again")
    tracebacks = run.tracebacks()
    print(f"  daemon tracebacks  {len(tracebacks)}")
    restored = all(outage.keys_after for outage in run.redis_outages)
    ok = report.ok and not tracebacks and not run.early and not run.unmonitored and restored
    if not ok:
        print(report.details())
        for tb in tracebacks[:5]:
            print(tb)
    if not ok or keep_logs:
        print(f"  daemon logs kept in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"  verdict            {'PASS' if ok else 'FAIL'}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-a", type=float, default=300, help="part A chaos duration")
    parser.add_argument("--seconds-b", type=float, default=180, help="part B chaos duration")
    parser.add_argument("--seconds-c", type=float, default=120, help="part C chaos duration")
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemon logs on success")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"seed {seed}", flush=True)
    rng = random.Random(seed)
    redis_server, mariadb = RedisServer(), MariaDBServer()
    persistent = RedisServer(persistent=True)  # part C restarts it
    redis_server.start()
    mariadb.start()
    try:
        ok = True
        if args.seconds_a > 0:
            ok &= part("A: two daemons, one SIGKILLed and restarted at random moments", redis_server,
                       mariadb, 2, args.seconds_a, args.schedules, rng, args.keep_logs,
                       gap_secs=TWO_DAEMONS_GAP_SECS, min_kills=int(args.seconds_a / 2))
        if args.seconds_b > 0:
            ok &= part("B: one daemon, SIGKILLed and restarted at random moments", redis_server,
                       mariadb, 1, args.seconds_b, args.schedules, rng, args.keep_logs,
                       gap_secs=ONE_DAEMON_GAP_SECS, down_secs=ONE_DAEMON_DOWN_SECS)
        if args.seconds_c > 0:
            persistent.start()
            ok &= part("C: two daemons with clocks 1.5 s apart (libfaketime), SIGKILLs, the "
                       "first one's clock stepped back 1 h for 4 s, and Redis restarted with "
                       "persistence", persistent, mariadb, 2,
                       args.seconds_c, args.schedules, rng, args.keep_logs,
                       gap_secs=TWO_DAEMONS_GAP_SECS, min_kills=int(args.seconds_c / 4),
                       clock_offsets=(0.0, 1.5), clock_step=(args.seconds_c / 3, -3600.0, 4.0),
                       redis_restart=RedisRestart(persistent, args.seconds_c * 2 / 3, 2.0))
    finally:
        redis_server.cleanup()
        persistent.cleanup()
        mariadb.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
