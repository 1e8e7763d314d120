// The likewise ops dashboard: queue, workers, rates, dead letters and connections,
// refreshed every second by the admin event stream.

import { api, ApiError, h, timeAgo } from "./api.js";
import { drawChart } from "./chart.js";

const TOKEN_KEY = "likewise.admin-token";
const WINDOW_SECONDS = 300;
const SERIES = ["completed", "failed", "retried"];
const STATES = ["pending", "started", "retry", "success", "failure", "cancelled"];
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  source: null,
  points: [],
  lastTotals: null,
  ticks: 0,
  lastStats: null,
  retryTimer: null,
  streamAttempt: 0,
};

function call(method, path) {
  return api(method, path, { token: state.token });
}

function toast(message, kind = "info") {
  const el = h("div", { class: `toast ${kind === "error" ? "error" : ""}`, role: kind === "error" ? "alert" : "status" }, message);
  $("toasts").append(el);
  setTimeout(() => el.remove(), 4000);
}

function fmt(n) {
  return Number(n || 0).toLocaleString("en-US");
}

function duration(s) {
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${hh}h`;
  if (hh) return `${hh}h ${m}m`;
  if (m) return `${m}m ${s % 60}s`;
  return `${s}s`;
}

function setStatus(s) {
  const el = $("status");
  el.hidden = false;
  el.dataset.state = s;
  el.querySelector(".label").textContent = s === "live" ? "Live" : s === "connecting" ? "Connecting…" : "Disconnected";
}

// ---------- sign-in ----------

function showLogin(message) {
  $("login-view").hidden = false;
  $("dash-view").hidden = true;
  $("forget").hidden = true;
  $("status").hidden = true;
  $("uptime").hidden = true;
  $("token-error").textContent = message || "";
  $("token").focus();
}

async function connect(token) {
  state.token = token;
  try {
    const stats = await call("GET", "/api/admin/stats");
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login-view").hidden = true;
    $("dash-view").hidden = false;
    $("forget").hidden = false;
    const { history } = await call("GET", "/api/admin/history");
    state.points = history.slice(-WINDOW_SECONDS);
    render(stats);
    await refreshTables();
    openStream();
  } catch (err) {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    const message = err instanceof ApiError
      ? (err.status === 401 ? "That is not the admin token." : err.status === 403 ? "That is a user's token; the dashboard needs the admin token." : err.message)
      : "Something went wrong.";
    showLogin(message);
  }
}

function forget() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.retryTimer);
  state.token = null;
  state.points = [];
  state.lastTotals = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("token").value = "";
  showLogin();
}

// ---------- live stream ----------

/**
 * Follows the admin stream. It opens with a one-use admin ticket, so the admin
 * token never appears in a URL; since a ticket cannot be used twice, the browser's
 * own reconnection is replaced by ours, each attempt with a fresh ticket.
 */
async function openStream() {
  if (state.source) state.source.close();
  state.source = null;
  clearTimeout(state.retryTimer);
  setStatus("connecting");
  let ticket;
  try {
    ({ ticket } = await call("POST", "/api/realtime/tickets"));
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      forget();
      showLogin("The admin token stopped working.");
      return;
    }
    retryStream();
    return;
  }
  if (!state.token) return; // forgotten meanwhile
  const source = new EventSource(`/api/admin/stream?ticket=${encodeURIComponent(ticket)}`);
  state.source = source;
  source.addEventListener("open", () => {
    state.streamAttempt = 0;
    setStatus("live");
  });
  source.addEventListener("stats", (e) => {
    setStatus("live");
    let stats;
    try {
      stats = JSON.parse(e.data);
    } catch {
      return;
    }
    addPoint(stats);
    render(stats);
    state.ticks += 1;
    if (state.ticks % 3 === 0) refreshTables();
  });
  source.addEventListener("error", () => {
    if (state.source !== source) return;
    source.close();
    state.source = null;
    setStatus("offline");
    retryStream();
  });
}

/** Opens the stream again after a growing, jittered delay. */
function retryStream() {
  if (!state.token) return;
  const base = Math.min(15000, 500 * 2 ** (state.streamAttempt || 0));
  state.streamAttempt = (state.streamAttempt || 0) + 1;
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(openStream, base / 2 + Math.random() * (base / 2));
}

function addPoint(stats) {
  const totals = stats.totals;
  if (state.lastTotals) {
    const point = { t: Date.now() };
    for (const k of SERIES) point[k] = Math.max(0, (totals[k] || 0) - (state.lastTotals[k] || 0));
    state.points.push(point);
    if (state.points.length > WINDOW_SECONDS + 5) state.points.splice(0, state.points.length - WINDOW_SECONDS - 5);
  }
  state.lastTotals = totals;
}

// ---------- rendering ----------

function render(stats) {
  state.lastStats = stats;
  const w = stats.workers;
  // A started task is either running (its handler holds a worker: `workers.busy`)
  // or recording its outcome, which frees the worker first: so "started" may
  // exceed the busy workers, never the other way round. The two figures are read
  // a moment apart, so a task starting in between can show as busy before it
  // shows as started; count it as started too, so the figures always add up.
  const q = { ...(stats.queue || {}) };
  q.started = Math.max(q.started || 0, w.busy);
  $("kpi-waiting").textContent = fmt((q.pending || 0) + (q.retry || 0));
  $("kpi-waiting-sub").textContent = `${fmt(q.pending)} pending · ${fmt(q.retry)} to retry`;
  $("kpi-started").textContent = fmt(q.started);
  $("kpi-running").textContent = fmt(w.busy);
  $("kpi-recording").textContent = fmt(q.started - w.busy);
  $("kpi-completed").textContent = fmt(stats.totals.completed);
  $("kpi-rate").textContent = `${stats.rates.completed_per_s.toFixed(1)}/s over 10 s`;
  $("kpi-dead").textContent = fmt(q.failure);
  $("kpi-failed").textContent = `${fmt(stats.totals.retried)} retried since start`;
  $("kpi-workers").textContent = `${fmt(w.busy)} / ${fmt(w.total)}`;
  $("kpi-workers-meter").style.width = `${w.total ? Math.round((w.busy / w.total) * 100) : 0}%`;
  const conns = stats.connections || {};
  const totalConns = Object.values(conns).reduce((a, b) => a + Number(b || 0), 0);
  $("kpi-conns").textContent = fmt(totalConns);
  $("kpi-rooms").textContent = `${fmt(stats.hub.rooms)} rooms`;
  $("uptime").hidden = false;
  $("uptime").textContent = `up ${duration(stats.uptime_s)}`;

  const max = Math.max(1, ...STATES.map((s) => q[s] || 0));
  $("states").replaceChildren(...STATES.map((s) => {
    const bar = h("span", { class: s });
    bar.style.width = `${Math.round(((q[s] || 0) / max) * 100)}%`;
    return h("div", { class: "bar-row" }, h("span", { class: `pill ${s}` }, s), h("div", { class: "track", "aria-hidden": "true" }, bar), h("span", { class: "n" }, fmt(q[s])));
  }));

  const rows = [
    ["websocket (native)", conns.ws],
    ["Socket.IO", conns["socket.io"]],
    ["RESP (Redis protocol)", conns.resp],
    ["rooms", stats.hub.rooms],
    ["events published", stats.hub.published],
    ["events delivered", stats.hub.delivered],
    ["slow clients dropped", stats.hub.dropped_slow],
  ];
  const http = stats.http;
  if (http) {
    const cap = http.max_connections_per_ip ? ` (${fmt(http.max_connections_per_ip)} per address)` : "";
    rows.push(
      [`HTTP connections open / cap${cap}`, `${fmt(http.open)} / ${fmt(http.max_connections)}`],
      ["refused over the caps", (http.refused.global || 0) + (http.refused.per_ip || 0)],
      ["closed by the header timeout", http.header_timeouts],
    );
  }
  const rt = stats.realtime;
  if (rt) {
    rows.push(
      ["Socket.IO awaiting CONNECT", rt.socketio_awaiting_connect],
      ["no CONNECT in time", rt.socketio_connect_timeouts],
      ["dropped by the write timeout", rt.write_timeouts],
    );
  }
  $("conns").replaceChildren(...rows.map(([label, n]) => h("tr", {}, h("th", { scope: "row" }, label), h("td", { class: "num" }, typeof n === "string" ? n : fmt(n)))));

  const names = Object.entries(stats.by_name || {}).sort(([a], [b]) => a.localeCompare(b));
  $("names").replaceChildren(...(names.length
    ? names.map(([name, counts]) => h("tr", {}, h("td", {}, h("code", {}, name)), ...STATES.map((s) => h("td", { class: "num" }, fmt(counts[s])))))
    : [h("tr", {}, h("td", { colspan: 7, class: "hint" }, "No tasks yet."))]));

  drawChart($("chart"), state.points, SERIES, WINDOW_SECONDS);
}

async function refreshTables() {
  try {
    const filter = $("recent-state").value;
    const [dead, recent] = await Promise.all([
      call("GET", "/api/admin/tasks?state=failure&limit=8"),
      call("GET", `/api/admin/tasks?limit=10${filter ? `&state=${filter}` : ""}`),
    ]);
    renderDead(dead.tasks);
    renderRecent(recent.tasks);
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) forget();
  }
}

function when(iso) {
  return h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, timeAgo(iso));
}

function renderDead(tasks) {
  $("dead").replaceChildren(...(tasks.length
    ? tasks.map((t) => h("tr", {},
        h("td", {}, `#${t.id}`),
        h("td", {}, h("code", {}, t.name)),
        h("td", { class: "num" }, `${t.attempts}/${t.max_attempts}`),
        h("td", { class: "err" }, t.last_error || ""),
        h("td", {}, when(t.updated_at)),
        h("td", {}, h("button", { type: "button", class: "primary", "aria-label": `Retry task ${t.id}`, onclick: (e) => retry(t.id, e.currentTarget) }, "Retry"))))
    : [h("tr", {}, h("td", { colspan: 6, class: "hint" }, "No dead letters. Every task either succeeded or is still trying."))]));
}

function renderRecent(tasks) {
  $("recent").replaceChildren(...(tasks.length
    ? tasks.map((t) => h("tr", {},
        h("td", {}, `#${t.id}`),
        h("td", {}, h("code", {}, t.name)),
        h("td", {}, h("span", { class: `pill ${t.state}` }, t.state)),
        h("td", { class: "num" }, `${t.attempts}/${t.max_attempts}`),
        h("td", { class: "err" }, t.last_error || ""),
        h("td", {}, when(t.updated_at))))
    : [h("tr", {}, h("td", { colspan: 6, class: "hint" }, "No tasks in this state."))]));
}

async function retry(id, button) {
  button.disabled = true;
  try {
    await call("POST", `/api/admin/tasks/${id}/retry`);
    toast(`Task #${id} is queued again.`);
    await refreshTables();
  } catch (err) {
    button.disabled = false;
    toast(err instanceof ApiError ? err.message : "Retry failed.", "error");
  }
}

// ---------- wiring ----------

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (!token) {
    $("token-error").textContent = "Enter the admin token.";
    return;
  }
  connect(token);
});
$("forget").addEventListener("click", forget);
$("recent-state").addEventListener("change", refreshTables);
window.addEventListener("resize", () => {
  if (state.lastStats) drawChart($("chart"), state.points, SERIES, WINDOW_SECONDS);
});

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) connect(saved);
else showLogin();
