"""Specification of the control socket protocol: in memory, fuzzed, and over a real unix socket."""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import socket
import struct
import tempfile
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task, threads
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial import unittest

from btu_twisted.channels.text_protocol import ControlFactory, RequestError
from btu_twisted.channels.unix_socket import ControlSocketService

from tests.support.protocol_oracle import first_complete_object

PING = b'{"request_type": "ping", "request_content": null}'
FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class RecordingHandlers(dict):
    """Fake handlers recording every call; "later" answers only when its Deferred is fired."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, object]] = []
        self.pending: list[defer.Deferred] = []
        self["create_task_schedule"] = self._create
        self["deferred"] = self._deferred
        self["later"] = self._later

    def _create(self, content):
        self.calls.append(("create_task_schedule", content))
        return f"BTU Scheduler now re-processing Task Schedule {content} in Python RQ."

    def _deferred(self, content):
        self.calls.append(("deferred", content))
        return defer.succeed("deferred ok")

    def _later(self, content):
        self.calls.append(("later", content))
        d = defer.Deferred()
        self.pending.append(d)
        return d


class FakeSocket:
    """Stands in for transport.socket, answering SO_PEERCRED with fixed credentials."""

    def __init__(self, pid=4242, uid=1000, gid=1000, error=None):
        self.creds = (pid, uid, gid)
        self.error = error
        self.asked = []

    def getsockopt(self, level, option, buflen):
        self.asked.append((level, option, buflen))
        if self.error is not None:
            raise self.error
        return struct.pack("3i", *self.creds)


def make_factory(handlers=None, **kwargs):
    clock = task.Clock()
    return ControlFactory(RecordingHandlers() if handlers is None else handlers, clock, **kwargs)


def connect(factory, transport=None):
    proto = factory.buildProtocol(None)
    transport = StringTransport() if transport is None else transport
    proto.makeConnection(transport)
    return proto, transport


def exchange(factory, *chunks):
    """Open an in-memory connection, send chunks, and return (protocol, transport)."""
    proto, transport = connect(factory)
    for chunk in chunks:
        proto.dataReceived(chunk)
    return proto, transport


def request(request_type, content=None) -> bytes:
    return json.dumps({"request_type": request_type, "request_content": content}).encode()


class RequestTests(unittest.SynchronousTestCase):
    """Requests a well-behaved client sends get the documented replies."""

    def assertReply(self, transport, expected):
        self.assertEqual(transport.value().decode("utf-8"), expected)
        self.assertTrue(transport.disconnecting)

    def test_ping(self):
        """ping without a handler answers pong and closes the connection."""
        _, transport = exchange(make_factory(), PING)
        self.assertReply(transport, "pong")

    def test_ping_handler_overrides_builtin(self):
        """A registered ping handler replaces the built-in answer."""
        _, transport = exchange(make_factory({"ping": lambda _: "pong from handler"}), PING)
        self.assertReply(transport, "pong from handler")

    def test_unknown_type(self):
        """An unknown request_type gets the BTU daemon's 'unhandled' reply naming it."""
        _, transport = exchange(make_factory(), request("frobnicate"))
        self.assertReply(transport, "Client message has an unhandled 'request_type': frobnicate")

    def test_handler_returning_str(self):
        """A known type dispatches its request_content to the handler and sends its text."""
        handlers = RecordingHandlers()
        _, transport = exchange(make_factory(handlers), request("create_task_schedule", "TS-001"))
        self.assertReply(transport,
                         "BTU Scheduler now re-processing Task Schedule TS-001 in Python RQ.")
        self.assertEqual(handlers.calls, [("create_task_schedule", "TS-001")])

    def test_handler_returning_deferred(self):
        """A handler's Deferred is awaited: nothing is sent until it fires, then its text."""
        handlers = RecordingHandlers()
        _, transport = exchange(make_factory(handlers), request("later", {"id": 7}))
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        handlers.pending[0].callback("done later")
        self.assertReply(transport, "done later")
        self.assertEqual(handlers.calls, [("later", {"id": 7})])

    def test_handler_returning_fired_deferred(self):
        """A handler returning an already-fired Deferred is answered at once."""
        _, transport = exchange(make_factory(), request("deferred"))
        self.assertReply(transport, "deferred ok")

    def test_byte_by_byte_with_split_utf8(self):
        """A request arriving one byte per dataReceived, splitting multi-byte characters, works."""
        handlers = RecordingHandlers()
        payload = json.dumps({"request_type": "create_task_schedule",
                              "request_content": "TS-Zürich-€-☃"}, ensure_ascii=False).encode()
        proto, transport = connect(make_factory(handlers))
        for i in range(len(payload)):
            self.assertEqual(transport.value(), b"")
            proto.dataReceived(payload[i:i + 1])
        self.assertEqual(handlers.calls, [("create_task_schedule", "TS-Zürich-€-☃")])
        self.assertTrue(transport.value().decode().endswith("TS-Zürich-€-☃ in Python RQ."))

    def test_no_newline_needed(self):
        """The reply is sent as soon as the closing brace arrives, with no newline or EOF."""
        _, transport = exchange(make_factory(), PING[:-1])
        self.assertEqual(transport.value(), b"")
        _, transport = exchange(make_factory(), PING)
        self.assertReply(transport, "pong")

    def test_trailing_newline_and_leading_whitespace(self):
        """Whitespace around the object, including a trailing newline, is fine."""
        _, transport = exchange(make_factory(), b" \r\n\t" + PING + b"\n")
        self.assertReply(transport, "pong")

    def test_data_after_first_object_ignored(self):
        """One request per connection: a second object, even in the same packet, is ignored."""
        handlers = RecordingHandlers()
        proto, transport = exchange(make_factory(handlers),
                                    request("create_task_schedule", "A")
                                    + request("create_task_schedule", "B"))
        proto.dataReceived(request("create_task_schedule", "C"))
        self.assertEqual(handlers.calls, [("create_task_schedule", "A")])
        self.assertEqual(transport.value().count(b"Task Schedule"), 1)

    def test_braces_and_quotes_inside_strings(self):
        """Braces, brackets and escaped quotes inside strings do not end the object early."""
        handlers = RecordingHandlers()
        content = 'a}"]\\"{[\\\\'
        exchange(make_factory(handlers), request("create_task_schedule", content))
        self.assertEqual(handlers.calls, [("create_task_schedule", content)])

    def test_nesting_within_the_limit(self):
        """Content nested up to the depth limit is delivered intact."""
        handlers = RecordingHandlers()
        content = json.loads("[" * 31 + "]" * 31)
        _, transport = exchange(make_factory(handlers), request("create_task_schedule", content))
        self.assertEqual(handlers.calls, [("create_task_schedule", content)])

    def test_exactly_max_request_bytes_accepted(self):
        """A request of exactly max_request_bytes is accepted."""
        handlers = RecordingHandlers()
        base = request("create_task_schedule", "")
        payload = request("create_task_schedule", "x" * (100 - len(base)))
        self.assertEqual(len(payload), 100)
        _, transport = exchange(make_factory(handlers, max_request_bytes=100), payload)
        self.assertEqual(len(handlers.calls), 1)

    def test_handler_request_error(self):
        """A handler raising RequestError makes a one-line 'Error: <message>' reply."""
        def refuse(content):
            raise RequestError(f"Task Schedule {content} is disabled\nsee the log")
        _, transport = exchange(make_factory({"cancel_task_schedule": refuse}),
                                request("cancel_task_schedule", "TS-9"))
        self.assertReply(transport, "Error: Task Schedule TS-9 is disabled see the log")

    def test_handler_deferred_request_error(self):
        """A handler Deferred failing with RequestError is answered the same way."""
        def refuse(content):
            return defer.fail(RequestError("nope"))
        _, transport = exchange(make_factory({"x": refuse}), request("x"))
        self.assertReply(transport, "Error: nope")

    def test_handler_exception_is_logged_not_sent(self):
        """A handler bug is logged with log.failure and the client gets no traceback."""
        def broken(content):
            raise ZeroDivisionError("secret internals")
        with capturedLogs() as events:
            _, transport = exchange(make_factory({"create_task_schedule": broken}),
                                    request("create_task_schedule", "TS-1"))
        self.assertReply(transport, "Error: internal error handling create_task_schedule")
        self.assertTrue(any("log_failure" in e for e in events))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_handler_deferred_exception(self):
        """A handler Deferred failing with a generic exception gets the internal-error reply."""
        handlers = RecordingHandlers()
        _, transport = exchange(make_factory(handlers), request("later"))
        handlers.pending[0].errback(KeyError("boom"))
        self.assertReply(transport, "Error: internal error handling later")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_handler_returning_non_str(self):
        """A handler returning something other than str is an internal error."""
        _, transport = exchange(make_factory({"x": lambda _: b"bytes"}), request("x"))
        self.assertReply(transport, "Error: internal error handling x")

    def test_reply_timeout(self):
        """A handler Deferred that never fires is answered with a timeout error after 5 s."""
        handlers = RecordingHandlers()
        factory = make_factory(handlers)
        proto, transport = exchange(factory, request("later"))
        factory.clock.advance(4.9)
        self.assertEqual(transport.value(), b"")
        factory.clock.advance(0.1)
        self.assertReply(transport, "Error: handling later timed out after 5 s")
        handlers.pending[0].callback("too late")
        self.assertEqual(transport.value(), b"Error: handling later timed out after 5 s")
        proto.connectionLost(None)
        self.assertEqual(factory.clock.getDelayedCalls(), [])

    def test_connection_lost_before_reply(self):
        """A client leaving before the handler answers cancels the timers; a late reply is dropped."""
        handlers = RecordingHandlers()
        factory = make_factory(handlers)
        proto, transport = exchange(factory, request("later"))
        proto.connectionLost(None)
        self.assertEqual(factory.clock.getDelayedCalls(), [])
        handlers.pending[0].callback("nobody listens")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(factory.open_connections, 0)


class BadInputTests(unittest.SynchronousTestCase):
    """Every kind of bad input gets one 'Error:' line and a close, and calls no handler."""

    def assertRejected(self, *chunks, factory=None, startswith="Error: "):
        factory = make_factory() if factory is None else factory
        _, transport = exchange(factory, *chunks)
        reply = transport.value().decode("utf-8")
        self.assertTrue(reply.startswith(startswith), reply)
        self.assertNotIn("\n", reply)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.handlers.calls, [])
        return reply

    def test_malformed_json(self):
        """A balanced but malformed object is 'not valid JSON'."""
        for payload in (b'{"request_type": ping}', b'{"request_type": "ping",}'):
            self.assertRejected(payload, startswith="Error: request is not valid JSON")

    def test_garbage_rejected_at_once(self):
        """Input that cannot start a JSON value is rejected at its first byte."""
        self.assertRejected(b"h", startswith="Error: request is not valid JSON")

    def test_not_an_object(self):
        """Arrays, strings, numbers and literals are refused: the request must be an object."""
        for payload in (b"[1]", b'"x"', b"42", b"null", b"true", b"["):
            self.assertRejected(payload, startswith="Error: request must be a JSON object")

    def test_missing_request_type(self):
        """An object without request_type is refused."""
        reply = self.assertRejected(b'{"request_content": "TS-1"}')
        self.assertEqual(reply, "Error: request has no 'request_type'")

    def test_non_string_request_type(self):
        """A request_type that is not a string is refused, naming its JSON type."""
        for value, name in ((5, "number"), (None, "null"), (["ping"], "array"), ({}, "object"),
                            (True, "boolean")):
            reply = self.assertRejected(request(value))
            self.assertEqual(reply, f"Error: 'request_type' must be a string, not {name}")

    def test_invalid_utf8(self):
        """Bytes that are not UTF-8 are refused as soon as they arrive."""
        reply = self.assertRejected(b'{"request_type": "\xff')
        self.assertEqual(reply, "Error: request is not valid UTF-8")
        reply = self.assertRejected(b'{"request_type": "\xed\xa0\x80"}')  # an encoded surrogate
        self.assertEqual(reply, "Error: request is not valid UTF-8")

    def test_invalid_utf8_split_across_chunks(self):
        """A broken multi-byte sequence split over two chunks is caught."""
        reply = self.assertRejected(b'{"request_type": "\xc3', b"(")
        self.assertEqual(reply, "Error: request is not valid UTF-8")

    def test_invalid_utf8_after_complete_object_ignored(self):
        """Garbage after a complete request in the same packet does not spoil the request."""
        _, transport = exchange(make_factory(), PING + b"\xff\xfe")
        self.assertEqual(transport.value(), b"pong")

    def test_oversize_rejected_at_once(self):
        """One byte over max_request_bytes is refused at once, before the object completes."""
        factory = make_factory(max_request_bytes=100)
        reply = self.assertRejected(b'{"request_type": "' + b"a" * 83, factory=factory)
        self.assertEqual(reply, "Error: request is larger than 100 bytes")

    def test_oversize_in_small_chunks(self):
        """The size limit counts all chunks together."""
        factory = make_factory(max_request_bytes=100)
        chunks = [b'{"request_type": "'] + [b"a" * 10] * 8
        proto, transport = exchange(factory, *chunks, b"aa")  # exactly 100 bytes so far
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(b"a")
        self.assertEqual(transport.value(), b"Error: request is larger than 100 bytes")

    def test_default_limit_is_64_kib(self):
        """With defaults, a 64 KiB + 1 byte request is refused."""
        reply = self.assertRejected(b'{"request_type": "' + b"a" * 65536)
        self.assertEqual(reply, "Error: request is larger than 65536 bytes")

    def test_deep_nesting(self):
        """10 000 opening brackets are refused at depth 33 without any RecursionError."""
        reply = self.assertRejected(b'{"request_type": "ping", "request_content": ' + b"[" * 10000)
        self.assertEqual(reply, "Error: request is nested more than 32 levels deep")
        self.assertRejected(b"{" + b'"a":{' * 10000, startswith="Error: request is nested")
        self.assertRejected(b"[" * 10000, startswith="Error: request must be a JSON object")

    def test_idle_timeout(self):
        """Silence gets the timeout error after idle_timeout seconds, and the connection closes."""
        factory = make_factory()
        proto, transport = connect(factory)
        factory.clock.advance(9.99)
        self.assertFalse(transport.disconnecting)
        factory.clock.advance(0.01)
        self.assertEqual(transport.value(),
                         b"Error: timed out waiting for a complete request after 10 s")
        self.assertTrue(transport.disconnecting)

    def test_idle_timeout_not_reset_by_dribbling(self):
        """The timeout runs from connection time: a byte every second does not extend it."""
        factory = make_factory(idle_timeout=2.5)
        proto, transport = connect(factory)
        for byte in PING[:3]:
            factory.clock.advance(1)
            proto.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(),
                         b"Error: timed out waiting for a complete request after 2.5 s")

    def test_incomplete_request_then_half_close(self):
        """A client that shuts down its sending side mid-request gets an error."""
        proto, transport = exchange(make_factory(), PING[:10])
        proto.readConnectionLost()
        self.assertTrue(transport.value().startswith(b"Error: connection closed before"))
        self.assertTrue(transport.disconnecting)

    def test_connect_and_close_not_logged_as_warning(self):
        """A probe that connects and closes without sending is closed quietly, without a warning."""
        with capturedLogs() as events:
            proto, transport = connect(make_factory())
            proto.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual([e for e in events if e["log_level"].name in ("warn", "error")], [])

    def test_data_after_error_ignored(self):
        """After an error reply nothing further is read or answered."""
        proto, transport = exchange(make_factory(), b"[")
        proto.dataReceived(PING)
        self.assertEqual(transport.value(), b"Error: request must be a JSON object")

    def test_request_contents_bounded_in_logs(self):
        """Logged previews of rejected requests are bounded, never the whole user payload."""
        secret = b"S" * 5000
        with capturedLogs() as events:
            exchange(make_factory(), b'{"request_type": ' + secret + b"}")
        self.assertTrue(events)
        for event in events:
            for value in event.values():
                if isinstance(value, str):
                    self.assertLess(value.count("S"), 250)


class ConnectionLimitTests(unittest.SynchronousTestCase):
    """The connection count, max_connections, and the uid/gid allow-list."""

    def test_open_connections_counted(self):
        """open_connections goes up on connect and down on close."""
        factory = make_factory()
        proto1, _ = connect(factory)
        proto2, _ = connect(factory)
        self.assertEqual(factory.open_connections, 2)
        proto1.connectionLost(None)
        self.assertEqual(factory.open_connections, 1)
        proto2.connectionLost(None)
        self.assertEqual(factory.open_connections, 0)

    def test_max_connections(self):
        """A connection beyond max_connections is refused at once; a freed slot is reusable."""
        factory = make_factory(max_connections=2)
        first, _ = connect(factory)
        connect(factory)
        extra, transport = connect(factory)
        self.assertEqual(transport.value(), b"Error: too many connections")
        self.assertTrue(transport.disconnecting)
        extra.dataReceived(PING)
        self.assertEqual(transport.value(), b"Error: too many connections")
        extra.connectionLost(None)
        self.assertEqual(factory.open_connections, 2)
        first.connectionLost(None)
        _, transport = exchange(factory, PING)
        self.assertEqual(transport.value(), b"pong")

    def transport_with(self, fake_socket):
        transport = StringTransport()
        transport.socket = fake_socket
        return transport

    def test_no_allow_list_no_socket(self):
        """Without an allow-list, a transport with no socket is served."""
        self.assertEqual(exchange(make_factory(), PING)[1].value(), b"pong")

    def test_allow_list_without_socket_denies(self):
        """With an allow-list, a peer whose credentials cannot be read is denied."""
        factory = make_factory(allowed_uids=(0,))
        _, transport = exchange(factory, PING)
        self.assertEqual(transport.value(), b"Error: permission denied")
        self.assertTrue(transport.disconnecting)

    def test_allowed_uid(self):
        """A peer whose uid is listed is served; SO_PEERCRED is asked for a 3-int ucred."""
        fake = FakeSocket(uid=1000, gid=50)
        proto, transport = connect(make_factory(allowed_uids=(1000,), allowed_gids=(7,)),
                                   self.transport_with(fake))
        proto.dataReceived(PING)
        self.assertEqual(transport.value(), b"pong")
        self.assertEqual(fake.asked, [(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)])

    def test_allowed_gid(self):
        """A peer whose gid is listed is served."""
        proto, transport = connect(make_factory(allowed_gids=(1001,)),
                                   self.transport_with(FakeSocket(uid=5, gid=1001)))
        proto.dataReceived(PING)
        self.assertEqual(transport.value(), b"pong")

    def test_denied_peer(self):
        """A peer in neither list is denied before it sends anything, and its data is ignored."""
        handlers = RecordingHandlers()
        factory = make_factory(handlers, allowed_uids=(0,), allowed_gids=(0,))
        proto, transport = connect(factory, self.transport_with(FakeSocket(uid=1000, gid=1000)))
        self.assertEqual(transport.value(), b"Error: permission denied")
        proto.dataReceived(request("create_task_schedule", "x"))
        self.assertEqual(handlers.calls, [])
        proto.connectionLost(None)
        self.assertEqual(factory.open_connections, 0)

    def test_peercred_failure_denies(self):
        """A getsockopt error denies the peer."""
        _, transport = connect(make_factory(allowed_uids=(1000,)),
                               self.transport_with(FakeSocket(error=OSError(95, "unsupported"))))
        self.assertEqual(transport.value(), b"Error: permission denied")


# --- fuzzing -------------------------------------------------------------------------------------

FUZZ_MAX_BYTES = 512
KNOWN_REPLIES = {"pong", "deferred ok"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
# "later" never answers; it is exercised by the reply-timeout tests, not here.
request_types = (st.sampled_from(["ping", "create_task_schedule", "deferred"])
                 | st.text(max_size=12).filter(lambda t: t != "later"))
RECORDED_TYPES = ("create_task_schedule", "deferred", "later")


def encode_json(value, ascii_only=False) -> bytes:
    """JSON as UTF-8; lone surrogates cannot be raw UTF-8, so those values are \\u-escaped."""
    try:
        return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value).encode("utf-8")


def valid_requests():
    return st.builds(
        lambda t, c, ascii_only: encode_json({"request_type": t, "request_content": c}, ascii_only),
        request_types, json_values, st.booleans())


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


chunk_sizes = st.lists(st.integers(1, 40), max_size=30)


class FuzzTests(unittest.SynchronousTestCase):
    """Whatever arrives, each connection ends with one reply and a close, and never an exception."""

    def run_connection(self, chunks):
        handlers = RecordingHandlers()
        factory = make_factory(handlers, max_request_bytes=FUZZ_MAX_BYTES)
        proto, transport = connect(factory)
        for chunk in chunks:
            proto.dataReceived(chunk)
        if not transport.disconnecting:
            factory.clock.advance(factory.idle_timeout)
        self.assertTrue(transport.disconnecting)
        reply = transport.value().decode("utf-8")
        valid = (reply in KNOWN_REPLIES
                 or reply.startswith("BTU Scheduler now re-processing Task Schedule ")
                 or reply.startswith("Client message has an unhandled 'request_type': "))
        if not valid:
            self.assertTrue(reply.startswith("Error: "), reply)
            self.assertNotIn("\n", reply)
        proto.connectionLost(None)
        self.assertEqual(factory.open_connections, 0)
        self.assertEqual(factory.clock.getDelayedCalls(), [])
        return reply, handlers.calls

    def assertCallsMatchOracle(self, payload, reply, calls):
        expected = first_complete_object(payload, FUZZ_MAX_BYTES)
        rtype = expected.get("request_type") if expected is not None else None
        if isinstance(rtype, str) and rtype in RECORDED_TYPES:
            self.assertEqual(calls, [(rtype, expected.get("request_content"))])
        else:
            self.assertEqual(calls, [])
        if expected is None or not isinstance(rtype, str):
            self.assertTrue(reply.startswith("Error: "), reply)

    @FUZZ
    @given(st.binary(max_size=300), chunk_sizes)
    def test_arbitrary_bytes(self, payload, sizes):
        """Random bytes never raise, and handlers run only if a valid request prefix exists."""
        reply, calls = self.run_connection(split(payload, sizes))
        self.assertCallsMatchOracle(payload, reply, calls)

    @FUZZ
    @given(valid_requests(), st.binary(max_size=60), chunk_sizes)
    def test_valid_request_with_trailing_junk(self, payload, junk, sizes):
        """A valid request followed by anything is answered exactly as the request alone."""
        reply, calls = self.run_connection(split(payload + junk, sizes))
        self.assertCallsMatchOracle(payload + junk, reply, calls)
        if len(payload) <= FUZZ_MAX_BYTES:
            self.assertFalse(reply.startswith("Error: "), reply)

    @FUZZ
    @given(valid_requests(), st.data())
    def test_truncated_json(self, payload, data):
        """A truncated valid request waits, then ends with the idle-timeout error, unhandled."""
        cut = data.draw(st.integers(0, len(payload) - 1))
        sizes = data.draw(chunk_sizes)
        reply, calls = self.run_connection(split(payload[:cut], sizes))
        self.assertEqual(calls, [])
        if cut <= FUZZ_MAX_BYTES:
            self.assertEqual(reply, "Error: timed out waiting for a complete request after 10 s")
        else:
            self.assertEqual(reply, f"Error: request is larger than {FUZZ_MAX_BYTES} bytes")

    @FUZZ
    @given(json_values, st.dictionaries(st.text(max_size=8), json_values, max_size=3), chunk_sizes)
    def test_wrong_types(self, value, others, sizes):
        """Non-string or missing request_type, and non-object requests, are refused unhandled."""
        others.pop("request_type", None)
        payloads = [json.dumps(others).encode()]
        if not (isinstance(value, dict) and "request_type" in value):
            payloads.append(json.dumps(value).encode())
        if not isinstance(value, str):
            payloads.append(json.dumps({**others, "request_type": value}).encode())
        for payload in payloads:
            reply, calls = self.run_connection(split(payload, sizes))
            self.assertTrue(reply.startswith("Error: "), (payload, reply))
            self.assertEqual(calls, [])

    @FUZZ
    @given(st.text(min_size=0, max_size=1500), chunk_sizes)
    def test_huge_strings(self, content, sizes):
        """Big contents are delivered whole up to the limit and refused unhandled beyond it."""
        payload = encode_json({"request_type": "create_task_schedule", "request_content": content})
        reply, calls = self.run_connection(split(payload, sizes))
        if len(payload) <= FUZZ_MAX_BYTES:
            self.assertEqual(calls, [("create_task_schedule", content)])
        else:
            self.assertEqual(calls, [])
            self.assertEqual(reply, f"Error: request is larger than {FUZZ_MAX_BYTES} bytes")


# --- over a real unix socket ----------------------------------------------------------------------

def btu_client(path, payload, pause=0.5):
    """The BTU app's client: connect, send without newline, sleep 0.5 s, recv(2048), close."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
        sock.sendall(payload)
        time.sleep(pause)
        return sock.recv(2048)
    finally:
        sock.close()


def read_to_eof(sock):
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def slow_client(path, payload, interval):
    """Send one byte per interval until the server answers; return (reply, seconds connected)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    started = time.monotonic()
    try:
        sock.connect(path)
        for byte in payload:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            if select.select([sock], [], [], interval)[0]:
                break
        return read_to_eof(sock), time.monotonic() - started
    finally:
        sock.close()


def fuzz_client(path, payload):
    """Send a payload, half-close, and read whatever comes back until EOF."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return read_to_eof(sock)
    finally:
        sock.close()


def open_idle(path, count):
    socks = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        socks.append(sock)
    return socks


@defer.inlineCallbacks
def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        yield task.deferLater(reactor, 0.01, lambda: None)


class RealSocketTests(unittest.TestCase):
    """The protocol behind a ControlSocketService on a real unix socket, with real clients."""

    timeout = 30

    def setUp(self):
        # mktemp() paths can exceed the 107-byte unix socket path limit; /tmp is short.
        directory = tempfile.mkdtemp(prefix="btu-ctl-", dir="/tmp")
        self.addCleanup(shutil.rmtree, directory, True)
        self.path = os.path.join(directory, "control.sock")

    def serve(self, **kwargs):
        kwargs.setdefault("idle_timeout", 1.0)
        factory = ControlFactory(RecordingHandlers(), reactor, **kwargs)
        service = ControlSocketService(reactor, self.path, factory)
        service.startService()
        self.addCleanup(service.stopService)
        # Runs before stopService: every server-side connection must be gone for a clean reactor.
        self.addCleanup(wait_until, lambda: factory.open_connections == 0)
        return factory

    def close_all(self, socks):
        for sock in socks:
            sock.close()

    @defer.inlineCallbacks
    def test_btu_client_gets_pong(self):
        """The BTU app's exact client pattern gets pong."""
        self.serve()
        reply = yield threads.deferToThread(btu_client, self.path, PING)
        self.assertEqual(reply, b"pong")

    @defer.inlineCallbacks
    def test_slow_client_cut_off(self):
        """A client sending a byte every 0.3 s is cut off at the 1 s idle timeout with an error."""
        self.serve(idle_timeout=1.0)
        reply, elapsed = yield threads.deferToThread(slow_client, self.path, PING, 0.3)
        self.assertEqual(reply, b"Error: timed out waiting for a complete request after 1 s")
        self.assertGreater(elapsed, 0.9)
        self.assertLess(elapsed, 3.0)

    @defer.inlineCallbacks
    def test_many_idle_connections_do_not_block(self):
        """1 000 simultaneous idle connections do not stop a new client from getting pong."""
        factory = self.serve(idle_timeout=20.0)
        socks = yield threads.deferToThread(open_idle, self.path, 1000)
        self.addCleanup(self.close_all, socks)
        yield wait_until(lambda: factory.open_connections == 1000)
        reply = yield threads.deferToThread(btu_client, self.path, PING)
        self.assertEqual(reply, b"pong")

    @defer.inlineCallbacks
    def test_connection_beyond_limit(self):
        """With max_connections=2, a third connection gets 'Error: too many connections' at once."""
        factory = self.serve(max_connections=2, idle_timeout=20.0)
        socks = yield threads.deferToThread(open_idle, self.path, 2)
        self.addCleanup(self.close_all, socks)
        yield wait_until(lambda: factory.open_connections == 2)
        started = time.monotonic()
        reply = yield threads.deferToThread(fuzz_client, self.path, b"")
        self.assertEqual(reply, b"Error: too many connections")
        self.assertLess(time.monotonic() - started, 2.0)

    @defer.inlineCallbacks
    def test_allow_list_uses_real_peer_credentials(self):
        """A real peer whose uid (read with SO_PEERCRED) is listed gets pong."""
        self.serve(allowed_uids=(os.getuid(),))
        reply = yield threads.deferToThread(btu_client, self.path, PING, 0.2)
        self.assertEqual(reply, b"pong")

    @defer.inlineCallbacks
    def test_allow_list_denies_other_uid(self):
        """A real peer whose uid and gid are not listed gets 'Error: permission denied'."""
        self.serve(allowed_uids=(os.getuid() + 4242,), allowed_gids=(os.getgid() + 4242,))
        reply = yield threads.deferToThread(fuzz_client, self.path, PING)
        self.assertEqual(reply, b"Error: permission denied")

    @defer.inlineCallbacks
    def test_fuzzed_payloads_leave_ping_working(self):
        """Dozens of random payloads each end with an error (or nothing), and ping still answers."""
        factory = self.serve(idle_timeout=1.0, max_request_bytes=4096)
        rng = random.Random(20240611)
        payloads = [b"", b"[" * 10000, b"\xff\xfe", b"{" * 40, PING[:20], b'{"request_type": 1}',
                    b'{"request_type": "' + b"x" * 70000]
        for _ in range(40):
            kind = rng.randrange(3)
            if kind == 0:
                payloads.append(rng.randbytes(rng.randrange(1, 300)))
            elif kind == 1:
                payloads.append(PING[:rng.randrange(len(PING))] + rng.randbytes(rng.randrange(20)))
            else:
                payloads.append(b'{"request_content": ' + rng.randbytes(rng.randrange(50)) + b"}")

        def run_all():
            return [fuzz_client(self.path, payload) for payload in payloads]

        replies = yield threads.deferToThread(run_all)
        for payload, reply in zip(payloads, replies):
            acceptable = (reply == b"" or reply.startswith(b"Error: ")
                          or reply.startswith(b"Client message has an unhandled"))
            self.assertTrue(acceptable, (payload, reply))
        self.assertIn(b"Error: request is larger than 4096 bytes", replies)
        reply = yield threads.deferToThread(btu_client, self.path, PING, 0.2)
        self.assertEqual(reply, b"pong")
        yield wait_until(lambda: factory.open_connections == 0)
