# -*- test-case-name: tests.test_redis_rpc -*-
"""The Redis RPC control channel of BTU 15.1.1+ (DESIGN §6b; btu_scheduler_py's scheduler_redis_rpc.md).

The app LPUSHes ``{"request_type", "request_content", "response_key"}`` onto ``COMMANDS_KEY`` and
BLPOPs its ``response_key`` for 5 s. The listener pops from the other end (BRPOP: first pushed,
first served) on a connection of its own, takes whatever else is queued behind it (up to
``DRAIN_BATCH``), ACKs receipt of them all at once (LPUSH + EXPIRE per key, one script), and only
then runs the requests, in order, through the same handlers as the socket. Without a ``response_key``
(the app's poll mode) it executes only.

A malformed entry (not UTF-8, not JSON, not an object, wrong types, oversize, unknown type) is
logged with a bounded preview and, when its response key is known, answered with
``{"status": "error", ...}``; it is never executed and never stops the listener. A response key
must start with ``RESPONSE_KEY_PREFIX``, so an entry cannot make the daemon write to, or set a TTL
on, any other key (an RQ queue, the schedule set). Outages are logged once when they start and
once when they end; the listener reconnects by itself. Several daemons may pop from one list: a
BRPOP hands each entry to exactly one of them.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Mapping

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger, LogLevel

from btu_twisted import store
from btu_twisted.channels.text_protocol import (DEFAULT_MAX_REQUEST_BYTES, BadRequest, RequestError,
                                                decode_message, find_handler, one_line, preview,
                                                request_type_of)
from btu_twisted.commands import _schedule_id
from btu_twisted.logs import OBSERVER
from btu_twisted.redis_connections import RedisSettings, txredis_connection

COMMANDS_KEY = "btu:scheduler:commands"
RESPONSE_KEY_PREFIX = "btu:scheduler:rpc:"
MAX_RESPONSE_KEY_CHARS = 200        # the app's keys are the prefix and a UUID (54 characters)
RESPONSE_TTL_SECS = 60              # an ACK nobody reads (the app died) expires
ACK_MESSAGE = "Command received by BTU Scheduler."
# One BRPOP blocks this long in Redis; a reply that is POP_GRACE_SECS later than that means the
# connection is dead (a paused or unreachable Redis), so it is replaced. Each empty pop wakes the
# reactor twice (its reply, then its cancelled timeout): at 10 s they are a fifth of the idle
# daemon's CPU that they were at 2 s (bench/bench_idle.py).
POP_BLOCK_SECS = 10
POP_GRACE_SECS = store.REPLY_TIMEOUT_SECS
# Back-off between attempts while Redis is unreachable; kept short because the app's own wait is
# 5 s: an ACK that comes later than that is lost to it.
RETRY_FIRST_SECS = 0.25
RETRY_MAX_SECS = 4.0
# Requests executing at once; beyond it the listener stops popping, so a flood waits in Redis
# rather than in the daemon's memory.
MAX_IN_FLIGHT = 256
# An oversize entry up to this size is still parsed, for the response key its error goes to;
# a larger one is only logged (parsing it would hold the reactor).
MAX_PARSED_BYTES = 16 << 20

# After a blocking pop returns, up to this many more queued entries are taken in one round trip
# and ACKed in one more, so a burst costs two round trips per batch instead of two per command.
DRAIN_BATCH = 100

# Pop up to ARGV[1] entries from the right (RPOP's count argument needs Redis 6.2; this does not).
DRAIN_SCRIPT = """
local popped = {}
for i = 1, tonumber(ARGV[1]) do
  local entry = redis.call('RPOP', KEYS[1])
  if not entry then break end
  popped[i] = entry
end
return popped
"""

# Each answer and its TTL in one step, so a response key never exists without its expiry:
# KEYS are the response keys, ARGV the TTL and then one reply per key.
ACK_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('LPUSH', key, ARGV[i + 1])
  redis.call('EXPIRE', key, ARGV[1])
end
return #KEYS
"""

# The requests of the app's RPC client whose content is a schedule ID: checked before the ACK, so
# a bad one is answered "error" instead of "ok" (the handlers check again, for the socket).
_CONTENT_CHECKS: dict[str, Callable[[Any], Any]] = {
    "create_task_schedule": _schedule_id,
    "cancel_task_schedule": _schedule_id,
}

log = Logger(observer=OBSERVER)


class _Malformed(Exception):
    """An entry that is not executed; carries its response key when that much was readable."""

    def __init__(self, reason: str, request_type: str | None = None,
                 response_key: str | None = None) -> None:
        super().__init__(reason)
        self.request_type = request_type
        self.response_key = response_key


def rpc_connection(settings: RedisSettings, clock=None, tracker=None):
    """The listener's own Redis connection (a blocking pop holds it, so it is never shared), with
    the daemon's user, TLS and Sentinel master (`tracker`: the daemon's, so a move is seen once)."""
    return txredis_connection(settings, 1, clock, tracker)


def _describe(error: Exception) -> str:
    if isinstance(error, (defer.TimeoutError, defer.CancelledError)):
        return f"no reply within {POP_BLOCK_SECS + POP_GRACE_SECS} s"
    return one_line(str(error)) or type(error).__name__


class RedisRPCListener(service.Service):
    """Pops commands from ``COMMANDS_KEY``, ACKs them and runs them through ``handlers``."""

    def __init__(self, clock, redis_settings: RedisSettings,
                 handlers: Mapping[str, Callable[[Any], Any]],
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 connect: Callable[[RedisSettings], Any] = rpc_connection) -> None:
        self._clock = clock
        self._settings = redis_settings
        self._handlers = handlers
        self._max_request_bytes = max_request_bytes
        self._connect = connect
        self._redis = None
        self._slots = defer.DeferredSemaphore(MAX_IN_FLIGHT)
        self._waiting: defer.Deferred | None = None  # the pop or back-off under way, cancelled on stop
        self._loop: defer.Deferred | None = None
        self._down_since: float | None = None

    def startService(self) -> None:
        service.Service.startService(self)
        self._redis = self._connect(self._settings)
        log.info("Redis RPC listening on {key}", key=COMMANDS_KEY)
        self._loop = self._run()

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self._waiting is not None:
            self._waiting.cancel()
        if self._loop is not None:
            yield self._loop
        yield self._close()

    # --- the loop ---------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _run(self):
        delay = RETRY_FIRST_SECS
        while self.running:
            try:
                yield self._wait(self._slots.acquire())
            except defer.CancelledError:
                break
            try:
                popped = yield self._wait(self._pop())
            except Exception as e:
                self._slots.release()
                if not self.running:
                    break
                self._went_down(e)
                yield self._close()  # a blocked pop on a dead connection could eat an entry later
                try:
                    yield self._wait(task.deferLater(self._clock, delay, lambda: None))
                except defer.CancelledError:
                    break
                delay = min(delay * 2, RETRY_MAX_SECS)
                self._redis = self._connect(self._settings)
                continue
            delay = RETRY_FIRST_SECS
            self._came_back()
            if popped is None:  # the block ran out with nothing queued
                self._slots.release()
                continue
            entries = [popped[1]]
            entries += yield self._drain()
            try:
                yield self._serve(entries)
            except Exception:
                log.failure("Redis RPC: serving commands failed", level=LogLevel.error)

    def _wait(self, d: defer.Deferred) -> defer.Deferred:
        self._waiting = d

        def done(result):
            self._waiting = None
            return result
        return d.addBoth(done)

    def _pop(self) -> defer.Deferred:
        d = self._redis.brpop([COMMANDS_KEY], timeout=POP_BLOCK_SECS)
        return d.addTimeout(POP_BLOCK_SECS + POP_GRACE_SECS, self._clock)

    @defer.inlineCallbacks
    def _drain(self):
        """More queued entries, one slot taken for each; none if Redis fails (the next pop says so)."""
        wanted = min(DRAIN_BATCH, self._slots.tokens)
        for _ in range(wanted):
            self._slots.acquire()  # fires at once: the tokens are there
        try:
            drained = yield self._redis.eval(DRAIN_SCRIPT, [COMMANDS_KEY], [wanted]) if wanted else []
        except Exception:
            drained = []
        drained = list(drained or ())
        for _ in range(wanted - len(drained)):
            self._slots.release()
        return drained

    def _went_down(self, error: Exception) -> None:
        if self._down_since is None:
            self._down_since = self._clock.seconds()
            log.warn("Redis RPC: cannot pop {key} ({error}); retrying until Redis is back",
                     key=COMMANDS_KEY, error=_describe(error))

    def _came_back(self) -> None:
        if self._down_since is not None:
            log.info("Redis RPC: Redis reachable again after {secs} s; serving {key}",
                     secs=round(self._clock.seconds() - self._down_since, 1), key=COMMANDS_KEY)
            self._down_since = None

    @defer.inlineCallbacks
    def _close(self):
        redis, self._redis = self._redis, None
        if redis is not None:
            try:
                yield redis.disconnect()
            except Exception:
                log.failure("Redis RPC: error while closing the connection", level=LogLevel.debug)

    # --- one command ------------------------------------------------------------------------------

    @defer.inlineCallbacks
    def _serve(self, entries: list):
        """ACK (or refuse) popped entries in one round trip, then start executing the valid ones
        in pop order; each entry's slot is released when its handler is done."""
        answers: list[tuple[str, dict]] = []
        accepted = []
        for raw in entries:
            try:
                request_type, handler, content, response_key = self._parse(raw)
            except _Malformed as e:
                self._slots.release()
                log.warn("Redis RPC: rejected command: {reason}; {preview}", reason=str(e),
                         preview=_entry_preview(raw))
                if e.response_key is not None:
                    answers.append((e.response_key, {"status": "error", "request_type": e.request_type,
                                                     "message": str(e)}))
                continue
            if response_key is not None:
                answers.append((response_key, {"status": "ok", "request_type": request_type,
                                               "message": ACK_MESSAGE}))
            accepted.append((request_type, handler, content))
        yield self._answer(answers)
        for request_type, handler, content in accepted:
            d = defer.maybeDeferred(handler, content)
            d.addCallbacks(self._executed, self._failed, callbackArgs=(request_type,),
                           errbackArgs=(request_type,))
            d.addBoth(lambda _: self._slots.release())

    def _parse(self, raw) -> tuple[str, Callable[[Any], Any], Any, str | None]:
        """(request_type, handler, request_content, response_key) of a valid entry; raises _Malformed."""
        if isinstance(raw, (int, float)):  # txredisapi converts entries that look like numbers
            raise _Malformed("request must be a JSON object")
        if isinstance(raw, bytes):  # txredisapi returns undecodable entries as bytes
            raise _Malformed("request is not valid UTF-8")
        size = len(raw.encode("utf-8", "surrogatepass"))
        oversize = f"request is larger than {self._max_request_bytes} bytes ({size} bytes)"
        if size > MAX_PARSED_BYTES:
            raise _Malformed(oversize)
        try:
            request = decode_message(raw)
        except BadRequest as e:
            raise _Malformed(oversize if size > self._max_request_bytes else str(e)) from None
        response_key = request.get("response_key")
        if response_key is not None and not (
                isinstance(response_key, str) and response_key.startswith(RESPONSE_KEY_PREFIX)
                and len(response_key) <= MAX_RESPONSE_KEY_CHARS):
            raise _Malformed(f"'response_key' must be a string of at most {MAX_RESPONSE_KEY_CHARS} "
                             f"characters starting with {RESPONSE_KEY_PREFIX}")
        try:
            request_type = request_type_of(request)
        except BadRequest as e:
            raise _Malformed(str(e), None, response_key) from None
        if size > self._max_request_bytes:
            raise _Malformed(oversize, request_type, response_key)
        handler = find_handler(self._handlers, request_type)
        if handler is None:
            raise _Malformed(f"Client message has an unhandled 'request_type': "
                             f"{one_line(preview(request_type))}", request_type, response_key)
        content = request.get("request_content")
        check = _CONTENT_CHECKS.get(request_type)
        if check is not None:
            try:
                check(content)
            except RequestError as e:
                raise _Malformed(str(e), request_type, response_key) from None
        return request_type, handler, content, response_key

    @defer.inlineCallbacks
    def _answer(self, answers: list[tuple[str, dict]]):
        if not answers:
            return
        keys = [key for key, _ in answers]
        try:
            yield self._redis.eval(ACK_SCRIPT, keys,
                                   [RESPONSE_TTL_SECS, *(json.dumps(reply) for _, reply in answers)])
        except Exception as e:  # the commands were received all the same: they are executed
            log.warn("Redis RPC: could not answer {count} command(s), first on {response_key} ({error})",
                     count=len(keys), response_key=keys[0], error=one_line(str(e)))

    def _executed(self, reply, request_type: str) -> None:
        log.debug("Redis RPC {request_type}: {reply}", request_type=preview(request_type),
                  reply=preview(str(reply)))

    def _failed(self, failure, request_type: str) -> None:
        if failure.check(RequestError):
            log.warn("Redis RPC {request_type} refused: {reason}", request_type=preview(request_type),
                     reason=one_line(str(failure.value)))
        else:
            log.failure("Redis RPC: handler for {request_type} failed", failure, level=LogLevel.error,
                        request_type=preview(request_type))


def _entry_preview(raw) -> str:
    if isinstance(raw, bytes):
        return preview(raw[:400].decode("utf-8", "backslashreplace"))
    return preview(str(raw))
