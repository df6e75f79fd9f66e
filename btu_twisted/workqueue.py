# -*- test-case-name: tests.test_workqueue -*-
"""The internal queue between listener/refresher and consumer: a unique FIFO of schedule IDs.

An ID already waiting is not added twice, but every caller that queued it is told when the
consumer has processed it (the socket reply can then include the next fire time).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet import defer


class UniqueQueue:
    """FIFO of unique string IDs with a Deferred-returning `get_batch`."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, list[defer.Deferred]] = OrderedDict()
        self._waiting: defer.Deferred | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def put(self, item: str) -> defer.Deferred:
        """Queue `item` unless it is waiting already; the Deferred fires with its outcome."""
        done: defer.Deferred = defer.Deferred()
        self._items.setdefault(item, []).append(done)
        if self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)
        return done

    def put_many(self, items) -> None:
        """Queue many IDs whose outcomes nobody waits for (the refresher)."""
        for item in items:
            self._items.setdefault(item, [])
        if self._items and self._waiting is not None:
            waiting, self._waiting = self._waiting, None
            waiting.callback(None)

    @defer.inlineCallbacks
    def get_batch(self, size: int):
        """Wait until something is queued, then take up to `size` IDs (oldest first).

        Returns a list of (item, [Deferreds to fire with the outcome]) pairs.
        """
        while not self._items:
            self._waiting = defer.Deferred(lambda d: setattr(self, "_waiting", None))
            yield self._waiting
        batch = []
        while self._items and len(batch) < size:
            batch.append(self._items.popitem(last=False))
        if not self._items:
            self._items = OrderedDict()  # popping never shrinks a dict's table: a drained queue gives it back
        return batch


def resolve(waiters: list[defer.Deferred], outcome: Any) -> None:
    """Tell everyone who queued an ID what became of it."""
    for waiter in waiters:
        waiter.callback(outcome)
