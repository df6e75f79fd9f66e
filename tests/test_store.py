"""The store's paged scans against a real Redis (the private one of tests/support), and a full
refresh that finds strays and disabled schedules across page boundaries.

600 entries are past Redis's small encodings (128 sorted-set, 512 hash entries), so a page of 10
is a real ZSCAN/HSCAN page.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.trial import unittest

from btu_twisted import refresher as refresher_module
from btu_twisted.planner import Planner, RowCache
from btu_twisted.refresher import Refresher
from btu_twisted.stats import Stats
from btu_twisted.store import PLANNED_KEY, SCHEDULE_KEY, ScheduleStore
from btu_twisted.workqueue import UniqueQueue
from tests.fakes import FakeSource, schedule
from tests.support.servers import use_shared_redis

COUNT = 600
PAGE = 10
FAR = 4_000_000_000  # a planned fire far ahead (2096): never due during a test


def sid(i: int) -> str:
    return f"TS-{i:03d}"


class PagedScanTests(unittest.TestCase):
    timeout = 30

    def setUp(self):
        use_shared_redis(self)
        self.store = ScheduleStore(reactor, self.redis_server.url)
        self.store.open()
        self.addCleanup(self.store.close)
        self.planned = {sid(i): f"{sid(i)}|{FAR + i}" for i in range(COUNT)}
        self.redis.hset(PLANNED_KEY, mapping=self.planned)
        self.redis.zadd(SCHEDULE_KEY, {member: FAR for member in self.planned.values()})
        # Rust-era leftovers of every third schedule, members of a schedule planned nowhere, and
        # malformed members (no ID to name).
        self.strays = {f"{sid(i)}|{FAR - 1 - i}": sid(i) for i in range(0, COUNT, 3)}
        self.strays.update({f"GONE|{i}|{FAR}": f"GONE|{i}" for i in range(20)})
        self.redis.zadd(SCHEDULE_KEY, {member: FAR for member in self.strays})
        self.redis.zadd(SCHEDULE_KEY, {f"garbage-{i}": FAR for i in range(5)})

    def members(self) -> set[str]:
        return {m.decode() for m in self.redis.zrange(SCHEDULE_KEY, 0, -1)}

    @defer.inlineCallbacks
    def scan(self, method) -> list[list[str]]:
        pages, cursor = [], 0
        while True:
            cursor, ids = yield method(cursor, PAGE)
            pages.append(ids)
            if cursor == 0:
                return pages

    @defer.inlineCallbacks
    def test_scan_strays_removes_every_stray_across_pages(self):
        """Paged stray removal leaves exactly the planned members and names each removed stray's ID."""
        pages = yield self.scan(self.store.scan_strays)
        self.assertGreater(len(pages), 10)
        self.assertEqual(self.members(), set(self.planned.values()))
        self.assertEqual(sorted(i for page in pages for i in page), sorted(self.strays.values()))

    @defer.inlineCallbacks
    def test_remove_strays_applies_the_same_rule(self):
        """Given members (the dispatcher's due ones), exactly the strays among them are removed."""
        strays = list(self.members() - set(self.planned.values()))
        removed = yield self.store.remove_strays([*strays, *list(self.planned.values())[:5]])
        self.assertEqual(removed, len(strays))
        self.assertEqual(self.members(), set(self.planned.values()))

    @defer.inlineCallbacks
    def test_scan_planned_lists_every_id_across_pages(self):
        """Paging the planned map names every planned schedule, odd IDs included."""
        self.redis.hset(PLANNED_KEY, "odd|id \u00e9 \"q\" 42", "odd|id \u00e9 \"q\" 42|7")
        pages = yield self.scan(self.store.scan_planned)
        self.assertGreater(len(pages), 10)
        self.assertEqual(set(i for page in pages for i in page),
                         set(self.planned) | {"odd|id \u00e9 \"q\" 42"})

    @defer.inlineCallbacks
    def test_refresh_cancels_disabled_and_drops_strays_across_pages(self):
        """A full refresh paging 10 at a time (and queueing 70 IDs at a time) keeps the enabled
        schedules planned, cancels the disabled ones and removes every stray member."""
        self.patch(refresher_module, "QUEUED_AT_ONCE", 70)
        source = FakeSource(*(schedule(sid(i), cron="0 3 * * *", enabled=i % 2 == 0) for i in range(COUNT)))
        queue, stats = UniqueQueue(), Stats(started_at=reactor.seconds())
        planner = Planner(reactor, queue, source, self.store, RowCache(), stats)
        refresher = Refresher(reactor, source, self.store, queue, planner, stats, 3600, 60, scan_page=PAGE)
        planner.startService()
        self.addCleanup(planner.stopService)
        done = yield refresher._refresh()
        self.assertTrue(done)
        enabled = {sid(i) for i in range(0, COUNT, 2)}
        planned = {k.decode(): v.decode() for k, v in self.redis.hgetall(PLANNED_KEY).items()}
        self.assertEqual(set(planned), enabled)
        self.assertEqual(self.members(), set(planned.values()))
