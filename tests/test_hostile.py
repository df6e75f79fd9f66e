"""Hostile input against a full in-process daemon on private MariaDB and Redis: fuzzed socket
requests, hostile schedule IDs and argument texts, and secrets that must never be shown."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import pickle
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

import pymysql
import redis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from btu_twisted import config as configuration
from btu_twisted import tap
from btu_twisted.config import ConfigError
from btu_twisted.cron import next_fire
from tests.support import frappe_schema as fs
from tests.support.daemon import (Daemon, TwistdProcess, control_request, daemon_config, poll,
                                  schedule_members, short_dir, wait_for, write_config)
from tests.support.servers import RedisServer, shared_mariadb, shared_redis, use_shared_servers
from tests.support.protocol_oracle import first_complete_object

PLANNED_KEY = "btu_scheduler:planned"  # README: schedule ID -> its member
MAX_REQUEST_BYTES = 65536
FAR_CRON = "0 4 1 1 *"  # once a year: nothing fires while a test runs
EXISTING_IDS = ("TS-EXIST-1", "TS-EXIST-2", "TS-EXIST-3")
TASK_FUNCTION = "tests.support.jobfuncs.noop"
FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

DB_PASSWORD = "S3cr3t-db-pass"
WEB_TOKEN = "token S3cr3t:tok"
REDIS_PASSWORD = "S3cr3t-redis"
SECRETS = (DB_PASSWORD, WEB_TOKEN, "S3cr3t:tok", REDIS_PASSWORD, "S3cr3t")
READABLE_WARNING = "is readable by other users"
CREATE_REPLY = "BTU Scheduler now re-processing Task Schedule {} in Python RQ."
NO_SUCH = "Not scheduled: no such BTU Task Schedule."
BACKGROUND = "Planning continues in the background."  # the planner took longer than the reply wait


# --- helpers ---------------------------------------------------------------------------------

def next_unix(expression: str, zone: str = "UTC") -> int:
    """Where the daemon must plan `expression` from now, computed with the daemon's cron module."""
    return int(next_fire(expression, zone, datetime.now(timezone.utc)).timestamp())


def encode(value, ascii_only: bool = False) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")


def raw_exchange(socket_path: str, chunks: list[bytes], half_close: bool = True,
                 timeout: float = 10.0) -> bytes:
    """Send raw chunks (then shut down our sending side) and read the reply until the daemon closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon may answer and close before it has read everything
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data
    finally:
        sock.close()


def split(payload: bytes, sizes: list[int]) -> list[bytes]:
    chunks, i = [], 0
    for size in sizes:
        if i >= len(payload):
            break
        chunks.append(payload[i:i + size])
        i += size
    if i < len(payload):
        chunks.append(payload[i:])
    return chunks


def redis_snapshot(client) -> dict:
    """Every key of the (private) Redis with its type, value and whether it expires."""
    snapshot = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        else:
            value = client.dump(key)
        snapshot[key] = (kind, value, client.pttl(key) != -1)
    return snapshot


def table_contents(conn) -> dict[str, list[str]]:
    """Every row of every table of the connection's database (sorted reprs)."""
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES")
        tables = sorted(row[0] for row in cur.fetchall())
        contents = {}
        for table in tables:
            cur.execute(f"SELECT * FROM `{table}`")
            contents[table] = sorted(repr(row) for row in cur.fetchall())
    return contents


def stop_once(top):
    if top.running:
        return top.stopService()


def start_configured(testcase, database=None, mode=0o600, **keys) -> Daemon:
    """Like support.daemon.start_daemon, with the config file's mode set before it is read."""
    directory = short_dir(testcase)
    socket_path = os.path.join(directory, "btu.sock")
    path = write_config(os.path.join(directory, "btu.toml"),
                        daemon_config(socket_path, database, **keys))
    os.chmod(path, mode)
    options = tap.Options()
    options.parseOptions(["--config", path])
    top = tap.makeService(options)
    top.startService()
    testcase.addCleanup(stop_once, top)
    return Daemon(path, socket_path, options, top)


class LogCapture:
    """Every event published to the global log publisher while the test runs."""

    def __init__(self, testcase):
        self.events: list[dict] = []
        self._observer = self.events.append
        globalLogPublisher.addObserver(self._observer)
        testcase.addCleanup(globalLogPublisher.removeObserver, self._observer)

    def texts(self) -> list[str]:
        """Each event formatted, its failure's traceback, and the repr of its fields."""
        texts = []
        for event in self.events:
            texts.append(formatEvent(event))
            failure = event.get("log_failure")
            if failure is not None:
                texts.append(failure.getTraceback())
            texts.append(repr({key: value for key, value in event.items()
                               if key not in ("log_logger", "log_source", "log_observer")}))
        return texts

    def warnings(self, fragment: str) -> list[dict]:
        return [event for event in self.events
                if event.get("log_level") == LogLevel.warn and fragment in formatEvent(event)]


class PasswordRedisServer(RedisServer):
    """A private redis-server that requires a password (requirepass)."""

    def __init__(self, password: str):
        super().__init__()
        self.password = password

    def _command(self) -> list[str]:
        return [*super()._command(), "--requirepass", self.password]

    def client(self, socket_timeout: float = 5.0, **kwargs) -> redis.Redis:
        kwargs.setdefault("password", self.password)
        return super().client(socket_timeout, **kwargs)


_users = itertools.count(1)


def create_password_user(testcase, database: str) -> str:
    """A MariaDB user identified by DB_PASSWORD, allowed to read `database`; dropped at cleanup."""
    server = shared_mariadb()
    user = f"btu_secret_{os.getpid()}_{next(_users)}"
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (user, DB_PASSWORD))
            cur.execute(f"GRANT SELECT ON `{database}`.* TO %s@'localhost'", (user,))
    finally:
        conn.close()

    def drop():
        conn = server.connect()
        try:
            with conn.cursor() as cur:
                cur.execute("DROP USER IF EXISTS %s@'localhost'", (user,))
        finally:
            conn.close()

    testcase.addCleanup(drop)
    return user


class HostileTestCase(unittest.TestCase):
    """A fresh Frappe-shaped database and a flushed private Redis."""

    timeout = 60

    def setUp(self):
        use_shared_servers(self)

    def start(self, **keys) -> Daemon:
        return start_configured(self, self.database, **keys)


# --- 1. fuzzed requests over the real socket -------------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                      max_size=4),
    max_leaves=10)
# Every request type the daemon knows, including those that write (they must never run here).
request_types = (st.sampled_from(["ping", "status", "create_task_schedule", "cancel_task_schedule",
                                  "reload", "upcoming", "preview_cron"])
                 | st.text(max_size=12))
contents = st.sampled_from(EXISTING_IDS) | json_values
valid_requests = st.builds(
    lambda t, c, ascii_only: encode({"request_type": t, "request_content": c}, ascii_only),
    request_types, contents, st.booleans())
chunk_sizes = st.lists(st.integers(1, 64), max_size=8)
# Fragments that make random bytes look like requests, without any request type that writes.
FRAGMENTS = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b" ", b"request_type", b"request_content",
             b"ping", b"status", b"null", b"1", b"\xff", b"\xc3", b"\xe2\x82", b"\x00"]
byte_soup = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=8), max_size=40).map(b"".join)
INVALID_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80",
                b"\xc3"]
WRITING_REQUESTS = [encode({"request_type": "cancel_task_schedule", "request_content": sid})
                    for sid in EXISTING_IDS] + [
    encode({"request_type": "reload", "request_content": None}),
    encode({"request_type": "create_task_schedule", "request_content": "TS-NEW"})]
CONTENT_ERRORS = {
    "create_task_schedule": "Error: request_content must be a BTU Task Schedule ID (a non-empty string)",
    "cancel_task_schedule": "Error: request_content must be a BTU Task Schedule ID (a non-empty string)",
    "upcoming": "Error: count must be an integer from 1 to 1000",
    "preview_cron": 'Error: request_content must be {"cron_string": ..., "time_zone": ..., "count": N}',
}


def wrong_content(request_type: str, content) -> bool:
    """Whether `content` is a value of the wrong type for `request_type`."""
    if request_type in ("create_task_schedule", "cancel_task_schedule"):
        return not (isinstance(content, str) and content.strip())
    if request_type == "upcoming":
        return content is not None and (isinstance(content, bool) or not isinstance(content, int)
                                        or not 0 < content <= 1000)
    return not isinstance(content, dict)


def json_type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {list: "array", dict: "object", str: "string"}[type(value)]


class FuzzedSocketTests(HostileTestCase):
    """Whatever arrives on a full daemon's socket, each connection ends with one reply, nothing is
    written to Redis for an invalid request, and ping still answers."""

    timeout = 90

    @defer.inlineCallbacks
    def fuzz(self, strategy, exchange, examples=None, **keys):
        """Run hypothesis over `strategy` in a thread; `exchange(socket_path, example)` talks and
        checks the reply. After every example Redis is unchanged and ping answers pong."""
        fs.insert_task(self.sql, "BTU-00001", TASK_FUNCTION)
        for schedule_id in EXISTING_IDS:
            fs.insert_schedule(self.sql, schedule_id, "BTU-00001", FAR_CRON)
        daemon = self.start(**keys)
        yield daemon.refreshed()
        self.redis.set("btu_scheduler:last_fire:TS-EXIST-1", 1_700_000_000, ex=3600)
        before = redis_snapshot(self.redis)
        self.assertEqual(len(schedule_members(self.redis)), len(EXISTING_IDS))
        ping = encode({"request_type": "ping", "request_content": None})

        @settings(FUZZ, max_examples=examples or FUZZ.max_examples)
        @given(strategy)
        def run(example):
            exchange(daemon.socket_path, example)
            self.assertEqual(redis_snapshot(self.redis), before, example)
            self.assertEqual(raw_exchange(daemon.socket_path, [ping]), b"pong")

        yield threads.deferToThread(run)

    def assertError(self, reply: bytes, expected: str | None = None) -> None:
        text = reply.decode("utf-8")
        if expected is None:
            self.assertTrue(text.startswith("Error: "), text)
            self.assertNotIn("\n", text)
        else:
            self.assertEqual(text, expected)

    def test_arbitrary_bytes(self):
        """Arbitrary bytes and request-like byte soup get an Error: reply unless they hold a request."""
        def exchange(path, example):
            payload, sizes = example
            reply = raw_exchange(path, split(payload, sizes)).decode("utf-8")
            request = first_complete_object(payload, MAX_REQUEST_BYTES)
            if request is None or not isinstance(request.get("request_type"), str):
                self.assertError(reply.encode("utf-8"))
            else:
                self.assertTrue(reply == "pong" or reply.startswith("Client message has an unhandled")
                                or isinstance(json.loads(reply), dict), reply)

        return self.fuzz(st.tuples(st.binary(max_size=400) | byte_soup, chunk_sizes), exchange)

    def test_truncated_json(self):
        """A request cut short, even a cancel or reload, gets an error once the client stops sending."""
        def exchange(path, example):
            payload, cut, sizes = example
            reply = raw_exchange(path, split(payload[:cut % len(payload)], sizes))
            self.assertError(reply, "Error: connection closed before a complete JSON request arrived")

        return self.fuzz(st.tuples(valid_requests, st.integers(0, 10_000), chunk_sizes), exchange)

    def test_truncated_json_left_open_times_out(self):
        """A request cut short on a connection left open gets the idle-timeout error."""
        def exchange(path, example):
            payload, cut = example
            reply = raw_exchange(path, [payload[:cut % len(payload)]], half_close=False)
            self.assertError(reply, "Error: timed out waiting for a complete request after 0.2 s")

        return self.fuzz(st.tuples(valid_requests, st.integers(0, 10_000)), exchange, examples=8,
                         socket_idle_timeout_secs=0.2)

    def test_deeply_nested_json(self):
        """JSON nested deeper than 32 levels is refused, wherever the nesting is and whether it closes."""
        def exchange(path, example):
            kinds, where, closed = example
            opens = "".join("[" if kind else '{"k": ' for kind in kinds)
            closes = "".join("]" if kind else "}" for kind in reversed(kinds)) if closed else ""
            value = opens + "null" + closes
            if where == 0:
                text = '{"request_type": "cancel_task_schedule", "request_content": ' + value + "}"
            elif where == 1:
                text = '{"request_type": ' + value + ', "request_content": "TS-EXIST-1"}'
            else:
                text = '{"x": ' + value + ', "request_type": "reload"}'
            reply = raw_exchange(path, [text.encode()])
            self.assertError(reply, "Error: request is nested more than 32 levels deep")

        return self.fuzz(st.tuples(st.lists(st.booleans(), min_size=32, max_size=3000),
                                   st.integers(0, 2), st.booleans()), exchange)

    def test_huge_strings_just_over_64_kib(self):
        """A request just over 64 KiB, even a cancel or reload, is refused as too large."""
        def exchange(path, example):
            request_type, prefix, extra, in_content = example
            request = {"request_type": request_type, "request_content": "TS-EXIST-1"}
            key = "request_content" if in_content else "padding"
            request[key] = prefix
            base = len(encode(request))
            request[key] = prefix + "x" * (MAX_REQUEST_BYTES + extra - base)
            payload = encode(request)
            self.assertEqual(len(payload), MAX_REQUEST_BYTES + extra)
            reply = raw_exchange(path, [payload])
            self.assertError(reply, f"Error: request is larger than {MAX_REQUEST_BYTES} bytes")

        return self.fuzz(st.tuples(st.sampled_from(["cancel_task_schedule", "create_task_schedule",
                                                    "reload", "ping"]),
                                   st.text(max_size=30), st.integers(1, 3000), st.booleans()),
                         exchange)

    def test_overlong_schedule_ids(self):
        """create or cancel with an ID longer than Frappe's 140 characters is refused."""
        def exchange(path, example):
            request_type, schedule_id = example
            reply = raw_exchange(path, [encode({"request_type": request_type,
                                                "request_content": schedule_id})])
            self.assertError(reply, "Error: schedule ID longer than 140 characters")

        ids = st.text(min_size=141, max_size=3000).filter(lambda t: t.strip())
        return self.fuzz(st.tuples(st.sampled_from(["create_task_schedule", "cancel_task_schedule"]),
                                   ids), exchange)

    def test_wrong_request_type(self):
        """A missing or non-string request_type, or a request that is not an object, is refused."""
        def exchange(path, example):
            value, others = example
            others.pop("request_type", None)
            others["request_content"] = "TS-EXIST-1"
            cases = [(encode(others), "Error: request has no 'request_type'"),
                     (encode([value, others]), "Error: request must be a JSON object")]
            if not isinstance(value, str):
                cases.append((encode({**others, "request_type": value}),
                              f"Error: 'request_type' must be a string, not {json_type_name(value)}"))
            for payload, expected in cases:
                self.assertError(raw_exchange(path, [payload]), expected)

        return self.fuzz(st.tuples(json_values, st.dictionaries(st.text(max_size=8), json_values,
                                                                max_size=3)), exchange)

    def test_wrong_request_content(self):
        """create, cancel, upcoming and preview_cron refuse request_content of the wrong type."""
        def exchange(path, example):
            request_type, content = example
            assume(wrong_content(request_type, content))
            reply = raw_exchange(path, [encode({"request_type": request_type,
                                                "request_content": content})])
            self.assertError(reply, CONTENT_ERRORS[request_type])

        return self.fuzz(st.tuples(st.sampled_from(sorted(CONTENT_ERRORS)),
                                   json_values | st.just("") | st.just(" \t")), exchange)

    def test_invalid_utf8(self):
        """Invalid UTF-8 anywhere before a request's end is refused, even in a cancel or reload."""
        def exchange(path, example):
            payload, position, bad = example
            boundaries = [i for i in range(len(payload)) if payload[i] < 0x80]
            i = boundaries[position % len(boundaries)]
            reply = raw_exchange(path, [payload[:i] + bad + payload[i:]])
            self.assertError(reply, "Error: request is not valid UTF-8")

        return self.fuzz(st.tuples(valid_requests, st.integers(0, 10_000),
                                   st.sampled_from(INVALID_UTF8)), exchange)

    def test_several_requests_on_one_connection(self):
        """Only the first request on a connection is answered; a cancel or reload after it never runs."""
        def exchange(path, example):
            first, rest, sizes = example
            reply = raw_exchange(path, split(first + b"".join(rest), sizes)).decode("utf-8")
            request = json.loads(first) if first.startswith(b"{") else None
            kind = request.get("request_type") if request else None
            kind = kind if isinstance(kind, str) else None
            if kind == "ping":
                self.assertEqual(reply, "pong")
            elif kind == "status":
                self.assertEqual(json.loads(reply)["planned_schedules"], len(EXISTING_IDS))
            elif kind == "create_task_schedule":
                self.assertIn(reply, [f"{CREATE_REPLY.format('TS-NO-SUCH')} {suffix}"
                                      for suffix in (NO_SUCH, BACKGROUND)])
            elif kind is not None:
                self.assertEqual(reply, f"Client message has an unhandled 'request_type': {kind}")
            else:
                self.assertError(reply.encode("utf-8"))

        firsts = st.sampled_from([
            encode({"request_type": "ping", "request_content": None}),
            encode({"request_type": "status", "request_content": None}),
            encode({"request_type": "create_task_schedule", "request_content": "TS-NO-SUCH"}),
            encode({"request_type": "frobnicate", "request_content": "TS-EXIST-1"}),
            b"[1, 2]", b'{"request_type": 7}', b"\xff"])
        return self.fuzz(st.tuples(firsts, st.lists(st.sampled_from(WRITING_REQUESTS), min_size=1,
                                                    max_size=4), chunk_sizes), exchange)

    def test_unknown_ids_add_nothing(self):
        """create and cancel of IDs that do not exist, whatever their characters, write nothing."""
        def exchange(path, example):
            request_type, schedule_id = example
            assume(schedule_id not in EXISTING_IDS)
            reply = raw_exchange(path, [encode({"request_type": request_type,
                                                "request_content": schedule_id})]).decode("utf-8")
            shown = schedule_id.encode("utf-8", "backslashreplace").decode("utf-8")
            if request_type == "cancel_task_schedule":
                self.assertEqual(reply, f"BTU Task Schedule {shown} had no planned fire in Python RQ; "
                                        "nothing to cancel.")
            else:
                self.assertIn(reply, [f"{CREATE_REPLY.format(shown)} {suffix}"
                                      for suffix in (NO_SUCH, BACKGROUND)])

        ids = st.text(min_size=1, max_size=140).filter(str.strip)
        return self.fuzz(st.tuples(st.sampled_from(["create_task_schedule", "cancel_task_schedule"]),
                                   ids), exchange)

    def test_ids_that_are_not_unicode_are_refused(self):
        """create and cancel of an ID holding a lone surrogate (valid JSON, not Unicode) are refused."""
        def exchange(path, example):
            request_type, schedule_id = example
            reply = raw_exchange(path, [encode({"request_type": request_type,
                                                "request_content": schedule_id}, ascii_only=True)])
            self.assertError(reply)
            self.assertIn(b"schedule ID", reply)

        ids = st.builds(lambda before, surrogate, after: before + surrogate + after,
                        st.text(max_size=10), st.characters(categories=["Cs"]), st.text(max_size=10))
        return self.fuzz(st.tuples(st.sampled_from(["create_task_schedule", "cancel_task_schedule"]),
                                   ids), exchange, examples=20)


# --- 2. hostile schedule IDs ----------------------------------------------------------------

HOSTILE_IDS = (
    "TS-'single'", 'TS-"double"', "TS-back\\slash\\", 'TS-\\"escaped', "TS-100%", "TS-%s",
    "TS-%(name)s%%", "TS-pipe|1", "TS-pipe|1|2", "TS-colon:1:", "TS-ünï-😀",
    "x'; DROP TABLE `tabBTU Task`; --", "1 OR 1=1", "TS-P", "TS-P1", "TS-P10", "TS-{0}{schedule_id}}{",
    "TS-tab\tnew\nline", "TS-nul\x00", "TS-trail ", " TS-lead", "*", "TS-\u202eevil",
)
BYSTANDER_IDS = ("TS-pipe", "TS-00", "TS-000001")


def hostile_cron(index: int) -> str:
    return f"{index} 5 1 1 *"  # a distinct minute each, so members cannot be swapped unnoticed


def bystander_cron(index: int) -> str:
    return f"{index} 6 1 1 *"


class HostileIdTests(HostileTestCase):
    """Schedule IDs with quotes, backslashes, %, |, :, unicode and SQL fragments are data, never code."""

    @defer.inlineCallbacks
    def plan_all(self):
        """Start with the bystanders planned, add the hostile rows, create each over the socket.

        Fires with (daemon, {member: score}, table contents before the requests).
        """
        fs.insert_task(self.sql, "BTU-00001", TASK_FUNCTION)
        for index, schedule_id in enumerate(BYSTANDER_IDS):
            fs.insert_schedule(self.sql, schedule_id, "BTU-00001", bystander_cron(index))
        daemon = self.start()
        yield daemon.refreshed()
        expected = {f"{sid}|{next_unix(bystander_cron(i))}": float(next_unix(bystander_cron(i)))
                    for i, sid in enumerate(BYSTANDER_IDS)}
        self.assertEqual(schedule_members(self.redis), expected)
        for index, schedule_id in enumerate(HOSTILE_IDS):
            fs.insert_schedule(self.sql, schedule_id, "BTU-00001", hostile_cron(index))
        tables = table_contents(self.sql)

        for index, schedule_id in enumerate(HOSTILE_IDS):
            when = next_unix(hostile_cron(index))
            reply = yield daemon.query({"request_type": "create_task_schedule",
                                        "request_content": schedule_id})
            base = f"BTU Scheduler now re-processing Task Schedule {schedule_id} in Python RQ. "
            utc = datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            self.assertTrue(reply == base + BACKGROUND or (reply.startswith(base + "Next run at ")
                                                           and reply.endswith(f", {utc}.")), reply)
            expected[f"{schedule_id}|{when}"] = float(when)
            yield wait_for(lambda: schedule_members(self.redis) == expected, 10,
                           f"exactly one more member, for {schedule_id!r}")
        return daemon, expected, tables

    def planned_map(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(PLANNED_KEY).items()}

    @defer.inlineCallbacks
    def test_create_plans_exactly_its_own_member(self):
        """create_task_schedule of each hostile ID adds exactly '<id>|<unix>' and changes no SQL row."""
        _, expected, tables = yield self.plan_all()
        self.assertEqual(self.planned_map(), {member.rpartition("|")[0]: member for member in expected})
        self.assertEqual(table_contents(self.sql), tables)

    @defer.inlineCallbacks
    def test_cancel_removes_exactly_its_own_member(self):
        """cancel_task_schedule of each hostile ID removes exactly its member and changes no SQL row."""
        daemon, expected, tables = yield self.plan_all()
        for schedule_id in HOSTILE_IDS:
            reply = yield daemon.query({"request_type": "cancel_task_schedule",
                                        "request_content": schedule_id})
            self.assertEqual(reply, f"Successfully cancelled BTU Task Schedule {schedule_id} in Python RQ.")
            expected = {m: s for m, s in expected.items() if m.rpartition("|")[0] != schedule_id}
            self.assertEqual(schedule_members(self.redis), expected, schedule_id)
        self.assertEqual(len(expected), len(BYSTANDER_IDS))
        self.assertEqual(self.planned_map(), {member.rpartition("|")[0]: member for member in expected})
        self.assertEqual(table_contents(self.sql), tables)

    @defer.inlineCallbacks
    def test_members_are_split_at_the_last_pipe(self):
        """upcoming names each schedule, '|' in IDs included, by splitting its member at the last '|'."""
        daemon, expected, _ = yield self.plan_all()
        reply = yield daemon.query({"request_type": "upcoming", "request_content": 1000})
        listed = {(entry["schedule_id"], entry["unix"]) for entry in json.loads(reply)}
        self.assertEqual(listed, {(member.rpartition("|")[0], int(score))
                                  for member, score in expected.items()})
        self.assertIn(("TS-pipe|1|2", next_unix(hostile_cron(HOSTILE_IDS.index("TS-pipe|1|2")))), listed)

    @defer.inlineCallbacks
    def test_full_refresh_keeps_every_member(self):
        """A full refresh (reload) keeps every hostile ID's member exactly as planned."""
        daemon, expected, tables = yield self.plan_all()
        first = (yield daemon.status())["last_refresh"]["at"]
        yield daemon.query({"request_type": "reload", "request_content": None})

        @defer.inlineCallbacks
        def refreshed_again():
            status = yield daemon.status()
            return status["last_refresh"]["at"] != first

        yield wait_for(refreshed_again, 10, "a second full refresh")
        self.assertEqual(schedule_members(self.redis), expected)
        self.assertEqual(table_contents(self.sql), tables)


# --- 3. hostile arguments -------------------------------------------------------------------

class _RunsCommand:
    """Unpickling this runs a shell command: the payload a pickle-trusting daemon would execute."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


TEN_MB = 10 * 1024 * 1024
GOOD_IDS = ("TS-A-0-GOOD", "TS-A-Z-GOOD")  # sorted around the hostile ones, so they share a batch


class HostileArgumentTests(HostileTestCase):
    """Task `arguments` and schedule `argument_overrides` text is parsed as a literal, never run."""

    def hostile_rows(self) -> dict[str, tuple[str, str, str]]:
        """{schedule_id: (column, text, expected reason fragment)}; touching self.marker is the attack."""
        self.marker = os.path.abspath(self.mktemp())
        touch = f"touch {self.marker}"
        return {
            "TS-A-IMPORT": ("argument_overrides", f"__import__('os').system('{touch}')",
                            "argument_overrides: not a Python literal"),
            "TS-A-CALL-IN-DICT": ("argument_overrides", f"{{'x': __import__('os').system('{touch}')}}",
                                  "argument_overrides: not a Python literal"),
            "TS-A-HUGE": ("arguments", "{'x': '" + "A" * TEN_MB + "'}",
                          f"arguments: {TEN_MB + 9} characters, more than the 65536 allowed"),
            "TS-A-DEEP": ("argument_overrides", "{'x': " + "[" * 30_000 + "]" * 30_000 + "}",
                          "argument_overrides: nested deeper than 32 levels"),
            "TS-A-LIST": ("argument_overrides", "[1, 2]", "argument_overrides: expected a dict, got list"),
            "TS-A-PICKLE": ("arguments", repr(pickle.dumps(_RunsCommand(touch))),
                            "arguments: expected a dict, got bytes"),
        }

    @defer.inlineCallbacks
    def start_with_hostile_rows(self):
        """Insert the good and hostile schedules, start the daemon, and create each over the socket.

        Fires with (daemon, hostile rows, {schedule_id: create reply}).
        """
        fs.insert_task(self.sql, "BTU-GOOD", TASK_FUNCTION, arguments="{'a': 1}")
        rows = self.hostile_rows()
        for schedule_id, (column, text, _) in rows.items():
            task = "BTU-GOOD"
            if column == "arguments":
                task = f"BTU-{schedule_id}"
                fs.insert_task(self.sql, task, TASK_FUNCTION, arguments=text)
                fs.insert_schedule(self.sql, schedule_id, task, FAR_CRON)
            else:
                fs.insert_schedule(self.sql, schedule_id, task, FAR_CRON, argument_overrides=text)
        for schedule_id in GOOD_IDS:
            fs.insert_schedule(self.sql, schedule_id, "BTU-GOOD", FAR_CRON, argument_overrides="{'b': 2}")
        daemon = self.start()
        yield daemon.refreshed()
        replies = {}
        for schedule_id in (*rows, *GOOD_IDS):
            replies[schedule_id] = yield daemon.query({"request_type": "create_task_schedule",
                                                       "request_content": schedule_id})
        return daemon, rows, replies

    @defer.inlineCallbacks
    def test_reported_unplannable_with_a_reason(self):
        """Each hostile text leaves its schedule unplanned, listed in status unplannable with why."""
        daemon, rows, replies = yield self.start_with_hostile_rows()
        status = yield daemon.status()
        for schedule_id, (_, _, reason) in rows.items():
            self.assertIn(reason, status["unplannable"].get(schedule_id, ""), schedule_id)
            if not replies[schedule_id].endswith(BACKGROUND):
                self.assertIn(f"Not scheduled: {reason}", replies[schedule_id])
        planned = {member.rpartition("|")[0] for member in schedule_members(self.redis)}
        self.assertEqual(planned & set(rows), set())

    @defer.inlineCallbacks
    def test_nothing_is_executed(self):
        """Neither a call expression nor a pickle in arguments runs anything."""
        yield self.start_with_hostile_rows()
        self.assertFalse(os.path.exists(self.marker))

    @defer.inlineCallbacks
    def test_other_schedules_still_plan(self):
        """Schedules read in the same batch as the hostile ones are planned as usual."""
        _, _, replies = yield self.start_with_hostile_rows()
        when = next_unix(FAR_CRON)
        self.assertEqual(schedule_members(self.redis),
                         {f"{schedule_id}|{when}": float(when) for schedule_id in GOOD_IDS})
        for schedule_id in GOOD_IDS:
            self.assertTrue("Next run at" in replies[schedule_id]
                            or replies[schedule_id].endswith(BACKGROUND), replies[schedule_id])


# --- 4. secrets -----------------------------------------------------------------------------

class SecretTests(HostileTestCase):
    """Passwords and tokens from the configuration never appear in logs, replies or errors."""

    timeout = 60

    def secret_setup(self, redis_url_form: str) -> dict:
        """A password-protected private Redis and a MariaDB user with a password; config keys."""
        server = PasswordRedisServer(REDIS_PASSWORD)
        server.start()
        self.addCleanup(server.cleanup)
        self.secret_redis = server.client()
        self.addCleanup(self.secret_redis.close)
        user = create_password_user(self, self.database)
        # The passwords are really used: without them neither server lets us in.
        no_password = redis.Redis(unix_socket_path=server.socket_path)
        self.addCleanup(no_password.close)
        self.assertRaises(redis.AuthenticationError, no_password.ping)
        self.assertRaises(pymysql.err.OperationalError, pymysql.connect,
                          unix_socket=self.mariadb.socket_path, user=user, password="wrong",
                          database=self.database)
        redis_url = redis_url_form.format(path=server.socket_path, password=REDIS_PASSWORD)
        fs.insert_task(self.sql, "BTU-00001", TASK_FUNCTION)
        fs.insert_schedule(self.sql, "TS-000001", "BTU-00001", FAR_CRON)
        return dict(mysql_user=user, mysql_password=DB_PASSWORD, webserver_token=WEB_TOKEN,
                    redis_url=redis_url)

    def assertNoSecret(self, texts, where: str) -> None:
        for text in texts:
            for secret in SECRETS:
                self.assertNotIn(secret, text, f"{where} shows a secret: {text[:2000]}")

    @defer.inlineCallbacks
    def run_daemon_with_secrets(self, redis_url_form: str):
        logs = LogCapture(self)
        keys = self.secret_setup(redis_url_form)
        daemon = start_configured(self, self.database, **keys)
        yield daemon.refreshed()
        when = next_unix(FAR_CRON)
        self.assertEqual(schedule_members(self.secret_redis), {f"TS-000001|{when}": float(when)})
        requests = [encode({"request_type": "status", "request_content": None}),
                    encode({"request_type": "create_task_schedule", "request_content": "TS-000001"}),
                    encode({"request_type": "create_task_schedule", "request_content": "TS-NO-SUCH"}),
                    encode({"request_type": "upcoming", "request_content": 5}),
                    encode({"request_type": "upcoming", "request_content": "S3"}),
                    encode({"request_type": "preview_cron", "request_content": {"cron_string": "x"}}),
                    encode({"request_type": 7}), b"\xff", b"{" * 40, b"[1]",
                    encode({"request_type": "ping", "x": "y" * MAX_REQUEST_BYTES})]
        replies = yield threads.deferToThread(
            lambda: [raw_exchange(daemon.socket_path, [r]).decode("utf-8", "replace") for r in requests])
        self.assertIn('"planned_schedules": 1', replies[0])
        self.assertTrue(all(reply for reply in replies), replies)
        yield stop_once(daemon.service)
        self.assertNoSecret(replies, "a socket reply")
        self.assertNoSecret(logs.texts(), "a log event")
        self.assertGreater(len(logs.events), 3)

    def test_in_process_daemon_with_redis_password_in_query(self):
        """A daemon whose redis_url has ?password= shows no secret in any log event, reply or error."""
        return self.run_daemon_with_secrets("unix://{path}?db=0&password={password}")

    def test_in_process_daemon_with_redis_password_in_userinfo(self):
        """A daemon whose redis_url has :password@ shows no secret in any log event, reply or error."""
        return self.run_daemon_with_secrets("unix://:{password}@{path}?db=0")

    def test_twistd_start_up_log(self):
        """`twistd -n btu` with secrets in its config shows none of them in its log, start to stop."""
        keys = self.secret_setup("unix://{path}?db=0&password={password}")
        directory = short_dir(self)
        socket_path = os.path.join(directory, "btu.sock")
        path = write_config(os.path.join(directory, "btu.toml"),
                            daemon_config(socket_path, self.database, **keys))
        os.chmod(path, 0o600)
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config", path],
                               cwd=directory)

        def refreshed():
            if daemon.process.poll() is not None:
                self.fail(f"twistd exited early; {daemon.describe()}")
            try:
                status = json.loads(control_request(socket_path, {"request_type": "status",
                                                                  "request_content": None}, timeout=1))
            except (OSError, ValueError):
                return None
            return status["last_refresh"] is not None

        poll(refreshed, 15, "the twistd daemon's first full refresh")
        raw_exchange(socket_path, [b'{"request_type": 1}'])
        daemon.terminate()
        output = daemon.output()
        self.assertIn("full refresh", output)
        self.assertNoSecret([output], "twistd's log")

    def test_wrong_typed_secret_is_not_quoted(self):
        """A secret of the wrong type (or broken TOML) is a ConfigError, and twistd's message, without it."""
        directory = short_dir(self)
        cases = [f'mysql_password = ["{DB_PASSWORD}"]', f"mysql_password = {{ p = \"{DB_PASSWORD}\" }}",
                 f'webserver_token = ["{WEB_TOKEN}"]', f'redis_url = ["unix://:{REDIS_PASSWORD}@/r.sock"]',
                 f"mysql_password = {DB_PASSWORD}", f'mysql_password = """{DB_PASSWORD}',
                 f'webserver_token = "{WEB_TOKEN}\nname = 1',
                 f'redis_url = "unix://:{REDIS_PASSWORD}@/r.sock"\nrq_port = "x"']
        base = 'mysql_user = "frappe"\nmysql_database = "site"\nfrappe_site = "s"\n'
        for case in cases:
            path = Path(directory) / "btu.toml"
            path.write_text(base + case + "\n", encoding="utf-8")
            os.chmod(path, 0o600)
            error = self.assertRaises(ConfigError, configuration.load, path)
            self.assertNoSecret([str(error)], f"ConfigError for {case!r}")
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            self.assertRaises(SystemExit, tap.Options().parseOptions, ["--config", str(path)])
            self.assertIn(str(path), stderr.getvalue())
            self.assertNoSecret([stderr.getvalue()], f"twistd's message for {case!r}")


# --- 5. a configuration file others can read ------------------------------------------------

class ReadableConfigTests(HostileTestCase):
    """A configuration file holding secrets that other users can read is warned about at start-up."""

    @defer.inlineCallbacks
    def test_readable_config_with_password_warns_at_start_up(self):
        """A world-readable config whose mysql_password is in use logs the chmod warning at start-up."""
        logs = LogCapture(self)
        user = create_password_user(self, self.database)
        daemon = start_configured(self, self.database, mode=0o644, mysql_user=user,
                                  mysql_password=DB_PASSWORD)
        yield daemon.refreshed()
        warnings = logs.warnings(READABLE_WARNING)
        self.assertEqual(len(warnings), 1, [formatEvent(event) for event in logs.events])
        text = formatEvent(warnings[0])
        self.assertIn(f"chmod o-rwx {daemon.config_path}", text)
        for secret in SECRETS:
            self.assertNotIn(secret, text)

    def test_each_kind_of_secret_is_warned_about(self):
        """makeService warns about a world-readable file holding any kind of secret, and only then."""
        schedule_file = str(Path(configuration.__file__).parent / "data" / "embedded_schedules.toml")
        redis_server = shared_redis()
        redis_path = redis_server.socket_path
        cases = {
            "mysql_password": dict(mysql_password=DB_PASSWORD),
            "webserver_token": dict(webserver_token=WEB_TOKEN),
            "redis_url userinfo": dict(redis_url=f"unix://:{REDIS_PASSWORD}@{redis_path}?db=0"),
            "redis_url query": dict(redis_url=f"unix://{redis_path}?db=0&password={REDIS_PASSWORD}"),
            "no secret": {},
        }
        for name, keys in cases.items():
            logs = LogCapture(self)
            directory = short_dir(self)
            path = write_config(os.path.join(directory, "btu.toml"),
                                daemon_config(os.path.join(directory, "btu.sock"),
                                              schedule_file=schedule_file, **keys))
            os.chmod(path, 0o644)
            options = tap.Options()
            options.parseOptions(["--config", path])
            with _requiring_password(redis_server, REDIS_PASSWORD if name.startswith("redis_url") else None):
                tap.makeService(options)  # composes only: nothing is started, so nothing to stop
            globalLogPublisher.removeObserver(logs._observer)
            warned = logs.warnings(READABLE_WARNING)
            self.assertEqual(len(warned), 0 if name == "no secret" else 1, name)
            for text in logs.texts():
                for secret in SECRETS:
                    self.assertNotIn(secret, text, name)


@contextlib.contextmanager
def _requiring_password(redis_server, password):
    """The shared Redis asks for `password` inside the block (none: left as it is). A Redis that
    has no password refuses AUTH, which the start-up check calls an authentication failure with
    redis-py 7.1 and lets pass with 8.1; a configured password is meant to be the right one."""
    if password is None:
        yield
        return
    client = redis_server.client()
    client.config_set("requirepass", password)
    try:
        yield
    finally:
        client.config_set("requirepass", "")
        client.close()
