"""Sentinel failover, long form (issue 12; the short form is tests/test_failover.py).

Two `twistd -n btu` daemons reach a master and its replica through three Sentinels (all private,
on loopback ports chosen at run time); 50 schedules fire every 1-3 s; mid-stream the master is
SIGKILLed, or frozen with SIGSTOP; Sentinel promotes the replica and both daemons follow. Each of
the four runs (kill -9 / SIGSTOP x redis_min_replicas 0 / 1) prints duplicates, fires lost (fires a
daemon acknowledged that the new master does not hold), fires coalesced by the misfire policy,
and the longest gap between two enqueues.

Run from the repository root: `.venv/bin/python bench/failover.py [--schedules 50] [--before 10]
[--after 20]`. Exit status 1 when a run shows a duplicate or a policy violation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.support import frappe_schema  # noqa: E402
from tests.support.failover import run_failover  # noqa: E402
from tests.support.redis_topology import SentinelGroup  # noqa: E402
from tests.support.servers import MariaDBServer  # noqa: E402

DATABASE = "btu_failover"


def one_run(mariadb: MariaDBServer, fault: str, min_replicas: int, args) -> bool:
    cleanups: list = []
    directory = tempfile.mkdtemp(prefix="btu_failover_", dir="/tmp")
    mariadb.drop_database(DATABASE)
    mariadb.create_database(DATABASE)
    sql = mariadb.connect(DATABASE)
    try:
        frappe_schema.create_schema(sql)
        group = SentinelGroup(cleanups.append)
        run = run_failover(directory, group, mariadb.socket_path, sql, DATABASE, args.schedules,
                           fault, min_replicas, args.before, args.after,
                           log=lambda text: print(f"  {text}", flush=True))
    finally:
        sql.close()
        for cleanup in reversed(cleanups):
            cleanup()
    report = run.report
    print(f"{fault:8} min_replicas={min_replicas}: expected {report.expected}, enqueued "
          f"{report.enqueued}, duplicates {len(report.duplicates)}, acknowledged lost "
          f"{len(run.acknowledged_lost)}, unexplained missing {len(report.losses)}, coalesced "
          f"{len(report.coalesced)}, violations {len(report.violations)}; promoted after "
          f"{run.promoted_at - run.fault_at:.2f} s, enqueuing again after "
          f"{run.resumed_at - run.fault_at:.2f} s, longest gap {run.longest_gap:.2f} s", flush=True)
    if report.ok and not run.acknowledged_lost:
        shutil.rmtree(directory, ignore_errors=True)
        return True
    print(report.details(), f"\n  daemon logs in {directory}", flush=True)
    return not (report.duplicates or report.violations or report.unexpected)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=50)
    parser.add_argument("--before", type=float, default=10.0, help="seconds of fires before the fault")
    parser.add_argument("--after", type=float, default=20.0, help="seconds after the promotion")
    args = parser.parse_args()
    mariadb = MariaDBServer()
    mariadb.start()
    try:
        results = [one_run(mariadb, fault, replicas, args)
                   for fault in ("kill -9", "SIGSTOP") for replicas in (0, 1)]
    finally:
        mariadb.cleanup()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
