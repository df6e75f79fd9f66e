"""A `twisted.web` stand-in for the BTU app's `get_pickled_task` endpoint (BTU <= 15.1.0).

Like the real one behind Frappe it checks the `Authorization` token (403 otherwise) and, in DNS
multi-tenancy, the `Host` header names the site; it reads the JSON body `{task_id,
task_schedule_id}` and answers `{"message": [<bytes as ints>]}` with a pickle of
`(func_name, None, args, kwargs)`. `misbehave[task_id]` makes it answer that task badly.
"""

from __future__ import annotations

import json
import pickle

from twisted.internet import endpoints, reactor
from twisted.web import resource, server

from btu_twisted.builders.btu_web import ENDPOINT_PATH

TOKEN = "token apikey:apisecret"
SITE = "site1.localhost"

#: Ways to answer badly, by name.
MISBEHAVIOURS = ("forbidden", "not-json", "wrong-shape", "bad-pickle", "not-a-job", "slow", "error")


def pickled_job(func_name: str, kwargs: dict) -> bytes:
    """RQ job data as the BTU app's Sanchez class makes it."""
    return pickle.dumps((func_name, None, (), kwargs), protocol=pickle.HIGHEST_PROTOCOL)


class PickledTaskEndpoint(resource.Resource):
    """The endpoint; `jobs[task_id] = (func_name, kwargs)` says what each task's pickle calls."""

    isLeaf = True

    def __init__(self, token: str = TOKEN, site: str = SITE):
        super().__init__()
        self.token = token
        self.site = site
        self.jobs: dict[str, tuple[str, dict]] = {}
        self.misbehave: dict[str, str] = {}
        self.requests: list[dict] = []  # method, path, headers and body of every request
        self.stalled: list = []          # requests of `slow` tasks, never answered

    def render(self, request):
        body = request.content.read()
        self.requests.append({"method": request.method.decode(), "path": request.path.decode(),
                              "authorization": _header(request, b"authorization"),
                              "host": _header(request, b"host"), "body": body.decode()})
        request.setHeader(b"content-type", b"application/json")
        if request.path.decode() != ENDPOINT_PATH:
            request.setResponseCode(404)
            return b'{"exc_type": "DoesNotExistError"}'
        if _header(request, b"authorization") != self.token or _header(request, b"host") != self.site:
            request.setResponseCode(403)
            return b'{"exc_type": "PermissionError"}'
        args = json.loads(body)
        task_id = args["task_id"]
        mode = self.misbehave.get(task_id)
        if mode == "forbidden":
            request.setResponseCode(403)
            return b'{"exc_type": "PermissionError"}'
        if mode == "error":
            request.setResponseCode(500)
            return b'{"exc_type": "Exception"}'
        if mode == "not-json":
            return b"<html>Bad Gateway</html>"
        if mode == "wrong-shape":
            return json.dumps({"message": "not a list of bytes"}).encode()
        if mode == "bad-pickle":
            return json.dumps({"message": list(b"\x80\x05not a pickle at all")}).encode()
        if mode == "not-a-job":
            return json.dumps({"message": list(pickle.dumps(["a", "list"]))}).encode()
        if mode == "slow":
            self.stalled.append(request)
            return server.NOT_DONE_YET
        func_name, kwargs = self.jobs[task_id]
        data = pickled_job(func_name, {**kwargs, "task_schedule_id": args["task_schedule_id"]})
        return json.dumps({"message": list(data)}).encode()

    def release_stalled(self) -> None:
        """Finish the requests left waiting (cleanup), so no connection outlives the test."""
        for request in self.stalled:
            if not request.finished and not request._disconnected:
                request.setResponseCode(504)
                request.finish()
        self.stalled.clear()


def _header(request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode() if isinstance(value, bytes) else value


def listen(testcase, endpoint_resource: PickledTaskEndpoint):
    """Serve the endpoint on 127.0.0.1, a free port; fires with the port number. Stopped at cleanup."""
    site = server.Site(endpoint_resource)
    d = endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)

    def started(port):
        def stop():
            endpoint_resource.release_stalled()
            return port.stopListening()
        testcase.addCleanup(stop)
        return port.getHost().port

    return d.addCallback(started)
