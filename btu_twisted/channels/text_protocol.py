# -*- test-case-name: tests.test_control -*-
"""The control socket protocol, byte-compatible with the BTU Frappe app's client.

The client connects, sends ONE UTF-8 JSON object without a newline, sleeps 0.5 s, reads up to 2048
bytes and closes. So the server answers as soon as a complete JSON object has arrived (it never
waits for a newline or EOF), replies with plain UTF-8 text and closes the connection.

There is exactly one request per connection: whatever arrives after the first complete JSON object
(a trailing newline, or anything else) is ignored.

Request: ``{"request_type": "<type>", "request_content": <any JSON>}``; the reply is whatever the
handler for ``<type>`` returns. ``ping`` answers ``pong`` unless a handler overrides it, and an
unknown type gets ``Client message has an unhandled 'request_type': <type>``.

Every bad connection gets a one-line reply starting with ``Error:`` and is closed, without
affecting anything else: not JSON, not an object, a missing or non-string ``request_type``, invalid
UTF-8, more than ``max_request_bytes``, nesting deeper than ``max_depth``, no complete request
within ``idle_timeout`` seconds of connecting, more than ``max_connections`` open connections, a
peer outside the uid/gid allow-list, a failing handler, or a handler that does not answer within
``reply_timeout`` seconds. A reply the client has not read within ``write_timeout`` seconds is
dropped and the connection aborted.
"""

from __future__ import annotations

import codecs
import json
import re
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger, LogLevel
from twisted.protocols import policies
from zope.interface import implementer

from btu_twisted.logs import OBSERVER

DEFAULT_MAX_REQUEST_BYTES = 65536
DEFAULT_IDLE_TIMEOUT_SECS = 10.0
# The BTU app reads once, 0.5 s after sending, so a slower reply is lost to it anyway; this only
# bounds how long a stuck handler (MySQL, Redis) can hold a connection open.
DEFAULT_REPLY_TIMEOUT_SECS = 5.0
# A reply not taken by the client within this time is dropped with its connection: a client that
# never reads would otherwise hold the reply's memory and a connection slot forever. The BTU app
# reads 0.5 s after sending.
DEFAULT_WRITE_TIMEOUT_SECS = 5.0
DEFAULT_MAX_CONNECTIONS = 4096
# Real requests are flat; the bound keeps json.loads far from Python's recursion limit.
DEFAULT_MAX_DEPTH = 32
# Requests are user data: logs get at most this many characters of one.
LOG_PREVIEW_CHARS = 200

_JSON_WHITESPACE = " \t\n\r"
# Characters that can start a JSON value other than an object.
_OTHER_JSON_VALUE_STARTS = frozenset('["-0123456789tfn')
_STRUCTURAL = re.compile(r'[{}\[\]"]')
_STRING_SPECIAL = re.compile(r'["\\]')
_LINE_BREAKS = re.compile("[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
_PEERCRED_FORMAT = "3i"  # struct ucred: pid, uid, gid

_READING, _DISPATCHED, _DONE = "reading", "dispatched", "done"


class RequestError(Exception):
    """Raised by a handler to make the reply ``Error: <message>``."""


class BadRequest(Exception):
    """The input can never become an acceptable request; the message says why."""


def _pong(_content: Any) -> str:
    return "pong"


def find_handler(handlers: Mapping[str, Callable[[Any], Any]],
                 request_type: str) -> Callable[[Any], Any] | None:
    """The handler for `request_type` (ping answers pong unless overridden), or None."""
    handler = handlers.get(request_type)
    if handler is None and request_type == "ping":
        return _pong
    return handler


def one_line(text: str) -> str:
    """`text` with its line breaks replaced, for one-line replies and log fields."""
    return _LINE_BREAKS.sub(" ", text)


def preview(text: str, limit: int = LOG_PREVIEW_CHARS) -> str:
    """A bounded, printable excerpt of user data for logs and error replies."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


class _ObjectScanner:
    """Finds where the first top-level JSON object ends, fed text incrementally.

    It tracks only string/escape state and bracket depth, so it costs one regex search per
    structural character and never recurses; json.loads then validates the complete text.
    """

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.depth = 0
        self.started = False
        self.in_string = False
        self.escaped = False

    def feed(self, text: str) -> int | None:
        """Return the offset in ``text`` just past the object's closing brace, or None if not yet.

        Raises BadRequest as soon as the input cannot be an acceptable object.
        """
        i, n = 0, len(text)
        if not self.started:
            i = n - len(text.lstrip(_JSON_WHITESPACE))
            if i == n:
                return None
            first = text[i]
            if first != "{":
                if first in _OTHER_JSON_VALUE_STARTS:
                    raise BadRequest("request must be a JSON object")
                raise BadRequest("request is not valid JSON")
            self.started = True
            self.depth = 1
            i += 1
        while i < n:
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                    i += 1
                    continue
                match = _STRING_SPECIAL.search(text, i)
                if match is None:
                    return None
                i = match.end()
                if match.group() == "\\":
                    self.escaped = True
                else:
                    self.in_string = False
                continue
            match = _STRUCTURAL.search(text, i)
            if match is None:
                return None
            i = match.end()
            char = match.group()
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
                if self.depth > self.max_depth:
                    raise BadRequest(f"request is nested more than {self.max_depth} levels deep")
            else:
                self.depth -= 1
                if self.depth == 0:
                    return i
        return None


def _decode_object(text: str) -> dict:
    try:
        request = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"request is not valid JSON ({e})") from None
    if not isinstance(request, dict):
        raise BadRequest("request must be a JSON object")
    return request


def request_type_of(request: dict) -> str:
    """The request's `request_type`; raises BadRequest when it is missing or not a string."""
    if "request_type" not in request:
        raise BadRequest("request has no 'request_type'")
    request_type = request["request_type"]
    if not isinstance(request_type, str):
        raise BadRequest(f"'request_type' must be a string, not {_json_type_name(request_type)}")
    return request_type


def decode_request(text: str) -> dict:
    """The request object of one complete JSON text, with a string `request_type`.

    Raises BadRequest naming the problem.
    """
    request = _decode_object(text)
    request_type_of(request)
    return request


def decode_message(text: str, max_depth: int = DEFAULT_MAX_DEPTH) -> dict:
    """The JSON object that is the whole of `text` (a Redis RPC entry), nesting bounded; its
    fields are for the caller to check (request_type_of). Raises BadRequest naming the problem."""
    end = _ObjectScanner(max_depth).feed(text)
    if end is None:
        raise BadRequest("request is not a complete JSON object")
    if text[end:].strip(_JSON_WHITESPACE):
        raise BadRequest("request has data after its JSON object")
    return _decode_object(text[:end])


@implementer(IHalfCloseableProtocol)
class ControlProtocol(protocol.Protocol, policies.TimeoutMixin):
    """One control connection: read one JSON request, answer it, close.

    Anything after the first complete JSON object is ignored (one request per connection, like the
    BTU app's client). The idle timeout runs from connection time and is NOT reset by incoming
    bytes, so a client dribbling one byte at a time cannot hold a connection open.
    """

    log = Logger(observer=OBSERVER)
    factory: ControlFactory

    def __init__(self) -> None:
        self._state = _READING
        self._counted = False
        self._received = 0
        self._parts: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._scanner: _ObjectScanner | None = None
        self._reply_call = None
        self._write_deadline = None
        self._request_type: str | None = None

    def callLater(self, period, func):
        """Route TimeoutMixin's timer through the factory's injected clock."""
        return self.factory.clock.callLater(period, func)

    # --- connection lifecycle -----------------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        if factory.open_connections >= factory.max_connections:
            self.log.warn("refusing control connection: {open_connections} already open (limit "
                          "{max_connections})", open_connections=factory.open_connections,
                          max_connections=factory.max_connections)
            self._reply("Error: too many connections")
            return
        factory.open_connections += 1
        self._counted = True
        self._scanner = _ObjectScanner(factory.max_depth)
        allowed, credentials = self._peer_allowed()
        if not allowed:
            self.log.warn("refusing control connection from peer {credentials}: not in "
                          "socket_allowed_uids/socket_allowed_gids", credentials=credentials)
            self._reply("Error: permission denied")
            return
        self.setTimeout(factory.idle_timeout)

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if self._counted:
            self._counted = False
            self.factory.open_connections -= 1
        self._state = _DONE
        self.setTimeout(None)
        self._cancel_reply_timer()
        if self._write_deadline is not None and self._write_deadline.active():
            self._write_deadline.cancel()
        self._write_deadline = None

    def readConnectionLost(self) -> None:
        """The client shut down its sending side: no complete request can arrive any more."""
        if self._state is not _READING:
            return
        reason = "connection closed before a complete JSON request arrived"
        if self._received == 0:
            # Connect-and-close is what liveness probes (including our own start-up check) do.
            self._reply(f"Error: {reason}")
        else:
            self._fail(reason)

    def writeConnectionLost(self) -> None:
        """Nothing to do: the connection is closed from our side after the reply anyway."""

    def timeoutConnection(self) -> None:
        if self._state is _READING:
            self._fail(f"timed out waiting for a complete request after "
                       f"{self.factory.idle_timeout:g} s")

    # --- reading the request ------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._state is not _READING:
            return
        limit = self.factory.max_request_bytes
        allowance = limit - self._received
        chunk, oversize = data[:allowance], len(data) > allowance
        self._received += len(chunk)

        invalid_utf8 = False
        try:
            text = self._decoder.decode(chunk)
        except UnicodeDecodeError as e:
            # e.object is the decoder's pending bytes + chunk; everything before e.start is valid,
            # and a request that completes there is still answered.
            text = e.object[:e.start].decode("utf-8")
            invalid_utf8 = True
        self._parts.append(text)

        try:
            end = self._scanner.feed(text)
        except BadRequest as e:
            self._fail(str(e))
            return
        if end is not None:
            self._parts[-1] = text[:end]
            self._dispatch("".join(self._parts))
        elif invalid_utf8:
            self._fail("request is not valid UTF-8")
        elif oversize:
            self._fail(f"request is larger than {limit} bytes")

    def _dispatch(self, text: str) -> None:
        try:
            request = decode_request(text)
        except BadRequest as e:
            self._fail(str(e))
            return
        request_type = request["request_type"]

        self._state = _DISPATCHED
        self._request_type = request_type
        self.setTimeout(None)
        handler = self.factory.handler_for(request_type)
        self.log.debug("control request {request_type}: {preview}",
                       request_type=preview(request_type), preview=preview(text))
        if handler is None:
            self._reply(f"Client message has an unhandled 'request_type': "
                        f"{one_line(preview(request_type))}")
            return
        d = defer.maybeDeferred(handler, request.get("request_content"))
        d.addCallbacks(self._handler_done, self._handler_failed)
        d.addErrback(self._reply_failed)
        if self._state is _DISPATCHED:
            self._reply_call = self.factory.clock.callLater(self.factory.reply_timeout,
                                                            self._reply_timed_out)

    # --- replying -----------------------------------------------------------------------------

    def _handler_done(self, result: Any) -> None:
        if self._state is not _DISPATCHED:
            self.log.info("reply to {request_type} came after its connection ended; dropped",
                          request_type=preview(self._request_type))
            return
        if not isinstance(result, str):
            self.log.error("handler for {request_type} returned {kind}, not str",
                           request_type=preview(self._request_type), kind=type(result).__name__)
            self._reply(f"Error: internal error handling {one_line(preview(self._request_type))}")
            return
        self._reply(result)

    def _handler_failed(self, failure) -> None:
        request_type = preview(self._request_type)
        if failure.check(RequestError):
            if self._state is _DISPATCHED:
                self._reply(f"Error: {one_line(str(failure.value))}")
            return
        self.log.failure("handler for control request {request_type} failed", failure,
                         level=LogLevel.error, request_type=request_type)
        if self._state is _DISPATCHED:
            self._reply(f"Error: internal error handling {one_line(request_type)}")

    def _reply_failed(self, failure) -> None:
        self.log.failure("replying to control request {request_type} failed", failure,
                         level=LogLevel.error, request_type=preview(self._request_type))

    def _reply_timed_out(self) -> None:
        self._reply_call = None
        request_type = preview(self._request_type)
        self.log.warn("handler for control request {request_type} did not answer within "
                      "{timeout} s", request_type=request_type, timeout=self.factory.reply_timeout)
        # The handler keeps running (cancelling could abort half-done work); its answer is dropped.
        self._reply(f"Error: handling {one_line(request_type)} timed out after "
                    f"{self.factory.reply_timeout:g} s")

    def _fail(self, reason: str) -> None:
        self.log.warn("rejected control request: {reason}; received {received} bytes: {preview}",
                      reason=reason, received=self._received,
                      preview=preview("".join(self._parts)))
        self._reply(f"Error: {one_line(reason)}")

    def _reply(self, text: str) -> None:
        self._state = _DONE
        self.setTimeout(None)
        self._cancel_reply_timer()
        self.transport.write(text.encode("utf-8", "backslashreplace"))
        self.transport.loseConnection()
        self._write_deadline = self.factory.clock.callLater(self.factory.write_timeout,
                                                            self._write_timed_out)

    def _write_timed_out(self) -> None:
        self._write_deadline = None
        self.log.debug("control client did not read its reply within {timeout} s; aborting",
                       timeout=self.factory.write_timeout)
        self.transport.abortConnection()

    def _cancel_reply_timer(self) -> None:
        if self._reply_call is not None and self._reply_call.active():
            self._reply_call.cancel()
        self._reply_call = None

    def _peer_allowed(self) -> tuple[bool, dict[str, int] | None]:
        """Check the unix peer's credentials against the allow-lists (empty lists allow all)."""
        factory = self.factory
        if not (factory.allowed_uids or factory.allowed_gids):
            return True, None
        skt = getattr(self.transport, "socket", None)
        peercred = getattr(socket, "SO_PEERCRED", None)
        if skt is None or peercred is None:
            return False, None
        try:
            raw = skt.getsockopt(socket.SOL_SOCKET, peercred, struct.calcsize(_PEERCRED_FORMAT))
            pid, uid, gid = struct.unpack(_PEERCRED_FORMAT, raw)
        except (OSError, struct.error, TypeError):
            return False, None
        credentials = {"pid": pid, "uid": uid, "gid": gid}
        return (uid in factory.allowed_uids or gid in factory.allowed_gids), credentials


class ControlFactory(protocol.Factory):
    """Builds ControlProtocols and holds their shared limits, handlers and connection count.

    ``handlers`` maps a request_type to a callable taking request_content and returning the reply
    text, or a Deferred firing with it; it may raise RequestError for an ``Error: ...`` reply.
    The mapping is consulted per request, so handlers registered after construction are seen.
    """

    protocol = ControlProtocol
    noisy = False

    def __init__(
        self,
        handlers: Mapping[str, Callable[[Any], str | defer.Deferred]],
        clock,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_SECS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        allowed_uids: tuple[int, ...] = (),
        allowed_gids: tuple[int, ...] = (),
        reply_timeout: float = DEFAULT_REPLY_TIMEOUT_SECS,
        max_depth: int = DEFAULT_MAX_DEPTH,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT_SECS,
    ) -> None:
        self.handlers = handlers
        self.clock = clock
        self.max_request_bytes = max_request_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.allowed_uids = tuple(allowed_uids)
        self.allowed_gids = tuple(allowed_gids)
        self.reply_timeout = reply_timeout
        self.max_depth = max_depth
        self.write_timeout = write_timeout
        self.open_connections = 0

    def handler_for(self, request_type: str) -> Callable[[Any], Any] | None:
        return find_handler(self.handlers, request_type)
