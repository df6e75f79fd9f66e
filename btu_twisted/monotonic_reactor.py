"""An epoll reactor whose timers run on the monotonic clock, installed before anything imports the
default one (txredisapi does at import).

Twisted's reactors (the asyncio one too, in Twisted 26) arm `callLater` in wall-clock time
(`runtimeSeconds`, i.e. `time.time`), so a backward step of the host clock stalls every timer by
the step's size and a forward step fires them all at once. Here the reactor's `seconds()` is
`time.monotonic()`: it measures delays only, and every instant (cron, due-ness, watermarks) comes
from `clock.RedisClock` instead.
"""

from __future__ import annotations

import sys
import time

from twisted.internet.epollreactor import EPollReactor


class MonotonicEPollReactor(EPollReactor):
    """The epoll reactor, with `seconds()` (and so every DelayedCall) on CLOCK_MONOTONIC."""

    def seconds(self) -> float:
        return time.monotonic()


def install() -> None:
    """Install MonotonicEPollReactor unless a reactor is installed already (twistd --reactor, trial)."""
    if "twisted.internet.reactor" in sys.modules:
        return
    from twisted.internet.main import installReactor

    installReactor(MonotonicEPollReactor())


def is_monotonic(reactor) -> bool:
    """Whether `reactor`'s timers are immune to steps of the host clock."""
    return isinstance(reactor, MonotonicEPollReactor)
