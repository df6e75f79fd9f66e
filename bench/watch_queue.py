"""Watch one RQ queue list and record when each job id arrives (run by bench/common.Watcher).

Usage: watch_queue.py <redis socket> <db> <queue> <duration secs> <expect (0: no limit)> <out.jsonl>

BLPOP blocks until a job id is pushed (Redis wakes the client as soon as the push, or the EXEC
holding it, completes), so the watcher uses no CPU between fires; after each wake it drains what
else is there with LPOP <count>. Each line of the output is `[arrival unix time, job id]`; the time
is taken right after the reply, so it is an upper bound of the arrival by one round trip.
"""

from __future__ import annotations

import json
import sys
import time

import redis

DRAIN_COUNT = 1000


def main() -> None:
    socket_path, db, queue, duration, expect, out_path = sys.argv[1:7]
    client = redis.Redis(unix_socket_path=socket_path, db=int(db), socket_timeout=None)
    client.ping()
    key = f"rq:queue:{queue}"
    deadline = time.time() + float(duration)
    expect = int(expect)
    arrivals: list[tuple[float, str]] = []
    print("ready", flush=True)
    while not expect or len(arrivals) < expect:
        remaining = deadline - time.time()
        if remaining <= 0:
            break
        popped = client.blpop([key], timeout=min(1.0, remaining))
        now = time.time()
        if popped is None:
            continue
        arrivals.append((now, popped[1].decode()))
        while True:
            more = client.lpop(key, DRAIN_COUNT)
            now = time.time()
            if not more:
                break
            arrivals.extend((now, job_id.decode()) for job_id in more)
    with open(out_path, "w") as f:
        for arrival in arrivals:
            f.write(json.dumps(arrival) + "\n")


if __name__ == "__main__":
    main()
