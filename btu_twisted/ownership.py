# -*- test-case-name: tests.test_ownership -*-
"""The ownership guard: the single-site Redis layout belongs to one site database.

BTU schedule IDs repeat across sites (`TS-000001` exists on each), so two daemons reading different
databases through one `btu_scheduler:` layout drop each other's members as deleted. The first
daemon records its database in `btu_scheduler:owner`; a daemon for another one refuses to start,
and one that finds the key taken over while running (Redis lost its data, then another daemon
claimed it) stops instead of touching the other's schedules.
"""

from __future__ import annotations

import sys

import redis
from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger, LogLevel

from btu_twisted.logs import OBSERVER
from btu_twisted.redis_connections import redis_py_client
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout

OWNER_KEY = SINGLE_SITE.owner_key
CHECK_TIMEOUT_SECS = 5.0  # the start-up check gives up on an unreachable Redis after this

# Claim the key when absent; returns its owner either way (one round trip, atomic).
CLAIM_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
"""


class OwnershipError(Exception):
    """The layout belongs to another schedule source; the message names both and the way out."""


def identity(config) -> str:
    """What owns the layout: the site's database (schedule IDs repeat across databases)."""
    return f"database:{config.mysql_database}"


def refusal(owner: str, ours: str, site: str | None, key: str = OWNER_KEY) -> str:
    """The message of a daemon that finds the layout owned by `owner`."""
    served = f" (site {site})" if site else ""
    keys = key.removesuffix("owner")
    return (f"Redis key {key} says its {keys} keys belong to {owner}, but this daemon "
            f"reads {ours}{served}. Two daemons for different sites on one layout would delete each "
            "other's schedules (their IDs repeat across sites), so this one does not start. To serve "
            "both sites, run one daemon for their bench, which keeps each site's keys apart: "
            "twistd -n btu --bench PATH (every site) or --bench PATH --site A --site B; or give the "
            "other site its own Redis (its own redis_queue, which its RQ workers use too). If "
            f"{owner} is gone for good, delete the key: redis-cli DEL {key}")


def rival_key(site: str | None, key: str) -> str | None:
    """The owner key of the other layout the same site could be served in: a bench daemon's
    `btu_scheduler:site:<site>:owner` for a single-site daemon, and the reverse."""
    if site is None:
        return None
    return KeyLayout(site).owner_key if key == OWNER_KEY else OWNER_KEY


def check_at_start(redis_settings, ours: str, site: str | None, key: str = OWNER_KEY) -> bool:
    """Claim or verify ownership, blocking (before twistd forks, no reactor is running).

    Returns False when Redis is unreachable (the guard's loop checks once it answers); raises
    OwnershipError when another database owns the layout, or when the same database is served in
    the other layout (a single-site daemon and a bench daemon would both fire its schedules).
    """
    rival = rival_key(site, key)
    client = redis_py_client(redis_settings, socket_timeout=CHECK_TIMEOUT_SECS)
    try:
        if rival is not None and _text(client.get(rival)) == ours:  # checked before claiming ours
            raise OwnershipError(both_layouts(ours, site, key, rival))
        owner = _text(client.eval(CLAIM_SCRIPT, 1, key, ours))
    except redis.RedisError:
        return False
    finally:
        client.close()
    if owner != ours:
        raise OwnershipError(refusal(owner, ours, site, key))
    return True


def both_layouts(ours: str, site: str | None, key: str, rival: str) -> str:
    """The message of a daemon whose site is served in the other layout already."""
    how = "a bench daemon (--bench)" if key == OWNER_KEY else "a single-site daemon (--site / frappe_site)"
    return (f"Redis key {rival} says {ours} (site {site}) is served by {how} on this Redis: both would "
            f"fire its schedules, so this daemon does not serve it. Run one of them; if the other is gone "
            f"for good, delete the key: redis-cli DEL {rival}")


def _text(value) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def refuse_or_claim(config, redis_settings, key: str = OWNER_KEY) -> bool:
    """The start-up check of makeService: exit 1 with one line when another database owns the
    layout (`key`: the owner key of the site's layout); returns whether Redis answered."""
    try:
        return check_at_start(redis_settings, identity(config), config.effective_frappe_site, key)
    except OwnershipError as e:
        sys.stderr.write(f"btu: {e}\n")
        raise SystemExit(1) from None


class OwnershipGuard(service.Service):
    """Re-checks ownership every `scheduler_polling_interval` (at once when the start-up check found
    Redis unreachable) and stops the daemon if another database holds the layout."""

    log = Logger(observer=OBSERVER)

    def __init__(self, clock, run_script, config, stop, checked: bool, key: str = OWNER_KEY):
        """`run_script(script, keys, args)` is the store's Deferred-returning eval; `stop()` ends the
        daemon; `checked` says whether the start-up check reached Redis; `key` is the layout's
        owner key."""
        self._clock = clock
        self._key = key
        self._run_script = run_script
        self._ours = identity(config)
        self._site = config.effective_frappe_site
        self._interval = config.scheduler_polling_interval
        self._stop = stop
        self._checked = checked
        self._loop = None

    def startService(self):
        super().startService()
        if not self._checked:
            self.log.warn("Redis unreachable at start-up: {key} is checked once it answers", key=self._key)
        self._loop = task.LoopingCall(self.check)
        self._loop.clock = self._clock
        self._loop.start(self._interval, now=not self._checked)

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def check(self):
        """One claim-or-verify; an unreachable Redis is left to the store's outage logging."""
        d = self._run_script(CLAIM_SCRIPT, [self._key], [self._ours])
        d.addCallbacks(self._verify, self._failed)
        return d

    def _failed(self, failure) -> None:
        # Outages are logged once by the store's users; keep the detail at DEBUG and try again.
        self.log.failure("ownership check of {key} failed", failure, level=LogLevel.debug, key=self._key)

    def _verify(self, owner) -> None:
        if owner == self._ours or not self.running:
            return
        self.log.critical("{problem}", problem=refusal(owner, self._ours, self._site, self._key))
        self._stop()
