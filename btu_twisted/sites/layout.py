# -*- test-case-name: tests.test_layout -*-
"""Where one site's state lives in Redis, and the ids of its jobs.

A daemon serving one site keeps the Rust daemon's layout byte for byte (`btu_scheduler:…`, job ids
`btu-<id>-<unix>`). A daemon serving several sites of a bench, whose schedule IDs repeat
(`TS-000001` on each), puts every key of site S under `btu_scheduler:site:S:` and the site in each
job id, so no site can plan, fire, cancel or count another's schedules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "btu_scheduler:"
JOB_ID_PREFIX = "btu"
_ID_SAFE = re.compile(r"[A-Za-z0-9-]")
_SITE_SAFE = re.compile(r"[A-Za-z0-9]")


def _escape(text: str, safe: re.Pattern) -> str:
    """`text` with every character outside `safe` as `_XX` per UTF-8 byte ('_' is the escape)."""
    return "".join(c if safe.match(c) else "".join(f"_{b:02X}" for b in c.encode("utf-8"))
                   for c in text)


@dataclass(frozen=True)
class KeyLayout:
    """The daemon's Redis keys and job ids for one site (`site` None: the single-site layout)."""

    site: str | None = None

    @property
    def prefix(self) -> str:
        return PREFIX if self.site is None else f"{PREFIX}site:{self.site}:"

    @property
    def schedule_key(self) -> str:
        """The sorted set of next fires, members "<id>|<unix>" (the Rust daemon's key when single)."""
        return self.prefix + "task_execution_times"

    @property
    def planned_key(self) -> str:
        return self.prefix + "planned"

    @property
    def plan_keys(self) -> list[str]:
        """The keys every plan script takes, in order: the schedule set and the planned map."""
        return [self.schedule_key, self.planned_key]

    @property
    def last_fire_prefix(self) -> str:
        return self.prefix + "last_fire:"

    @property
    def refreshed_key(self) -> str:
        return self.prefix + "refreshed"

    @property
    def history_prefix(self) -> str:
        return self.prefix + "history:"

    @property
    def owner_key(self) -> str:
        return self.prefix + "owner"

    def job_id(self, schedule_id: str, when: int) -> str:
        """`btu-<id>-<unix>`, or `btu-<site>-<id>-<unix>` per site: only `[A-Za-z0-9_-]`, which every
        RQ version accepts, and injective (the site is escaped down to `[A-Za-z0-9]`, so its end is
        the first '-')."""
        escaped = _escape(schedule_id, _ID_SAFE)
        if self.site is None:
            return f"{JOB_ID_PREFIX}-{escaped}-{when}"
        return f"{JOB_ID_PREFIX}-{_escape(self.site, _SITE_SAFE)}-{escaped}-{when}"


SINGLE_SITE = KeyLayout()
