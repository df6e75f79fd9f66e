# -*- test-case-name: tests.test_channels -*-
"""Listen on an endpoint at once, so a listener that cannot start stops start-up with a message.

twistd calls startService synchronously and reports what it raises; an endpoint's Deferred that
fails later would only be logged, leaving a daemon without its control channel.
"""

from __future__ import annotations

from twisted.application import service
from twisted.python.failure import Failure


class ListenerError(Exception):
    """A control channel cannot listen; the message names the setting and the problem."""


def listen_now(endpoint, factory, what: str):
    """The listening port of `endpoint`; raises ListenerError naming `what` if it is not at once."""
    outcome: list = []
    endpoint.listen(factory).addBoth(outcome.append)
    if not outcome:
        raise ListenerError(f"listening on {what} did not complete synchronously")
    if isinstance(outcome[0], Failure):
        raise ListenerError(f"cannot listen on {what}: {outcome[0].value}")
    return outcome[0]


class ListeningService(service.Service):
    """A listener that binds in privilegedStartService, as twistd calls it before any thread or
    connection exists (so a failure can exit), or in startService when nothing called that."""

    port = None

    def privilegedStartService(self) -> None:
        self._listen()

    def startService(self) -> None:
        if self.port is None:
            self._listen()
        service.Service.startService(self)

    def _listen(self) -> None:
        """Bind and set ``self.port``; raise ListenerError naming the problem."""
        raise NotImplementedError
