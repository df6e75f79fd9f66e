# -*- test-case-name: tests.test_sites -*-
"""The handler table of the channels every site shares (Redis RPC, TCP) in a bench daemon.

BTU's requests carry no site, and every site of a bench pushes to the same `btu:scheduler:commands`
list. So a create or cancel goes to every served site, and each re-reads its own row for that ID:
planned where it is enabled, cancelled where it is disabled or missing. A cancel for one site's
TS-000001 therefore never removes another site's enabled TS-000001. BTU sends the request from
`before_save`, before its transaction commits, so each site reads the row again `RESYNC_DELAYS`
later, when the change is visible. Each site's own socket answers for that site alone.
"""

from __future__ import annotations

import json

from twisted.internet import defer

from btu_twisted import __version__
from btu_twisted.commands import _count, _schedule_id, preview_cron

RESYNC_DELAYS = (2.0, 10.0)  # seconds after the request: BTU's transaction has committed by then


def _all(calls) -> defer.Deferred:
    """The results of every site's call, or the first failure itself (a RequestError stays one,
    so the channel answers "Error: ..." rather than an internal error)."""
    gathered = defer.gatherResults(list(calls), consumeErrors=True)
    return gathered.addErrback(lambda failure: failure.value.subFailure)


class SiteRouter:
    """Requests to every served site; `pipelines()` returns {site: SitePipeline} as now served."""

    def __init__(self, clock, config, pipelines):
        self._clock = clock
        self._config = config
        self._pipelines = pipelines
        self._later = set()  # the delayed re-reads, cancelled at shutdown
        self.control = None  # the ControlFactory of the TCP listener (ignored: each site counts its own)

    def handlers(self) -> dict:
        """request_type -> handler, as the channels expect."""
        return {
            "create_task_schedule": self.resync,
            "cancel_task_schedule": self.resync,
            "status": self.status,
            "upcoming": self.upcoming,
            "reload": self.reload,
            "preview_cron": lambda content: preview_cron(content, self._clock.seconds(),
                                                         self._config.time_zone_string),
        }

    @defer.inlineCallbacks
    def resync(self, content):
        """Every site re-reads the schedule's row now and after each of RESYNC_DELAYS; the reply
        says what each site did with it now."""
        schedule_id = _schedule_id(content)
        pipelines = self._pipelines()
        for delay in RESYNC_DELAYS:
            call = self._clock.callLater(delay, self._again, schedule_id)
            self._later.add(call)
        replies = yield _all(pipeline.commands.create_task_schedule(schedule_id)
                             for pipeline in pipelines.values())
        answers = "; ".join(f"{site}: {reply}" for site, reply in zip(pipelines, replies))
        return (f"BTU Task Schedule {schedule_id} re-read on every site ({len(pipelines)}): each plans "
                f"it if its own row is enabled, else cancels it. {answers or 'No site is served.'}")

    def _again(self, schedule_id: str) -> None:
        self._later = {call for call in self._later if call.active()}
        for pipeline in self._pipelines().values():
            pipeline.queue.put(schedule_id)

    @defer.inlineCallbacks
    def status(self, _content):
        """JSON {"sites": {site: that site's status}} and the daemon's own identity."""
        pipelines = self._pipelines()
        reports = yield _all(p.commands.status(None) for p in pipelines.values())
        return json.dumps({"name": self._config.name, "version": __version__,
                           "sites": {site: json.loads(report) for site, report in zip(pipelines, reports)}},
                          sort_keys=True)

    @defer.inlineCallbacks
    def upcoming(self, content):
        """The next N fires of all sites together, each entry naming its site."""
        count = _count(content, 10)
        pipelines = self._pipelines()
        found = yield _all(p.commands.upcoming(count) for p in pipelines.values())
        entries = [{**entry, "site": site} for site, reply in zip(pipelines, found) for entry in json.loads(reply)]
        entries.sort(key=lambda entry: (entry["unix"], entry["site"], entry["schedule_id"]))
        return json.dumps(entries[:count])

    def reload(self, _content) -> str:
        """A full refresh of every site."""
        for pipeline in self._pipelines().values():
            pipeline.refresher.refresh()
        return "Full refresh started on every site."

    def stop(self) -> None:
        """Cancel the re-reads still waiting (the daemon is stopping)."""
        for call in self._later:
            if call.active():
                call.cancel()
        self._later = set()
