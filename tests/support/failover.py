"""Failover harness (issue 12): two `twistd -n btu` daemons reach Redis through three Sentinels; the
master is SIGKILLed or frozen (SIGSTOP) mid-stream, Sentinel promotes the replica, and the audit of
RQ's queue lists on the new master counts duplicates, fires lost and the longest gap.

A fire is *acknowledged* when a daemon logged that it enqueued it; with `redis_min_replicas = 1`
none of those may be missing after the failover. Used by tests/test_failover.py (short) and
bench/failover.py (long, with both faults and both replica settings).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field

from tests.support.chaos import (ChaosDaemon, Outage, Report, chaos_crons, check, create_schedules,
                                 daemon_keys, read_coalesced, read_enqueued, start_all,
                                 wait_planned)
from tests.support.daemon import control_request
from tests.support.redis_topology import SERVICE, SentinelGroup

POLL_INTERVAL_SECS = 5   # scheduler_polling_interval: also the dispatcher's longest back-off
DRAIN_SECS = 2.0         # daemons keep running this long after the window closes
ENQUEUED_LINE = re.compile(r"enqueued (\S+) for \S+ as btu-\S+-(\d+) in queue")


@dataclass
class FailoverRun:
    """The verdict of one failover run."""

    report: Report
    fault: str
    min_replicas: int
    fault_at: float
    promoted_at: float
    resumed_at: float
    longest_gap: float
    acknowledged_lost: list = field(default_factory=list)  # [(schedule, when)] logged, not in Redis
    daemons: list = field(default_factory=list)
    masters: list = field(default_factory=list)  # each daemon's `status` redis_master at the end

    def summary(self) -> str:
        return (f"{self.fault}, redis_min_replicas={self.min_replicas}: {self.report.summary()}; "
                f"promoted {self.promoted_at - self.fault_at:.2f} s after the fault, enqueuing again "
                f"after {self.resumed_at - self.fault_at:.2f} s, longest gap between enqueues "
                f"{self.longest_gap:.2f} s, acknowledged fires lost {len(self.acknowledged_lost)}")


def run_failover(directory: str, group: SentinelGroup, mariadb_socket: str, sql, database: str,
                 schedules: int, fault: str, min_replicas: int, before_secs: float,
                 after_secs: float, log=lambda text: None) -> FailoverRun:
    """Create the schedules, start two daemons on Sentinel, fault the master, audit the new one."""
    crons = chaos_crons(schedules)
    create_schedules(sql, crons)
    fleet = [ChaosDaemon(f"btu{n}", directory, daemon_keys(
        f"failover daemon {n}", os.path.join(directory, f"btu{n}.sock"),
        f"redis://127.0.0.1:{group.master.port}/0", mariadb_socket, database,
        redis_sentinels=group.sentinel_addresses, redis_sentinel_service=SERVICE,
        redis_min_replicas=min_replicas, scheduler_polling_interval=POLL_INTERVAL_SECS))
        for n in range(2)]
    admin = group.master.client()
    try:
        start_all(fleet)
        wait_planned(admin, schedules)
        window_start = time.time() + 1.0
        time.sleep(1.0 + before_secs)
        fault_at = time.time()
        if fault == "kill -9":
            group.master.kill()
        else:
            group.master.pause()
        promoted_at = group.wait_promoted()
        log(f"{fault}: replica promoted {promoted_at - fault_at:.2f} s after the fault")
        time.sleep(after_secs)
        window_end = time.time()
        time.sleep(DRAIN_SECS)
        masters = [json.loads(control_request(d.socket_path, {"request_type": "status",
                                                              "request_content": None}))["redis_master"]
                   for d in fleet]
    finally:
        admin.close()
        for daemon in fleet:
            daemon.stop()
    new_master = group.replica.client()
    try:
        found = read_enqueued(new_master)
        found.coalesced = read_coalesced(new_master)
    finally:
        new_master.close()
    enqueued_at = sorted(when + late for (_sid, when), late in found.lateness.items()
                         if window_start <= when <= window_end)
    resumed_at = min((t for t in enqueued_at if t > promoted_at), default=window_end)
    outage = Outage("redis master", fault_at, resumed_at)
    report = check(found, crons, (window_start, window_end), [outage], single_daemon=True)
    acknowledged = {(sid, int(when)) for daemon in fleet
                    for sid, when in ENQUEUED_LINE.findall(daemon.log())}
    lost = sorted(key for key in acknowledged
                  if window_start <= key[1] <= window_end and not found.counts[key])
    gaps = [b - a for a, b in zip(enqueued_at, enqueued_at[1:])]
    return FailoverRun(report, fault, min_replicas, fault_at, promoted_at, resumed_at,
                       max(gaps, default=0.0), lost, fleet, masters)
