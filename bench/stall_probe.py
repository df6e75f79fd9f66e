"""Catch a stalled reactor in the act: ping every running chaos daemon's control socket every 100 ms
and, when a reply takes longer than the threshold, `py-spy dump` that process at once, with its
/proc state (R: running or waiting for a CPU; S/D: blocked) and CPU time before and after.

Run beside `bench/chaos_long.py` (it finds the daemons by their `/tmp/btu_chaos_*` configuration
and follows each restart), as root or with ptrace allowed, py-spy in the venv (`pip install py-spy`):
`.venv/bin/python bench/stall_probe.py 90 [--threshold 0.5] [--log /tmp/stall_probe.log]`.
Prints one line per stall; the dumps go to the log.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import socket
import subprocess
import sys
import threading
import time

PY_SPY = os.path.join(os.path.dirname(sys.executable), "py-spy")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PING = json.dumps({"request_type": "ping", "request_content": None}).encode()
PERIOD_SECS = 0.1
with open("/proc/stat") as _stat:
    BOOT_TIME = float(_stat.read().split("btime ")[1].split()[0])


def proc_stat(pid: int) -> tuple[str, float, float]:
    """(state, CPU seconds, start time as unix seconds) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return fields[0], (int(fields[11]) + int(fields[12])) / CLK_TCK, BOOT_TIME + int(fields[19]) / CLK_TCK


def ping(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(30)
        client.connect(path)
        client.sendall(PING)
        while client.recv(100):
            pass


class Probe:
    def __init__(self, threshold: float, log_path: str):
        self.threshold = threshold
        self.log = open(log_path, "a")
        self.lock = threading.Lock()
        self.watched: set[int] = set()

    def watch(self, pid: int, path: str) -> None:
        """Ping `pid` until it is gone; a failed ping (not listening yet, or gone) ends the watch,
        and the next scan watches it again if it still runs."""
        while os.path.exists(f"/proc/{pid}"):
            began = time.monotonic()
            failed = []
            pinger = threading.Thread(target=lambda: self._ping(path, failed))
            pinger.start()
            pinger.join(self.threshold)
            if pinger.is_alive():
                self.dump(pid, began, pinger)
            if failed:
                break
            time.sleep(max(0.0, PERIOD_SECS - (time.monotonic() - began)))
        self.watched.discard(pid)

    @staticmethod
    def _ping(path: str, failed: list) -> None:
        try:
            ping(path)
        except OSError as e:
            failed.append(e)

    def dump(self, pid: int, began: float, pinger: threading.Thread) -> None:
        try:
            state, cpu, started = proc_stat(pid)
            stacks = subprocess.run([PY_SPY, "dump", "--pid", str(pid)], capture_output=True,
                                    text=True, timeout=10).stdout
            state_after, cpu_after, _ = proc_stat(pid)
        except (OSError, subprocess.SubprocessError):
            return
        pinger.join()
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
        line = (f"{time.time():.3f} pid {pid} up {time.time() - started:.1f} s: ping took "
                f"{time.monotonic() - began:.2f} s; state {state} -> {state_after}, CPU "
                f"{cpu:.2f} -> {cpu_after:.2f} s; load {load}")
        with self.lock:
            print(line, flush=True)
            self.log.write(f"=== {line}\n{stacks}\n")
            self.log.flush()

    def scan(self) -> None:
        for pid_dir in glob.glob("/proc/[0-9]*"):
            pid = int(pid_dir[len("/proc/"):])
            if pid in self.watched:
                continue
            try:
                with open(f"{pid_dir}/cmdline") as f:
                    command = f.read().split("\0")
            except OSError:
                continue
            if "btu" in command and "--config" in command:
                config = command[command.index("--config") + 1]
                if config.startswith("/tmp/btu_chaos_") and config.endswith(".toml"):
                    self.watched.add(pid)
                    threading.Thread(target=self.watch, args=(pid, config[:-len(".toml")] + ".sock"),
                                     daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float)
    parser.add_argument("--threshold", type=float, default=0.5, help="seconds a ping may take")
    parser.add_argument("--log", default="/tmp/stall_probe.log")
    args = parser.parse_args()
    probe = Probe(args.threshold, args.log)
    until = time.time() + args.seconds
    while time.time() < until:
        probe.scan()
        time.sleep(0.2)


if __name__ == "__main__":
    main()
