# -*- test-case-name: tests.test_btu_web -*-
"""The `btu-web` job builder (BTU <= 15.1.0, the Rust daemon's path): the BTU app pickles its task
runner for each fire, served by its `get_pickled_task` endpoint; the job's data is those bytes.

Fetched with Twisted's HTTP client while the dispatcher prepares the fire (before its instant), and
checked before use: an answer that is not `{"message": [<bytes as ints>]}` holding a pickled
`(func_name, instance, args, kwargs)` never becomes a job. A failed fetch is logged and retried with
back-off until the fire is beyond `misfire_grace_secs` (the dispatcher then skips it).
"""

from __future__ import annotations

import json
from io import BytesIO

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from btu_twisted.builders import JobSpec, LocalBuilder, Retry, iso_utc
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout
from btu_twisted.builders.pickled import PickleError, check_job_pickle
from btu_twisted.logs import OBSERVER
from btu_twisted.schedules import Schedule
from btu_twisted.tls_gate import HTTPS_PORT  # the Rust daemon's rule: port 443 means https, without the port

ENDPOINT_PATH = "/api/method/btu.btu_api.endpoints.get_pickled_task"
FETCH_TIMEOUT_SECS = 10.0       # one request, connect to last byte
RETRY_MIN_SECS = 1.0            # first retry after a failed fetch, doubled per failure of that fire
RETRY_MAX_SECS = 30.0           # so a grace of minutes still sees several attempts
MAX_CONCURRENT_FETCHES = 8      # a burst of fires must not open hundreds of requests to Frappe
MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # JSON ints take up to 4 characters per pickled byte


class FetchError(Exception):
    """The endpoint did not give a usable pickled job; the message says what it gave instead."""


def endpoint_url(ip: str, port: int) -> str:
    """The endpoint's URL, as the Rust daemon builds it."""
    if port == HTTPS_PORT:
        return f"https://{ip}{ENDPOINT_PATH}"
    return f"http://{ip}:{port}{ENDPOINT_PATH}"


def parse_reply(code: int, body: bytes) -> tuple[bytes, str]:
    """The pickled job in a reply of the endpoint and the function it calls; raises FetchError
    naming what is wrong."""
    if code == 403:
        raise FetchError("HTTP 403 Forbidden: check webserver_token (\"token <api key>:<api secret>\") "
                         "and webserver_host_header")
    if code != 200:
        raise FetchError(f"HTTP {code}")
    try:
        reply = json.loads(body)
    except ValueError:
        raise FetchError(f"the reply is not JSON (starts {body[:40]!r})") from None
    message = reply.get("message") if isinstance(reply, dict) else None
    if not isinstance(message, list) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in message):
        raise FetchError('the reply is not {"message": [<bytes as integers 0-255>]}')
    data = bytes(message)
    try:
        return data, check_job_pickle(data)
    except PickleError as e:
        raise FetchError(f"the payload is not a pickled RQ job: {e}") from None


class BtuWebBuilder(LocalBuilder):
    """Jobs whose data is the pickle `get_pickled_task` returns for (task, schedule); they go to
    the schedule's queue through `queue_name_template`, as the Rust daemon enqueued them."""

    kind = "btu-web"
    log = Logger(observer=OBSERVER)

    def __init__(self, clock, url: str, token: str, host_header: str | None = None,
                 queue_name_template: str = "{queue_name}", agent=None,
                 fetch_timeout: float = FETCH_TIMEOUT_SECS, reactor=None, layout: KeyLayout = SINGLE_SITE):
        super().__init__(queue_name_template, layout)
        self._clock = clock
        self._timeout = fetch_timeout
        self._url = url
        self._token = token
        self._host_header = host_header
        self._pool = None
        if agent is None:
            reactor = reactor or clock  # the clock tells instants; connections need a reactor
            self._pool = HTTPConnectionPool(reactor, persistent=True)
            agent = Agent(reactor, connectTimeout=fetch_timeout, pool=self._pool)
        self._agent = agent
        self._limit = defer.DeferredSemaphore(MAX_CONCURRENT_FETCHES)
        self._backoff: dict[str, tuple[int, float]] = {}  # schedule -> (fire, next retry delay)

    def build_batch(self, fires: list[tuple[Schedule, int]]) -> defer.Deferred:
        """Fire with a JobSpec or a Retry per fire; the fetches run concurrently (bounded)."""
        return defer.gatherResults([self._build(schedule, when) for schedule, when in fires])

    @defer.inlineCallbacks
    def _build(self, schedule: Schedule, when: int):
        try:
            data, func_name = yield self._limit.run(self._fetch, schedule)
        except Exception as e:
            reason = str(e) if isinstance(e, FetchError) else f"{type(e).__name__}: {e}"
            delay = self._next_delay(schedule.schedule_id, when)
            self.log.warn("cannot fetch the job of {schedule_id} due at {due} from {url}: {reason}; "
                          "retrying in {delay:.0f} s while within misfire_grace_secs",
                          schedule_id=schedule.schedule_id, due=iso_utc(when), url=self._url,
                          reason=reason, delay=delay)
            return Retry(reason, self._clock.seconds() + delay)
        self._backoff.pop(schedule.schedule_id, None)
        return JobSpec(
            job_id=self.job_id(schedule, when),
            queue=self.queue_for(schedule),
            func=func_name,  # what the job's data calls (rq shows it as func_name)
            kwargs={},
            timeout=schedule.max_task_duration,
            description=schedule.description or schedule.task_id,
            meta=self.job_meta(schedule, when),
            data=data,
            builder=self.kind,
        )

    @defer.inlineCallbacks
    def _fetch(self, schedule: Schedule):
        headers = Headers({b"Authorization": [self._token.encode("utf-8")],
                           b"Content-Type": [b"application/json"]})
        if self._host_header:
            headers.setRawHeaders(b"Host", [self._host_header.encode("utf-8")])
        body = json.dumps({"task_id": schedule.task_id, "task_schedule_id": schedule.schedule_id})
        # GET with a JSON body, as the Rust daemon sends it (Frappe reads it for any method).
        d = self._agent.request(b"GET", self._url.encode("ascii"), headers,
                                FileBodyProducer(BytesIO(body.encode("utf-8"))))
        d.addCallback(self._read)
        d.addTimeout(self._timeout, self._clock, onTimeoutCancel=self._timed_out)
        code, payload = yield d
        return parse_reply(code, payload)

    def _timed_out(self, _result, _timeout):
        raise FetchError(f"no complete answer within {self._timeout:g} s")

    @staticmethod
    @defer.inlineCallbacks
    def _read(response):
        if response.length is not UNKNOWN_LENGTH and response.length > MAX_RESPONSE_BYTES:
            response.deliverBody(protocol.Protocol())  # drop it unread
            raise FetchError(f"the reply is {response.length} bytes, more than {MAX_RESPONSE_BYTES}")
        body = yield readBody(response)
        if len(body) > MAX_RESPONSE_BYTES:
            raise FetchError(f"the reply is {len(body)} bytes, more than {MAX_RESPONSE_BYTES}")
        return response.code, body

    def _next_delay(self, schedule_id: str, when: int) -> float:
        previous_when, delay = self._backoff.get(schedule_id, (when, RETRY_MIN_SECS))
        if previous_when != when:
            delay = RETRY_MIN_SECS
        self._backoff[schedule_id] = (when, min(delay * 2, RETRY_MAX_SECS))
        return delay

    def close(self) -> defer.Deferred | None:
        """Close the kept-alive connections to the web server."""
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return None
