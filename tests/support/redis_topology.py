"""Private Redis topologies on loopback: TCP, TLS, ACL users, replicas and Sentinels.

Each server still has its unix socket (the tests' own admin client, no TLS, the default user) and
adds a TCP port on 127.0.0.1 chosen free at run time. A `SentinelGroup` is a master, a replica and
three `redis-server --sentinel` processes watching them, with timeouts short enough for a test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.servers import REDIS_SERVER, RedisServer, ServerStartError

LOOPBACK = "127.0.0.1"
SERVICE = "btu-test"
SENTINEL_DOWN_AFTER_MS = 1000   # a silent master is subjectively down after this
SENTINEL_FAILOVER_TIMEOUT_MS = 3000
FAILOVER_TIMEOUT_SECS = 30      # generous: the machine is shared

# The minimal ACL rule of the README (issue 12): the daemon's keys, RQ's keys and the RPC keys,
# and exactly the commands the daemon and the rq library send.
ACL_COMMANDS = ("+ping +select +role +info +eval +evalsha +zrange +zrangebyscore +zcount +zcard +zscan +hscan "
                "+zadd +zrem +zscore +hget +hset +hdel +hgetall +set +get +mget +exists +expire "
                "+watch +unwatch +multi +exec +discard +sadd +rpush +lpush +ltrim +rpop +blpop +brpop "
                "+time +wait")
ACL_KEYS = "~btu_scheduler:* ~rq:* ~btu:scheduler:*"


def acl_rule(password: str) -> str:
    """The README's rule for a user `btu` with `password` (for ACL SETUSER)."""
    return f"on >{password} resetkeys {ACL_KEYS} resetchannels -@all {ACL_COMMANDS}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class TCPRedis(RedisServer):
    """A private redis-server on its unix socket plus a loopback TCP (or TLS) port."""

    def __init__(self, base_dir=None, persistent=False, extra_args=(), tls: dict | None = None):
        super().__init__(base_dir, persistent)
        self.port = free_port()
        self.extra_args = list(extra_args)
        self.tls = tls  # {"cert": ..., "key": ..., "ca": ...}: serve TLS on `port` instead

    def _command(self) -> list[str]:
        command = super()._command()
        if self.tls:
            command[command.index("--port") + 1] = "0"
            command += ["--tls-port", str(self.port), "--tls-cert-file", self.tls["cert"],
                        "--tls-key-file", self.tls["key"], "--tls-ca-cert-file", self.tls["ca"],
                        "--tls-auth-clients", "optional"]
        else:
            command[command.index("--port") + 1] = str(self.port)
            command += ["--bind", LOOPBACK]
        return command + self.extra_args

    @property
    def tcp_url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{LOOPBACK}:{self.port}/0"


class SentinelProcess(RedisServer):
    """One `redis-server --sentinel` on a loopback port, monitoring SERVICE."""

    name = "sentinel"

    def __init__(self, master_port: int, base_dir=None):
        super().__init__(base_dir)
        self.port = free_port()
        self.config_path = os.path.join(self.base_dir, "sentinel.conf")
        with open(self.config_path, "w") as f:
            f.write(f"port {self.port}\nbind {LOOPBACK}\ndir {self.base_dir}\n"
                    f"sentinel monitor {SERVICE} {LOOPBACK} {master_port} 2\n"
                    f"sentinel down-after-milliseconds {SERVICE} {SENTINEL_DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {SERVICE} {SENTINEL_FAILOVER_TIMEOUT_MS}\n"
                    f"sentinel parallel-syncs {SERVICE} 1\n")

    def _command(self) -> list[str]:
        return [REDIS_SERVER, self.config_path, "--sentinel", "--daemonize", "no",
                "--logfile", self._log_path()]

    def client(self, socket_timeout: float = 2.0, **kwargs) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, socket_timeout=socket_timeout,
                           socket_connect_timeout=socket_timeout, retry=Retry(NoBackoff(), 0),
                           **kwargs)

    def master(self) -> tuple[str, int] | None:
        found = self.client().sentinel_get_master_addr_by_name(SERVICE)
        return (found[0], int(found[1])) if found else None


class SentinelGroup:
    """A master, one replica and three Sentinels; `address` is what the daemon is given."""

    def __init__(self, add_cleanup):
        """Start every process; `add_cleanup` (a TestCase's addCleanup) is given their cleanups."""
        self.master = TCPRedis()
        self.replica = TCPRedis(extra_args=["--replicaof", LOOPBACK, str(self.master.port)])
        self.sentinels = [SentinelProcess(self.master.port) for _ in range(3)]
        for server in (self.master, self.replica, *self.sentinels):
            server.start()
            add_cleanup(server.cleanup)
        self.wait(lambda: self.replica.client().info("replication").get("master_link_status") == "up",
                  "the replica to sync")
        self.wait(lambda: all(s.client().sentinel_master(SERVICE)["num-other-sentinels"] == 2
                              for s in self.sentinels), "the Sentinels to find each other")

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"{LOOPBACK}:{s.port}" for s in self.sentinels]

    def current_master_port(self) -> int | None:
        for sentinel in self.sentinels:
            try:
                found = sentinel.master()
            except redis.RedisError:
                continue
            if found:
                return found[1]
        return None

    def wait_promoted(self) -> float:
        """Block until the Sentinels name the replica as master; returns the wall-clock time."""
        self.wait(lambda: self.current_master_port() == self.replica.port,
                  "Sentinel to promote the replica", FAILOVER_TIMEOUT_SECS)
        return time.time()

    @staticmethod
    def wait(check, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if check():
                    return
            except (redis.RedisError, OSError):
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)


def make_certificates(directory: str) -> dict:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by
    the CA, plus a second CA that signed nothing (for the wrong-CA case): {name: path}."""
    paths = {name: os.path.join(directory, f"{name}.pem") for name in (
        "ca", "ca_key", "cert", "key", "client_cert", "client_key", "other_ca", "other_ca_key")}

    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    for ca, key, name in (("ca", "ca_key", "btu test CA"), ("other_ca", "other_ca_key", "other CA")):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", paths[key], "-out", paths[ca])
    extensions = os.path.join(directory, "san.ext")
    with open(extensions, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for cert, key, name in (("cert", "key", "127.0.0.1"), ("client_cert", "client_key", "btu client")):
        request = os.path.join(directory, f"{cert}.csr")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", paths[key],
            "-out", request)
        run("x509", "-req", "-in", request, "-CA", paths["ca"], "-CAkey", paths["ca_key"],
            "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", paths[cert])
    return paths
