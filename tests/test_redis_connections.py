"""Redis connections (issue 12, issue 10 items 3 and 10): settings, ACL users, TLS, a read-only
replica, and a Redis restored from an older snapshot while the daemon runs."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter

from redis.backoff import NoBackoff
from redis.retry import Retry
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from btu_twisted import config as configuration
from btu_twisted.redis_connections import (AskingConnection, FollowingFactory, MasterTracker, RedisSettingsError,
                                           TLSFiles, abort_all_but, parse_sentinel, settings_for_url,
                                           settings_from)
from tests.support import frappe_schema as fs
from tests.support.daemon import TwistdProcess, short_dir, wait_for, write_config, daemon_config
from tests.support.redis_topology import TCPRedis, acl_rule, free_port, make_certificates
from tests.support.servers import RedisServer
from tests.test_integration import PLACEHOLDER_CRON, DaemonTestCase

SECRET = "s3cret-Pa55"


def config_of(**keys):
    base = {"schedule_file": "/dev/null", "job_builder": "python"}
    base.update(keys)
    text = "\n".join(f"{key} = {json.dumps(value)}" for key, value in base.items())
    return configuration.parse(text)[0]


class SettingsTests(unittest.TestCase):
    """redis_url and the connection keys, parsed once into RedisSettings."""

    def test_url_with_acl_user_password_and_db(self):
        """redis://user:pass@host:port/db gives the user, the password and the db."""
        settings = settings_for_url(f"redis://btu:{SECRET}@10.0.0.5:11000/3")
        self.assertEqual((settings.host, settings.port, settings.db, settings.username,
                          settings.password, settings.tls), ("10.0.0.5", 11000, 3, "btu", SECRET, None))

    def test_unix_url_with_query_credentials(self):
        """unix:///path?db=N&username=U&password=P is a unix socket with those credentials."""
        settings = settings_for_url(f"unix:///run/r.sock?db=2&username=btu&password={SECRET}")
        self.assertEqual((settings.path, settings.db, settings.username, settings.password),
                         ("/run/r.sock", 2, "btu", SECRET))

    def test_description_never_holds_the_password(self):
        """What logs and status show of the settings names the server, not the secret."""
        settings = settings_for_url(f"rediss://btu:{SECRET}@10.0.0.5:6380/0")
        self.assertEqual(settings.description, "rediss 10.0.0.5:6380")
        self.assertNotIn(SECRET, repr(settings))

    def test_tls_and_sentinel_keys_of_a_config(self):
        """rediss:// takes the TLS keys; redis_sentinels and the master credentials go with it."""
        tls = settings_from(config_of(redis_url="rediss://h:6380/0", redis_tls_ca_file="/dev/null",
                                      redis_tls_verify_hostname=False))
        self.assertEqual(tls.tls, TLSFiles(ca_file="/dev/null", verify_hostname=False))
        sentinel = settings_from(config_of(redis_sentinels=["10.0.0.1:26379", "10.0.0.2:26379"],
                                           redis_sentinel_service="queue",
                                           redis_master_username="btu", redis_master_password=SECRET))
        self.assertEqual((sentinel.sentinels, sentinel.sentinel_service, sentinel.username,
                          sentinel.password),
                         ((("10.0.0.1", 26379), ("10.0.0.2", 26379)), "queue", "btu", SECRET))
        self.assertEqual(sentinel.description, "Sentinel service 'queue' via 10.0.0.1:26379,10.0.0.2:26379")

    def test_bad_settings_are_clear_errors_naming_the_key(self):
        """A bad Sentinel address, TLS files without rediss:// or an unreadable CA name their key."""
        with self.assertRaisesRegex(RedisSettingsError, "redis_sentinels: 'nope' is not"):
            parse_sentinel("nope")
        cases = [
            (dict(redis_sentinels=["h:x"]), "redis_sentinels: 'h:x' is not \"host:port\""),
            (dict(redis_sentinels="h:1"), "redis_sentinels: expected a list"),
            (dict(redis_tls_ca_file="/dev/null"), "TLS files need a rediss:// redis_url"),
            (dict(redis_url="rediss://h:1/0", redis_tls_ca_file="/nonexistent/ca.pem"),
             "redis_tls_ca_file: /nonexistent/ca.pem does not exist or cannot be read"),
            (dict(redis_url="redis://h:port/0"), "redis_url: .*the port and db must be numbers"),
            (dict(redis_min_replicas=-1), "redis_min_replicas: must not be negative"),
            (dict(redis_sentinels=["h:1"], redis_url="rediss://h:1/0"), "Sentinel is supported with redis://"),
        ]
        for keys, message in cases:
            with self.assertRaisesRegex(configuration.ConfigError, message):
                config_of(**keys)


class MasterTrackerTests(unittest.TestCase):
    """What `status` shows as redis_master, and the wake-up when the master moves."""

    def test_counts_moves_not_rediscoveries_and_calls_on_moved(self):
        """The first master is not a failover; each change is one, and calls on_moved once."""
        moves = []
        tracker = MasterTracker(on_moved=lambda: moves.append(True))
        tracker.seen(("10.0.0.1", 6379), 100.0)
        tracker.seen(("10.0.0.1", 6379), 101.0)
        tracker.seen(("10.0.0.2", 6379), 102.0)
        self.assertEqual(tracker.as_dict(), {"address": "10.0.0.2:6379", "failovers_seen": 1,
                                             "changed_at": 102.0})
        self.assertEqual(moves, [True])

    def test_a_move_tells_every_pool(self):
        """Each follower (one per pool) hears the new address once per move, before on_moved."""
        heard = []
        tracker = MasterTracker(on_moved=lambda: heard.append("woken"))
        tracker.followers += [lambda a: heard.append(("pool 1", a)), lambda a: heard.append(("pool 2", a))]
        tracker.seen(("10.0.0.1", 6379), 100.0)
        tracker.seen(("10.0.0.2", 6379), 101.0)
        tracker.seen(("10.0.0.2", 6379), 102.0)
        self.assertEqual(heard, [("pool 1", ("10.0.0.2", 6379)), ("pool 2", ("10.0.0.2", 6379)), "woken"])

    def test_connections_to_the_old_master_are_aborted(self):
        """Connections made by a Sentinel factory, ready or in their handshake, to any other
        address than the new master are aborted; those to the new master are kept."""
        factory = FollowingFactory(sentinel_manager=None, service_name="s", is_master=True, uuid=None,
                                    dbid=0, poolsize=2)
        transports = {}
        for host in ("10.0.0.1", "10.0.0.2"):
            protocol = factory.buildProtocol(IPv4Address("TCP", host, 6379))
            transports[host] = StringTransportWithDisconnection(peerAddress=IPv4Address("TCP", host, 6379))
            transports[host].protocol = protocol
            protocol.transport = transports[host]
        abort_all_but(factory.connections, ("10.0.0.2", 6379))
        self.assertEqual({host: t.connected for host, t in transports.items()},
                         {"10.0.0.1": False, "10.0.0.2": True})


class AskingConnectionTests(unittest.TestCase):
    """The RQ writes' connection reconnects to the master Sentinel names now, never to the last one."""

    def test_a_command_on_a_closed_connection_asks_for_the_master(self):
        """A closed connection whose last host is gone (an old master) sends its next command to
        the current master."""
        current = TCPRedis()
        current.start()
        self.addCleanup(current.cleanup)

        class Sentinels:  # what SentinelConnectionPoolProxy offers the connection
            is_master, check_connection, service_name = True, False, "btu-test"

            def get_master_address(self):
                return ("127.0.0.1", current.port)

        connection = AskingConnection(connection_pool=Sentinels(), socket_timeout=2,
                                      retry=Retry(NoBackoff(), 0))
        self.addCleanup(connection.disconnect)
        connection.host, connection.port = "127.0.0.1", free_port()  # the old master, gone
        connection.send_command("PING")
        self.assertEqual((connection.read_response(), connection.port), (b"PONG", current.port))


class LogCapture:
    """The daemon's log events of one test, by their format string."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def matching(self, text: str) -> list[dict]:
        return [e for e in self.events if text in (e.get("log_format") or "")]


class PrivateRedisTestCase(DaemonTestCase):
    """The shared MariaDB, and a Redis of the test's own in place of the shared one."""

    def use_redis(self, server: RedisServer) -> None:
        server.start()
        self.addCleanup(server.cleanup)
        self.redis_server = server
        self.redis = server.client()
        self.addCleanup(self.redis.close)

    def start(self, **keys):
        keys.setdefault("redis_url", self.redis_server.url)
        return super().start(**keys)

    @defer.inlineCallbacks
    def run_one_fire(self, daemon, schedule_id="TS-000300"):
        """Plan a fire due in seconds, wait for its job, run it on a real worker; the marker's kwargs."""
        due = yield self.due_soon(daemon, schedule_id)
        yield self.wait_job("default", f"btu-{schedule_id}-{due}")
        yield self.run_worker("default")
        return due


class ACLUserTests(PrivateRedisTestCase):
    """redis://user:pass@ works on every connection, for a user limited by the README's rule."""

    @defer.inlineCallbacks
    def test_integration_flow_as_a_user_limited_by_the_minimal_rule(self):
        """Plan, dispatch and a real rq worker running the job, as user `btu` with exactly the ACL rule."""
        self.use_redis(TCPRedis())
        self.redis.execute_command("ACL", "SETUSER", "btu", *acl_rule(SECRET).split())
        marker = self.add_marker_task(a=1)
        self.add_schedule("TS-000300", PLACEHOLDER_CRON)
        daemon = self.start(redis_url=f"redis://btu:{SECRET}@127.0.0.1:{self.redis_server.port}/0")
        status = yield daemon.refreshed()
        self.assertIs(status["redis"]["up"], True)

        yield self.run_one_fire(daemon)

        with open(marker, encoding="utf-8") as f:
            self.assertEqual(json.load(f), {"a": 1})
        denied = self.redis.execute_command("ACL", "LOG")
        self.assertEqual(denied, [], "the daemon needed more than the minimal rule")

    def test_wrong_password_is_a_clear_start_up_error(self):
        """A password Redis refuses stops twistd at once: exit 1, one line naming Redis and the cause."""
        self.use_redis(TCPRedis())
        self.redis.execute_command("ACL", "SETUSER", "btu", *acl_rule(SECRET).split())
        process = self.twistd(redis_url=f"redis://btu:wrong@127.0.0.1:{self.redis_server.port}/0")

        self.assertEqual(process.wait(30), 1, process.describe())
        lines = process.output().strip().splitlines()
        self.assertEqual(len(lines), 1, process.describe())
        self.assertRegex(lines[0], r"^btu: Redis redis 127\.0\.0\.1:\d+: authentication failed")
        self.assertNotIn("wrong", lines[0])

    def twistd(self, **keys) -> TwistdProcess:
        directory = short_dir(self)
        path = write_config(os.path.join(directory, "btu.toml"),
                            daemon_config(os.path.join(directory, "btu.sock"), self.database, **keys))
        return TwistdProcess(self, ["-n", "--pidfile=", "--logfile=-", "btu", "--config", path],
                             cwd=directory)


class ReadOnlyReplicaTests(PrivateRedisTestCase):
    """A Redis that refuses writes is not 'up'."""

    @defer.inlineCallbacks
    def test_read_only_replica_is_redis_down_with_the_error(self):
        """Given a read-only replica as its Redis, status says redis.up false and why."""
        master = TCPRedis()
        master.start()
        self.addCleanup(master.cleanup)
        self.use_redis(TCPRedis(extra_args=["--replicaof", "127.0.0.1", str(master.port)]))
        fs.insert_task(self.sql, "BTU-00001", "tests.support.jobfuncs.noop")
        self.add_schedule("TS-000400", PLACEHOLDER_CRON)
        daemon = self.start(redis_url=self.redis_server.tcp_url)

        status = yield wait_for(self.redis_down(daemon), 20, "status to say Redis is down")

        self.assertIn("is a read-only replica", status["redis"]["error"])
        self.assertIn(f"127.0.0.1:{self.redis_server.port}", status["redis"]["error"])

    @staticmethod
    def redis_down(daemon):
        @defer.inlineCallbacks
        def check():
            status = yield daemon.status()
            return status if status["redis"]["up"] is False else None
        return check


class TLSTests(PrivateRedisTestCase):
    """rediss:// with a CA and client certificates generated here, hostname verified."""

    def setUp(self):
        super().setUp()
        self.certs = make_certificates(short_dir(self))

    def tls_keys(self, ca: str) -> dict:
        return dict(redis_url=self.redis_server.tcp_url, redis_tls_ca_file=self.certs[ca],
                    redis_tls_cert_file=self.certs["client_cert"],
                    redis_tls_key_file=self.certs["client_key"])

    def start_tls_redis(self, clients: str = "optional") -> None:
        self.use_redis(TCPRedis(tls=self.certs, extra_args=["--tls-auth-clients", clients]))

    @defer.inlineCallbacks
    def test_integration_flow_over_tls_with_a_client_certificate(self):
        """Planning (txredisapi) and the RQ write (redis-py) both speak TLS; Redis demands a client cert."""
        self.start_tls_redis(clients="yes")
        marker = self.add_marker_task(a=2)
        self.add_schedule("TS-000500", PLACEHOLDER_CRON)
        daemon = self.start(**self.tls_keys("ca"))
        status = yield daemon.refreshed()
        self.assertIs(status["redis"]["up"], True)

        yield self.run_one_fire(daemon, "TS-000500")

        with open(marker, encoding="utf-8") as f:
            self.assertEqual(json.load(f), {"a": 2})

    def test_wrong_ca_is_a_clear_start_up_error(self):
        """A CA that did not sign the server's certificate stops twistd: exit 1, one line."""
        self.start_tls_redis()
        process = ACLUserTests.twistd(self, **self.tls_keys("other_ca"))

        self.assertEqual(process.wait(30), 1, process.describe())
        lines = process.output().strip().splitlines()
        self.assertEqual(len(lines), 1, process.describe())
        self.assertRegex(lines[0], r"^btu: Redis rediss 127\.0\.0\.1:\d+: TLS handshake failed .*"
                                   r"certificate verify failed.*check redis_tls_ca_file")


class RestoredSnapshotTests(PrivateRedisTestCase):
    """Issue 10 item 3: Redis restored from an older snapshot while the daemon runs."""

    timeout = 60
    CRON = "*/3 * * * * * *"  # every 3 s: the restart lands before the next fire
    SCHEDULES = ("TS-000601", "TS-000602", "TS-000603")

    @defer.inlineCallbacks
    def test_no_fire_enqueued_twice_and_the_regression_logged_once(self):
        """Restored to a snapshot one fire old, the daemon re-asserts its watermarks: nothing twice."""
        self.use_redis(RedisServer(short_dir(self)))
        log = LogCapture(self)
        fs.insert_task(self.sql, "BTU-00001", "tests.support.jobfuncs.noop")
        for schedule_id in self.SCHEDULES:
            self.add_schedule(schedule_id, self.CRON)
        self.start(misfire_grace_secs=60)

        first = yield self.next_fires(log, 0)
        self.redis.save()  # the snapshot: plans the fire after `first`, watermarks at `first`
        snapshot = os.path.join(self.redis_server.base_dir, "older.rdb")
        shutil.copy(os.path.join(self.redis_server.base_dir, "dump.rdb"), snapshot)
        yield self.next_fires(log, first)
        self.redis_server.kill()
        shutil.copy(snapshot, os.path.join(self.redis_server.base_dir, "dump.rdb"))
        self.redis_server.start()
        restored_at = time.time()
        yield wait_for(lambda: self.latest(log) > restored_at + 3, 15, "a fire after the restore")

        counts = Counter((e["schedule_id"], e["due"]) for e in log.matching("enqueued {schedule_id}"))
        self.assertEqual([key for key, n in counts.items() if n > 1], [])
        self.assertEqual(len(log.matching("Redis has lost writes")), 1)

    def next_fires(self, log, after: float):
        """Wait for every schedule's first fire after `after` (unix seconds); fires with its time."""
        def check():
            times = [self.last_fire(log, sid) for sid in self.SCHEDULES]
            return min(times) if all(t > after for t in times) else None
        return wait_for(check, 15, f"a fire of every schedule after {after}")

    @staticmethod
    def last_fire(log, schedule_id) -> float:
        fires = [e["job_id"] for e in log.matching("enqueued {schedule_id}") if e["schedule_id"] == schedule_id]
        return max((int(job_id.rsplit("-", 1)[1]) for job_id in fires), default=0)

    def latest(self, log) -> float:
        return min(self.last_fire(log, sid) for sid in self.SCHEDULES)
