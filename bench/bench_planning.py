"""The planner's share of a full refresh, in-process, before and after a change, side by side.

What a refresh of N schedules costs on the reactor thread without the SQL and Redis round trips:
the rows are built by the MariaDB source's own row reader (`sql_source._read_rows` over a cursor
double that returns fresh strings for every read, as pymysql does; 60 distinct daily crons, the
bench task's arguments and overrides) and planned by the real Planner through the real unique
queue, driven by a task.Clock; the store only accepts. Two refreshes run: the start-up one (empty
row cache) and a second one (every row cached, as after `reload`). Figures:
- `parse_arguments` per call and `Schedule.check()` per row (timeit, best of 5);
- CPU seconds of each refresh (process time, tracemalloc off);
- with tracemalloc, the memory still held after the second refresh, by the line that allocated it:
  the ID strings from the ID query, those from the row query, the unique queue's table, the rest.

The "before" column runs the same code of an earlier commit (default 99dd0e0, before issue 13's
changes): `git archive` of its `btu_twisted/` into a temporary directory put first on the path of a
child process, so both columns come from one run on one machine.

Run from the repository root: `.venv/bin/python bench/bench_planning.py [count] [--before REV]`;
`bench/bench_planning.py --child N --cpu-only` is one tree's refreshes alone, for a profiler
(`py-spy record --format raw -- .venv/bin/python bench/bench_planning.py --child 100000 --cpu-only`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import timeit
import tracemalloc

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_BEFORE = "99dd0e0"
DEFAULT_COUNT = 100_000
BATCH = 500  # the planner's default batch size
ARGUMENTS = "{'greeting': 'hi'}"  # the bench task's arguments (bench/common.py insert_task)
OVERRIDES = "{'name': 'bench'}"   # every bench schedule's overrides (bench/common.py insert_schedules)


# --- the child: measures one tree -----------------------------------------------------------

def query_id(i: int) -> str:
    return f"TS-{i:07d}"  # an ID string as the ID query returns it


def row_id(i: int) -> str:
    return f"TS-{i:07d}"  # the same ID as the row query returns it: a separate string


def fresh(text: str) -> str:
    """A new string equal to `text` (pymysql decodes every value anew)."""
    return text[:-1] + text[-1]


def row(i: int) -> tuple:
    """One result row of sql_source.ROWS_SQL, with new string objects as pymysql would return."""
    cron = f"{i % 60} 3 * * *"
    return (row_id(i), "BTU-BENCH-1", 1, "default", fresh(OVERRIDES), cron, "Cron Style", None,
            None, None, None, None, None, "btu_twisted.examples.hello", fresh(ARGUMENTS), 60,
            "bench task", "default")


class RowCursor:
    """A DB-API cursor over rows made in memory, for the SQL source's own row reader."""

    def execute(self, sql: str, params) -> None:
        if "tabSingles" in sql:
            self._result = [("BTU Configuration", "cron_time_zone", fresh("Europe/London"))]
        else:
            self._result = [row(int(schedule_id[3:])) for schedule_id in params]

    def fetchall(self) -> list[tuple]:
        return self._result


class RowSource:
    """The SQL source's interface and row reader (`sql_source._read_rows`) with no thread or server."""

    def __init__(self, count: int, sql_source, schema) -> None:
        self._count = count
        self._read_rows = sql_source._read_rows
        self._schema = schema

    def enabled_ids(self):
        return [query_id(i) for i in range(1, self._count + 1)]

    def read(self, ids):
        from twisted.internet import defer
        return defer.succeed(self._read_rows(RowCursor(), list(ids), self._schema, ("UTC", "config")))


class AcceptingStore:
    """Accepts every plan and cancel at once (Redis is measured by bench_refresh.py)."""

    def plan(self, entries, now):
        from twisted.internet import defer
        return defer.succeed(None)

    def cancel(self, ids):
        from twisted.internet import defer
        return defer.succeed(None)


def child(count: int, memory: bool = True) -> dict:
    from twisted.internet import task

    import btu_twisted
    from btu_twisted import sql_source
    from btu_twisted.planner import Planner, RowCache
    from btu_twisted.schedules import parse_arguments
    from btu_twisted.schema import Schema
    from btu_twisted.stats import Stats
    from btu_twisted.workqueue import UniqueQueue

    figures = {"package": os.path.dirname(btu_twisted.__file__)}
    schema = Schema(schedule_table=True)
    sample = RowSource(1, sql_source, schema).read(["TS-0000001"]).result["TS-0000001"]
    figures["parse_us"] = 1e6 * min(timeit.repeat(lambda: parse_arguments(ARGUMENTS, "arguments"),
                                                  number=20_000, repeat=5)) / 20_000
    figures["check_us"] = 1e6 * min(timeit.repeat(sample.check, number=20_000, repeat=5)) / 20_000

    def world():
        clock = task.Clock()
        clock.advance(time.time())
        source, queue, rows = RowSource(count, sql_source, schema), UniqueQueue(), RowCache()
        planner = Planner(clock, queue, source, AcceptingStore(), rows, Stats(started_at=clock.seconds()),
                          batch_size=BATCH)
        planner.startService()
        return clock, source, queue, rows, planner

    def refresh(clock, source, queue, planner):
        queue.put_many(source.enabled_ids())
        clock.advance(0)
        idle = planner.idle()
        while not idle.called:
            clock.advance(0)

    clock, source, queue, rows, planner = world()
    for name in ("startup_cpu", "second_cpu"):
        began = time.process_time()
        refresh(clock, source, queue, planner)
        figures[name] = time.process_time() - began
    figures["planned"] = len(rows)
    planner.stopService()
    del clock, source, queue, rows, planner

    if not memory:  # `--child N --cpu-only`: for a profiler (py-spy), without tracemalloc's overhead
        return figures
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    clock, source, queue, rows, planner = world()
    refresh(clock, source, queue, planner)
    refresh(clock, source, queue, planner)
    held = tracemalloc.take_snapshot().compare_to(base, "lineno")
    figures["held_mb"] = sum(s.size_diff for s in held) / 1e6
    figures["peak_mb"] = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()

    lines = {(__file__, query_id.__code__.co_firstlineno + 1): "ids_query_mb",
             (__file__, row_id.__code__.co_firstlineno + 1): "ids_rows_mb"}

    def where(stat) -> str:
        frame = stat.traceback[0]
        if frame.filename.endswith("workqueue.py"):
            return "queue_mb"
        return lines.get((frame.filename, frame.lineno), "other_mb")

    for key in ("ids_query_mb", "ids_rows_mb", "queue_mb", "other_mb"):
        figures[key] = 0.0
    for stat in held:
        figures[where(stat)] += stat.size_diff / 1e6
    return figures


# --- the parent: runs both trees and prints them side by side ----------------------------------

def run_child(count: int, tree: str | None) -> dict:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--child", str(count)], env=env, cwd=BENCH_DIR,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])


def main(argv: list[str]) -> None:
    before = DEFAULT_BEFORE
    if "--before" in argv:
        before = argv.pop(argv.index("--before") + 1)
        argv.remove("--before")
    count = int(argv[0]) if argv else DEFAULT_COUNT
    sys.path.insert(0, BENCH_DIR)
    from common import archived_tree, banner, note, table

    banner(f"planning {count} schedules in-process: {before} (before) and the working tree (after)")
    with archived_tree(before) as tree:
        old = run_child(count, tree)
    new = run_child(count, None)
    for label, figures in (("before", old), ("after", new)):
        note(f"{label}: {figures['package']}")
    rows = [
        ("parse_arguments, one call", "µs", "parse_us", "{:.2f}"),
        ("Schedule.check(), one row", "µs", "check_us", "{:.2f}"),
        ("start-up refresh, planner CPU", "s", "startup_cpu", "{:.2f}"),
        ("second refresh (all cached), planner CPU", "s", "second_cpu", "{:.2f}"),
        ("held after 2 refreshes (tracemalloc)", "MB", "held_mb", "{:.1f}"),
        ("  of which ID strings from the ID query", "MB", "ids_query_mb", "{:.1f}"),
        ("  of which ID strings from the row query", "MB", "ids_rows_mb", "{:.1f}"),
        ("  of which the unique queue's table", "MB", "queue_mb", "{:.1f}"),
        ("  of which the rest (rows, cache, stats)", "MB", "other_mb", "{:.1f}"),
        ("peak during the refreshes (tracemalloc)", "MB", "peak_mb", "{:.1f}"),
    ]
    table([(name, unit, fmt.format(old[key]), fmt.format(new[key])) for name, unit, key, fmt in rows],
          ("measure", "unit", "before", "after"))
    note(f"rows planned: {old['planned']} before, {new['planned']} after")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(int(sys.argv[2]), memory="--cpu-only" not in sys.argv)))
    else:
        main(sys.argv[1:])
