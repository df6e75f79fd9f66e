"""Watching a real daemon's clock and pushes: libfaketime settings that let a test step a
subprocess's wall clock while it runs, and Redis MONITOR recording when (by Redis time) each RQ
job id was pushed onto a queue, the measure of "enqueued before its instant"."""

from __future__ import annotations

import os
import threading

LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"  # Debian package faketime


def faketime_env(offset_file: str) -> dict:
    """Environment for a process whose wall clock is offset by the seconds written in
    `offset_file` (re-read at every clock call); its monotonic clock stays real, as under an NTP
    step."""
    return {"LD_PRELOAD": LIBFAKETIME, "FAKETIME_TIMESTAMP_FILE": offset_file,
            "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def set_faketime_offset(offset_file: str, seconds: float) -> None:
    """Offset the wall clock of the processes reading `offset_file` by `seconds` (atomically)."""
    with open(offset_file + ".tmp", "w") as f:
        f.write(f"{seconds:+g}\n")
    os.replace(offset_file + ".tmp", offset_file)


class PushMonitor:
    """Redis MONITOR in a thread: the Redis time at which each job id was pushed onto an RQ queue
    (`queue`, or any queue when None). When Redis restarts, it connects again at once (every
    RECONNECT_SECS), before the daemons' back-off lets them push again; `unseen` says whether a
    push slipped through meanwhile."""

    RECONNECT_SECS = 0.01

    def __init__(self, redis_server, queue: str | None = None):
        self._server = redis_server
        self._key = None if queue is None else f"rq:queue:{queue}"
        self.pushes: list[tuple[str, float]] = []
        self.reconnects = 0
        self._stopped = threading.Event()
        self._client = self._monitor = None
        self._connect()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _connect(self) -> None:
        self._client = self._server.client(socket_timeout=None)
        self._monitor = self._client.monitor()
        self._monitor.__enter__()

    def _run(self):
        while not self._stopped.is_set():
            try:
                self._listen()
            except Exception:
                pass  # Redis went away (or stop() closed the connection)
            while not self._stopped.is_set():
                self._close()
                try:
                    self._connect()
                    self.reconnects += 1
                    break
                except Exception:
                    self._stopped.wait(self.RECONNECT_SECS)

    def _listen(self):
        for command in self._monitor.listen():
            parts = command["command"].split(" ")
            if parts[0] in ("RPUSH", "LPUSH") and len(parts) > 2 and (
                    parts[1] == self._key if self._key else parts[1].startswith("rq:queue:")):
                self.pushes.extend((job_id, command["time"]) for job_id in parts[2:])

    def _close(self):
        try:
            self._client.close()
            self._monitor.connection.disconnect()
        except Exception:
            pass

    def stop(self):
        self._stopped.set()
        self._close()
        self._thread.join(5)

    def unseen(self, job_ids) -> list[str]:
        """The ids among `job_ids` (read from the queue lists) that no watched push carried."""
        seen = {job_id for job_id, _ in list(self.pushes)}
        return sorted(set(job_ids) - seen)

    def fires(self) -> dict[int, float]:
        """{fire instant: Redis time pushed} of a one-schedule queue; fails on a duplicate push."""
        out: dict[int, float] = {}
        for job_id, at in list(self.pushes):
            when = int(job_id.rsplit("-", 1)[1])
            if when in out:
                raise AssertionError(f"{job_id} pushed twice")
            out[when] = at
        return out

    def early(self) -> list[str]:
        """Job ids (`btu-<schedule>-<instant>`) pushed before their fire instant by Redis time."""
        return [f"{job_id} pushed at {at:.6f}" for job_id, at in list(self.pushes)
                if at < int(job_id.rsplit("-", 1)[1])]
