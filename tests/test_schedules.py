"""Specification of the schedule record: argument parsing, merging, row checks and next fire."""

from __future__ import annotations

from datetime import datetime, timezone

from twisted.trial import unittest

from btu_twisted.cron import CronError
from btu_twisted import schedules
from btu_twisted.schedules import (ARGUMENTS_CACHE_ENTRIES, ARGUMENTS_CACHE_MAX_CHARS, MAX_ARGUMENTS_CHARS,
                                   MAX_ARGUMENTS_DEPTH, Schedule, ScheduleError, parse_arguments)


def unix(text: str) -> int:
    """Unix seconds of an ISO 8601 UTC text like 2026-03-08T07:00:00."""
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp())


def schedule(**changes) -> Schedule:
    fields = dict(schedule_id="TS-000001", task_id="BTU-00001", cron_string="0 3 * * *",
                  queue_name="default", function_string="myapp.tasks.run")
    fields.update(changes)
    return Schedule(**fields)


class ParseArgumentsTests(unittest.SynchronousTestCase):
    """parse_arguments reads Frappe's Python-literal dict text and nothing else."""

    def assertRejected(self, text: str, *fragments: str) -> None:
        error = self.assertRaises(ScheduleError, parse_arguments, text, "argument_overrides")
        self.assertIn("argument_overrides", str(error))
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_dict(self):
        """A dict literal with nested builtins is parsed."""
        self.assertEqual(parse_arguments("{'a': 1, 'b': [True, None, 2.5], 'c': {'d': (1, 'x')}}", "arguments"),
                         {"a": 1, "b": [True, None, 2.5], "c": {"d": (1, "x")}})

    def test_surrounding_whitespace(self):
        """Whitespace and newlines around the dict, as a text field stores them, are fine."""
        self.assertEqual(parse_arguments("\n  {'a': 1}\n", "arguments"), {"a": 1})

    def test_none_and_empty(self):
        """NULL, empty and blank columns mean no arguments."""
        for text in (None, "", "   \n"):
            self.assertEqual(parse_arguments(text, "arguments"), {})

    def test_not_a_dict(self):
        """A literal that is not a dict is rejected naming the column and the type."""
        self.assertRejected("[1, 2]", "dict", "list")

    def test_code_rejected(self):
        """Code is never evaluated: a call expression is rejected."""
        self.assertRejected("__import__('os').system('x')", "not a Python literal")

    def test_syntax_error(self):
        """Text that is not Python is rejected naming the column."""
        self.assertRejected("{'a': }", "not a Python literal")

    def test_oversize(self):
        """Text longer than MAX_ARGUMENTS_CHARS is rejected before parsing."""
        text = "{'a': '" + "x" * MAX_ARGUMENTS_CHARS + "'}"
        self.assertRejected(text, str(MAX_ARGUMENTS_CHARS))

    def test_deep_brackets(self):
        """Brackets nested deeper than MAX_ARGUMENTS_DEPTH are rejected."""
        depth = MAX_ARGUMENTS_DEPTH + 5
        self.assertRejected("{'a': " + "[" * depth + "]" * depth + "}", "nested")

    def test_very_deep_brackets(self):
        """Thousands of nested brackets are rejected without a RecursionError."""
        self.assertRejected("{'a': " + "[" * 20000 + "]" * 20000 + "}")

    def test_deep_unary_chain(self):
        """A long chain of unary minus is rejected as a ScheduleError, not a parser crash."""
        self.assertRejected("{'a': " + "-" * 60000 + "1}")

    def test_deep_operator_chain(self):
        """A long chain of additions is rejected as a ScheduleError, not a RecursionError."""
        self.assertRejected("{'a': " + "1+" * 30000 + "1}")

    def test_depth_hidden_behind_string_brackets(self):
        """Closing brackets inside a string do not let deeper nesting through."""
        depth = MAX_ARGUMENTS_DEPTH + 20
        text = "{'a': '" + ")" * depth + "', 'b': " + "[" * depth + "]" * depth + "}"
        self.assertRejected(text, "nested")

    def test_allowed_depth(self):
        """Nesting up to MAX_ARGUMENTS_DEPTH levels, the dict included, is accepted."""
        depth = MAX_ARGUMENTS_DEPTH - 1
        value = parse_arguments("{'a': " + "[" * depth + "]" * depth + "}", "arguments")
        self.assertEqual(list(value), ["a"])

    def test_non_string_keys(self):
        """Keys become keyword arguments, so they must be strings."""
        self.assertRejected("{1: 'a'}", "string")


class ArgumentsCacheTests(unittest.SynchronousTestCase):
    """Parsed argument texts are cached by text, bounded, and never shared with a caller."""

    def setUp(self):
        schedules._frozen_cached.cache_clear()
        self.addCleanup(schedules._frozen_cached.cache_clear)

    def test_repeated_text_parsed_once(self):
        """The second parse of the same text is answered from the cache."""
        parse_arguments("{'a': 1}", "arguments")
        parse_arguments("{'a': 1}", "argument_overrides")
        info = schedules._frozen_cached.cache_info()
        self.assertEqual((info.misses, info.hits), (1, 1))

    def test_fresh_nested_objects(self):
        """Changing a parsed value at any depth leaves the next parse of that text untouched."""
        text = "{'a': {'b': [1, {'c': [2]}]}, 's': {3}}"
        first = parse_arguments(text, "arguments")
        first["a"]["b"][1]["c"].append(99)
        first["s"].add(4)
        first["new"] = 1
        self.assertEqual(parse_arguments(text, "arguments"), {"a": {"b": [1, {"c": [2]}]}, "s": {3}})

    def test_same_values_as_uncached(self):
        """Every literal type round-trips through the cache unchanged, types included."""
        text = "{'s': 'x', 'b': b'y', 'i': 1000000000000000000000000000000, 'f': -0.5, 'c': 1j, 'n': None, 't': (1, [2]), 'e': ..., 'fs': set()}"
        value = parse_arguments(text, "arguments")
        self.assertEqual(value, {"s": "x", "b": b"y", "i": 10**30, "f": -0.5, "c": 1j, "n": None,
                                 "t": (1, [2]), "e": ..., "fs": set()})
        self.assertEqual([type(v) for v in value.values()],
                         [str, bytes, int, float, complex, type(None), tuple, type(...), set])

    def test_errors_name_the_column_each_time(self):
        """A bad text is rejected every time, naming the column it came from on that call."""
        for column in ("arguments", "argument_overrides", "arguments"):
            error = self.assertRaises(ScheduleError, parse_arguments, "[1]", column)
            self.assertEqual(str(error), f"{column}: expected a dict, got list")

    def test_bounded(self):
        """The cache holds at most ARGUMENTS_CACHE_ENTRIES texts, each no longer than the limit."""
        for i in range(ARGUMENTS_CACHE_ENTRIES + 10):
            parse_arguments(f"{{'i': {i}}}", "arguments")
        self.assertEqual(schedules._frozen_cached.cache_info().currsize, ARGUMENTS_CACHE_ENTRIES)
        long_text = "{'a': '" + "x" * ARGUMENTS_CACHE_MAX_CHARS + "'}"
        schedules._frozen_cached.cache_clear()
        self.assertEqual(parse_arguments(long_text, "arguments"), {"a": "x" * ARGUMENTS_CACHE_MAX_CHARS})
        self.assertEqual(schedules._frozen_cached.cache_info().currsize, 0)


class KwargsTests(unittest.SynchronousTestCase):
    """Schedule.kwargs merges task arguments with schedule overrides."""

    def test_override_merge(self):
        """Overrides replace matching keys, add new ones, and keep the others."""
        row = schedule(arguments="{'a': 1, 'b': 2}", argument_overrides="{'b': 20, 'c': 30}")
        self.assertEqual(row.kwargs(), {"a": 1, "b": 20, "c": 30})

    def test_no_arguments(self):
        """Without arguments or overrides the kwargs are empty."""
        self.assertEqual(schedule().kwargs(), {})

    def test_overrides_only(self):
        """Overrides alone are the kwargs."""
        self.assertEqual(schedule(argument_overrides="{'x': 'y'}").kwargs(), {"x": "y"})

    def test_bad_override_names_column(self):
        """A bad override is reported against argument_overrides, not arguments."""
        error = self.assertRaises(ScheduleError, schedule(argument_overrides="[]").kwargs)
        self.assertIn("argument_overrides", str(error))

    def test_fresh_dict_each_call(self):
        """Each call returns a new dict: a job cannot change another job's kwargs."""
        row = schedule(arguments="{'a': [1]}")
        row.kwargs()["a"].append(2)
        self.assertEqual(row.kwargs(), {"a": [1]})


class CheckTests(unittest.SynchronousTestCase):
    """Schedule.check says which column makes a row unusable."""

    def test_good_row(self):
        """A complete row passes."""
        schedule(arguments="{'a': 1}").check()

    def test_missing_task(self):
        """An empty task column is reported."""
        error = self.assertRaises(ScheduleError, schedule(task_id="").check)
        self.assertIn("task", str(error))

    def test_missing_function(self):
        """A task without function_string (or no task row) is reported naming the task."""
        error = self.assertRaises(ScheduleError, schedule(function_string="").check)
        self.assertIn("BTU-00001", str(error))
        self.assertIn("function_string", str(error))

    def test_empty_cron(self):
        """An empty cron_string is reported."""
        error = self.assertRaises(ScheduleError, schedule(cron_string="").check)
        self.assertIn("cron_string", str(error))

    def test_empty_queue(self):
        """An empty queue_name is reported."""
        error = self.assertRaises(ScheduleError, schedule(queue_name="").check)
        self.assertIn("queue_name", str(error))

    def test_bad_duration(self):
        """A zero or negative max_task_duration is reported with its value."""
        for value in (0, -5):
            error = self.assertRaises(ScheduleError, schedule(max_task_duration=value).check)
            self.assertIn("max_task_duration", str(error))
            self.assertIn(str(value), str(error))

    def test_bad_arguments(self):
        """Unparseable arguments make the row unusable."""
        error = self.assertRaises(ScheduleError, schedule(arguments="{'a':").check)
        self.assertIn("arguments", str(error))


class NextFireTests(unittest.SynchronousTestCase):
    """Schedule.next_fire evaluates the cron string in the schedule's zone."""

    def test_in_zone(self):
        """03:00 in New York in winter is 08:00 UTC."""
        row = schedule(time_zone="America/New_York")
        self.assertEqual(row.next_fire(unix("2026-01-15T00:00:00")), unix("2026-01-15T08:00:00"))

    def test_strictly_after(self):
        """A fire exactly at `after` is not returned again."""
        row = schedule(time_zone="America/New_York")
        self.assertEqual(row.next_fire(unix("2026-01-15T08:00:00")), unix("2026-01-16T08:00:00"))

    def test_fractional_after(self):
        """A fractional `after` just before a fire still returns that fire."""
        row = schedule()
        self.assertEqual(row.next_fire(unix("2026-01-15T02:59:59") + 0.5), unix("2026-01-15T03:00:00"))

    def test_spring_forward_gap(self):
        """A fixed time inside the spring-forward gap fires once, at the end of the gap."""
        row = schedule(cron_string="30 2 * * *", time_zone="America/New_York")
        self.assertEqual(row.next_fire(unix("2026-03-08T05:00:00")), unix("2026-03-08T07:00:00"))

    def test_returns_int(self):
        """The result is whole unix seconds."""
        self.assertIsInstance(schedule().next_fire(0.0), int)

    def test_bad_cron(self):
        """An invalid cron string raises CronError."""
        self.assertRaises(CronError, schedule(cron_string="61 * * * *").next_fire, 0.0)
