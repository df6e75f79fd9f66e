"""The HTTP listener: dashboard in a real headless Chromium driven by Selenium, /metrics parsed by prometheus_client,
and the Bearer token guarding run-now."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from rq import Queue
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from twisted.internet import defer, threads
from twisted.trial import unittest

from btu_twisted.config import ConfigError, parse
from btu_twisted.web.service import HTTPService
from tests.support import browser
from tests.support import frappe_schema as fs
from tests.support.daemon import wait_for
from tests.test_cockpit import CockpitTestCase

TOKEN = "0123456789abcdef-test-token"
BROWSER_WAIT_SECS = 60  # generous: the machine is shared; a wait ends as soon as its condition holds
ARTIFACTS = os.environ.get("BTU_TEST_ARTIFACTS", "")  # where the screenshot is also copied, if set
# What the page shows, read in one script so that the page's own 5 s re-render cannot come in between:
# the text of every schedule row's cells, the timeline ticks of the given schedule, the unplannable
# reasons; null until the given schedule's row is rendered.
PAGE_FACTS = """
const id = arguments[0];
if (!document.querySelector(`#schedules tr[data-schedule="${id}"]`)) return null;
const cells = {};
for (const row of document.querySelectorAll("#schedules tbody tr"))
  cells[row.dataset.schedule] = [...row.cells].map(cell => cell.innerText.trim());
return {cells, ticks: document.querySelectorAll(`#timeline .lane[data-schedule="${id}"] .tick`).length,
        unplannable: document.getElementById("unplannable").innerText};
"""


def http(method: str, url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    """One blocking HTTP request: (status, headers, body), HTTP errors included."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class DashboardTestCase(CockpitTestCase):
    daemon_keys = {"http_port": 0, "http_token": TOKEN}

    def url(self, path: str) -> str:
        listener = next(s for s in self.daemon.service if isinstance(s, HTTPService))
        return f"http://127.0.0.1:{listener.port.getHost().port}{path}"

    def request(self, method: str, path: str, headers: dict | None = None) -> defer.Deferred:
        return threads.deferToThread(http, method, self.url(path), headers)


class MetricsTests(DashboardTestCase):
    @defer.inlineCallbacks
    def test_metrics_parse(self):
        """/metrics is Prometheus text that prometheus_client parses: planned schedules, enqueued by
        queue, lateness histogram, dependency states, refresh duration, clock skew."""
        yield self.fired()
        status, headers, body = yield self.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        families = {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}
        self.assertEqual(families["btu_planned_schedules"].samples[0].value, 1)
        enqueued = {s.labels["queue"]: s.value for s in families["btu_dispatch_events"].samples
                    if s.name == "btu_dispatch_events_total" and s.labels["event"] == "enqueued"}
        self.assertEqual(enqueued, {"default": 2, "long": 1})
        count = next(s.value for s in families["btu_enqueue_lateness_seconds"].samples
                     if s.name == "btu_enqueue_lateness_seconds_count")
        self.assertEqual(count, 3)
        self.assertEqual({s.labels["dependency"]: s.value for s in families["btu_dependency_up"].samples},
                         {"sql": 1.0, "redis": 1.0})
        self.assertIn("btu_last_refresh_duration_seconds", families)
        self.assertLess(abs(families["btu_clock_skew_seconds"].samples[0].value), 60)
        self.assertEqual(families["btu_unplannable_schedules"].samples[0].value, 1)  # TS-000003


class TokenTests(DashboardTestCase):
    @defer.inlineCallbacks
    def test_run_now_needs_the_token_and_post(self):
        """run-now answers 405 to GET, 401 without or with a wrong token, and enqueues with it."""
        status, headers, _ = yield self.request("GET", "/api/run-now?schedule=TS-000001")
        self.assertEqual((status, headers.get("Allow")), (405, "POST"))
        status, _, _ = yield self.request("POST", "/api/run-now?schedule=TS-000001")
        self.assertEqual(status, 401)
        status, _, _ = yield self.request("POST", "/api/run-now?schedule=TS-000001",
                                          {"Authorization": "Bearer not-the-token-at-all"})
        self.assertEqual(status, 401)
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [])
        good = {"Authorization": f"Bearer {TOKEN}"}
        status, _, body = yield self.request("POST", "/api/run-now?schedule=TS-000001", good)
        self.assertEqual(status, 200, body)
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [json.loads(body)["job_id"]])
        status, _, _ = yield self.request("POST", "/api/run-now?schedule=TS-NOPE", good)
        self.assertEqual(status, 404)


class PickledJobRunNowTests(DashboardTestCase):
    daemon_keys = {"http_port": 0, "http_token": TOKEN, "job_builder": "btu-web",
                   "webserver_token": "token apikey:apisecret"}

    @defer.inlineCallbacks
    def test_btu_web_run_now_is_refused_with_the_reason(self):
        """btu-web jobs hold the BTU app's pickle, fetched only for a planned fire: run-now is a
        409 saying so, not a server error, and nothing is enqueued."""
        status, _, body = yield self.request("POST", "/api/run-now?schedule=TS-000001",
                                             {"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(status, 409, body)
        self.assertIn(b"btu-web", body)
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [])


class ReadOnlyTests(DashboardTestCase):
    daemon_keys = {"http_port": 0}

    @defer.inlineCallbacks
    def test_no_token_no_actions(self):
        """Without http_token the listener is read-only: run-now is 403 even with a token."""
        status, _, body = yield self.request("POST", "/api/run-now?schedule=TS-000001",
                                             {"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(status, 403)
        self.assertIn(b"http_token", body)
        self.assertEqual(Queue("default", connection=self.redis).job_ids, [])


class BrowserTests(DashboardTestCase):
    """The page as a real headless Chromium (Selenium, Debian's chromedriver) renders it from the daemon."""

    @defer.inlineCallbacks
    def setUp(self):
        reason = browser.missing()
        if reason:
            raise unittest.SkipTest(reason)
        yield super().setUp()
        profile = self.mktemp()
        os.makedirs(profile)
        self.driver = yield threads.deferToThread(browser.start_chromium, profile)
        self.addCleanup(threads.deferToThread, self.driver.quit)

    def until(self, condition, what: str):
        """Wait (in a thread, so the reactor keeps serving the page) until `condition(driver)` is truthy."""
        wait = WebDriverWait(self.driver, BROWSER_WAIT_SECS, ignored_exceptions=(StaleElementReferenceException,))
        return threads.deferToThread(wait.until, condition, f"waited {BROWSER_WAIT_SECS} s for {what}")

    def run_now_button(self, schedule_id: str):
        return self.driver.find_element(By.CSS_SELECTOR, f'#schedules tr[data-schedule="{schedule_id}"] button')

    @defer.inlineCallbacks
    def test_dashboard_renders(self):
        """Schedule rows, next-fire times in the schedule's zone and UTC, the 24 h timeline and the
        unplannable reasons are on the rendered page; a screenshot is saved."""
        fs.insert_schedule(self.sql, "TS-000007", "BTU-OK", "0 */6 * * *")
        yield self.daemon.query({"request_type": "create_task_schedule", "request_content": "TS-000007"})
        yield wait_for(lambda: self.redis.hget("btu_scheduler:planned", "TS-000007"), 10, "TS-000007 planned")
        yield threads.deferToThread(self.driver.get, self.url("/"))
        page = yield self.until(lambda d: d.execute_script(PAGE_FACTS, "TS-000007"), "the schedule rows")
        # the one-shots TS-000004..6 are listed until they fire, so only these rows are certain
        self.assertLessEqual({"TS-000001", "TS-000002", "TS-000003", "TS-000007"}, set(page["cells"]))
        next_local, next_utc = page["cells"]["TS-000001"][5:7]
        self.assertIn("2027-03-14 03:00:00 EDT", next_local)
        self.assertEqual(next_utc, "2027-03-14T07:00:00Z")
        self.assertRegex(page["cells"]["TS-000007"][5], r"\d{4}-\d\d-\d\d \d\d:00:00 E[SD]T")
        self.assertEqual(page["ticks"], 4)  # every 6 h in the next 24 h
        self.assertIn("minute field: 61 is out of range", page["unplannable"])
        shot = os.path.abspath("dashboard.png")
        self.assertTrue(self.driver.save_screenshot(shot))
        self.assertGreater(os.path.getsize(shot), 10_000)
        if ARTIFACTS:
            shutil.copy(shot, os.path.join(ARTIFACTS, "dashboard.png"))

    @defer.inlineCallbacks
    def click_run_now(self, token: str):
        """Type `token` in the page's token field, press TS-000001's run-now button and return the
        page's answer."""
        self.driver.execute_script("document.getElementById('action').textContent = ''")
        field = self.driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        yield self.until(lambda d: self.run_now_button("TS-000001").click() or True, "the run-now button")
        answer = yield self.until(lambda d: d.find_element(By.ID, "action").text, "the run-now answer")
        return answer

    @defer.inlineCallbacks
    def test_run_now_through_the_page(self):
        """The page's run-now button is refused without or with a wrong token, and enqueues with it."""
        yield threads.deferToThread(self.driver.get, self.url("/"))
        yield self.fired()  # the one-shots are done: from here on only run-now adds to the default queue
        yield self.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#schedules tr button"), "the run-now buttons")
        default = Queue("default", connection=self.redis)
        for token in ("", "not-the-token-at-all"):
            answer = yield self.click_run_now(token)
            self.assertEqual(answer, "refused: missing or wrong Bearer token")
            self.assertEqual(default.job_ids, [])
        answer = yield self.click_run_now(TOKEN)
        self.assertTrue(answer.startswith("enqueued "), answer)
        self.assertEqual(default.job_ids, [answer.removeprefix("enqueued ")])


class HTTPConfigTests(unittest.SynchronousTestCase):
    def test_http_keys(self):
        """http_port is off by default; a port out of range or a short token is refused by name."""
        base = 'schedule_file = "s.toml"\njob_builder = "python"\n'
        config = parse(base)[0]
        self.assertEqual((config.http_port, config.http_interface, config.http_token), (None, "127.0.0.1", None))
        self.assertEqual(parse(base + "http_port = 8080\n")[0].http_port, 8080)
        for text, key in (("http_port = 70000\n", "http_port"), ('http_port = "80"\n', "http_port"),
                          ('http_token = "short"\n', "http_token")):
            with self.assertRaises(ConfigError) as caught:
                parse(base + text)
            self.assertIn(key, str(caught.exception))
        self.assertNotIn(TOKEN, repr(parse(base + f'http_token = "{TOKEN}"\n')[0]))
