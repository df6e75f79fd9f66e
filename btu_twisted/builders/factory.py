# -*- test-case-name: tests.test_builders -*-
"""Make the job builder a configuration asks for (`job_builder`), with what each kind needs."""

from __future__ import annotations

from btu_twisted.builders.auto import AutoBuilder, BuilderUnavailable
from btu_twisted.builders.btu import BtuBuilder
from btu_twisted.builders.btu_web import BtuWebBuilder, endpoint_url
from btu_twisted.builders.frappe import FrappeBuilder
from btu_twisted.builders.python import PythonBuilder
from btu_twisted.config import FRAPPE_SITE_HINT

def make_builder(kind: str, config, clock, source, stats):
    """The builder for `kind` (`auto` resolves later, from the schema); records its reason for
    `status`. Raises BuilderUnavailable when the configuration lacks what that kind needs."""

    def make(chosen: str):
        site = config.effective_frappe_site
        if chosen in ("btu", "frappe") and not site:
            raise BuilderUnavailable(f"the {chosen} builder needs the Frappe site: {FRAPPE_SITE_HINT}")
        if chosen == "btu":
            return BtuBuilder(site, source, config.frappe_user, config.queue_name_template)
        if chosen == "frappe":
            return FrappeBuilder(site, config.frappe_user, config.queue_name_template)
        if chosen == "btu-web":
            if not config.webserver_token:
                raise BuilderUnavailable("the btu-web builder needs webserver_token")
            return BtuWebBuilder(clock, endpoint_url(config.webserver_ip, config.webserver_port),
                                 config.webserver_token, config.webserver_host_header,
                                 config.queue_name_template)
        return PythonBuilder(config.queue_name_template)

    if kind == "auto":
        return AutoBuilder(clock, source, make, bool(config.webserver_token), stats)
    stats.job_builder = {"kind": kind, "reason": f'job_builder = "{kind}" in the configuration'}
    return make(kind)
