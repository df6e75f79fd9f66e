"""btu-ctl: offline cron preview and requests to a live control socket."""

import json
import os
import tempfile
from pathlib import Path

from click.testing import CliRunner
from twisted.internet import reactor, threads
from twisted.trial import unittest

from btu_twisted.cli import main
from btu_twisted.channels.text_protocol import ControlFactory, RequestError
from btu_twisted.channels.unix_socket import ControlSocketService

EMBEDDED_SCHEDULES = Path(__file__).parent.parent / "btu_twisted" / "data" / "embedded_schedules.toml"


class PreviewTests(unittest.TestCase):
    def run_cli(self, *args):
        return CliRunner().invoke(main, list(args))

    def test_preview_marks_spring_forward_gap(self):
        """A fixed-time cron inside the gap is shown once, at the end of the gap, with a note."""
        result = self.run_cli("preview", "30 2 * * *", "--zone", "America/New_York",
                              "--after", "2026-03-07T12:00:00Z", "--count", "2")
        self.assertEqual(result.exit_code, 0, result.output)
        first, second = result.output.splitlines()
        self.assertIn("2026-03-08T07:00:00Z", first)
        self.assertIn("gap", first)
        self.assertIn("2026-03-09T06:30:00Z", second)

    def test_preview_rejects_bad_expression(self):
        """An invalid cron string exits 1 with the field named."""
        result = self.run_cli("preview", "61 * * * *")
        self.assertEqual(result.exit_code, 1)
        self.assertIn("minute field", result.output)

    def test_preview_rejects_bad_after(self):
        """A malformed --after is a usage error naming the option."""
        result = self.run_cli("preview", "* * * * *", "--after", "yesterday")
        self.assertEqual(result.exit_code, 2)
        self.assertIn("--after", result.output)


class SocketCommandTests(unittest.TestCase):
    def setUp(self):
        self.path = tempfile.mkdtemp(prefix="btuctl") + "/s.sock"
        handlers = {"status": lambda _content: json.dumps({"uptime_secs": 1.5}),
                    "create_task_schedule": self.refuse}
        self.service = ControlSocketService(reactor, self.path, ControlFactory(handlers, reactor))
        self.service.startService()
        self.addCleanup(self.service.stopService)

    @staticmethod
    def refuse(_content):
        raise RequestError("request_content must be a BTU Task Schedule ID")

    def invoke(self, *args):
        return threads.deferToThread(CliRunner().invoke, main, ["--socket", self.path, *args])

    async def test_ping(self):
        """`btu-ctl ping` prints the daemon's pong."""
        result = await self.invoke("ping")
        self.assertEqual((result.exit_code, result.output), (0, "pong\n"))

    async def test_status_json_holds_the_daemon_report(self):
        """`btu --json status` holds the daemon's own status reply (and exits 1: its Redis is down)."""
        config = os.path.join(os.path.dirname(self.path), "btu.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(f'schedule_file = "{EMBEDDED_SCHEDULES}"\njob_builder = "python"\n'
                    f'redis_url = "unix://{self.path}.no-redis"\n')
        result = await threads.deferToThread(CliRunner().invoke, main,
                                             ["--config", config, "--socket", self.path, "--json", "status"])
        self.assertEqual(json.loads(result.output)["daemon"], {"uptime_secs": 1.5})
        self.assertEqual(result.exit_code, 1)

    async def test_error_reply_exits_nonzero(self):
        """An `Error:` reply makes btu-ctl exit 1."""
        result = await self.invoke("create", "")
        self.assertEqual(result.exit_code, 1, result.output)

    def test_unreachable_socket(self):
        """A socket nobody listens on gives a clear message and exit 1."""
        result = CliRunner().invoke(main, ["--socket", self.path + ".missing", "ping"])
        self.assertEqual(result.exit_code, 1)
        self.assertIn("cannot talk to the daemon", result.output)
