# -*- test-case-name: tests.test_socketfile -*-
"""The control socket's file: claim the path safely, listen on it, and clean up after ourselves.

A stale socket (nobody accepting) is replaced; a live one means another daemon owns the path, so
we refuse to start; anything that is not a socket is never deleted.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
import stat

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python.failure import Failure

from btu_twisted.channels.listening import ListenerError, ListeningService, listen_now
from btu_twisted.logs import OBSERVER

# Probing an existing socket happens once, at start-up, so a short blocking connect is fine.
PROBE_TIMEOUT_SECS = 1.0
# Pending connections the kernel queues while the reactor is busy; a client with a timeout gets
# EAGAIN from connect() once it is full, so keep it well above the expected concurrent clients
# (200 in DESIGN §9); Linux caps it at net.core.somaxconn (4096 by default).
DEFAULT_BACKLOG = 1024
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107

log = Logger(observer=OBSERVER)


class SocketPathError(ListenerError):
    """The control socket's path or group cannot be used; the message says why."""


def _describe(mode: int, path: str) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        try:
            return f"a symbolic link to {os.readlink(path)}"
        except OSError:
            return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a socket"


def prepare_socket_path(path: str) -> None:
    """Make ``path`` free to bind: remove a stale socket, refuse anything else that is there.

    Raises SocketPathError if the parent directory is missing, a process is listening on the
    path, or the path exists and is not a socket (it is never deleted then).
    """
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise SocketPathError(f"socket_path {path} is longer than {MAX_SOCKET_PATH_BYTES} bytes, "
                              "the limit for unix socket addresses")
    parent = os.path.dirname(os.path.abspath(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not os.path.isdir(parent):
            raise SocketPathError(f"the directory {parent} for socket_path {path} does not exist")
        _check_writable(parent, path)
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketPathError(f"socket_path {path} exists and is {_describe(st.st_mode, path)}, "
                              "not a socket; refusing to replace it")

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT_SECS)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        _check_writable(parent, path)
        log.info("removing stale control socket {path}", path=path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    except FileNotFoundError:
        return
    except (TimeoutError, BlockingIOError):
        # A full accept backlog: somebody is listening but busy.
        raise SocketPathError(f"another process is already listening on {path}; stop it or "
                              "choose another socket_path") from None
    except OSError as e:
        raise SocketPathError(f"cannot tell whether {path} is in use ({e.strerror}); remove it if "
                              "no daemon uses it, or choose another socket_path") from None
    finally:
        probe.close()
    raise SocketPathError(f"another process is already listening on {path}; stop it or choose "
                          "another socket_path")


def _check_writable(directory: str, path: str) -> None:
    """Binding creates (and replacing removes) an entry in `directory`: it must be writable."""
    if os.access(directory, os.W_OK | os.X_OK):
        return
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        why = "is on a read-only file system"
    else:
        why = f"is not writable by uid {os.getuid()}"
    raise SocketPathError(f"the directory {directory} for socket_path {path} {why}")


def check_socket_path(path: str, group: str | None) -> None:
    """Everything startService will need, checked now: the group, then the path."""
    resolve_group(group)
    prepare_socket_path(path)


def resolve_group(name: str | None) -> int | None:
    """The gid for socket_file_group_owner, or None when no group is configured."""
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise SocketPathError(f"socket_file_group_owner: group '{name}' does not exist") from None


class ControlSocketService(ListeningService):
    """Listen on a unix socket file with an exact mode and group; remove it again on stop.

    Path and group problems raise SocketPathError synchronously, so twistd exits with the
    message instead of running without its control socket. twistd listens in
    privilegedStartService, before any thread or connection exists, so the process can exit.
    """

    def __init__(self, reactor, path: str, factory, mode: int = 0o660, group: str | None = None,
                 backlog: int = DEFAULT_BACKLOG) -> None:
        self.reactor = reactor
        self.path = path
        self.factory = factory
        self.mode = mode
        self.group = group
        self.backlog = backlog
        self.port = None
        self._identity: tuple[int, int] | None = None

    def _listen(self) -> None:
        gid = resolve_group(self.group)
        prepare_socket_path(self.path)
        endpoint = endpoints.UNIXServerEndpoint(self.reactor, self.path, backlog=self.backlog,
                                                mode=self.mode, wantPID=False)
        try:
            self.port = listen_now(endpoint, self.factory, self.path)
        except ListenerError as e:
            raise SocketPathError(str(e)) from None
        try:
            # Twisted chmods after bind already; repeat it so the mode is exact whatever the
            # reactor does, and set the group the BTU app's user belongs to.
            os.chmod(self.path, self.mode)
            if gid is not None:
                os.chown(self.path, -1, gid)
            st = os.lstat(self.path)
        except OSError as e:
            self.port.stopListening()
            self.port = None
            raise SocketPathError(f"cannot set mode {self.mode:04o} / group {self.group} on "
                                  f"{self.path}: {e.strerror}") from None
        self._identity = (st.st_dev, st.st_ino)
        log.info("control socket listening on {path} (mode {mode}, group {group})",
                 path=self.path, mode=f"{self.mode:04o}", group=self.group)

    def stopService(self):
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is None:
            return None
        if not self._still_ours():
            log.warn("{path} is no longer our control socket; leaving it in place", path=self.path)
            # twisted's unix Port unlinks its path unconditionally when it stops; a NUL-prefixed
            # (abstract) path is the one it leaves alone, so whatever replaced ours survives.
            if hasattr(port, "_bindPath"):
                port._bindPath = b"\0"
        d = port.stopListening()
        if d is not None:
            d.addErrback(self._unlink_failed)
            d.addCallback(lambda _: self._remove_if_ours())
        else:
            self._remove_if_ours()
        return d

    def _still_ours(self) -> bool:
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == self._identity

    def _remove_if_ours(self) -> None:
        if self._still_ours():
            try:
                os.unlink(self.path)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.warn("could not remove {path}: {error}", path=self.path, error=e.strerror)
        self._identity = None

    def _unlink_failed(self, failure: Failure) -> None:
        failure.trap(OSError)
        log.info("control socket {path} was already gone at stop", path=self.path)
