"""Redis RPC ACK latency (DESIGN §6b): what BTU 15.1.1's client waits for on every save.

Ours only (the peers have no RPC): `twistd -n btu` with MariaDB and a private Redis. The client
does what the app does: a fresh response key, LPUSH onto `btu:scheduler:commands`, BLPOP the key.

1. One queued: sequential `create_task_schedule` requests, LPUSH -> ACK popped by BLPOP.
2. 1 000 queued: 1 000 commands pushed in one LPUSH; each one's latency is LPUSH -> its ACK,
   read by BLPOPs in push order (the ACKs come in that order, so a BLPOP never waits behind a
   later one). Repeated ROUNDS times; every command must be ACKed and every schedule planned.

The app gives up after 5 s, so every ACK must come well within that.
Run from the repository root: `.venv/bin/python bench/bench_rpc.py [requests] [rounds]`.
"""

from __future__ import annotations

import json
import sys
import time
import uuid

from common import (Daemon, Servers, banner, insert_schedules, insert_task, ms, note, percentile,
                    schedule_ids, table, verdict)

COMMANDS_KEY = "btu:scheduler:commands"
PLANNED_KEY = "btu_scheduler:planned"
BTU_APP_WAIT_SECS = 5
BURST = 1000
FAR_CRON = "0 0 1 1 *"


def _command(schedule_id: str) -> tuple[str, str]:
    key = f"btu:scheduler:rpc:{uuid.uuid4()}"
    return key, json.dumps({"request_type": "create_task_schedule", "request_content": schedule_id,
                            "response_key": key})


def _acked(redis, key: str) -> bool:
    """The app's wait: BLPOP the response key for 5 s; True for an "ok" ACK."""
    found = redis.blpop([key], timeout=BTU_APP_WAIT_SECS)
    return found is not None and json.loads(found[1])["status"] == "ok"


def one_queued(redis, ids: list[str]) -> tuple[list[float], int]:
    latencies = []
    for schedule_id in ids:
        key, message = _command(schedule_id)
        began = time.perf_counter()
        redis.lpush(COMMANDS_KEY, message)
        if _acked(redis, key):
            latencies.append(time.perf_counter() - began)
    return latencies, len(ids) - len(latencies)


def thousand_queued(redis, ids: list[str]) -> tuple[list[float], int]:
    commands = [_command(schedule_id) for schedule_id in ids]
    began = time.perf_counter()
    redis.lpush(COMMANDS_KEY, *[message for _, message in commands])
    latencies = [time.perf_counter() - began for key, _ in commands if _acked(redis, key)]
    return latencies, len(ids) - len(latencies)


def wait_planned(redis, ids: list[str], timeout: float = 60.0) -> int:
    """How many of `ids` are not planned once all are, or `timeout` has passed."""
    deadline = time.monotonic() + timeout
    while True:
        planned = redis.hmget(PLANNED_KEY, ids)
        unplanned = sum(1 for p in planned if p is None)
        if unplanned == 0 or time.monotonic() > deadline:
            return unplanned
        time.sleep(0.05)


def main(requests: int = 500, rounds: int = 3) -> int:
    banner("Redis RPC: LPUSH -> ACK (BTU 15.1.1's client), twistd -n btu, MariaDB + Redis")
    with Servers() as servers:
        ids = schedule_ids(requests + rounds * BURST, "TS-RPC")
        with servers.sql() as conn:
            insert_task(conn)
        daemon = Daemon(servers).start()
        try:
            daemon.wait_refreshed()
            with servers.sql() as conn:  # after the start-up refresh: each create plans a new row
                insert_schedules(conn, [(sid, FAR_CRON, "bench") for sid in ids])
            redis = servers.redis_client()
            single, single_missing = one_queued(redis, ids[:requests])
            burst, burst_missing, last = [], 0, []
            for n in range(rounds):
                chunk = ids[requests + n * BURST:requests + (n + 1) * BURST]
                latencies, missing = thousand_queued(redis, chunk)
                burst += latencies
                burst_missing += missing
                last.append(max(latencies, default=float("nan")))
            unplanned = wait_planned(redis, ids)
        finally:
            daemon.stop()
    rows = [("1 queued", len(single), ms(percentile(single, 50)), ms(percentile(single, 99)),
             ms(max(single)), single_missing),
            (f"{BURST} queued (x{rounds})", len(burst), ms(percentile(burst, 50)),
             ms(percentile(burst, 99)), ms(max(burst)), burst_missing)]
    table(rows, ("case", "ACKs", "p50", "p99", "max", "no ACK in 5 s"))
    note(f"last ACK of each {BURST}-burst: {', '.join(ms(x) for x in last)}")
    note(f"schedules not planned after the run: {unplanned} of {len(ids)}")
    ok = single_missing == burst_missing == unplanned == 0 and max(burst) < BTU_APP_WAIT_SECS
    note(f"every command ACKed within the app's {BTU_APP_WAIT_SECS} s and executed: {verdict(ok)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:])))
