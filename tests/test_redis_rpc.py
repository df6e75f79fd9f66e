"""The Redis RPC listener against real redis-server processes, spoken to exactly as BTU 15.1.1's
client does (fresh response_key, LPUSH, BLPOP 5 s)."""

from __future__ import annotations

import json
import shutil
import tempfile

from twisted.internet import defer, reactor, task, threads
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from btu_twisted.channels import redis_rpc
from btu_twisted.channels.redis_rpc import RedisRPCListener
from btu_twisted.channels.text_protocol import RequestError
from btu_twisted.redis_connections import settings_for_url
from tests.support.btu_rpc_client import COMMANDS_KEY, btu_rpc_request, command, response_key
from tests.support.daemon import wait_for
from tests.support.servers import RedisServer, use_shared_redis

OK = {"status": "ok", "message": "Command received by BTU Scheduler."}
CLIENT_SOCKET_TIMEOUT_SECS = 10  # above the app's 5 s BLPOP
WAIT_SECS = 20
DOWN_SECS = 2.5


class Recorder:
    """Handlers that record (request_type, content) in call order and answer at once."""

    def __init__(self):
        self.calls: list[tuple[str, object]] = []

    def handler(self, request_type):
        def handle(content):
            self.calls.append((request_type, content))
            return f"done {request_type}"
        return handle

    def handlers(self) -> dict:
        return {name: self.handler(name) for name in
                ("create_task_schedule", "cancel_task_schedule", "status")}


class LogEvents:
    """Collects the formatted log lines of the redis_rpc module while a test runs."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, fragment: str) -> list[str]:
        from twisted.logger import formatEvent
        return [formatEvent(e) for e in self.events
                if e.get("log_namespace") == redis_rpc.__name__ and fragment in formatEvent(e)]


class ListenerTestCase(unittest.TestCase):

    def setUp(self):
        use_shared_redis(self)
        self.redis = self.redis_server.client(socket_timeout=CLIENT_SOCKET_TIMEOUT_SECS)
        self.addCleanup(self.redis.close)
        self.recorder = Recorder()

    def start_listener(self, url: str | None = None, handlers=None) -> RedisRPCListener:
        listener = RedisRPCListener(reactor, settings_for_url(url or self.redis_server.url),
                                    self.recorder.handlers() if handlers is None else handlers)
        listener.startService()
        self.addCleanup(listener.stopService)
        return listener

    def request(self, request_type, content=None, wait=5):
        """The BTU app's call, in a thread; fires with the ACK dict or None."""
        return threads.deferToThread(btu_rpc_request, self.redis, request_type, content, wait)


class ProtocolTests(ListenerTestCase):
    """ACK, execution, TTL, poll mode and order."""

    @defer.inlineCallbacks
    def test_ping_is_acked(self):
        """ping gets the ACK of btu_scheduler_py's protocol within the app's 5 s."""
        self.start_listener()
        ack = yield self.request("ping")
        self.assertEqual(ack, dict(OK, request_type="ping"))

    @defer.inlineCallbacks
    def test_create_and_cancel_are_acked_then_executed(self):
        """create/cancel are ACKed, and the handler sees the ACK already in Redis when it runs."""
        seen = []

        def handler(name):
            def handle(content):
                seen.append((name, content, self.acked(content)))
                return "done"
            return handle
        self.start_listener(handlers={"create_task_schedule": handler("create"),
                                      "cancel_task_schedule": handler("cancel")})
        self.keys = {}
        for request_type, schedule_id in (("create_task_schedule", "TS-1"), ("cancel_task_schedule", "TS-2")):
            key = self.keys[schedule_id] = response_key()
            self.redis.lpush(COMMANDS_KEY, command(request_type, schedule_id, key))
        yield wait_for(lambda: len(seen) == 2, WAIT_SECS, "both commands executed")
        self.assertEqual(seen, [("create", "TS-1", True), ("cancel", "TS-2", True)])
        for key in self.keys.values():
            self.assertEqual(json.loads(self.redis.lpop(key))["status"], "ok")

    def acked(self, schedule_id) -> bool:
        return self.redis.llen(self.keys[schedule_id]) == 1  # quick, blocking read: a local Redis

    @defer.inlineCallbacks
    def test_response_key_has_a_ttl(self):
        """The ACK's key expires within 60 s, so an app that died leaves nothing behind."""
        self.start_listener()
        key = response_key()
        self.redis.lpush(COMMANDS_KEY, command("ping", None, key))
        yield wait_for(lambda: self.redis.exists(key), WAIT_SECS, "the ACK")
        self.assertTrue(0 < self.redis.ttl(key) <= 60, self.redis.ttl(key))

    @defer.inlineCallbacks
    def test_poll_mode_executes_without_answering(self):
        """Without a response_key the command is executed and nothing is written back."""
        self.start_listener()
        self.redis.lpush(COMMANDS_KEY, command("create_task_schedule", "TS-POLL"))
        yield wait_for(lambda: self.recorder.calls, WAIT_SECS, "the command executed")
        self.assertEqual(self.recorder.calls, [("create_task_schedule", "TS-POLL")])
        self.assertEqual(sorted(k for k in self.redis.keys("*") if k != COMMANDS_KEY.encode()), [])

    @defer.inlineCallbacks
    def test_thousand_commands_acked_and_executed_in_order(self):
        """1 000 commands pushed at once: each ACKed once, executed once, in the order pushed."""
        keys = [response_key() for _ in range(1000)]
        ids = [f"TS-{n:06d}" for n in range(1000)]
        self.redis.lpush(COMMANDS_KEY, *[command("create_task_schedule", i, k) for i, k in zip(ids, keys)])
        self.start_listener()
        yield wait_for(lambda: len(self.recorder.calls) == 1000, WAIT_SECS, "1 000 commands executed")
        self.assertEqual([content for _, content in self.recorder.calls], ids)
        pipe = self.redis.pipeline()
        for key in keys:
            pipe.lrange(key, 0, -1)
        acks = pipe.execute()
        self.assertEqual([len(a) for a in acks], [1] * 1000)
        self.assertEqual({json.loads(a[0])["status"] for a in acks}, {"ok"})


class HostileEntryTests(ListenerTestCase):
    """Entries the app would never push: logged, answered "error" when possible, never executed."""

    @defer.inlineCallbacks
    def check(self, entry, reason: str | None, answered: bool = True):
        """Push `entry`, then a ping: the ping is ACKed, nothing was executed, and the entry's
        response key (if it named a usable one) got an error naming `reason`."""
        self.redis.set("TS-OTHER", "untouched")
        self.redis.rpush("rq:queue:default", "job-1")
        key = self.key
        self.redis.lpush(COMMANDS_KEY, entry)
        ack = yield self.request("ping")
        self.assertEqual(ack, dict(OK, request_type="ping"))
        self.assertEqual(self.recorder.calls, [])
        if answered:
            reply = json.loads(self.redis.lpop(key))
            self.assertEqual(reply["status"], "error")
            self.assertIn(reason, reply["message"])
        else:
            self.assertFalse(self.redis.exists(key))
        self.assertEqual(self.redis.get("TS-OTHER"), b"untouched")
        self.assertEqual(self.redis.lrange("rq:queue:default", 0, -1), [b"job-1"])
        self.assertEqual(self.redis.ttl("rq:queue:default"), -1)
        self.assertTrue(self.log.lines("rejected command"))

    def setUp(self):
        super().setUp()
        self.log = LogEvents(self)
        self.key = response_key()
        self.start_listener()

    def test_not_json(self):
        """Not JSON: logged; no key is known, so nothing is answered."""
        return self.check("{not json", None, answered=False)

    def test_not_an_object(self):
        """A JSON array holding a response key is still not a command."""
        return self.check(json.dumps([{"response_key": self.key}]), None, answered=False)

    def test_number(self):
        """A bare number (which txredisapi converts) is not a command."""
        return self.check("12345", None, answered=False)

    def test_request_type_not_a_string(self):
        """request_type 7: refused and answered "error" on the entry's response key."""
        return self.check(json.dumps({"request_type": 7, "response_key": self.key}),
                          "'request_type' must be a string, not number")

    def test_no_request_type(self):
        """No request_type at all: answered "error"."""
        return self.check(json.dumps({"request_content": "TS-1", "response_key": self.key}),
                          "no 'request_type'")

    def test_request_content_of_the_wrong_type(self):
        """create with a number for the schedule ID: answered "error", not executed."""
        return self.check(command("create_task_schedule", 42, self.key), "request_content must be")

    def test_response_key_not_a_string(self):
        """response_key 5: not executed (the command cannot be answered as the app expects)."""
        return self.check(json.dumps({"request_type": "ping", "response_key": 5}), None, answered=False)

    def test_response_key_outside_the_rpc_prefix(self):
        """A response_key naming an RQ queue: never written to, never given a TTL."""
        return self.check(command("ping", None, "rq:queue:default"), None, answered=False)

    def test_one_mebibyte(self):
        """A 1 MiB entry is refused by size and answered "error"."""
        return self.check(command("create_task_schedule", "x" * (1 << 20), self.key), "larger than")

    def test_unknown_type(self):
        """An unknown request_type is answered with the socket's text, status "error"."""
        return self.check(command("drop_everything", None, self.key), "unhandled 'request_type': drop_everything")

    def test_invalid_utf8(self):
        """Bytes that are not UTF-8: logged, unanswered."""
        return self.check(b'{"request_type": "ping", "response_key": "' + self.key.encode() + b'\xff"}',
                          None, answered=False)

    def test_deeply_nested(self):
        """Nesting beyond the protocol's depth is refused without recursion."""
        return self.check("[" * 100000 + "]" * 100000, None, answered=False)

    def test_data_after_the_object(self):
        """Two objects in one entry: refused; which key to answer is not trusted."""
        return self.check(command("ping", None, self.key) + "{}", None, answered=False)


class HandlerFailureTests(ListenerTestCase):
    """A handler's failure is logged; the listener goes on."""

    @defer.inlineCallbacks
    def test_failing_and_refusing_handlers_do_not_stop_the_listener(self):
        """A handler raising an exception or RequestError after its ACK: the next ping is ACKed."""
        def broken(_content):
            raise ZeroDivisionError("boom")

        def refusing(_content):
            raise RequestError("no")
        self.start_listener(handlers={"status": broken, "upcoming": refusing})
        for request_type in ("status", "upcoming"):
            ack = yield self.request(request_type)
            self.assertEqual(ack["status"], "ok")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        ack = yield self.request("ping")
        self.assertEqual(ack, dict(OK, request_type="ping"))


class OutageTests(ListenerTestCase):
    """A private Redis stopped and restarted under the listener."""

    def setUp(self):
        super().setUp()
        base = tempfile.mkdtemp(prefix="btu_rpc_redis_", dir="/tmp")
        self.addCleanup(shutil.rmtree, base, True)
        self.private = RedisServer(base)
        self.private.start()
        self.addCleanup(self.private.cleanup)
        self.log = LogEvents(self)

    def client(self):
        client = self.private.client(socket_timeout=CLIENT_SOCKET_TIMEOUT_SECS)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def test_restart_while_the_pop_blocks(self):
        """Redis stops while the pop blocks and comes back: commands pushed afterwards are served,
        and the outage is logged once when it starts and once when it ends."""
        self.start_listener(self.private.url)
        ack = yield threads.deferToThread(btu_rpc_request, self.client(), "ping")
        self.assertEqual(ack["status"], "ok")
        yield threads.deferToThread(self.private.stop)
        # Down long enough for several retries to fail (the back-off starts at 0.25 s).
        yield task.deferLater(reactor, DOWN_SECS, lambda: None)
        yield threads.deferToThread(self.private.start)
        client = self.client()
        ack = yield threads.deferToThread(btu_rpc_request, client, "create_task_schedule", "TS-AFTER")
        self.assertEqual(ack, dict(OK, request_type="create_task_schedule"))
        yield wait_for(lambda: ("create_task_schedule", "TS-AFTER") in self.recorder.calls, WAIT_SECS,
                       "the command executed")
        self.assertEqual(len(self.log.lines("cannot pop")), 1, self.log.lines(""))
        self.assertEqual(len(self.log.lines("reachable again")), 1, self.log.lines(""))


class TwoListenerTests(ListenerTestCase):
    """Two daemons' listeners on one Redis."""

    @defer.inlineCallbacks
    def test_each_command_executed_once_and_acked_once(self):
        """200 commands with two listeners popping: every one executed exactly once, ACKed once."""
        first, second = Recorder(), Recorder()
        self.start_listener(handlers=first.handlers())
        self.start_listener(handlers=second.handlers())
        keys = [response_key() for _ in range(200)]
        ids = [f"TS-{n:04d}" for n in range(200)]
        self.redis.lpush(COMMANDS_KEY, *[command("cancel_task_schedule", i, k) for i, k in zip(ids, keys)])
        yield wait_for(lambda: len(first.calls) + len(second.calls) == 200, WAIT_SECS, "200 executed")
        executed = [content for _, content in first.calls + second.calls]
        self.assertEqual(sorted(executed), ids)
        self.assertEqual([self.redis.llen(k) for k in keys], [1] * 200)
        self.assertEqual(self.redis.llen(COMMANDS_KEY), 0)
