# -*- test-case-name: tests.test_tls_gate -*-
"""The TLS gate: keep pyOpenSSL and cryptography out of a daemon whose configuration needs no TLS.

They are 12–14 MB of the daemon's resident memory (bench/bench_imports.py) and are loaded only
because the reactor, `twisted.internet.endpoints`, txredisapi and pymysql import them whenever
they are installed. TLS is needed for a `rediss://` Redis and for an https Frappe endpoint
(`webserver_port` 443, btu-web), and cryptography also for pymysql's RSA password exchange over
TCP. Otherwise `close` puts a `sys.meta_path` finder in front of the imports that refuses them
with an ImportError saying why. Twisted's and pymysql's own TLS imports are all
`try ... except ImportError`, so they record "no TLS" by themselves; txredisapi imports
`twisted.internet.ssl` and `twisted.protocols.tls` unconditionally, so those two get placeholder
modules holding just the names it evaluates at import, which raise the same error if ever used.

`tap.Options.postOptions` calls `close` once the configuration is known, before the reactor is
installed (twistd runs it before importing any daemon module). A process that has loaded TLS
already (`twistd --reactor`, btu.tac, trial) keeps it: the gate never removes a loaded module.
"""

from __future__ import annotations

import importlib.abc
import sys
import types

HTTPS_PORT = 443  # the Rust daemon's rule, which btu-web follows: webserver_port 443 means https

REASON = ("TLS is not loaded in this daemon: its configuration has no rediss:// redis_url and no "
          "https webserver (webserver_port {port}); see btu_twisted/tls_gate.py")


def needs_tls(config) -> bool:
    """Whether `config` makes any TLS connection: a rediss:// Redis or an https Frappe endpoint."""
    return config.effective_redis_url.startswith("rediss://") or config.webserver_port == HTTPS_PORT


def needs_cryptography(config) -> bool:
    """Whether cryptography is needed: TLS, or MariaDB over TCP (pymysql's RSA password exchange
    for sha256_password / caching_sha2_password), which a Unix socket never needs."""
    return needs_tls(config) or (config.uses_sql and not config.mysql_unix_socket)


class _Refuse(importlib.abc.MetaPathFinder):
    """Refuses to import the packages named in `refused` (and their submodules)."""

    def __init__(self, refused: tuple[str, ...]):
        self.refused = refused

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.refused:
            raise ImportError(f"{name}: {REASON.format(port=HTTPS_PORT)}", name=name)
        return None


class _Unavailable:
    """Stands for a TLS class in a placeholder module: using it says why TLS is missing."""

    def __init__(self, *args, **kwargs):
        raise ImportError(REASON.format(port=HTTPS_PORT))


# Placeholder modules and the names txredisapi evaluates when it is imported.
_PLACEHOLDERS = {"twisted.internet.ssl": ("ClientContextFactory",),
                 "twisted.protocols.tls": ("TLSMemoryBIOFactory",)}


def close(config) -> tuple[str, ...]:
    """Keep TLS out of this process unless `config` needs it; returns the packages refused
    (none when TLS is needed, was loaded already, or the gate is closed already)."""
    if needs_tls(config) or "OpenSSL" in sys.modules or closed():
        return ()
    refused = ("OpenSSL",)
    if not needs_cryptography(config) and "cryptography" not in sys.modules:
        refused += ("cryptography",)
    sys.meta_path.insert(0, _Refuse(refused))
    # These try-import TLS once and keep what they found: import them now, while the refusal is
    # the only answer (the reactor's base, the endpoints' TLS wrapper), then the placeholders.
    import twisted.internet.endpoints  # noqa: F401
    import twisted.internet.posixbase  # noqa: F401
    for name, attributes in _PLACEHOLDERS.items():
        if name not in sys.modules:
            placeholder = sys.modules[name] = types.ModuleType(name, REASON.format(port=HTTPS_PORT))
            for attribute in attributes:
                setattr(placeholder, attribute, _Unavailable)
    return refused


def closed() -> bool:
    """Whether the gate refuses TLS in this process."""
    return any(isinstance(finder, _Refuse) for finder in sys.meta_path)
