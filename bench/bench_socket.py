"""The control socket (DESIGN §9): `create_task_schedule` -> next fire in Redis, and 200 concurrent
clients.

Ours only (the peers have no socket): `twistd -n btu` with MariaDB. The schedules are inserted into
SQL after the daemon's start-up refresh, so each request plans a schedule Redis has never seen
(cron `0 0 1 1 *`: nothing fires during the run).

1. Latency, sequential requests, two ways:
   - send -> member in Redis: the client sends the request, then polls `HGET btu_scheduler:planned
     <id>` in a tight loop until the member is there (the measure of the target);
   - send -> reply: the reply is written after planning, so it is an upper bound of the above
     (and it is checked: the member must be in Redis when the reply arrives).
2. Load: 200 client threads (4 processes x 50), each sending one request per connection as the BTU
   app does (blocking connect, JSON without newline, read to EOF): 90 % `ping`, 10 % `status`,
   for LOAD_SECS seconds. Any exception, `Error:` reply or wrong reply counts as an error.

Run from the repository root: `.venv/bin/python bench/bench_socket.py [requests] [load seconds]`.
"""

from __future__ import annotations

import json
import multiprocessing
import socket
import sys
import threading
import time

from common import (Daemon, Servers, banner, control_request, cpu_seconds, insert_schedules, insert_task,
                    memory_mb, ms, note, percentile, schedule_ids, table, verdict)

TARGET_P50_SECS = 0.002
TARGET_P99_SECS = 0.010
TARGET_RATE = 2000
CLIENTS = 200
PROCESSES = 4
PLANNED_KEY = "btu_scheduler:planned"
FAR_CRON = "0 0 1 1 *"


def _send(socket_path: str, payload: dict) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(socket_path)
    client.sendall(json.dumps(payload).encode("utf-8"))
    return client


def _read_all(client: socket.socket) -> str:
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    client.close()
    return b"".join(chunks).decode("utf-8")


def measure_latency(servers: Servers, daemon: Daemon, requests: int) -> dict:
    ids = schedule_ids(2 * requests, "TS-SOCK")
    with servers.sql() as conn:
        insert_schedules(conn, [(sid, FAR_CRON, "bench") for sid in ids])
    redis = servers.redis_client(0)
    polled, replied, bad = [], [], 0
    for n, schedule_id in enumerate(ids):
        payload = {"request_type": "create_task_schedule", "request_content": schedule_id}
        if n % 2 == 0:  # send -> member in Redis (poll), then read the reply
            began = time.perf_counter()
            client = _send(daemon.socket_path, payload)
            while redis.hget(PLANNED_KEY, schedule_id) is None:
                if time.perf_counter() - began > 10:
                    raise RuntimeError(f"{schedule_id} not planned within 10 s")
            polled.append(time.perf_counter() - began)
            reply = _read_all(client)
        else:  # send -> reply; the member must already be there
            began = time.perf_counter()
            reply = control_request(daemon.socket_path, payload)
            replied.append(time.perf_counter() - began)
            if redis.hget(PLANNED_KEY, schedule_id) is None:
                bad += 1
        if "Next run at" not in reply:
            bad += 1
    redis.close()
    return {"polled": polled, "replied": replied, "bad": bad}


# --- load --------------------------------------------------------------------------------------

PING = json.dumps({"request_type": "ping", "request_content": None}).encode()
STATUS = json.dumps({"request_type": "status", "request_content": None}).encode()


def _client_thread(socket_path: str, deadline: float, out: dict, lock: threading.Lock) -> None:
    ok = errors = 0
    kinds: dict[str, int] = {}
    latencies = []
    n = 0
    while time.time() < deadline:
        n += 1
        status = n % 10 == 0
        began = time.perf_counter()
        try:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(10)
            try:
                client.connect(socket_path)
                client.sendall(STATUS if status else PING)
                chunks = []
                while chunk := client.recv(65536):
                    chunks.append(chunk)
            finally:
                client.close()
            reply = b"".join(chunks).decode()
            good = ("uptime_secs" in json.loads(reply)) if status else reply == "pong"
            if not good:
                raise ValueError(f"unexpected reply {reply[:60]!r}")
            ok += 1
            latencies.append(time.perf_counter() - began)
        except Exception as e:  # every failure is counted, by kind
            errors += 1
            kind = f"{type(e).__name__}: {str(e)[:60]}"
            kinds[kind] = kinds.get(kind, 0) + 1
    with lock:
        out["ok"] += ok
        out["errors"] += errors
        out["latencies"].extend(latencies[::10])  # a sample keeps the pipe small
        for kind, count in kinds.items():
            out["kinds"][kind] = out["kinds"].get(kind, 0) + count


def _client_process(socket_path: str, threads: int, start_at: float, deadline: float, results) -> None:
    out = {"ok": 0, "errors": 0, "latencies": [], "kinds": {}}
    lock = threading.Lock()
    time.sleep(max(0.0, start_at - time.time()))
    workers = [threading.Thread(target=_client_thread, args=(socket_path, deadline, out, lock))
               for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(out)


def measure_load(daemon: Daemon, seconds: float) -> dict:
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start_at = time.time() + 1.0
    deadline = start_at + seconds
    procs = [ctx.Process(target=_client_process,
                         args=(daemon.socket_path, CLIENTS // PROCESSES, start_at, deadline, results))
             for _ in range(PROCESSES)]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = cpu_seconds(daemon.pid)
    outs = [results.get(timeout=seconds + 60) for _ in procs]
    elapsed = time.time() - start_at
    cpu = cpu_seconds(daemon.pid) - cpu_before
    for proc in procs:
        proc.join()
    total = {"ok": sum(o["ok"] for o in outs), "errors": sum(o["errors"] for o in outs),
             "latencies": [x for o in outs for x in o["latencies"]], "kinds": {}, "elapsed": elapsed,
             "cpu": cpu / elapsed}
    for o in outs:
        for kind, count in o["kinds"].items():
            total["kinds"][kind] = total["kinds"].get(kind, 0) + count
    return total


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    banner("control socket: create_task_schedule -> Redis, and 200 concurrent clients (ours only; "
           "the peers have no control socket)")
    with Servers() as servers:
        with servers.sql() as conn:
            insert_task(conn)
        daemon = Daemon(servers, db=0).start()
        try:
            daemon.wait_refreshed()
            note(f"latency: {requests} requests each way, sequential, MariaDB source, new schedule IDs")
            lat = measure_latency(servers, daemon, requests)
            note(f"load: {CLIENTS} concurrent clients ({PROCESSES} processes x {CLIENTS // PROCESSES} "
                 f"threads), 90 % ping / 10 % status, {seconds:.0f} s")
            load = measure_load(daemon, seconds)
            rss, hwm = memory_mb(daemon.pid)
        finally:
            daemon.stop()

    rate = load["ok"] / load["elapsed"]
    rows = [
        ("send -> member in Redis, p50", f"<= {ms(TARGET_P50_SECS)}", ms(percentile(lat["polled"], 50))),
        ("send -> member in Redis, p99", f"<= {ms(TARGET_P99_SECS)}", ms(percentile(lat["polled"], 99))),
        ("send -> reply (after planning), p50", "", ms(percentile(lat["replied"], 50))),
        ("send -> reply (after planning), p99", "", ms(percentile(lat["replied"], 99))),
        ("replies without the next fire / member missing", "0", lat["bad"]),
        (f"load: requests/s ({CLIENTS} clients)", f">= {TARGET_RATE}", f"{rate:.0f}"),
        ("load: errors", "0", load["errors"]),
        ("load: requests answered", "", load["ok"]),
        ("load: latency p50 / p99", "",
         f"{ms(percentile(load['latencies'], 50))} / {ms(percentile(load['latencies'], 99))}"
         if load["latencies"] else "-"),
        ("load: daemon CPU (one core = 100 %)", "", f"{100 * load['cpu']:.0f} %"),
        ("daemon VmRSS / VmHWM after the load", "", f"{rss:.1f} / {hwm:.1f} MB"),
    ]
    table(rows, ("measure", "target", "ours"))
    for kind, count in sorted(load["kinds"].items(), key=lambda kv: -kv[1])[:5]:
        note(f"load error x{count}: {kind}")
    p50, p99 = percentile(lat["polled"], 50), percentile(lat["polled"], 99)
    note(f"socket -> Redis p50 {ms(p50)}: {verdict(p50 <= TARGET_P50_SECS)}; p99 {ms(p99)}: "
         f"{verdict(p99 <= TARGET_P99_SECS)}; load {rate:.0f} req/s with {load['errors']} errors: "
         f"{verdict(rate >= TARGET_RATE and load['errors'] == 0)}")


if __name__ == "__main__":
    main()
