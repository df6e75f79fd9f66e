"""`btu test-ping` and `btu test-pickler` against a twisted.web stand-in of BTU's two test endpoints,
which checks the token and Host header exactly as Frappe's API would."""

from __future__ import annotations

import json
import os
import pickle

from click.testing import CliRunner
from twisted.internet import defer, endpoints, reactor, threads
from twisted.trial import unittest
from twisted.web import resource, server

from btu_twisted.cli import main
from btu_twisted.cli.check_commands import PICKLER_PATH, PING_PATH
from tests.support.daemon import write_config

TOKEN = "token apikey:apisecret"
SITE = "site1.localhost"
SCHEDULE_FILE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "btu_twisted", "data",
                             "embedded_schedules.toml")


class TestEndpoints(resource.Resource):
    """BTU's `test_ping` and `test_function_ping_now_bytes`; 403 without the token, 404 for another site."""

    isLeaf = True

    def __init__(self, pickler_message=None):
        super().__init__()
        self.pickler_message = pickler_message

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        if request.getHeader(b"authorization") != TOKEN.encode():
            request.setResponseCode(403)
            return json.dumps({"exc_type": "AuthenticationError"}).encode()
        if request.getHeader(b"host") != SITE.encode():
            request.setResponseCode(404)
            return b"{}"
        if request.path.decode() == PING_PATH:
            return json.dumps({"message": "pong"}).encode()
        if request.path.decode() == PICKLER_PATH:
            message = self.pickler_message
            if message is None:
                message = list(pickle.dumps(("btu.btu_api.endpoints.test_function_ping_now", None, (), {})))
            return json.dumps({"message": message}).encode()
        request.setResponseCode(404)
        return b"{}"


class WebCheckTests(unittest.TestCase):
    """The Rust CLI's two web checks: exit 0 with what Frappe said, 1 with why not."""

    @defer.inlineCallbacks
    def serve(self, endpoint_resource, token=TOKEN):
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(endpoint_resource))
        self.addCleanup(port.stopListening)
        path = write_config(self.mktemp(), {
            "schedule_file": SCHEDULE_FILE, "job_builder": "python", "webserver_ip": "127.0.0.1",
            "webserver_port": port.getHost().port, "webserver_token": token,
            "webserver_host_header": SITE})
        os.chmod(path, 0o600)  # it holds the token
        return path

    def btu(self, config, *args):
        return threads.deferToThread(CliRunner().invoke, main, ["--config", config, *args])

    @defer.inlineCallbacks
    def test_ping_and_pickler_answer(self):
        """With the right token and Host, test-ping prints pong and test-pickler finds a pickle."""
        config = yield self.serve(TestEndpoints())
        ping = yield self.btu(config, "test-ping")
        self.assertEqual((ping.exit_code, ping.output.strip()), (0, "Frappe answered: pong"), ping.output)
        pickler = yield self.btu(config, "test-pickler", "--json")
        self.assertEqual(pickler.exit_code, 0, pickler.output)
        self.assertTrue(json.loads(pickler.output)["pickle"])

    @defer.inlineCallbacks
    def test_wrong_token_fails(self):
        """A token Frappe refuses: exit 1, and the output names the HTTP status, not the token."""
        config = yield self.serve(TestEndpoints(), token="token wrong:secret")
        ping = yield self.btu(config, "test-ping")
        self.assertEqual(ping.exit_code, 1, ping.output)
        self.assertIn("403", ping.output)
        self.assertNotIn("wrong:secret", ping.output)

    @defer.inlineCallbacks
    def test_pickler_answer_that_is_not_a_pickle_fails(self):
        """Byte values that are not a pickle: exit 1 saying so."""
        config = yield self.serve(TestEndpoints(pickler_message=[1, 2, 3]))
        pickler = yield self.btu(config, "test-pickler")
        self.assertEqual(pickler.exit_code, 1, pickler.output)
        self.assertIn("NOT a pickle", pickler.output)
