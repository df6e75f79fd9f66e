# -*- test-case-name: tests.test_dashboard -*-
"""The HTTP listener as a service: binds at start-up (an error stops start-up), logs its address."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.web import server

from btu_twisted.channels.listening import ListeningService, listen_now
from btu_twisted.logs import OBSERVER

log = Logger(observer=OBSERVER)


class HTTPService(ListeningService):
    """twisted.web Site on `interface:port` (port 0: a free one, see `.port`); it binds before
    twistd forks or starts threads, like the control channels, so a port in use exits at once."""

    def __init__(self, reactor, interface: str, port: int, root_resource):
        self._reactor = reactor
        self._interface = interface
        self._port_number = port
        self.site = server.Site(root_resource)
        self.site.displayTracebacks = False

    def _listen(self) -> None:
        endpoint = endpoints.TCP4ServerEndpoint(self._reactor, self._port_number, interface=self._interface)
        self.port = listen_now(endpoint, self.site, f"http_interface:http_port {self._interface}:{self._port_number}")
        log.info("dashboard on http://{host}:{port}/ (metrics at /metrics)",
                 host=self._interface, port=self.port.getHost().port)

    def stopService(self):
        service.Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
