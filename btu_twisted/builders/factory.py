# -*- test-case-name: tests.test_builders -*-
"""Make the job builder a configuration asks for (`job_builder`), with what each kind needs."""

from __future__ import annotations

from btu_twisted.builders import LocalBuilder
from btu_twisted.builders.auto import AutoBuilder, BuilderUnavailable, choose
from btu_twisted.builders.btu import BtuBuilder
from btu_twisted.builders.frappe import FrappeBuilder
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.config import FRAPPE_SITE_HINT
from btu_twisted.schedules import ScheduleError
from btu_twisted.sites.layout import SINGLE_SITE, KeyLayout


def make_builder(kind: str, config, clock, source, stats, reactor=None, layout: KeyLayout = SINGLE_SITE):
    """The builder for `kind` (`auto` resolves later, from the schema); records its reason for
    `status`. Raises BuilderUnavailable when the configuration lacks what that kind needs.

    `clock` tells instants (its Retry times are the dispatcher's); `reactor`, when it is not the
    clock, makes btu-web's HTTP connections; `layout` is the site's (its job ids and meta)."""

    def make(chosen: str):
        if chosen == "btu-web":
            # Imported here: Twisted's HTTP client is 1.1 MB of a daemon that no other builder needs.
            from btu_twisted.builders.btu_web import BtuWebBuilder, endpoint_url
            if not config.webserver_token:
                raise BuilderUnavailable("the btu-web builder needs webserver_token")
            return BtuWebBuilder(clock, endpoint_url(config.webserver_ip, config.webserver_port),
                                 config.webserver_token, config.webserver_host_header,
                                 config.queue_name_template, reactor=reactor, layout=layout)
        return _local(chosen, config, source, layout)

    if kind == "auto":
        return AutoBuilder(clock, source, make, bool(config.webserver_token), stats)
    stats.job_builder = {"kind": kind, "reason": f'job_builder = "{kind}" in the configuration'}
    return make(kind)


def local_builder(config, schema) -> LocalBuilder:
    """A synchronous builder of the kind the daemon uses on a site with `schema`, for the CLI and
    the dashboard (run-now jobs, queue names); raises BuilderUnavailable like make_builder."""
    kind = config.job_builder
    if kind == "auto":
        kind, _reason = choose(schema, bool(config.webserver_token))
    if kind == "btu-web":
        return _PickledByTheDaemon(config.queue_name_template)
    return _local(kind, config, source=None)


def _local(kind: str, config, source, layout: KeyLayout = SINGLE_SITE) -> LocalBuilder:
    site = config.effective_frappe_site
    if kind in ("btu", "frappe") and not site:
        raise BuilderUnavailable(f"the {kind} builder needs the Frappe site: {FRAPPE_SITE_HINT}")
    if kind == "btu":
        return BtuBuilder(site, source, config.frappe_user, config.queue_name_template, layout)
    if kind == "frappe":
        return FrappeBuilder(site, config.frappe_user, config.queue_name_template, layout)
    return PythonBuilder(config.queue_name_template, layout)


class _PickledByTheDaemon(LocalBuilder):
    """btu-web's queues for the CLI; its jobs hold the BTU app's pickle, which only the daemon
    fetches (at the fire instant, with its retries), so this one builds nothing."""

    kind = "btu-web"

    def build(self, schedule, when):
        raise ScheduleError("btu-web jobs carry the pickle the BTU app serves, which the daemon "
                            "fetches at fire time: use `btu create ID` or the BTU app's Run Now")
