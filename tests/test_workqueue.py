"""Specification of the internal queue: a unique FIFO of schedule IDs with outcome notification."""

from __future__ import annotations

import sys
from collections import OrderedDict

from twisted.internet import defer
from twisted.trial import unittest

from btu_twisted.workqueue import UniqueQueue, resolve


def taken(batch) -> list[str]:
    """The IDs of a batch of (id, waiters) pairs."""
    return [item for item, _waiters in batch]


class UniqueQueueTests(unittest.SynchronousTestCase):
    """UniqueQueue keeps IDs in arrival order, once each."""

    def setUp(self):
        self.queue = UniqueQueue()

    def test_fifo(self):
        """IDs come out in the order they were queued."""
        for item in ("TS-3", "TS-1", "TS-2"):
            self.queue.put(item)
        self.assertEqual(taken(self.successResultOf(self.queue.get_batch(10))), ["TS-3", "TS-1", "TS-2"])

    def test_unique(self):
        """An ID already waiting is not queued a second time, and keeps its place."""
        self.queue.put("TS-1")
        self.queue.put("TS-2")
        self.queue.put("TS-1")
        self.assertEqual(len(self.queue), 2)
        self.assertEqual(taken(self.successResultOf(self.queue.get_batch(10))), ["TS-1", "TS-2"])

    def test_drained_queue_gives_memory_back(self):
        """Once a large backlog is drained, the queue's table is as small as a new queue's."""
        self.queue.put_many(f"TS-{i}" for i in range(10_000))
        while len(self.queue):
            self.successResultOf(self.queue.get_batch(500))
        self.assertEqual(sys.getsizeof(self.queue._items), sys.getsizeof(OrderedDict()))

    def test_both_callers_told(self):
        """Both callers that queued the same ID get its outcome through resolve()."""
        first, second = self.queue.put("TS-1"), self.queue.put("TS-1")
        [(item, waiters)] = self.successResultOf(self.queue.get_batch(10))
        resolve(waiters, "planned")
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), ("planned", "planned"))

    def test_outcome_waits_for_resolve(self):
        """A caller's Deferred has not fired while its ID is waiting or being processed."""
        done = self.queue.put("TS-1")
        self.assertNoResult(done)
        self.successResultOf(self.queue.get_batch(10))
        self.assertNoResult(done)

    def test_queued_again_after_taken(self):
        """Once taken by the consumer, the same ID can be queued again."""
        self.queue.put("TS-1")
        self.successResultOf(self.queue.get_batch(10))
        self.assertNotIn("TS-1", self.queue)
        self.queue.put("TS-1")
        self.assertIn("TS-1", self.queue)

    def test_get_batch_waits(self):
        """get_batch on an empty queue fires only when something is queued."""
        batch = self.queue.get_batch(10)
        self.assertNoResult(batch)
        self.queue.put("TS-1")
        self.assertEqual(taken(self.successResultOf(batch)), ["TS-1"])

    def test_batch_size(self):
        """A batch holds at most `size` IDs, the oldest; the rest stay queued in order."""
        for n in range(5):
            self.queue.put(f"TS-{n}")
        self.assertEqual(taken(self.successResultOf(self.queue.get_batch(2))), ["TS-0", "TS-1"])
        self.assertEqual(len(self.queue), 3)
        self.assertEqual(taken(self.successResultOf(self.queue.get_batch(2))), ["TS-2", "TS-3"])

    def test_put_many(self):
        """put_many queues new IDs in order, skips waiting ones, and leaves no waiters."""
        self.queue.put("TS-2")
        self.queue.put_many(["TS-1", "TS-2", "TS-3", "TS-1"])
        batch = self.successResultOf(self.queue.get_batch(10))
        self.assertEqual(taken(batch), ["TS-2", "TS-1", "TS-3"])
        self.assertEqual([len(waiters) for _item, waiters in batch], [1, 0, 0])

    def test_put_many_wakes_consumer(self):
        """put_many wakes a consumer waiting on an empty queue."""
        batch = self.queue.get_batch(10)
        self.queue.put_many(["TS-1", "TS-2"])
        self.assertEqual(taken(self.successResultOf(batch)), ["TS-1", "TS-2"])

    def test_put_many_empty(self):
        """put_many of nothing does not wake the consumer."""
        batch = self.queue.get_batch(10)
        self.queue.put_many([])
        self.assertNoResult(batch)

    def test_cancel_get_batch(self):
        """Cancelling a pending get_batch fails it with CancelledError and loses no later ID."""
        batch = self.queue.get_batch(10)
        batch.cancel()
        self.failureResultOf(batch, defer.CancelledError)
        self.queue.put("TS-1")
        self.assertEqual(taken(self.successResultOf(self.queue.get_batch(10))), ["TS-1"])

    def test_resolve_after_caller_gave_up(self):
        """resolve() on a waiter its caller cancelled (a reply timeout) does not raise."""
        done = self.queue.put("TS-1")
        done.cancel()
        self.failureResultOf(done, defer.CancelledError)
        [(_item, waiters)] = self.successResultOf(self.queue.get_batch(10))
        resolve(waiters, "planned")
