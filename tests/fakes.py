"""In-memory doubles of the daemon's I/O edges (schedule source, Redis store, RQ enqueuer), for the
Clock-driven unit tests of the planner, refresher and dispatcher. Real-server behaviour is covered
by the integration tests; these keep the same observable contract in a few lines each."""

from __future__ import annotations

from twisted.internet import defer

from btu_twisted.enqueuer import ALREADY_ENQUEUED, ENQUEUED, NOT_ENQUEUED
from btu_twisted.schedules import Schedule
from btu_twisted.store import make_member, split_member
from btu_twisted.redis_connections import settings_for_url
from btu_twisted.sites.layout import SINGLE_SITE


def schedule(schedule_id="TS-000001", cron="0 3 * * *", enabled=True, zone="UTC", **fields) -> Schedule:
    """A valid schedule row with overridable fields."""
    values = dict(task_id="BTU-00001", queue_name="default", function_string="tests.support.jobfuncs.noop",
                  arguments="{'a': 1}", description="a task")
    values.update(fields)
    return Schedule(schedule_id=schedule_id, cron_string=cron, enabled=enabled, time_zone=zone, **values)


class FakeSource:
    """Rows in a dict; `failing` makes every read fail like an unreachable database."""

    description = "fake source"

    def __init__(self, *rows: Schedule):
        self.rows = {row.schedule_id: row for row in rows}
        self.failing = False
        self.reads: list[list[str]] = []

    def enabled_ids(self):
        if self.failing:
            return defer.fail(ConnectionError("database down"))
        return defer.succeed([i for i, row in self.rows.items() if row.enabled])

    def read(self, ids):
        self.reads.append(list(ids))
        if self.failing:
            return defer.fail(ConnectionError("database down"))
        return defer.succeed({i: self.rows[i] for i in ids if i in self.rows})

    def close(self):
        pass


class FakeStore:
    """The schedule set as {member: score} plus the planned map, with the Lua scripts' semantics."""

    settings = settings_for_url("redis://127.0.0.1:6379/0")  # errors name this server
    layout = SINGLE_SITE

    def __init__(self):
        self.zset: dict[str, float] = {}
        self.planned_map: dict[str, str] = {}
        self.failing = False
        self.refreshed_at = None

    def _guard(self):
        if self.failing:
            raise ConnectionError("redis down")

    def add(self, schedule_id: str, when: int) -> None:
        member = make_member(schedule_id, when)
        self.zset[member] = when
        self.planned_map[schedule_id] = member

    def plan(self, entries, now):
        self._guard()
        kept = 0
        for schedule_id, when in entries:
            old = self.planned_map.get(schedule_id)
            if old is not None and old in self.zset and self.zset[old] <= now:
                kept += 1
                continue
            self.zset.pop(old, None)
            self.add(schedule_id, when)
        return defer.succeed(kept)

    def cancel(self, ids):
        self._guard()
        removed = 0
        for schedule_id in ids:
            old = self.planned_map.pop(schedule_id, None)
            removed += self.zset.pop(old, None) is not None
        return defer.succeed(removed)

    def remove_strays(self, members):
        self._guard()
        for member in members:
            parsed = split_member(member)
            if parsed is None or self.planned_map.get(parsed[0]) != member:
                self.zset.pop(member, None)
        return defer.succeed(None)

    def scan_strays(self, cursor, count):
        """ScheduleStore.scan_strays in one page (as Redis scans a small set)."""
        self._guard()
        removed = []
        for member in list(self.zset):
            parsed = split_member(member)
            if parsed is None or self.planned_map.get(parsed[0]) != member:
                del self.zset[member]
                if parsed is not None:
                    removed.append(parsed[0])
        return defer.succeed((0, removed))

    def scan_planned(self, cursor, count):
        """ScheduleStore.scan_planned in one page (as Redis scans a small set)."""
        self._guard()
        return defer.succeed((0, list(self.planned_map)))

    def remove_members(self, members):
        self._guard()
        for member in members:
            self.zset.pop(member, None)
        return defer.succeed(len(members))

    def _sorted(self):
        return sorted(self.zset.items(), key=lambda item: (item[1], item[0]))

    def earliest(self):
        if self.failing:
            return defer.fail(ConnectionError("redis down"))
        found = self._sorted()
        return defer.succeed(found[0] if found else None)

    def count_due(self, until):
        return defer.succeed(sum(1 for _, score in self.zset.items() if score <= until))

    def due(self, until, limit):
        if self.failing:
            return defer.fail(ConnectionError("redis down"))
        return defer.succeed([item for item in self._sorted() if item[1] <= until][:limit])

    def upcoming(self, count):
        return defer.succeed(self._sorted()[:count])

    def count(self):
        return defer.succeed(len(self.zset))

    def mark_refreshed(self, when):
        self._guard()
        self.refreshed_at = when
        return defer.succeed(None)

    def refresh_marked(self):
        self._guard()
        return defer.succeed(self.refreshed_at is not None)


class FakeEnqueuer:
    """Records what would be enqueued and applies the transaction's effects to a FakeStore."""

    def __init__(self, store: FakeStore):
        self.store = store
        self.enqueued = []          # JobSpecs, in order
        self.calls = []             # (fires, not_before)
        self.watermarks: dict[str, int] = {}

    def prepare(self, fires):
        return {fire.member: fire.job for fire in fires if fire.job is not None}

    def dispatch(self, fires, not_before, prepared=None):
        self.calls.append((list(fires), not_before))
        outcomes = []
        for fire in fires:
            if self.watermarks.get(fire.schedule_id, -1) >= fire.when:
                outcomes.append(ALREADY_ENQUEUED)
            elif fire.job is None:
                outcomes.append(NOT_ENQUEUED)
            else:
                self.enqueued.append(fire.job)
                self.watermarks[fire.schedule_id] = fire.when
                outcomes.append(ENQUEUED)
            self.store.zset.pop(fire.member, None)
            current = self.store.planned_map.get(fire.schedule_id)
            if current is None or current == fire.member:
                if fire.next_when is None:
                    self.store.planned_map.pop(fire.schedule_id, None)
                else:
                    self.store.add(fire.schedule_id, fire.next_when)
        return outcomes


def run_now(f, *args, **kwargs):
    """A synchronous stand-in for deferToThreadPool, so Clock-driven tests are deterministic."""
    return defer.maybeDeferred(f, *args, **kwargs)
