# -*- test-case-name: tests.test_channels -*-
"""The loopback TCP control listener (`tcp_socket_port`): the unix socket's protocol on 127.0.0.1,
as btu_scheduler_py offers it."""

from __future__ import annotations

import errno
import socket

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger

from btu_twisted.channels.listening import ListenerError, ListeningService, listen_now
from btu_twisted.logs import OBSERVER

LOOPBACK = "127.0.0.1"  # never another interface: the protocol has no authentication

log = Logger(observer=OBSERVER)


def check_tcp_port(port: int, interface: str = LOOPBACK, setting: str = "tcp_socket_port") -> None:
    """Raise ListenerError now if interface:`port` cannot be bound (in use, or not allowed)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's listenTCP does
        probe.bind((interface, port))
    except OSError as e:
        problem = "already in use" if e.errno == errno.EADDRINUSE else e.strerror
        raise ListenerError(f"{setting} {port}: {interface}:{port} is {problem}; stop what "
                            "listens there or choose another port") from None
    finally:
        probe.close()


class ControlTCPService(ListeningService):
    """Listen on 127.0.0.1:port with the control factory; an error raises from start-up."""

    def __init__(self, reactor, port: int, factory) -> None:
        self.reactor = reactor
        self.tcp_port = port
        self.factory = factory
        self.port = None

    def _listen(self) -> None:
        endpoint = endpoints.TCP4ServerEndpoint(self.reactor, self.tcp_port, interface=LOOPBACK)
        self.port = listen_now(endpoint, self.factory, f"tcp_socket_port {LOOPBACK}:{self.tcp_port}")
        log.info("control TCP listener on {host}:{port}", host=LOOPBACK, port=self.tcp_port)

    def stopService(self):
        service.Service.stopService(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None
