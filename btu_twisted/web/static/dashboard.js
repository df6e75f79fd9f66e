// The BTU scheduler dashboard: polls /api/dashboard every 5 s and renders it (no build step, no CDN).
"use strict";
const REFRESH_MS = 5000;
const DAY_SECS = 24 * 3600;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    // positions go through the CSSOM: the page's Content-Security-Policy refuses style attributes
    if (key === "left") node.style.left = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child === null || child === undefined ? "" : child);
  return node;
}

function badge(text, kind) { return el("span", {class: "badge " + (kind || text)}, text); }

function relative(unix, now) {
  if (unix === null || unix === undefined) return "";
  const secs = Math.abs(unix - now);
  const text = secs < 60 ? Math.round(secs) + " s" : secs < 3600 ? Math.floor(secs / 60) + " min"
    : secs < 86400 ? Math.floor(secs / 3600) + " h " + Math.floor(secs % 3600 / 60) + " min"
    : Math.floor(secs / 86400) + " d " + Math.floor(secs % 86400 / 3600) + " h";
  return unix >= now ? "in " + text : text + " ago";
}

function renderHealth(data) {
  const box = document.getElementById("health");
  box.replaceChildren(
    badge("source " + (data.health.source.up ? "up" : "down"), data.health.source.up ? "up" : "down"),
    badge("redis " + (data.health.redis.up ? "up" : "down"), data.health.redis.up ? "up" : "down"),
    el("span", {class: "muted"}, data.source + " · builder " + data.job_builder + " · " +
       data.counts.enabled + " enabled, " + data.counts.planned + " planned, " +
       data.counts.unplannable + " unplannable"));
  document.getElementById("name").textContent = "· " + data.daemon.name + " (" + data.daemon.environment + ")";
}

function renderWarnings(data) {
  document.getElementById("warnings").replaceChildren(
    ...data.warnings.map(text => el("div", {class: "warning"}, text)));
}

function renderTimeline(data) {
  const now = data.now_unix;
  const box = document.getElementById("timeline");
  const hours = el("div", {class: "hours"});
  for (let h = 0; h <= 24; h += 3) {
    const at = new Date((now + h * 3600) * 1000);
    hours.append(el("span", {left: (h / 24 * 100) + "%"}, at.toISOString().slice(11, 16) + "Z"));
  }
  const lanes = data.schedules.filter(s => s.timeline && s.timeline.length).map(s => {
    const track = el("div", {class: "track"});
    for (const at of s.timeline) {
      track.append(el("div", {class: "tick", left: ((at - now) / DAY_SECS * 100).toFixed(3) + "%",
                              title: s.schedule_id + " " + new Date(at * 1000).toISOString()}));
    }
    return el("div", {class: "lane", "data-schedule": s.schedule_id}, el("div", {class: "label"}, s.schedule_id), track);
  });
  box.replaceChildren(hours, ...(lanes.length ? lanes : [el("div", {class: "muted"}, "no fires in the next 24 hours")]));
}

function runNow(scheduleId) {
  const token = document.getElementById("token").value;
  const status = document.getElementById("action");
  fetch("/api/run-now?schedule=" + encodeURIComponent(scheduleId),
        {method: "POST", headers: {"Authorization": "Bearer " + token}})
    .then(reply => reply.json().then(body => ({ok: reply.ok, body})))
    .then(({ok, body}) => { status.textContent = ok ? "enqueued " + body.job_id : "refused: " + body.error; refresh(); })
    .catch(error => { status.textContent = "failed: " + error; });
}

function renderSchedules(data) {
  const now = data.now_unix;
  const rows = data.schedules.map(s => {
    const last = s.last;
    const button = el("button", {type: "button"}, "run now");
    button.addEventListener("click", () => runNow(s.schedule_id));
    if (!data.daemon.actions) button.setAttribute("disabled", "disabled");
    return el("tr", {"data-schedule": s.schedule_id},
      el("td", {}, s.schedule_id, s.enabled ? "" : " ", s.enabled ? "" : badge("disabled", "expired")),
      el("td", {}, s.task + (s.description ? " · " + s.description : "")),
      el("td", {}, s.queue), el("td", {}, el("code", {}, s.cron)),
      el("td", {}, s.zone, el("div", {class: "utc"}, "from " + s.zone_source)),
      el("td", {class: "next"}, s.next_local, el("div", {class: "utc"}, relative(s.next_unix, now))),
      el("td", {class: "utc"}, s.next_utc),
      el("td", {}, last ? last.local : "-", el("div", {class: "utc"}, last ? last.utc : "")),
      el("td", {}, last ? badge(last.status) : "-",
         last && last.duration_secs !== null ? " " + last.duration_secs + " s" : "",
         last && last.error ? el("div", {class: "utc"}, last.error) : ""),
      el("td", {}, button));
  });
  document.querySelector("#schedules tbody").replaceChildren(...rows);
  const problems = data.schedules.filter(s => s.problem).map(s =>
    el("tr", {"data-schedule": s.schedule_id}, el("td", {}, s.schedule_id), el("td", {}, s.problem)));
  document.querySelector("#unplannable tbody").replaceChildren(...problems);
  document.querySelector("#queues tbody").replaceChildren(...data.queues.map(q =>
    el("tr", {}, el("td", {}, q.queue), el("td", {}, String(q.jobs)), el("td", {}, String(q.workers)),
       el("td", {}, String(q.failed)))));
}

function refresh() {
  return fetch("/api/dashboard", {cache: "no-store"})
    .then(reply => { if (!reply.ok) throw new Error("HTTP " + reply.status); return reply.json(); })
    .then(data => {
      renderHealth(data); renderWarnings(data); renderTimeline(data); renderSchedules(data);
      document.getElementById("updated").textContent = "updated " + new Date(data.now_unix * 1000).toISOString();
      document.body.setAttribute("data-loaded", "true");
    })
    .catch(error => { document.getElementById("updated").textContent = "cannot load: " + error; });
}

refresh();
setInterval(refresh, REFRESH_MS);
