# -*- test-case-name: tests.test_redis_connections -*-
"""Every Redis connection of the daemon, built from one parsed set of settings.

`redis_url` (redis://, rediss://, unix://, user, password, db), the TLS files and the Sentinel
settings are read once into `RedisSettings`; `txredis_connection` gives the daemon's own
non-blocking txredisapi connections and `redis_py_client` the blocking client of the RQ writes,
so both speak to the same server with the same credentials and follow the same Sentinel master.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable

import redis
import redis.sentinel
import txredisapi
from redis.backoff import NoBackoff
from redis.retry import Retry
from twisted.internet import defer, ssl
from twisted.logger import Logger

from btu_twisted.logs import OBSERVER
from btu_twisted.redis_settings import (DEFAULT_PORT, RedisSettings, RedisSettingsError,  # noqa: F401
                                        TLSFiles, parse_sentinel, parse_url, settings_for_url, settings_from)

REPLY_TIMEOUT_SECS = 5  # a call to a stopped or paused Redis fails after this, instead of hanging
# How long txredisapi waits for a Sentinel to name a healthy master (its default: 10 s); during a
# failover none does, and the next attempt asks again, so keep it short (Sentinels answer in ms).
SENTINEL_DISCOVERY_TIMEOUT_SECS = 1.0
# Longest pause between reconnections to a Sentinel-managed master (txredisapi: 10 s), so the
# daemon reaches a promoted replica within about this of the promotion. txredisapi also uses it as
# the connect timeout of those connections: ample on the LAN a Sentinel group runs on.
SENTINEL_RECONNECT_MAX_SECS = 1.0

log = Logger(observer=OBSERVER)


class WritesRefused(ConnectionError):
    """The Redis we reached answers but refuses writes (a read-only replica)."""


# --- TLS ---------------------------------------------------------------------------------------

def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise RedisSettingsError(f"{what}: cannot read {path}: {e.strerror}") from None


def twisted_tls(settings: RedisSettings):
    """The TLS connection creator txredisapi wraps its connections in (None without TLS)."""
    if settings.tls is None:
        return None
    tls = settings.tls
    try:
        trust = (ssl.Certificate.loadPEM(_read(tls.ca_file, "redis_tls_ca_file"))
                 if tls.ca_file else ssl.platformTrust())
        client = None
        if tls.cert_file:
            client = ssl.PrivateCertificate.loadPEM(
                _read(tls.cert_file, "redis_tls_cert_file")
                + b"\n" + _read(tls.key_file or tls.cert_file, "redis_tls_key_file"))
    except RedisSettingsError:
        raise
    except Exception as e:  # pyOpenSSL's errors are lists of tuples: say which setting it was
        raise RedisSettingsError(f"redis_tls_ca_file/redis_tls_cert_file/redis_tls_key_file: not "
                                 f"PEM certificates and key ({e})") from None
    if tls.verify_hostname:
        return ssl.optionsForClientTLS(settings.host, trustRoot=trust, clientCertificate=client)
    # The chain is still verified against the CA; only the name check is off.
    extra = {"privateKey": client.privateKey.original, "certificate": client.original} if client else {}
    return ssl.CertificateOptions(trustRoot=trust, **extra)


def _redis_py_tls(settings: RedisSettings) -> dict:
    if settings.tls is None:
        return {}
    tls = settings.tls
    return dict(ssl=True, ssl_ca_certs=tls.ca_file, ssl_certfile=tls.cert_file,
                ssl_keyfile=tls.key_file, ssl_check_hostname=tls.verify_hostname,
                ssl_cert_reqs="required")


# --- the daemon's own connections (txredisapi) --------------------------------------------------

@dataclass
class MasterTracker:
    """The Sentinel master the daemon's connections last discovered, and how often it changed."""

    address: tuple[str, int] | None = None
    failovers: int = 0
    changed_at: float | None = None
    on_moved: Callable[[], object] = lambda: None  # e.g. the dispatcher's wake: retry at once
    # Each pool's "close your connections to anything but this address", called on every move:
    # the first pool to discover the new master tells them all, so an idle connection to a
    # frozen old master is not used (and waited on) later.
    followers: list[Callable[[tuple[str, int]], object]] = field(default_factory=list, repr=False)

    def seen(self, address: tuple[str, int], now: float) -> None:
        if address == self.address:
            return
        if self.address is not None:
            self.failovers += 1
            log.warn("Redis master moved from {old} to {new} (failover {count} seen)",
                     old=_host_port(self.address), new=_host_port(address), count=self.failovers)
            self.address, self.changed_at = address, now
            for drop_others in self.followers:
                drop_others(address)
            self.on_moved()
        else:
            log.info("Redis master is {new}", new=_host_port(address))
            self.address, self.changed_at = address, now

    def as_dict(self) -> dict:
        return {"address": _host_port(self.address) if self.address else None,
                "failovers_seen": self.failovers, "changed_at": self.changed_at}


def _host_port(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


class _TrackedSentinel(txredisapi.Sentinel):
    """txredisapi's Sentinel client, telling a MasterTracker each master it discovers, and closing
    its connections to an old master when any pool sharing the tracker finds a new one."""

    discovery_timeout = SENTINEL_DISCOVERY_TIMEOUT_SECS

    def __init__(self, addresses, tracker: MasterTracker, clock, **connection_kwargs):
        super().__init__(addresses, **connection_kwargs)
        self._tracker = tracker
        self._clock = clock
        self._factories = []
        tracker.followers.append(self._drop_others)

    def close(self):
        """Stop following moves and close the connections to the Sentinels."""
        if self._drop_others in self._tracker.followers:
            self._tracker.followers.remove(self._drop_others)
        return self.disconnect()

    def _connect_factory_and_return_handler(self, factory):
        self._factories.append(factory)
        return super()._connect_factory_and_return_handler(factory)

    def discover_master(self, service_name):
        found = super().discover_master(service_name)
        found.addCallback(self._seen)
        return found

    def _seen(self, address):
        self._tracker.seen(address, self._clock.seconds())
        return address

    def _drop_others(self, address: tuple[str, int]) -> None:
        # txredisapi itself only closes a factory's ready connections, gracefully, and only when
        # that factory reconnects: idle ones to a frozen old master would wait out a whole reply
        # timeout when next used, and so would one still in its handshake. Abort them all now.
        for factory in self._factories:
            abort_all_but(factory.connections, address)


def abort_all_but(connections, address: tuple[str, int]) -> None:
    """Abort each of `connections` (txredisapi protocols) whose peer is not `address`."""
    for connection in list(connections):
        peer = connection.transport.getPeer()
        if (getattr(peer, "host", None), getattr(peer, "port", None)) != address:
            connection.transport.abortConnection()


class FollowingFactory(txredisapi.SentinelConnectionFactory):
    """txredisapi's Sentinel connection factory, retrying at least every second and knowing every
    connection it made, ready or still in its handshake."""

    maxDelay = SENTINEL_RECONNECT_MAX_SECS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = weakref.WeakSet()

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        self.connections.add(protocol)
        return protocol


def txredis_connection(settings: RedisSettings, poolsize: int, clock=None,
                       tracker: MasterTracker | None = None):
    """A lazy, self-reconnecting txredisapi pool of `poolsize` connections to the (master) Redis.

    An RPC listener that blocks on BLPOP takes a pool of its own from here, so its wait never
    holds up the daemon's other commands.
    """
    common = dict(poolsize=poolsize, charset="utf-8", username=settings.username,
                  password=settings.password, replyTimeout=REPLY_TIMEOUT_SECS)
    if settings.sentinels:
        if clock is None:
            from twisted.internet import reactor as clock
        sentinel = _TrackedSentinel(
            settings.sentinels, tracker or MasterTracker(), clock, username=settings.sentinel_username,
            password=settings.sentinel_password, connectTimeout=REPLY_TIMEOUT_SECS,
            replyTimeout=REPLY_TIMEOUT_SECS)
        handler = sentinel.master_for(settings.sentinel_service, factory_class=FollowingFactory,
                                      dbid=settings.db, isLazy=True, **common)
        close_pool = handler.disconnect

        def disconnect():
            # The Sentinel client is this pool's own: closing the pool closes it too, so a pool
            # made again after an outage (the RPC listener's) does not leave one behind.
            return defer.gatherResults([close_pool(), defer.maybeDeferred(sentinel.close)],
                                       consumeErrors=True)

        handler.disconnect = disconnect
        return handler
    common.update(reconnect=True, connectTimeout=REPLY_TIMEOUT_SECS)
    if settings.path:
        return txredisapi.makeUnixConnection(settings.path, settings.db, isLazy=True,
                                             convertNumbers=True, **common)
    return txredisapi.lazyConnectionPool(settings.host, settings.port, dbid=settings.db,
                                         ssl_context_factory=twisted_tls(settings) or False, **common)


# --- the RQ writes (redis-py) -----------------------------------------------------------------

class AskingConnection(redis.sentinel.SentinelManagedConnection):
    """redis-py's Sentinel-managed connection, asking the Sentinels again whenever a command
    reconnects it.

    redis-py (6+) reconnects a closed connection inside `send_packed_command` to the host and port
    it last used, without asking Sentinel: after a failover that is the old master, and a frozen
    one holds the command for a whole socket timeout (the pipeline's UNWATCH after a failed
    transaction did exactly that, stalling dispatch for 10-15 s).
    """

    def send_packed_command(self, command, check_health=True):
        if not self._sock:
            self.connect()  # SentinelManagedConnection.connect: the master Sentinel names now
        super().send_packed_command(command, check_health)


def redis_py_client(settings: RedisSettings, socket_timeout: float = REPLY_TIMEOUT_SECS) -> redis.Redis:
    """A blocking redis-py client with socket timeouts and no client-side retries.

    No retries: a failed transaction is retried by the dispatcher, which re-reads what is due, so a
    retried EXEC can never enqueue a fire twice. Through Sentinel, each new connection asks for the
    current master, so the client follows a failover without a restart.
    """
    common = dict(db=settings.db, username=settings.username, password=settings.password,
                  socket_timeout=socket_timeout, retry=Retry(NoBackoff(), 0))
    if settings.sentinels:
        sentinel = redis.sentinel.Sentinel(
            list(settings.sentinels), socket_timeout=socket_timeout,
            sentinel_kwargs=dict(username=settings.sentinel_username,
                                 password=settings.sentinel_password,
                                 socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout))
        return sentinel.master_for(settings.sentinel_service, socket_connect_timeout=socket_timeout,
                                   connection_class=AskingConnection, **common)
    if settings.path:
        # redis-py < 5 refuses socket_connect_timeout for unix sockets, where socket_timeout
        # bounds the connect.
        return redis.Redis(unix_socket_path=settings.path, **common)
    return redis.Redis(host=settings.host, port=settings.port, socket_connect_timeout=socket_timeout,
                       **common, **_redis_py_tls(settings))


def check_reachable(settings: RedisSettings, timeout: float = 2.0) -> str | None:
    """At start-up: why Redis can never be used as configured (TLS or authentication refused),
    or None; a Redis that is merely down is not a reason to stop, the daemon waits for it."""
    client = redis_py_client(settings, socket_timeout=timeout)
    try:
        client.ping()
    except redis.AuthenticationError as e:
        return f"Redis {settings.description}: authentication failed ({e})"
    except redis.ConnectionError as e:
        text = str(e)
        if "SSL" in text or "certificate" in text:
            return (f"Redis {settings.description}: TLS handshake failed ({text}); check "
                    "redis_tls_ca_file, redis_tls_cert_file, redis_tls_key_file")
        if "WRONGPASS" in text or "NOAUTH" in text or "AUTH" in text:
            return f"Redis {settings.description}: authentication failed ({text})"
    except redis.RedisError:
        pass
    finally:
        client.close()
    return None
