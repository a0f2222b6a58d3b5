// The server stats panel (the header's "Server stats" button): live line
// charts of the server's memory, viewers and total bitrate, polled from
// GET /api/stats, and of the latency this page's own players read from the
// test pattern's block codes; a line per camera with its health and
// counters, and one per forward to an SFU. Plain <canvas>, no libraries.
//
// window.rpistream.serverStats = {shown, polls, last, error, history} is there
// for tests: `last` is the latest /api/stats document.

const POLL_MS = 2_000;
// 150 points: 5 minutes at one poll every 2 s. A phone-wide chart shows a
// point every 2 px, and a page left open for months holds the same memory.
const HISTORY_POINTS = 150;
const WINDOW_S = (HISTORY_POINTS * POLL_MS) / 1000;
const COLORS = ["#4ea1ff", "#f7b955", "#6fdc8c", "#ff7eb6", "#be95ff", "#3ddbd9"];

const root = (window.rpistream ??= { players: {} });
const state = {
  shown: false, polls: 0, last: null, error: null,
  history: { rss: [], viewers: [], bitrate: [], latency: {} },
};
root.serverStats = state;

// Each chart's <figure data-chart="..."> is in index.html. RSS is fitted to
// its values (a slope of a few MB matters); the others start at 0.
const CHARTS = {
  rss: { unit: " MB", digits: 1, zero: false },
  viewers: { unit: "", digits: 0, zero: true },
  bitrate: { unit: " Mbit/s", digits: 2, zero: true },
  latency: { unit: " ms", digits: 0, zero: true },
};

function push(list, point) {
  list.push(point);
  if (list.length > HISTORY_POINTS) list.splice(0, list.length - HISTORY_POINTS);
}

async function poll() {
  const now = Date.now() / 1000;
  try {
    const response = await fetch("/api/stats", { cache: "no-store" });
    if (!response.ok) throw new Error(`${response.status} ${(await response.text()).trim()}`);
    const stats = await response.json();
    state.last = stats;
    state.error = null;
    const proc = stats.process ?? {};
    if (proc.rss_mb != null) push(state.history.rss, [now, proc.rss_mb]);
    if (stats.totals?.viewers != null) push(state.history.viewers, [now, stats.totals.viewers]);
    if (stats.totals?.bitrate_bps != null) {
      push(state.history.bitrate, [now, stats.totals.bitrate_bps / 1e6]);
    }
  } catch (error) {
    state.error = `Server stats unavailable: ${error.message}`;
  }
  // The players' latency is read from pixels in this page: it needs no server.
  const latency = state.history.latency;
  for (const [label, player] of Object.entries(root.players ?? {})) {
    const ms = player.stats?.latencyMs;
    if (ms != null) push(latency[label] ??= [], [now, ms]);
  }
  for (const label of Object.keys(latency)) {
    if (!(label in (root.players ?? {}))) delete latency[label];
  }
  state.polls += 1;
  render();
}

// The server's own RSS samples (an hour of them) when it sends them, else
// the ones this page polled.
function rssSeries() {
  const samples = state.last?.memory?.samples;
  if (Array.isArray(samples) && samples.length >= 2) {
    // Server times are its own clock: shift them to end at this page's now.
    const shift = Date.now() / 1000 - samples[samples.length - 1][0];
    return { points: samples.map(([t, v]) => [t + shift, v]), span: null };
  }
  return { points: state.history.rss, span: WINDOW_S };
}

function render() {
  const panel = document.getElementById("server-stats");
  if (!panel || panel.hidden) return;
  panel.querySelector(".summary").textContent = state.error ?? summary(state.last);
  panel.querySelector(".summary").classList.toggle("error", !!state.error);
  panel.querySelector(".cameras").replaceChildren(
    ...Object.entries(state.last?.cameras ?? {}).map(([name, camera]) => cameraLine(name, camera)),
    ...(state.last?.forwards ?? []).map(forwardLine));
  const rss = rssSeries();
  draw("rss", [{ label: "RSS", points: rss.points }], rss.span);
  draw("viewers", [{ label: "viewers", points: state.history.viewers }], WINDOW_S);
  draw("bitrate", [{ label: "total", points: state.history.bitrate }], WINDOW_S);
  draw("latency", Object.entries(state.history.latency)
    .map(([label, points]) => ({ label, points })), WINDOW_S);
}

function summary(stats) {
  if (!stats) return "Loading…";
  const p = stats.process ?? {};
  const parts = [];
  if (p.rss_mb != null) {
    const slope = p.rss_slope_mb_per_h;
    parts.push(`RSS ${p.rss_mb.toFixed(1)} MB` + (slope != null
      ? ` (${slope >= 0 ? "+" : ""}${slope.toFixed(1)} MB/h${p.memory_state ? `, ${p.memory_state}` : ""})`
      : p.memory_state ? ` (${p.memory_state})` : ""));
  }
  if (p.cpu_percent != null) parts.push(`CPU ${p.cpu_percent.toFixed(0)} %`);
  if (stats.totals?.viewers != null) parts.push(`${stats.totals.viewers} viewers`);
  if (stats.totals?.bitrate_bps != null) {
    parts.push(`${(stats.totals.bitrate_bps / 1e6).toFixed(2)} Mbit/s`);
  }
  if (p.fds != null) parts.push(`${p.fds} fds`);
  if (p.tasks != null) parts.push(`${p.tasks} tasks`);
  if (p.uptime_s != null) parts.push(`up ${duration(p.uptime_s)}`);
  const dropped = Object.entries(stats.disconnects ?? {}).map(([why, n]) => `${why} ${n}`);
  if (dropped.length) parts.push(`disconnects: ${dropped.join(", ")}`);
  return parts.join(" · ");
}

// "cam0: restarting (no frame for 3.2 s) · 1.20 Mbit/s · 2 viewers · restarts 3 · stalls 1"
function cameraLine(name, camera) {
  const line = document.createElement("li");
  const health = camera.health;
  const reason = health ? health.reason : camera.error;
  line.dataset.state = health?.state ?? (camera.error ? "failed" : "live");
  const parts = [`${name}: ${line.dataset.state}${reason ? ` (${reason})` : ""}`];
  if (camera.bitrate_bps != null) parts.push(`${(camera.bitrate_bps / 1e6).toFixed(2)} Mbit/s`);
  if (camera.viewers != null) parts.push(`${camera.viewers} viewers`);
  if (health) parts.push(`restarts ${health.restarts ?? 0}`, `stalls ${health.stalls ?? 0}`);
  line.textContent = parts.join(" · ");
  return line;
}

// "cam0 -> rtp://10.0.0.5:5004: forwarding · 1520 frames · 3 keyframes asked · restarts 0"
function forwardLine(forward) {
  const line = document.createElement("li");
  line.dataset.state = forward.state === "forwarding" ? "live" : "stalled";
  const parts = [`${forward.camera} -> ${forward.target}: ${forward.state}${
    forward.error ? ` (${forward.error})` : ""}`];
  const totals = forward.totals ?? {};
  parts.push(`${totals.frames_sent ?? 0} frames`, `${totals.keyframe_requests ?? 0} keyframes asked`,
    `restarts ${forward.restarts ?? 0}`);
  line.textContent = parts.join(" · ");
  return line;
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24;
  const m = Math.floor(seconds / 60) % 60;
  return d ? `${d}d ${h}h` : h ? `${h}h ${String(m).padStart(2, "0")}m` : `${m}m ${Math.floor(seconds % 60)}s`;
}

// One chart: `series` = [{label, points: [[t s, value], ...]}], the last
// `span` seconds (null: all the points), y from 0 or fitted to the values.
function draw(name, series, span) {
  const chart = CHARTS[name];
  const figure = document.querySelector(`#server-stats [data-chart="${name}"]`);
  const canvas = figure.querySelector("canvas");
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width || canvas.height !== height) {
    [canvas.width, canvas.height] = [width, height];
  }
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  const [w, h] = [width / ratio, height / ratio];
  g.clearRect(0, 0, w, h);

  const all = series.flatMap((s) => s.points);
  // The latest value of each series, in its line's colour.
  const value = figure.querySelector(".value");
  value.replaceChildren(...series.flatMap((s, i) => {
    if (!s.points.length) return [];
    const span = document.createElement("span");
    span.style.color = COLORS[i % COLORS.length];
    span.textContent = `${series.length > 1 ? `${s.label} ` : ""}${
      s.points[s.points.length - 1][1].toFixed(chart.digits)}${chart.unit}`;
    return [span];
  }));
  if (!value.childElementCount) value.textContent = "—";
  if (!all.length) return;

  const tEnd = Math.max(...all.map(([t]) => t));
  const tStart = span != null ? tEnd - span : Math.min(...all.map(([t]) => t));
  let lo = Math.min(...all.map(([, v]) => v));
  let hi = Math.max(...all.map(([, v]) => v));
  if (chart.zero) {
    // 0 to a round number above the highest value: 1, 2 or 5 × 10^n.
    [lo, hi] = [0, niceCeil(Math.max(hi * 1.1, chart.digits ? 0.01 : 2))];
  } else {
    const pad = Math.max((hi - lo) * 0.1, 0.5);
    [lo, hi] = [lo - pad, hi + pad];
  }
  const left = 44, right = 6, top = 6, bottom = 16;
  const x = (t) => left + ((t - tStart) / Math.max(1e-9, tEnd - tStart)) * (w - left - right);
  const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (h - top - bottom);

  // Grid: three levels, labelled.
  g.font = "11px ui-monospace, monospace";
  g.fillStyle = "#888";
  g.strokeStyle = "#333";
  g.lineWidth = 1;
  g.textBaseline = "middle";
  for (const f of [0, 0.5, 1]) {
    const v = lo + f * (hi - lo);
    g.beginPath();
    g.moveTo(left, Math.round(y(v)) + 0.5);
    g.lineTo(w - right, Math.round(y(v)) + 0.5);
    g.stroke();
    g.fillText(v.toFixed(hi - lo >= 10 || Number.isInteger(v) ? 0 : Math.max(1, chart.digits)),
      2, y(v));
  }
  g.textBaseline = "alphabetic";
  const minutes = (tEnd - tStart) / 60;
  g.fillText(minutes >= 1 ? `last ${minutes.toFixed(0)} min` : `last ${(tEnd - tStart).toFixed(0)} s`,
    left, h - 3);

  series.forEach((s, i) => {
    const points = s.points.filter(([t]) => t >= tStart);
    if (!points.length) return;
    g.strokeStyle = COLORS[i % COLORS.length];
    g.lineWidth = 1.5;
    g.beginPath();
    points.forEach(([t, v], k) => (k ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
    if (points.length === 1) g.arc(x(points[0][0]), y(points[0][1]), 1.5, 0, 2 * Math.PI);
    g.stroke();
  });
}

function niceCeil(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((n) => n >= value);
}

function setShown(shown) {
  state.shown = shown;
  const panel = document.getElementById("server-stats");
  const button = document.getElementById("toggle-server-stats");
  panel.hidden = !shown;
  button.setAttribute("aria-pressed", String(shown));
  clearInterval(state.timer);
  state.timer = null;
  try {
    localStorage.setItem("rpistream.serverStats", shown ? "1" : "0");
  } catch {
    // storage disabled: the panel just starts hidden next time
  }
  // Polled only while shown: a page left open does not keep the server busy.
  if (shown) {
    poll();
    state.timer = setInterval(poll, POLL_MS);
  }
}

function setup() {
  const button = document.getElementById("toggle-server-stats");
  if (!button) return;
  button.addEventListener("click", () => setShown(!state.shown));
  new ResizeObserver(() => render()).observe(document.getElementById("server-stats"));
  let remembered = false;
  try {
    remembered = localStorage.getItem("rpistream.serverStats") === "1";
  } catch {
    // storage disabled
  }
  if (remembered) setShown(true);
}

setup();
