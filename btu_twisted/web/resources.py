# -*- test-case-name: tests.test_dashboard -*-
"""The HTTP resources: `/` (dashboard page), `/api/dashboard` (its JSON), `/metrics` (Prometheus),
`POST /api/run-now?schedule=ID` (needs `Authorization: Bearer <http_token>`)."""

from __future__ import annotations

import hmac
import json
from importlib import resources as package_files

from twisted.logger import Logger
from twisted.web import resource, server

from btu_twisted.logs import OBSERVER
from btu_twisted.run_now import RunNowError
from btu_twisted.schedules import ScheduleError
from btu_twisted.web.cockpit import UnknownSchedule
from btu_twisted.web.metrics import exposition, registry_for

PROMETHEUS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
SECURITY_HEADERS = {b"Content-Security-Policy": b"default-src 'self'; img-src 'self' data:",
                    b"X-Content-Type-Options": b"nosniff", b"Cache-Control": b"no-store",
                    b"Referrer-Policy": b"no-referrer"}
STATIC = {"": ("dashboard.html", b"text/html; charset=utf-8"),
          "dashboard.js": ("dashboard.js", b"text/javascript; charset=utf-8"),
          "dashboard.css": ("dashboard.css", b"text/css; charset=utf-8")}

log = Logger(observer=OBSERVER)


def _headers(request, content_type: bytes) -> None:
    request.setHeader(b"Content-Type", content_type)
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


def _json(request, status: int, data) -> bytes:
    request.setResponseCode(status)
    _headers(request, b"application/json")
    return json.dumps(data, sort_keys=True, default=str).encode("utf-8")


class _Deferred(resource.Resource):
    """A leaf whose GET answers with a Deferred's result; an error becomes a 500 with its message."""

    isLeaf = True

    def _answer(self, request, d, render):
        def done(result):
            if not request._disconnected:
                request.write(render(result))
                request.finish()

        def failed(failure):
            log.failure("HTTP {path} failed", failure=failure, path=request.path)
            if not request._disconnected:
                request.write(_json(request, 500, {"error": failure.getErrorMessage()}))
                request.finish()
        d.addCallbacks(done, failed)
        return server.NOT_DONE_YET


class StaticFile(resource.Resource):
    """One file of the page, read once from the package."""

    isLeaf = True

    def __init__(self, name: str, content_type: bytes):
        super().__init__()
        self._body = package_files.files("btu_twisted.web").joinpath("static", name).read_bytes()
        self._type = content_type

    def render_GET(self, request):
        _headers(request, self._type)
        return self._body


class DashboardData(_Deferred):
    def __init__(self, cockpit):
        super().__init__()
        self._cockpit = cockpit

    def render_GET(self, request):
        return self._answer(request, self._cockpit.dashboard(),
                            lambda data: _json(request, 200, data))


class Metrics(_Deferred):
    def __init__(self, cockpit):
        super().__init__()
        self._cockpit = cockpit
        self._registry = registry_for(cockpit.collector)

    def render_GET(self, request):
        def render(_):
            _headers(request, PROMETHEUS_CONTENT_TYPE)
            return exposition(self._registry)
        return self._answer(request, self._cockpit.refresh_metrics(), render)


class RunNow(_Deferred):
    """POST only, and only with the configured Bearer token; the daemon is read-only without one."""

    def __init__(self, cockpit, token: str | None):
        super().__init__()
        self._cockpit = cockpit
        self._token = token

    def render_GET(self, request):
        request.setHeader(b"Allow", b"POST")
        return _json(request, 405, {"error": "run-now is POST only"})

    def render_POST(self, request):
        if self._token is None:
            return _json(request, 403, {"error": "actions are disabled: set http_token in the configuration"})
        given = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(given, f"Bearer {self._token}".encode("utf-8")):
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="btu"')
            return _json(request, 401, {"error": "missing or wrong Bearer token"})
        names = request.args.get(b"schedule") or [b""]
        schedule_id = names[0].decode("utf-8", "replace").strip()
        if not schedule_id:
            return _json(request, 400, {"error": "name the schedule: POST /api/run-now?schedule=ID"})
        d = self._cockpit.run_now(schedule_id)

        def refused(failure):
            # ScheduleError: the row, or a builder (btu-web) whose jobs only a planned fire can make.
            failure.trap(UnknownSchedule, RunNowError, ScheduleError)
            status = 404 if failure.check(UnknownSchedule) else 409
            message = (f"no BTU Task Schedule {schedule_id!r}" if status == 404 else failure.getErrorMessage())
            return _Refusal(status, message)

        d.addErrback(refused)
        return self._answer(request, d, lambda spec: (
            _json(request, spec.status, {"error": spec.message}) if isinstance(spec, _Refusal)
            else _json(request, 200, {"schedule_id": schedule_id, "job_id": spec.job_id, "queue": spec.queue})))


class _Refusal:
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


def root(cockpit, token: str | None) -> resource.Resource:
    """The resource tree of the listener."""
    top = resource.Resource()
    for path, (name, content_type) in STATIC.items():
        top.putChild(path.encode("ascii"), StaticFile(name, content_type))
    api = resource.Resource()
    api.putChild(b"dashboard", DashboardData(cockpit))
    api.putChild(b"run-now", RunNow(cockpit, token))
    top.putChild(b"api", api)
    top.putChild(b"metrics", Metrics(cockpit))
    return top
