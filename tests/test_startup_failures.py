"""A control channel that cannot listen stops start-up: real `twistd -n btu` and daemon-mode
`twistd btu` subprocesses exit 1 with one line naming the problem and leave no process behind."""

from __future__ import annotations

import os
import socket
import subprocess

from twisted.trial import unittest

from tests.test_channels import taken_tcp_port
from tests.support.daemon import TwistdProcess, short_dir, write_config
from tests.support.servers import shared_redis
from tests.support.workers import REPO_ROOT

EXIT_WAIT_SECS = 15  # not a bound under test: only how long a broken run may take before failing
SCHEDULE_FILE = os.path.join(REPO_ROOT, "btu_twisted", "data", "embedded_schedules.toml")


def session_processes(sid: int) -> list[int]:
    """Pids of live processes in session `sid` (twistd's forks stay in it, or in one they make)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:  # state, ppid, pgrp, session
            found.append(int(entry))
    return found


class StartupFailureTests(unittest.TestCase):
    """Each broken listener setting, in the foreground and in daemon mode."""

    def setUp(self):
        self.dir = short_dir(self)
        self.socket_path = os.path.join(self.dir, "btu.sock")
        self.keys = {"redis_url": shared_redis().url, "socket_path": self.socket_path,
                     "schedule_file": SCHEDULE_FILE, "job_builder": "python"}

    def fails(self, problem: str, **keys) -> None:
        """Both modes exit 1, print exactly one line containing `problem`, leave nothing running."""
        config = write_config(os.path.join(self.dir, "btu.toml"), {**self.keys, **keys})
        pidfile = os.path.join(self.dir, "twistd.pid")
        for mode in (["-n", "--pidfile="],
                     [f"--pidfile={pidfile}", f"--logfile={os.path.join(self.dir, 'twistd.log')}"]):
            daemon = TwistdProcess(self, [*mode, "btu", "--config", config], cwd=self.dir)
            self.assertEqual(daemon.wait(EXIT_WAIT_SECS), 1, daemon.describe())
            lines = daemon.output().strip().splitlines()
            self.assertEqual(len(lines), 1, daemon.describe())
            self.assertTrue(lines[0].startswith("btu: ") and problem in lines[0], daemon.describe())
            self.assertEqual(session_processes(daemon.process.pid), [], daemon.describe())
            self.assertFalse(os.path.exists(pidfile), daemon.describe())

    def test_missing_socket_directory(self):
        """socket_path in a directory that does not exist."""
        missing = os.path.join(self.dir, "missing")
        self.fails(f"the directory {missing} for socket_path",
                   socket_path=os.path.join(missing, "btu.sock"))

    def test_read_only_socket_directory(self):
        """socket_path on a read-only file system (root may write anywhere else)."""
        read_only = os.path.join(self.dir, "ro")
        os.mkdir(read_only)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", read_only],
                                 capture_output=True)
        if mounted.returncode != 0:
            raise unittest.SkipTest(f"cannot mount a read-only tmpfs here: {mounted.stderr!r}")
        self.addCleanup(subprocess.run, ["umount", read_only], capture_output=True)
        self.fails("read-only file system", socket_path=os.path.join(read_only, "btu.sock"))

    def test_live_socket(self):
        """Another process listening on socket_path."""
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        live.bind(self.socket_path)
        live.listen(8)
        self.addCleanup(live.close)
        self.fails(f"another process is already listening on {self.socket_path}")
        self.assertTrue(os.path.exists(self.socket_path))

    def test_regular_file_at_the_path(self):
        """A regular file at socket_path: refused and left in place."""
        with open(self.socket_path, "w") as f:
            f.write("not a socket")
        self.fails("is a regular file, not a socket")
        with open(self.socket_path) as f:
            self.assertEqual(f.read(), "not a socket")

    def test_missing_group(self):
        """socket_file_group_owner naming a group that does not exist."""
        self.fails("group 'btu-no-such-group' does not exist", socket_file_group_owner="btu-no-such-group")

    def test_tcp_port_in_use(self):
        """tcp_socket_port taken by another listener on 127.0.0.1."""
        port = taken_tcp_port(self)
        self.fails(f"tcp_socket_port {port}: 127.0.0.1:{port} is already in use", tcp_socket_port=port)

    def test_http_port_in_use(self):
        """http_port (the dashboard) taken by another listener on its interface."""
        port = taken_tcp_port(self)
        self.fails(f"http_port {port}: 127.0.0.1:{port} is already in use", http_port=port)
