"""Many sites in one daemon, for minutes (issue 9; the long form of tests/test_sites.py's chaos).

A bench with two sites (or `--sites N`) whose databases on a private MariaDB hold schedules with the
same IDs (TS-000001..) but different tasks, queues and 1-3 s crons; the first site is BTU <= 15.1.0
(the `frappe` builder), the others BTU 15.1.1+ (the `btu` builder). One `twistd -n btu --bench
PATH` serves them all from one private Redis and is SIGKILLed at random moments and restarted after
2-3 s. Per site: no fire enqueued twice, every job on its own site, queue and job id, and the only
missing fires are those the misfire policy coalesces (fires due while the daemon was down, bar the
latest per schedule and outage, caught up once).

Run from the repository root: `.venv/bin/python bench/sites_soak.py [--seconds 180]
[--schedules 8] [--sites 2] [--seed N] [--keep-logs]`. Exit status 1 when a check fails.
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
from tests.support.servers import MariaDBServer, RedisServer  # noqa: E402
from tests.support.sites import run_sites_chaos  # noqa: E402


def site_databases(mariadb: MariaDBServer, count: int) -> dict[str, str]:
    """{site: database}, each database fresh with the Frappe schema; all but the first BTU 15.1.1+."""
    names = ["one", "two", "three", "four", "five", "six", "seven", "eight"][:count]
    databases = {}
    for index, name in enumerate(names):
        database = f"btu_soak_{name}"
        mariadb.drop_database(database)
        mariadb.create_database(database)
        with mariadb.connect(database) as sql:
            frappe_schema.create_schema(sql, "15.1.0" if index == 0 else "15.1.1")
            frappe_schema.create_task_log_table(sql)
        databases[f"{name}.localhost"] = database
    return databases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180, help="chaos duration")
    parser.add_argument("--schedules", type=int, default=8, help="schedules per site")
    parser.add_argument("--sites", type=int, default=2, choices=range(2, 9))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemon log on success")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    print(f"seed {seed}; load average {os.getloadavg()[0]:.2f}", flush=True)
    redis_server, mariadb = RedisServer(), MariaDBServer()
    redis_server.start()
    mariadb.start()
    directory = tempfile.mkdtemp(prefix="btu_sites_", dir="/tmp")
    client = redis_server.client()
    try:
        run = run_sites_chaos(directory, client, redis_server.url, mariadb,
                              site_databases(mariadb, args.sites), args.schedules, args.seconds,
                              random.Random(seed), log=lambda text: print(f"  {text}", flush=True))
    finally:
        client.close()
        redis_server.cleanup()
        mariadb.cleanup()
    kills = next(iter(run.reports.values())).kills
    print(f"\n  sites {args.sites}, schedules per site {args.schedules}, chaos {args.seconds:.0f} s "
          f"(run {run.seconds:.0f} s), kills {kills}, daemon started {run.daemon.starts} times")
    if run.restarts:
        print(f"  kill -> every site answering ping: median {statistics.median(run.restarts):.2f} s, "
              f"max {max(run.restarts):.2f} s (includes the 2-3 s pause before each restart)")
    print(f"  {'site':<18}{'expected':>9}{'enqueued':>9}{'duplic.':>8}{'lost':>6}{'coalesced':>10}"
          f"{'catch-ups':>10}{'unexp.':>7}{'violat.':>8}{'p50 ms':>8}{'p99 ms':>8}")
    for site, report in run.reports.items():
        late = run.lateness[site]
        p50, p99 = ((late[len(late) // 2] * 1000, late[int(len(late) * 0.99)] * 1000) if late
                    else (float("nan"),) * 2)
        print(f"  {site:<18}{report.expected:>9}{report.enqueued:>9}{len(report.duplicates):>8}"
              f"{len(report.losses):>6}{len(report.coalesced):>10}{report.catch_ups:>10}"
              f"{len(report.unexpected):>7}{len(report.violations):>8}{p50:>8.1f}{p99:>8.1f}")
    print("  p50/p99: fire instant -> rq enqueued_at, of the fires due away from every kill and restart")
    print(f"  anomalies (a job off its site, queue or id; a lost push): {len(run.anomalies)}")
    tracebacks = run.daemon.tracebacks()
    print(f"  daemon tracebacks {len(tracebacks)}; load average {os.getloadavg()[0]:.2f}")
    ok = run.ok and not tracebacks
    if not ok:
        print(run.details())
    if not ok or args.keep_logs:
        print(f"  daemon log kept in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"  verdict {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
