"""The daemon's control channels in process against the private MariaDB and Redis: Redis RPC as
BTU 15.1.1 speaks it, the disable flags, TCP parity with the unix socket, and clients that never
read their replies."""

from __future__ import annotations

import json
import os
import socket

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from btu_twisted import config as configuration
from btu_twisted.channels.tcp import ControlTCPService, check_tcp_port
from btu_twisted.channels.listening import ListenerError
from btu_twisted.channels.text_protocol import ControlFactory
from btu_twisted.channels.unix_socket import ControlSocketService
from tests.support import frappe_schema as fs
from tests.support.btu_rpc_client import COMMANDS_KEY, btu_rpc_request
from tests.support.daemon import (TwistdProcess, control_request, daemon_config, members_of, poll,
                                  short_dir, start_daemon, wait_for, write_config)
from tests.test_commands import CommandsTestCase
from tests.test_end_to_end import CLEAN_SIGTERM_EXITS
from tests.support.servers import use_shared_servers

FAR_CRON = "0 4 * * *"
WAIT_SECS = 15
CLIENT_SOCKET_TIMEOUT_SECS = 10


def free_tcp_port() -> int:
    """A loopback port that was free a moment ago (the kernel picks it: port 0)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def taken_tcp_port(testcase) -> int:
    """A loopback port with a listener on it for the rest of the test."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(8)
    testcase.addCleanup(taken.close)
    return taken.getsockname()[1]


def tcp_request(port: int, payload, timeout: float = CLIENT_SOCKET_TIMEOUT_SECS) -> str:
    """Send one request (bytes or a dict as JSON) over TCP and read the reply to EOF."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(data)
        return _read_all(client)


def unix_request(path: str, payload, timeout: float = CLIENT_SOCKET_TIMEOUT_SECS) -> str:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(path)
        client.sendall(data)
        return _read_all(client)


def _read_all(client) -> str:
    client.shutdown(socket.SHUT_WR)  # an incomplete request is answered at once, not at the idle timeout
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8")


class DaemonChannelTestCase(unittest.TestCase):

    timeout = 60

    def setUp(self):
        use_shared_servers(self)
        self.rpc = self.redis_server.client(socket_timeout=CLIENT_SOCKET_TIMEOUT_SECS)
        self.addCleanup(self.rpc.close)
        fs.insert_task(self.sql, "BTU-00001", "tests.support.jobfuncs.noop")
        fs.insert_schedule(self.sql, "TS-000001", "BTU-00001", FAR_CRON)

    def start(self, **keys):
        return start_daemon(self, self.database, **keys)

    def btu_rpc(self, request_type, content=None, wait=5):
        return threads.deferToThread(btu_rpc_request, self.rpc, request_type, content, wait)


class RedisRPCDaemonTests(DaemonChannelTestCase):
    """The BTU 15.1.1 client against the whole daemon."""

    @defer.inlineCallbacks
    def test_ping_create_cancel(self):
        """ping, create and cancel are ACKed; create plans the schedule and cancel removes it."""
        daemon = self.start()
        yield daemon.refreshed()
        self.redis.delete("btu_scheduler:task_execution_times", "btu_scheduler:planned")
        for request_type, content in (("ping", None), ("create_task_schedule", "TS-000001")):
            ack = yield self.btu_rpc(request_type, content)
            self.assertEqual(ack, {"status": "ok", "request_type": request_type,
                                   "message": "Command received by BTU Scheduler."})
        yield wait_for(lambda: members_of(self.redis, "TS-000001"), WAIT_SECS, "TS-000001 planned")
        ack = yield self.btu_rpc("cancel_task_schedule", "TS-000001")
        self.assertEqual(ack["status"], "ok")
        yield wait_for(lambda: not members_of(self.redis, "TS-000001"), WAIT_SECS, "TS-000001 cancelled")

    @defer.inlineCallbacks
    def test_disable_redis_rpc(self):
        """disable_redis_rpc = true: nothing pops the list; the socket still answers."""
        daemon = self.start(disable_redis_rpc=True)
        yield daemon.refreshed()
        ack = yield self.btu_rpc("ping", wait=1)
        self.assertIsNone(ack)
        self.assertEqual(self.redis.llen(COMMANDS_KEY), 1)

    @defer.inlineCallbacks
    def test_disable_unix_socket(self):
        """disable_unix_socket = true: no socket file; Redis RPC still serves."""
        daemon = self.start(disable_unix_socket=True)
        ack = yield self.btu_rpc("ping")
        self.assertEqual(ack["status"], "ok")
        self.assertFalse(os.path.exists(daemon.socket_path))


class TwistdRPCTests(DaemonChannelTestCase):
    """A real `twistd -n btu` serving BTU 15.1.1's client with its unix socket switched off."""

    def test_rpc_only_daemon(self):
        """ping and create are ACKed by a twistd daemon without a socket, and SIGTERM stops it
        cleanly."""
        directory = short_dir(self)
        socket_path = os.path.join(directory, "btu.sock")
        config = write_config(os.path.join(directory, "btu.toml"),
                              daemon_config(socket_path, self.database, disable_unix_socket=True))
        daemon = TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config", config],
                               cwd=directory)
        ack = poll(lambda: btu_rpc_request(self.rpc, "ping", wait=1), WAIT_SECS, "an ACK to ping")
        self.assertEqual(ack["status"], "ok", daemon.describe())
        self.redis.delete("btu_scheduler:task_execution_times", "btu_scheduler:planned")
        self.assertEqual(btu_rpc_request(self.rpc, "create_task_schedule", "TS-000001")["status"], "ok")
        poll(lambda: members_of(self.redis, "TS-000001"), WAIT_SECS, f"TS-000001 planned; {daemon.describe()}")
        self.assertFalse(os.path.exists(socket_path))
        self.assertIn(daemon.terminate(), CLEAN_SIGTERM_EXITS, daemon.describe())
        self.assertNotIn("Traceback", daemon.output())


class TCPParityTests(DaemonChannelTestCase):
    """tcp_socket_port: the unix socket's protocol, byte for byte, on 127.0.0.1."""

    @defer.inlineCallbacks
    def test_same_replies_as_the_unix_socket(self):
        """ping, create, cancel, an unknown type, bad JSON and a wrong type: identical replies."""
        port = free_tcp_port()
        daemon = self.start(tcp_socket_port=port)
        yield daemon.refreshed()
        requests = [
            {"request_type": "ping", "request_content": None},
            {"request_type": "create_task_schedule", "request_content": "TS-000001"},
            {"request_type": "cancel_task_schedule", "request_content": "TS-000001"},
            {"request_type": "no_such_thing", "request_content": None},
            {"request_type": 5},
            b"[1, 2]",
            b"{oops",
        ]
        for payload in requests:
            replies = []
            for send in (lambda p: unix_request(daemon.socket_path, p), lambda p: tcp_request(port, p)):
                if payload is requests[2]:  # each channel cancels a planned fire, not the other's leftover
                    yield threads.deferToThread(send, requests[1])
                replies.append((yield threads.deferToThread(send, payload)))
            over_unix, over_tcp = replies
            self.assertEqual(over_tcp, over_unix, payload)
        self.assertEqual((yield threads.deferToThread(tcp_request, port, requests[0])), "pong")

    def test_port_in_use_is_named(self):
        """check_tcp_port names the setting and says the port is in use."""
        port = taken_tcp_port(self)
        error = self.assertRaises(ListenerError, check_tcp_port, port)
        self.assertIn(f"tcp_socket_port {port}", str(error))
        self.assertIn("already in use", str(error))


class ConfigKeyTests(unittest.SynchronousTestCase):
    """The channel keys: defaults, values, and a clear error for a bad port."""

    BASE = 'schedule_file = "s.toml"\njob_builder = "python"\n'

    def test_defaults(self):
        """Socket and Redis RPC on, TCP off."""
        config = configuration.parse(self.BASE)[0]
        self.assertEqual((config.disable_redis_rpc, config.disable_unix_socket, config.tcp_socket_port),
                         (False, False, 0))

    def test_values(self):
        """The three keys as btu_scheduler_py spells them."""
        config = configuration.parse(self.BASE + "disable_redis_rpc = true\ndisable_unix_socket = true\n"
                                                 "tcp_socket_port = 8765\n")[0]
        self.assertEqual((config.disable_redis_rpc, config.disable_unix_socket, config.tcp_socket_port),
                         (True, True, 8765))

    def test_bad_port(self):
        """A port outside 0-65535 names the key."""
        error = self.assertRaises(configuration.ConfigError, configuration.parse,
                                  self.BASE + "tcp_socket_port = 70000\n")
        self.assertIn("tcp_socket_port: 70000 is not a TCP port", str(error))

    def test_wrong_type(self):
        """A string for a flag names the key."""
        error = self.assertRaises(configuration.ConfigError, configuration.parse,
                                  self.BASE + 'disable_redis_rpc = "yes"\n')
        self.assertIn("disable_redis_rpc", str(error))


class StatusBoundTests(CommandsTestCase):
    """status stays small however many schedules are unplannable."""

    def test_unplannable_capped_with_a_marker(self):
        """5 000 unplannable schedules: 100 listed, the total given, truncated marked."""
        for n in range(5000):
            self.stats.problem(f"TS-{n:06d}", "minute field: 61 is out of range 0-59")
        report = json.loads(self.reply("status", None))
        self.assertEqual(len(report["unplannable"]), 100)
        self.assertEqual((report["unplannable_total"], report["unplannable_truncated"]), (5000, True))
        self.assertLess(len(json.dumps(report)), 64 * 1024)

    def test_few_unplannable_not_truncated(self):
        """Below the cap, everything is listed and not marked."""
        self.stats.problem("TS-1", "cron_string is empty")
        report = json.loads(self.reply("status", None))
        self.assertEqual((report["unplannable"], report["unplannable_total"], report["unplannable_truncated"]),
                         ({"TS-1": "cron_string is empty"}, 1, False))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class NonReadingClientTests(unittest.TestCase):
    """Clients that send a request and never read a large reply, on the real socket and TCP."""

    CLIENTS = 200
    REPLY_BYTES = 2 << 20        # far beyond what the kernel buffers for one socket
    WRITE_TIMEOUT_SECS = 0.5
    MAX_CONNECTIONS = 50         # fewer than CLIENTS: a slot must come back for each
    RSS_SLACK_MB = 60            # 200 pending replies would hold 400 MiB

    def setUp(self):
        factory = ControlFactory({"status": lambda _content: "x" * self.REPLY_BYTES}, reactor,
                                 max_connections=self.MAX_CONNECTIONS,
                                 write_timeout=self.WRITE_TIMEOUT_SECS)
        self.factory = factory
        self.path = os.path.join(short_dir(self), "btu.sock")
        self.port = free_tcp_port()
        for listener in (ControlSocketService(reactor, self.path, factory),
                         ControlTCPService(reactor, self.port, factory)):
            listener.startService()
            self.addCleanup(listener.stopService)

    def open_silent_clients(self, count: int) -> list[socket.socket]:
        clients = []
        for n in range(count):
            if n % 2:
                client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the handshake
                client.settimeout(5)
                client.connect(("127.0.0.1", self.port))
            else:
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.settimeout(5)
                client.connect(self.path)
            client.sendall(b'{"request_type": "status"}')
            clients.append(client)
        return clients

    @defer.inlineCallbacks
    def test_unread_replies_are_dropped_and_memory_returns(self):
        """200 clients that never read a 2 MiB reply (in batches of 50, the connection limit):
        each got the start of its reply and then its connection closed by the write deadline, the
        process's memory comes back, and a ping is answered afterwards."""
        before = _rss_mb()
        clients = []
        self.addCleanup(lambda: [c.close() for c in clients])
        for _batch in range(self.CLIENTS // self.MAX_CONNECTIONS):
            batch = yield threads.deferToThread(self.open_silent_clients, self.MAX_CONNECTIONS)
            clients += batch
            yield wait_for(lambda: self.factory.open_connections == 0, WAIT_SECS,
                           "the write deadline to close every unread connection")
        received = yield threads.deferToThread(lambda: [_drain(c) for c in clients])
        self.assertEqual([n for n in received if n == 0], [], "clients that got no reply at all")
        reply = yield threads.deferToThread(control_request, self.path,
                                            {"request_type": "ping", "request_content": None})
        self.assertEqual(reply, "pong")
        after = _rss_mb()
        self.assertLess(after - before, self.RSS_SLACK_MB, f"RSS {before:.0f} MB before, {after:.0f} MB after")


def _drain(client: socket.socket) -> int:
    """Bytes a silent client can still read once the daemon has dropped it (then EOF or reset)."""
    total = 0
    try:
        while chunk := client.recv(1 << 20):
            total += len(chunk)
    except ConnectionResetError:
        pass
    return total
