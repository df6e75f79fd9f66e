# -*- test-case-name: tests.test_redis_connections -*-
"""The Redis settings: `redis_url`, the TLS files and the Sentinel keys parsed into one `RedisSettings`.

Apart from redis_connections.py, which builds the connections from them, so that the configuration
can be checked without importing txredisapi (which installs the reactor and loads TLS: the TLS gate,
tls_gate.py, is decided from the checked configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlparse

DEFAULT_PORT = 6379


class RedisSettingsError(ValueError):
    """The Redis settings cannot describe a connection (the message names the key)."""


@dataclass(frozen=True)
class TLSFiles:
    """Where the CA, client certificate and key are, and whether the server's name is checked."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_hostname: bool = True


@dataclass(frozen=True)
class RedisSettings:
    """One Redis endpoint (or Sentinel service) and how to authenticate to it."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    path: str | None = None          # a unix socket instead of host/port
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TLSFiles | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_service: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        """Where the daemon's Redis is, without secrets (for logs, errors and `status`)."""
        if self.sentinels:
            return self.address
        where = f"unix://{self.path}" if self.path else f"{self.host}:{self.port}"
        return f"{'rediss' if self.tls else 'redis'} {where}"

    @property
    def address(self) -> str:
        """The server alone, as an error names it: host:port, a socket path, or the Sentinels."""
        if self.sentinels:
            return (f"Sentinel service {self.sentinel_service!r} via "
                    + ",".join(f"{host}:{port}" for host, port in self.sentinels))
        return self.path or f"{self.host}:{self.port}"


def parse_url(url: str) -> dict:
    """Keyword arguments of RedisSettings held by a redis://, rediss:// or unix:// URL."""
    parsed = urlparse(url)
    query = parse_qs(parsed.query)
    password = unquote(parsed.password) if parsed.password else query.get("password", [None])[0]
    username = unquote(parsed.username) if parsed.username else query.get("username", [None])[0]
    values = dict(username=username or None, password=password)
    try:
        if parsed.scheme == "unix":
            if not parsed.path:
                raise RedisSettingsError("redis_url: unix:// needs a socket path, e.g. unix:///run/redis.sock")
            values.update(path=parsed.path, db=int(query.get("db", ["0"])[0]))
        elif parsed.scheme in ("redis", "rediss"):
            values.update(host=parsed.hostname or "localhost", port=parsed.port or DEFAULT_PORT,
                          db=int(parsed.path.lstrip("/") or query.get("db", ["0"])[0]))
        else:
            raise RedisSettingsError("redis_url: must start with redis://, rediss:// or unix://")
    except ValueError as e:
        if isinstance(e, RedisSettingsError):
            raise
        raise RedisSettingsError(f"redis_url: {e} (the port and db must be numbers)") from None
    return values


def settings_for_url(url: str) -> RedisSettings:
    """Settings of a bare URL (tests, tools): no Sentinel, TLS with the system's CA."""
    values = parse_url(url)
    if url.startswith("rediss://"):
        values["tls"] = TLSFiles()
    return RedisSettings(**values)


def parse_sentinel(address: str) -> tuple[str, int]:
    """("host", port) of a "host:port" entry of redis_sentinels."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisSettingsError(f"redis_sentinels: {address!r} is not \"host:port\"")
    return host.strip("[]"), int(port)


def settings_from(config) -> RedisSettings:
    """The Redis settings of a Config: its URL, TLS files and Sentinel keys, checked together."""
    values = parse_url(config.effective_redis_url)
    if config.effective_redis_url.startswith("rediss://"):
        values["tls"] = TLSFiles(config.redis_tls_ca_file, config.redis_tls_cert_file,
                                 config.redis_tls_key_file, config.redis_tls_verify_hostname)
    if config.redis_master_username is not None:
        values["username"] = config.redis_master_username
    if config.redis_master_password is not None:
        values["password"] = config.redis_master_password
    if config.redis_sentinels:
        values.update(sentinels=tuple(parse_sentinel(a) for a in config.redis_sentinels),
                      sentinel_service=config.redis_sentinel_service,
                      sentinel_username=config.redis_sentinel_username,
                      sentinel_password=config.redis_sentinel_password)
    return RedisSettings(**values)
