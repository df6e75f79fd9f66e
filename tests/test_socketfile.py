"""Specification of the control socket file: claiming the path, mode and group, cleanup."""

from __future__ import annotations

import grp
import os
import shutil
import socket
import stat
import tempfile

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from btu_twisted.channels.text_protocol import ControlFactory
from btu_twisted.channels.unix_socket import (ControlSocketService, SocketPathError, prepare_socket_path,
                                    resolve_group)

PING = b'{"request_type": "ping", "request_content": null}'
MISSING_GROUP = "btu-no-such-group-42"


def ping(path: str) -> bytes:
    """Ask the daemon at path for pong, the way the BTU app does (without the 0.5 s nap)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
        sock.sendall(PING)
        data = b""
        while chunk := sock.recv(2048):
            data += chunk
        return data
    finally:
        sock.close()


def make_stale_socket(path: str) -> None:
    """Leave a socket file behind with nobody listening, as after a crash."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()


class TempDirMixin:
    def make_dir(self) -> str:
        # mktemp() paths can exceed the 107-byte unix socket path limit; /tmp is short.
        directory = tempfile.mkdtemp(prefix="btu-sock-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory


class PrepareSocketPathTests(TempDirMixin, unittest.SynchronousTestCase):
    """prepare_socket_path frees a stale socket and refuses everything else."""

    def setUp(self):
        self.path = os.path.join(self.make_dir(), "btu.sock")

    def test_nothing_there(self):
        """A free path in an existing directory is fine and stays free."""
        prepare_socket_path(self.path)
        self.assertFalse(os.path.lexists(self.path))

    def test_missing_parent_directory(self):
        """A missing parent directory is reported by name."""
        path = os.path.join(os.path.dirname(self.path), "nope", "btu.sock")
        error = self.assertRaises(SocketPathError, prepare_socket_path, path)
        self.assertIn(os.path.dirname(path), str(error))
        self.assertIn("does not exist", str(error))

    def test_path_too_long(self):
        """A path longer than a unix socket address allows is refused clearly."""
        error = self.assertRaises(SocketPathError, prepare_socket_path, "/tmp/" + "x" * 200)
        self.assertIn("longer than 107 bytes", str(error))

    def test_stale_socket_removed(self):
        """A socket nobody listens on is stale and removed."""
        make_stale_socket(self.path)
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        prepare_socket_path(self.path)
        self.assertFalse(os.path.lexists(self.path))

    def test_live_listener_detected(self):
        """A socket someone listens on is refused, and that listener keeps working."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(self.path)
        listener.listen(5)
        error = self.assertRaises(SocketPathError, prepare_socket_path, self.path)
        self.assertEqual(str(error), f"another process is already listening on {self.path}; "
                                     "stop it or choose another socket_path")
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(client.close)
        client.connect(self.path)
        listener.settimeout(2)
        listener.accept()[0].close()  # the probe's connection
        listener.accept()[0].close()  # the client's connection

    def test_regular_file_untouched(self):
        """A regular file at the path is refused by name and left exactly as it was."""
        with open(self.path, "w") as f:
            f.write("precious")
        error = self.assertRaises(SocketPathError, prepare_socket_path, self.path)
        self.assertIn(self.path, str(error))
        self.assertIn("a regular file", str(error))
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")

    def test_directory_untouched(self):
        """A directory at the path is refused and left in place with its contents."""
        os.mkdir(self.path)
        with open(os.path.join(self.path, "keep"), "w") as f:
            f.write("x")
        error = self.assertRaises(SocketPathError, prepare_socket_path, self.path)
        self.assertIn("a directory", str(error))
        self.assertTrue(os.path.exists(os.path.join(self.path, "keep")))

    def test_symlink_untouched(self):
        """A symbolic link, even to a stale socket, is refused; link and target both stay."""
        target = self.path + ".real"
        make_stale_socket(target)
        os.symlink(target, self.path)
        error = self.assertRaises(SocketPathError, prepare_socket_path, self.path)
        self.assertIn(f"a symbolic link to {target}", str(error))
        self.assertTrue(os.path.islink(self.path))
        self.assertTrue(stat.S_ISSOCK(os.lstat(target).st_mode))

    def test_fifo_untouched(self):
        """A FIFO at the path is refused and kept."""
        os.mkfifo(self.path)
        error = self.assertRaises(SocketPathError, prepare_socket_path, self.path)
        self.assertIn("a FIFO", str(error))
        self.assertTrue(stat.S_ISFIFO(os.lstat(self.path).st_mode))


class ResolveGroupTests(unittest.SynchronousTestCase):
    """resolve_group turns socket_file_group_owner into a gid."""

    def test_no_group(self):
        """No configured group means no gid."""
        self.assertIsNone(resolve_group(None))
        self.assertIsNone(resolve_group(""))

    def test_existing_group(self):
        """An existing group name resolves to its gid."""
        name = grp.getgrgid(os.getgid()).gr_name
        self.assertEqual(resolve_group(name), os.getgid())

    def test_missing_group(self):
        """A group that does not exist is an error naming it."""
        error = self.assertRaises(SocketPathError, resolve_group, MISSING_GROUP)
        self.assertEqual(str(error),
                         f"socket_file_group_owner: group '{MISSING_GROUP}' does not exist")


class ControlSocketServiceTests(TempDirMixin, unittest.TestCase):
    """ControlSocketService listens with the exact mode and group and cleans up after itself."""

    def setUp(self):
        self.path = os.path.join(self.make_dir(), "btu.sock")

    def make_service(self, **kwargs):
        factory = ControlFactory({}, reactor)
        return ControlSocketService(reactor, self.path, factory, **kwargs)

    def start(self, **kwargs):
        service = self.make_service(**kwargs)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        return service

    def other_group(self):
        """A group other than our own, when one exists, to prove the chown really happens."""
        for entry in grp.getgrall():
            if entry.gr_gid != os.getgid():
                return entry
        return grp.getgrgid(os.getgid())

    @defer.inlineCallbacks
    def test_serves_and_removes_socket(self):
        """The service answers on its socket and removes the file when stopped."""
        service = self.start()
        self.assertTrue(service.running)
        reply = yield threads.deferToThread(ping, self.path)
        self.assertEqual(reply, b"pong")
        yield service.stopService()
        self.assertFalse(os.path.lexists(self.path))

    def test_mode_and_group_applied(self):
        """The socket gets mode 0660 and the configured group exactly."""
        group = self.other_group()
        if os.getuid() != 0:  # only root may give a socket to a group it is not in
            group = grp.getgrgid(os.getgid())
        self.start(mode=0o660, group=group.gr_name)
        st = os.lstat(self.path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        self.assertEqual(st.st_gid, group.gr_gid)

    def test_mode_is_exact_whatever_the_umask(self):
        """A restrictive umask does not change the configured mode."""
        old = os.umask(0o077)
        try:
            self.start(mode=0o660)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.lstat(self.path).st_mode), 0o660)

    def test_missing_group_fails_first(self):
        """A missing group fails start-up before the path is touched, even a stale socket."""
        make_stale_socket(self.path)
        service = self.make_service(group=MISSING_GROUP)
        error = self.assertRaises(SocketPathError, service.startService)
        self.assertIn(f"group '{MISSING_GROUP}' does not exist", str(error))
        self.assertFalse(service.running)
        self.assertTrue(stat.S_ISSOCK(os.lstat(self.path).st_mode))

    @defer.inlineCallbacks
    def test_stale_socket_replaced(self):
        """A stale socket left by a crashed daemon is replaced and the new one answers."""
        make_stale_socket(self.path)
        self.start()
        reply = yield threads.deferToThread(ping, self.path)
        self.assertEqual(reply, b"pong")

    @defer.inlineCallbacks
    def test_second_daemon_refused(self):
        """A second service on a live path refuses to start and the first keeps answering."""
        self.start()
        second = self.make_service()
        error = self.assertRaises(SocketPathError, second.startService)
        self.assertIn("another process is already listening", str(error))
        self.assertFalse(second.running)
        reply = yield threads.deferToThread(ping, self.path)
        self.assertEqual(reply, b"pong")

    def test_regular_file_refused(self):
        """A regular file at socket_path stops start-up and survives."""
        with open(self.path, "w") as f:
            f.write("precious")
        service = self.make_service()
        self.assertRaises(SocketPathError, service.startService)
        self.assertFalse(service.running)
        with open(self.path) as f:
            self.assertEqual(f.read(), "precious")

    @defer.inlineCallbacks
    def test_stop_leaves_a_replacement_alone(self):
        """If our socket was replaced by another file while running, stopping leaves that file."""
        service = self.start()
        os.unlink(self.path)
        with open(self.path, "w") as f:
            f.write("not ours")
        yield service.stopService()
        with open(self.path) as f:
            self.assertEqual(f.read(), "not ours")

    @defer.inlineCallbacks
    def test_stop_after_socket_removed(self):
        """Stopping after someone removed the socket file succeeds quietly."""
        service = self.start()
        os.unlink(self.path)
        yield service.stopService()
        self.assertFalse(os.path.lexists(self.path))
