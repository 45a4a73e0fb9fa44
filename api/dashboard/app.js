// The supervisors' dashboard: plain JavaScript, no build step, no third-party code.
// The login form trades the API token for a session cookie (HttpOnly: this script never sees
// it, and the token is not kept anywhere); requests ride the cookie. The one request that
// changes state (logout) sends the session's CSRF token, which lives in this variable only.
"use strict";

const $ = (id) => document.getElementById(id);
let csrfToken = null; // null: not logged in (or not known yet)
let stream = null; // the live board's AbortController
let serverOffset = 0; // server clock minus browser clock, from the last board push
let board = null;

// Build elements from text only: names and sources come from CRMs and are never HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v; else el.setAttribute(k, v);
  }
  for (const child of children) el.append(child instanceof Node ? child : String(child ?? ""));
  return el;
}

function hms(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  return `${Math.floor(s / 3600)}:${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function since(iso) { return (Date.now() + serverOffset - Date.parse(iso)) / 1000; }

function leadLink(id) { return h("a", { href: `#lead/${id}` }, `#${id}`); }

async function api(path, accept) {
  const response = await fetch(path, { headers: { Accept: accept || "application/json" } });
  if (response.status === 401) { loggedOut("Your session has ended; log in again."); throw new Error("unauthorized"); }
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response;
}

// Trade a token for the session cookie; true when it was accepted.
async function login(token) {
  const response = await fetch("/session", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
  });
  if (!response.ok) {
    const refused = { 401: "That token was refused.", 403: "That token may not read the dashboard.", 429: "Too many failed logins; wait a minute." };
    loggedOut(refused[response.status] || `Login failed: ${response.status}`);
    return false;
  }
  csrfToken = (await response.json()).csrf_token;
  return true;
}

// After a page reload the cookie may still hold a session: learn its CSRF token.
async function resume() {
  const response = await fetch("/session");
  csrfToken = response.ok ? (await response.json()).csrf_token : null;
  return csrfToken !== null;
}

async function logout() {
  await fetch("/session", { method: "DELETE", headers: { "X-CSRF-Token": csrfToken || "" } });
  loggedOut("");
}

function loggedOut(message) {
  csrfToken = null;
  if (stream) stream.abort();
  $("login-error").textContent = message || "";
  show("login");
}

function show(section) {
  for (const id of ["login", "board", "stats", "lead"]) $(id).hidden = id !== section;
  for (const id of ["board", "stats"]) $(`nav-${id}`).classList.toggle("active", id === section);
}

// -- live board ---------------------------------------------------------------------------

async function follow() {
  if (stream) return;
  stream = new AbortController();
  try {
    const response = await fetch("/live", { signal: stream.signal });
    if (response.status === 401) { loggedOut("Your session has ended; log in again."); return; }
    $("link-state").textContent = "live";
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const message = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = message.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (data) renderBoard(JSON.parse(data));
      }
    }
  } catch (error) {
    if (error.name === "AbortError") return;
  } finally {
    stream = null;
  }
  // The daemon restarted or the link dropped: reconnect while the board is open.
  $("link-state").textContent = "reconnecting…";
  setTimeout(() => { if (!$("board").hidden) follow(); }, 1000);
}

function renderBoard(data) {
  board = data;
  serverOffset = Date.parse(data.now) - Date.now();
  const today = data.today || {};
  const leads = today.leads || {};
  $("today").replaceChildren(
    ...[["waiting", (leads.new || 0) + (leads.dialing || 0)], ["scheduled", leads.scheduled || 0], ["assigned", leads.assigned || 0],
      ["calls today", today.calls || 0], ["talk today", hms(today.talk_seconds)], ["missed offers", today.missed || 0]]
      .map(([label, value]) => h("div", { class: "card" }, h("b", {}, value), h("span", {}, label))));
  const perManager = today.per_manager || {};
  $("managers").tBodies[0].replaceChildren(...data.managers.map((m) => h("tr", { "data-manager": m.id },
    h("td", {}, m.name || m.id), h("td", {}, h("span", { class: `state ${m.state}` }, m.state.replace("_", " ") + (m.reason ? ` (${m.reason})` : ""))),
    h("td", { class: "num timer", "data-since": m.since }, hms(since(m.since))),
    h("td", { class: "num" }, (perManager[m.id] || {}).calls || 0), h("td", { class: "num" }, hms((perManager[m.id] || {}).talk_seconds)))));
  const names = Object.fromEntries(data.managers.map((m) => [m.id, m.name || m.id]));
  $("calls").tBodies[0].replaceChildren(...data.calls.map((c) => h("tr", { "data-call": c.id },
    h("td", {}, leadLink(c.lead_id), " ", c.name || ""), h("td", {}, c.source || ""), h("td", {}, c.state),
    h("td", {}, c.manager_id ? names[c.manager_id] || c.manager_id : ""),
    h("td", { class: "num timer", "data-since": c.started_at }, hms(since(c.started_at))))));
  $("no-calls").hidden = data.calls.length > 0;
}

setInterval(() => {
  for (const cell of document.querySelectorAll(".timer")) cell.textContent = hms(since(cell.dataset.since));
}, 1000);

// -- stats --------------------------------------------------------------------------------

function periodQuery() {
  const name = $("period-name").value;
  if (name === "custom") return `from=${$("from").value}&to=${$("to").value || $("from").value}`;
  return `period=${name}`;
}

function table(el, rows, links) {
  if (!rows.length) { el.replaceChildren(h("tr", {}, h("td", { class: "muted" }, "Nothing in this period."))); return; }
  const keys = Object.keys(rows[0]);
  const cell = (k, v) => {
    if (v === null || v === undefined) return "–";
    if (k.endsWith("_seconds")) return hms(v);
    if (k.endsWith("_pct")) return `${v}%`;
    if (k === "first_call" || k === "last_call") return v.slice(0, 16).replace("T", " ");
    return v;
  };
  el.replaceChildren(
    h("thead", {}, h("tr", {}, ...keys.map((k) => h("th", { class: typeof rows[0][k] === "number" ? "num" : "" }, k.replace(/_seconds$|_pct$/, "").replaceAll("_", " "))))),
    h("tbody", {}, ...rows.map((r) => h("tr", {}, ...keys.map((k) => h("td", { class: typeof r[k] === "number" ? "num" : "" }, cell(k, r[k])))))));
}

// A bar chart in SVG: groups of bars (one colour per series) with labels under each group.
function bars(svg, labels, series, format) {
  const width = 600, height = 220, bottom = 40, top = 14;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const max = Math.max(1, ...series.flatMap((s) => s.values.map((v) => v || 0)));
  const groupWidth = width / Math.max(1, labels.length);
  const barWidth = Math.max(2, (groupWidth * 0.8) / series.length);
  const ns = "http://www.w3.org/2000/svg";
  const el = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const nodes = [];
  labels.forEach((label, i) => {
    series.forEach((s, j) => {
      const value = s.values[i] || 0;
      const barHeight = (height - bottom - top) * value / max;
      const x = i * groupWidth + groupWidth * 0.1 + j * barWidth;
      const rect = el("rect", { class: `bar value ${s.class || ""}`, x, y: height - bottom - barHeight, width: barWidth - 1, height: barHeight });
      rect.append(el("title", {}, `${label} ${s.name}: ${format(value)}`));
      nodes.push(rect);
    });
    nodes.push(el("text", { x: i * groupWidth + groupWidth / 2, y: height - bottom + 12, "text-anchor": "middle" }, label));
  });
  series.forEach((s, j) => {
    nodes.push(el("rect", { class: `bar ${s.class || ""}`, x: 4 + j * 90, y: height - 14, width: 9, height: 9 }));
    nodes.push(el("text", { x: 17 + j * 90, y: height - 6 }, s.name));
  });
  nodes.push(el("text", { x: 2, y: 10 }, `max ${format(max)}`));
  svg.replaceChildren(...nodes);
}

async function loadStats() {
  const report = await (await api(`/stats?${periodQuery()}`)).json();
  $("period-label").textContent = `${report.first_day} – ${report.last_day} (${report.zone})`;
  const total = (k) => report.managers.reduce((sum, m) => sum + (m[k] || 0), 0);
  const speed = report.speed_to_lead;
  $("summary").replaceChildren(
    ...[["calls", total("calls")], ["talk", hms(total("talk_seconds"))], ["offers", total("offers")], ["missed", total("missed")],
      ["first dial p50", speed.first_dial.p50 === null ? "–" : hms(speed.first_dial.p50)], ["never reached", report.never_reached.leads],
      ["fairness max/min", report.fairness.length ? report.fairness.map((f) => f.ratio === null ? "∞" : f.ratio).join(", ") : "–"]]
      .map(([label, value]) => h("div", { class: "card" }, h("b", {}, value), h("span", {}, label))));
  bars($("chart-talk"), report.managers.map((m) => m.name || m.manager_id), [{ name: "talk", values: report.managers.map((m) => m.talk_seconds) }], hms);
  const steps = [["dial", speed.first_dial], ["answer", speed.client_answered], ["manager", speed.manager_bridged]];
  bars($("chart-speed"), steps.map((s) => s[0]), [
    { name: "p50", values: steps.map((s) => s[1].p50) }, { name: "p90", class: "bar2", values: steps.map((s) => s[1].p90) },
    { name: "max", class: "bar3", values: steps.map((s) => s[1].max) }], hms);
  bars($("chart-hours"), report.hours.map((x) => String(x.hour)), [
    { name: "dialled", values: report.hours.map((x) => x.calls) }, { name: "talked", class: "bar3", values: report.hours.map((x) => x.bridged) }], String);
  table($("stats-managers"), report.managers);
  table($("stats-sources"), report.sources);
  table($("stats-scenarios"), report.scenarios);
  const never = report.never_reached;
  $("never-reached").replaceChildren(`${never.leads} lead(s) never answered `,
    `(${Object.entries(never.by_status).map(([k, v]) => `${k} ${v}`).join(", ") || "none"})`,
    ...never.lead_ids.flatMap((id) => [" ", leadLink(id)]));
}

async function downloadCsv(tableName) {
  const blob = await (await api(`/stats/${tableName}?${periodQuery()}&format=csv`, "text/csv")).blob();
  const link = h("a", { href: URL.createObjectURL(blob), download: `leadrouter-${tableName}.csv` });
  link.click();
  URL.revokeObjectURL(link.href);
}

// -- lead timeline ------------------------------------------------------------------------

// The daemon's own signed link when it holds the PBX's recordings, else the configured external URL.
async function recordingSource(call) {
  if (!call.recording_file) return call.recording_url;
  const response = await fetch(`/recording-links/${encodeURI(call.recording_file)}`);
  if (response.status === 409) return null; // the call is still up: the file is not finished
  return response.ok ? (await response.json()).url : call.recording_url;
}

async function loadLead(id) {
  const lead = await (await api(`/leads/${id}`)).json();
  $("lead-title").textContent = `Lead #${lead.id} ${lead.name || ""}`;
  $("lead-facts").textContent = `${lead.phone} · source ${lead.source || "–"} · ${lead.status} · owner ${lead.owner_id || "–"}` +
    ` · outcome ${lead.outcome || "–"} · ${lead.attempts} attempt(s)`;
  const steps = [[lead.created_at, "Lead came in", ""]];
  for (const call of lead.calls) {
    steps.push([call.started_at, `Call ${call.attempt} dialled`, `scenario ${call.scenario}`]);
    if (call.answered_at) steps.push([call.answered_at, "Client answered", ""]);
    for (const leg of call.managers_tried) {
      steps.push([leg.started_at, `Manager ${leg.manager_id} rung`, leg.result ? leg.result.replace("_", " ") : "ringing"]);
    }
    if (call.bridged_at) steps.push([call.bridged_at, `Talking to ${call.manager_id}`, `owner is ${call.manager_id}`]);
    if (call.ended_at) {
      const source = call.recording_deleted_at ? null : await recordingSource(call);
      const audio = source ? h("audio", { controls: "", preload: "metadata", src: source })
        : call.recording_deleted_at ? h("span", { class: "muted" }, `(recording deleted ${call.recording_deleted_at.slice(0, 10)}, retention)`) : "";
      steps.push([call.ended_at, `Call ${call.attempt} ended: ${call.disposition}`,
        h("span", {}, `talk ${hms(call.talk_seconds)}, hold ${hms(call.hold_seconds)} `, audio)]);
    }
  }
  // Every event sent to the CRMs over MQTT: owner changes and outcomes are among them.
  const { events } = await (await api(`/leads/${id}/events`)).json();
  for (const event of events) {
    const p = event.payload;
    const facts = [p.owner_id && `owner ${p.owner_id}`, p.previous_owner_id && `was ${p.previous_owner_id}`,
      p.outcome && `outcome ${p.outcome}`, p.reason && `“${p.reason}”`, p.author && `by ${p.author}`, p.disposition]
      .filter(Boolean).join(", ");
    steps.push([event.created_at, `MQTT ${event.type}`,
      h("span", { class: "muted" }, `${facts} · ${event.published_at ? "published" : "waiting in the outbox"}`)]);
  }
  steps.sort((a, b) => Date.parse(a[0]) - Date.parse(b[0]));
  $("timeline").replaceChildren(...steps.map(([at, what, detail]) =>
    h("li", {}, h("time", { datetime: at }, new Date(at).toLocaleString()), h("b", {}, what), " ", detail)));
}

// -- navigation ---------------------------------------------------------------------------

async function route() {
  const fragment = location.hash.slice(1);
  // A login link (leadrouter demo prints one) carries the token in the fragment, which never
  // reaches a server or a log: drop it from the address bar and history at once, trade it for
  // the session cookie, forget it.
  if (fragment.startsWith("token=")) {
    history.replaceState(null, "", "#board");
    if (!await login(decodeURIComponent(fragment.slice(6)))) return;
  }
  if (csrfToken === null && !await resume()) { show("login"); return; }
  const [page, arg] = location.hash.slice(1).split("/");
  if (page !== "board" && page !== "" && stream) stream.abort(); // the stream lives while the board is shown
  if (page === "stats") { show("stats"); await loadStats(); }
  else if (page === "lead" && arg) { show("lead"); await loadLead(arg); }
  else { show("board"); follow(); }
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token").value;
  $("token").value = "";
  if (!await login(token)) return;
  if (location.hash === "#board") route(); else location.hash = "#board";
});
$("logout").addEventListener("click", logout);
$("lead-search").addEventListener("submit", (event) => { event.preventDefault(); location.hash = `#lead/${$("lead-id").value}`; });
$("period-name").addEventListener("change", () => { for (const id of ["from", "to"]) $(id).hidden = $("period-name").value !== "custom"; });
$("period").addEventListener("submit", (event) => { event.preventDefault(); loadStats(); });
for (const button of document.querySelectorAll("button.csv")) button.addEventListener("click", () => downloadCsv(button.dataset.table));
window.addEventListener("hashchange", route);
route();
