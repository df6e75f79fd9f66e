# -*- test-case-name: tests.test_dashboard -*-
"""The HTTP listener as a service: listens at start-up (an error stops start-up), logs its address."""

from __future__ import annotations

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.web import server

from btu_twisted.logs import OBSERVER

log = Logger(observer=OBSERVER)


class HTTPListenError(RuntimeError):
    """The dashboard's port cannot be listened on."""


class HTTPService(service.Service):
    """twisted.web Site on `interface:port` (port 0: a free one, see `.port`)."""

    def __init__(self, reactor, interface: str, port: int, root_resource):
        self._reactor = reactor
        self._interface = interface
        self._port_number = port
        self.site = server.Site(root_resource)
        self.site.displayTracebacks = False
        self.port = None

    def startService(self) -> None:
        endpoint = endpoints.TCP4ServerEndpoint(self._reactor, self._port_number, interface=self._interface)
        outcome = []
        endpoint.listen(self.site).addBoth(outcome.append)
        if not outcome or not hasattr(outcome[0], "getHost"):
            error = outcome[0].value if outcome else "did not complete"
            raise HTTPListenError(f"cannot listen for HTTP on {self._interface}:{self._port_number}: {error}")
        self.port = outcome[0]
        service.Service.startService(self)
        log.info("dashboard on http://{host}:{port}/ (metrics at /metrics)",
                 host=self._interface, port=self.port.getHost().port)

    def stopService(self):
        service.Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
