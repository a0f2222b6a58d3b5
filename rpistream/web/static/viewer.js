// The viewer page: one WHEP player per camera, with reconnection, a stats
// overlay and, for the test pattern, live latency read from the picture.
//
// window.rpistream.players[<camera>] = {state, error, connects, frames, stats,
// health} is there for tests and the curious: `frames` holds the last
// FRAMES_KEPT block codes read from presented frames,
// {frame, captureMs, presentedMs, presentedFrames}; `health` is the camera's
// last health seen in /api/cameras ({state: "live" | "stalled" | "restarting"
// | "failed", reason, since, next_retry, restarts, stalls, ...}; null when the
// server gives none), polled for all players at once every HEALTH_POLL_MS
// while the page is visible. A camera that is not live is shown across its
// picture; the player keeps its connection meanwhile: the server holds it
// open across a camera restart, and the video comes back by itself.
// `iceErrors` says what went wrong with each STUN/TURN server in the current
// connection, and `stats.route` is the selected candidate pair ("relay (TURN
// over udp) -> host": a TURN server in the path).
// `recordings` is the last listing of the camera's recordings,
// {recording, segments: [{name, start, duration, size, url}]} oldest first
// (null until the player's Recordings panel is first opened).
//
// /?camera=a&camera=b shows only those cameras (a name the server does not
// know gets a player too, which shows the server's refusal); a name given
// twice gets a second player, "a (2)", another viewer of the same camera.

import { COLUMNS, ROWS, cellSize, readBlockCode } from "./blockcode.js";
import { describeIceError, parseIceServers } from "./ice.js";

// 300 frames: 10 s at 30 fps, enough to check continuity and latency; a page
// left open for months keeps the same memory.
const FRAMES_KEPT = 300;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10_000;
const STABLE_MS = 60_000; // a connection that lasted this long resets the backoff
// "disconnected" often heals by itself (a Wi-Fi hiccup, ICE consent checks
// missed); "failed" does not.
const DISCONNECTED_GRACE_MS = 3_000;
const ICE_GATHERING_TIMEOUT_MS = 5_000; // then send the candidates we have
const POST_TIMEOUT_MS = 15_000; // the OPTIONS before it too
const STATS_INTERVAL_MS = 1_000;
// Stats polls without a decoded frame, connection up, before the player says
// the camera sends nothing (a failing camera does not end the connection).
const STALL_POLLS = 3;
// /api/cameras, for the cameras' health: one request for all the players,
// the next one this long after the last answer.
const HEALTH_POLL_MS = 2_000;
const HEALTH_TIMEOUT_MS = 10_000;
// A player's recordings are listed while its Recordings panel is open: on
// opening, then this long after each answer; never while it is closed (nor
// while the page is hidden).
const RECORDINGS_POLL_MS = 10_000;
// Answers another try cannot change: bad offer, unknown camera, wrong type.
const PERMANENT_STATUS = new Set([400, 401, 404, 415]);

const players = {};
window.rpistream = { players };

// The server's clock minus this page's, in seconds, from the Date header of
// /api/cameras (whole seconds, hence ignored under 2 s): health times are the
// server's, and a Pi without a network time source may be far off.
let serverClockOffset = 0;

function readServerClock(response) {
  const date = Date.parse(response.headers.get("Date"));
  if (Number.isNaN(date)) return;
  const offset = (date + 500 - Date.now()) / 1000;
  serverClockOffset = Math.abs(offset) >= 2 ? offset : 0;
}

class Player {
  constructor(name, camera, label = name) {
    this.name = name;
    this.whep = new URL(camera?.whep ?? `/cameras/${encodeURIComponent(name)}/whep`,
      window.location.href).href;
    this.cameraError = camera?.error ?? null;
    this.info = { state: "idle", error: null, connects: 0, frames: [], stats: {}, health: null,
      recordings: null, iceErrors: [] };
    players[label] = this.info;

    const template = document.getElementById("player");
    this.element = template.content.firstElementChild.cloneNode(true);
    this.video = this.element.querySelector("video");
    this.message = this.element.querySelector(".message");
    this.overlay = this.element.querySelector(".stats");
    this.stateText = this.element.querySelector(".state");
    this.healthText = this.element.querySelector(".health");
    this.element.querySelector(".name").textContent = label;
    // A test pattern in place of the Pi camera says so, and why, all the time.
    const fallback = this.element.querySelector(".fallback");
    fallback.hidden = !camera?.fallback_reason;
    fallback.textContent = camera?.fallback_reason
      ? `Test pattern, not a camera: ${camera.fallback_reason}` : "";
    if (camera?.width && camera?.height) {
      this.element.style.setProperty("--aspect", `${camera.width} / ${camera.height}`);
    }
    const statsButton = this.element.querySelector(".toggle-stats");
    this.statsShown = false;
    statsButton.addEventListener("click", () => {
      this.statsShown = !this.statsShown;
      statsButton.setAttribute("aria-pressed", String(this.statsShown));
      this.renderStats();
    });
    this.stopButton = this.element.querySelector(".stop");
    this.stopButton.addEventListener("click", () => this.stopped ? this.play() : this.stop());
    this.element.querySelector(".fullscreen").addEventListener("click", () => this.fullscreen());

    // Only the code's corner of each frame is copied out of the video.
    this.canvas = document.createElement("canvas");
    this.context = this.canvas.getContext("2d", { willReadFrequently: true });

    this.pc = null;
    this.session = null; // the WHEP session URL (Location), to hang up
    this.iceErrors = new Map(); // STUN/TURN URL -> what went wrong with it, this connection
    this.attempt = 0; // bumped on every hang-up: stale callbacks check it
    this.backoff = BACKOFF_FIRST_MS;
    this.connectedAt = 0;
    this.retryTimer = null;
    this.dropTimer = null;
    this.stopped = false;
    this.lastInbound = null;
    this.stalls = 0;
    this.watchFrames();
    this.setUpRecordings();
    this.setHealth(camera?.health);
    setInterval(() => {
      this.pollStats();
      this.renderHealth(); // the retry countdown
    }, STATS_INTERVAL_MS);
  }

  setState(state, text = null, isError = false) {
    this.info.state = state;
    this.stateText.textContent = state;
    const shown = text ?? (state === "playing" ? null : this.cameraError);
    this.message.hidden = !shown;
    this.message.textContent = shown ?? "";
    this.message.classList.toggle("error", isError || (!text && !!this.cameraError));
  }

  // --- WHEP -------------------------------------------------------------

  async connect() {
    clearTimeout(this.retryTimer);
    if (typeof RTCPeerConnection === "undefined") {
      // WebKitGTK builds without WebRTC (Debian's, for one) and some embedded views.
      this.drop("This browser cannot play WebRTC (it has no RTCPeerConnection): open the "
        + "page in Firefox, Chrome, Edge or Safari", true);
      return;
    }
    const attempt = ++this.attempt;
    const current = () => attempt === this.attempt;
    // A previous failure stays in view while trying again.
    const previous = this.info.error;
    this.setState("connecting", previous ? `${previous}\nReconnecting…`
      : this.cameraError ? null : "Connecting…", !!previous);
    // The STUN/TURN servers first, so that this offer gathers with them: the
    // server names them in a Link header to an OPTIONS (RFC 9725 §4.6), with
    // TURN credentials minted for this connection.
    let iceServers;
    try {
      iceServers = await this.fetchIceServers();
    } catch (error) {
      if (current()) this.drop(error.message, error.permanent);
      return;
    }
    if (!current()) return;
    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    this.iceErrors = new Map();
    this.info.iceErrors = [];
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => {
      this.video.srcObject = event.streams[0] ?? new MediaStream([event.track]);
    };
    pc.onconnectionstatechange = () => current() && this.onConnectionState(pc.connectionState);
    pc.onicecandidateerror = (event) => {
      if (!current() || !event.url) return;
      this.iceErrors.set(event.url, describeIceError(event));
      this.info.iceErrors = [...this.iceErrors.values()];
      // Said at once, not only when the connection fails a while later.
      if (this.info.state === "connecting") {
        this.setState("connecting", `Connecting… ${this.info.iceErrors.join("; ")}`);
      }
    };

    let response, body;
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringComplete(pc, ICE_GATHERING_TIMEOUT_MS);
      if (!current()) return;
      response = await fetch(this.whep, {
        method: "POST",
        headers: { "Content-Type": "application/sdp" },
        body: pc.localDescription.sdp,
        signal: AbortSignal.timeout(POST_TIMEOUT_MS),
      });
      body = await response.text();
    } catch (error) {
      if (current()) this.drop(`Cannot reach the server: ${error.message}`);
      return;
    }
    const location = response.headers.get("Location");
    const session = response.status === 201 && location ? new URL(location, this.whep).href : null;
    if (!current()) { // stopped while the offer was in flight
      if (session) hangUpSession(session);
      return;
    }
    if (response.status !== 201) {
      const reason = `${response.status} ${response.statusText}: ${body.trim()}`;
      this.drop(reason, PERMANENT_STATUS.has(response.status));
      return;
    }
    this.session = session;
    try {
      await pc.setRemoteDescription({ type: "answer", sdp: body });
    } catch (error) {
      if (current()) this.drop(`The server's answer was refused: ${error.message}`, true);
    }
  }

  async fetchIceServers() {
    let response;
    try {
      response = await fetch(this.whep, {
        method: "OPTIONS", signal: AbortSignal.timeout(POST_TIMEOUT_MS) });
    } catch (error) {
      throw new Error(`Cannot reach the server: ${error.message}`);
    }
    if (response.ok) return parseIceServers(response.headers.get("Link"));
    const failure = new Error(
      `${response.status} ${response.statusText}: ${(await response.text()).trim()}`);
    failure.permanent = PERMANENT_STATUS.has(response.status);
    throw failure;
  }

  onConnectionState(state) {
    clearTimeout(this.dropTimer);
    if (state === "connected") {
      this.connectedAt = Date.now();
      this.info.connects += 1;
      this.info.error = null;
      if (this.info.state !== "playing") this.setState("connected", "Waiting for video…");
    } else if (state === "failed") {
      // With a relay that failed, that is the reason the connection did.
      const relay = [...this.iceErrors.values()];
      this.drop(relay.length ? `The connection failed: ${relay.join("; ")}`
        : "The connection failed");
    } else if (state === "disconnected") {
      this.dropTimer = setTimeout(() => this.drop("The connection was lost"),
        DISCONNECTED_GRACE_MS);
    }
  }

  // Hang up and, unless the reason is permanent, try again after the backoff.
  drop(reason, permanent = false) {
    if (this.connectedAt && Date.now() - this.connectedAt >= STABLE_MS) {
      this.backoff = BACKOFF_FIRST_MS;
    }
    this.hangUp();
    this.info.error = reason;
    if (permanent) {
      this.setState("failed", reason, true);
      return;
    }
    // ±20 % so that viewers dropped together (a server restart) come back spread out.
    const delay = this.backoff * (0.8 + 0.4 * Math.random());
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    this.setState("retrying", `${reason}\nRetrying in ${(delay / 1000).toFixed(1)} s`, true);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  hangUp() {
    this.attempt += 1;
    clearTimeout(this.dropTimer);
    clearTimeout(this.retryTimer);
    if (this.session) hangUpSession(this.session);
    this.session = null;
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    this.video.srcObject = null;
    this.connectedAt = 0;
    this.lastInbound = null;
    this.stalls = 0;
    this.info.stats = {};
    this.renderStats();
  }

  stop() {
    this.stopped = true;
    this.hangUp();
    this.stopButton.textContent = "Play";
    this.setState("stopped", "Stopped");
  }

  play() {
    this.stopped = false;
    this.backoff = BACKOFF_FIRST_MS;
    this.stopButton.textContent = "Stop";
    this.connect();
  }

  fullscreen() {
    if (document.fullscreenElement) {
      document.exitFullscreen();
    } else if (this.element.requestFullscreen) {
      this.element.requestFullscreen().catch(() => {});
    } else if (this.video.webkitEnterFullscreen) {
      this.video.webkitEnterFullscreen(); // iPhone Safari: video elements only
    }
  }

  // --- frames and latency ---------------------------------------------------

  watchFrames() {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    const onFrame = (now, metadata) => {
      this.onFrame(metadata);
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  onFrame(metadata) {
    if (this.info.state !== "playing" && this.pc) this.setState("playing");
    // Wall-clock time the frame reaches the screen: now, plus the wait for
    // its vsync. Date.now() rather than performance.timeOrigin + now, which
    // drifts from the wall clock over a long-open page.
    const presentedMs = Date.now()
      + Math.max(0, metadata.expectedDisplayTime - performance.now());
    const { width, height } = metadata;
    const cell = cellSize(width, height);
    if (cell < 2) return;
    const [w, h] = [COLUMNS * cell, ROWS * cell];
    if (this.canvas.width !== w || this.canvas.height !== h) {
      [this.canvas.width, this.canvas.height] = [w, h];
    }
    this.context.drawImage(this.video, 0, 0, w, h, 0, 0, w, h);
    const code = readBlockCode(this.context.getImageData(0, 0, w, h), width, height);
    if (!code) return;
    const frames = this.info.frames;
    // presentedFrames (the browser's count) tells a frame the page never saw
    // because two were shown within one refresh from a frame that never came.
    frames.push({ frame: code.frame, captureMs: code.captureMs, presentedMs,
      presentedFrames: metadata.presentedFrames });
    if (frames.length > FRAMES_KEPT) frames.shift();
  }

  // Median latency of the frames presented in the last second; null without
  // block codes (a real camera).
  recentLatencyMs() {
    const since = Date.now() - 1000;
    const latencies = this.info.frames.filter((f) => f.presentedMs >= since)
      .map((f) => f.presentedMs - f.captureMs).sort((a, b) => a - b);
    return latencies.length ? latencies[latencies.length >> 1] : null;
  }

  // --- the camera's health -------------------------------------------------

  // From /api/cameras: nothing shown while live (or from a server that does
  // not say). Never a reason to hang up: the camera's restart keeps this
  // connection, and the next keyframe after it brings the video back.
  setHealth(health) {
    this.info.health = health ?? null;
    this.renderHealth();
  }

  renderHealth() {
    const h = this.info.health;
    this.healthText.hidden = !h || h.state === "live";
    if (this.healthText.hidden) return;
    const now = Date.now() / 1000 + serverClockOffset;
    const since = h.since != null ? ` since ${timeOfDay(h.since - serverClockOffset)}` : "";
    const retry = h.next_retry == null ? "" : ` — restarting ${
      h.next_retry - now >= 0.5 ? `in ${Math.round(h.next_retry - now)} s` : "now"}`;
    const restarts = h.restarts ? ` (${h.restarts} restart${h.restarts === 1 ? "" : "s"} so far)` : "";
    this.healthText.dataset.state = h.state;
    this.healthText.textContent =
      `Camera ${h.state}${since}${h.reason ? `: ${h.reason}` : ""}${retry}${restarts}`;
  }

  // --- recordings ------------------------------------------------------------

  // The Recordings panel: the camera's segments, each to play in the panel's
  // own <video> (the live picture goes on), download or delete, and a button
  // to start or stop recording. An error stays in the panel until the next
  // action or listing succeeds.
  setUpRecordings() {
    const panel = this.element.querySelector(".recordings");
    this.recordingsPanel = panel;
    this.segmentList = panel.querySelector(".segments");
    this.segmentCount = panel.querySelector(".recordings-count");
    this.recordingsError = panel.querySelector(".recordings-error");
    this.recordButton = panel.querySelector(".toggle-recording");
    this.playback = panel.querySelector(".playback");
    this.recordingsTimer = null;
    this.listings = 0; // bumped on every request: only the latest answer is shown
    this.errors = { listing: null, action: null };
    panel.addEventListener("toggle", () => {
      clearTimeout(this.recordingsTimer);
      if (panel.open) this.listRecordings();
      else this.playback.pause();
    });
    this.recordButton.addEventListener("click", () => this.toggleRecording());
    this.playback.addEventListener("error", () => this.playback.dataset.name
      && this.showRecordingsError("action", `Cannot play ${this.playback.dataset.name}: ${
        this.playback.error?.message || "the browser cannot decode it"}`));
  }

  async listRecordings() {
    clearTimeout(this.recordingsTimer);
    const listing = ++this.listings;
    if (!document.hidden) {
      try {
        const response = await fetch(`/api/cameras/${encodeURIComponent(this.name)}/recordings`,
          { cache: "no-store", signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
        if (!response.ok) throw new Error(await responseError(response));
        const recordings = await response.json();
        if (listing !== this.listings) return;
        this.showRecordingsError("listing", null);
        // Rows are rebuilt only when something changed: a button keeps focus.
        if (JSON.stringify(recordings) !== JSON.stringify(this.info.recordings)) {
          this.info.recordings = recordings;
          this.renderRecordings();
        }
      } catch (error) {
        if (listing !== this.listings) return;
        this.showRecordingsError("listing", `Cannot list the recordings: ${error.message}`);
      }
    }
    if (this.recordingsPanel.open) {
      this.recordingsTimer = setTimeout(() => this.listRecordings(), RECORDINGS_POLL_MS);
    }
  }

  showRecordingsError(kind, text) {
    this.errors[kind] = text;
    const shown = [this.errors.action, this.errors.listing].filter(Boolean).join("\n");
    this.recordingsError.hidden = !shown;
    this.recordingsError.textContent = shown;
  }

  // Newest first; the segment playing stays marked.
  renderRecordings() {
    const { recording, segments } = this.info.recordings;
    this.recordButton.disabled = false;
    this.recordButton.textContent = recording ? "Stop recording" : "Start recording";
    this.recordButton.setAttribute("aria-pressed", String(recording));
    this.segmentCount.textContent = `${segments.length} segment${segments.length === 1 ? "" : "s"}`;
    this.segmentList.replaceChildren(...[...segments].reverse().map((segment) => {
      const row = document.createElement("li");
      row.dataset.name = segment.name;
      row.classList.toggle("playing", this.playback.dataset.name === segment.name);
      const text = document.createElement("span");
      text.textContent = `${timeOfDay(segment.start - serverClockOffset)} · ${
        formatDuration(segment.duration)} · ${formatSize(segment.size)}`;
      const play = document.createElement("button");
      play.type = "button";
      play.textContent = "Play";
      play.addEventListener("click", () => this.playRecording(segment));
      const download = document.createElement("a");
      download.href = segment.url;
      download.download = segment.name;
      download.textContent = "Download";
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Delete";
      remove.addEventListener("click", () => this.deleteRecording(segment, text.textContent));
      row.append(text, play, download, remove);
      return row;
    }));
  }

  playRecording(segment) {
    this.playback.hidden = false;
    this.playback.dataset.name = segment.name;
    this.playback.src = segment.url;
    this.playback.play().catch(() => {}); // an error event says why
    for (const row of this.segmentList.children) {
      row.classList.toggle("playing", row.dataset.name === segment.name);
    }
  }

  async deleteRecording(segment, description) {
    if (!confirm(`Delete the recording ${description}?`)) return;
    try {
      const response = await fetch(segment.url, { method: "DELETE" });
      // 404: already gone (retention took it).
      if (!response.ok && response.status !== 404) throw new Error(await responseError(response));
      this.showRecordingsError("action", null);
      if (this.playback.dataset.name === segment.name) {
        this.playback.removeAttribute("src");
        delete this.playback.dataset.name;
        this.playback.load();
        this.playback.hidden = true;
      }
    } catch (error) {
      this.showRecordingsError("action", `Cannot delete ${segment.name}: ${error.message}`);
    }
    this.listRecordings();
  }

  async toggleRecording() {
    const start = !this.info.recordings?.recording;
    this.recordButton.disabled = true;
    try {
      const response = await fetch(`/cameras/${encodeURIComponent(this.name)}/recording`,
        { method: start ? "POST" : "DELETE" });
      if (!response.ok) throw new Error(await responseError(response));
      this.showRecordingsError("action", null);
    } catch (error) {
      this.showRecordingsError("action",
        `Cannot ${start ? "start" : "stop"} recording: ${error.message}`);
    }
    this.recordButton.disabled = false;
    this.listRecordings();
  }

  // --- stats ---------------------------------------------------------------

  async pollStats() {
    const pc = this.pc;
    if (!pc) return;
    let report;
    try {
      report = await pc.getStats();
    } catch {
      return; // closed meanwhile
    }
    if (pc !== this.pc) return;
    let inbound = null, transport = null, pair = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
      if (s.type === "transport") transport = s;
    });
    if (transport?.selectedCandidatePairId) pair = report.get(transport.selectedCandidatePairId);
    if (!inbound) return;
    const last = this.lastInbound ?? inbound;
    const seconds = (inbound.timestamp - last.timestamp) / 1000;
    const lost = inbound.packetsLost ?? 0, received = inbound.packetsReceived ?? 0;
    this.info.stats = {
      fps: seconds > 0 ? (inbound.framesDecoded - last.framesDecoded) / seconds : null,
      kbps: seconds > 0 ? ((inbound.bytesReceived - last.bytesReceived) * 8) / seconds / 1000 : null,
      packetsLost: lost,
      packetsReceived: received,
      lossPercent: lost + received > 0 ? (100 * lost) / (lost + received) : 0,
      rttMs: pair?.currentRoundTripTime != null ? pair.currentRoundTripTime * 1000 : null,
      freezes: inbound.freezeCount ?? null,
      framesDropped: inbound.framesDropped ?? null,
      fecPackets: inbound.fecPacketsReceived ?? null,
      size: inbound.frameWidth ? `${inbound.frameWidth}x${inbound.frameHeight}` : null,
      codec: report.get(inbound.codecId)?.mimeType?.replace("video/", "") ?? null,
      latencyMs: this.recentLatencyMs(),
      route: describeRoute(report.get(pair?.localCandidateId),
        report.get(pair?.remoteCandidateId)),
    };
    this.lastInbound = inbound;
    this.renderStats();
    this.stalls = this.info.stats.fps === 0 && this.connectedAt ? this.stalls + 1 : 0;
    if (this.stalls === STALL_POLLS) this.explainStall();
  }

  // The next presented frame sets the state back to "playing".
  async explainStall() {
    let error = null;
    try {
      const cameras = await (await fetch("/api/cameras")).json();
      const camera = cameras.find((c) => c.name === this.name);
      error = camera?.error;
      this.setHealth(camera?.health);
    } catch {
      // the server is unreachable: the connection will drop soon and say so
    }
    if (this.stalls >= STALL_POLLS) {
      this.setState("stalled", `No video for ${STALL_POLLS} s: ${
        error ?? "the camera sends nothing"}`, true);
    }
  }

  renderStats() {
    const s = this.info.stats;
    // Nothing to show before a connection delivers stats (an error is shown then).
    this.overlay.hidden = !this.statsShown || !s.codec;
    if (this.overlay.hidden) return;
    const show = (value, digits, unit = "") =>
      value == null ? "—" : `${value.toFixed(digits)}${unit}`;
    this.overlay.textContent = [
      `codec    ${s.codec ?? "—"} ${s.size ?? ""}`,
      `fps      ${show(s.fps, 1)}`,
      `bitrate  ${show(s.kbps, 0, " kbit/s")}`,
      `loss     ${show(s.lossPercent, 2, " %")} (${s.packetsLost ?? 0} packets)`,
      `rtt      ${show(s.rttMs, 1, " ms")}`,
      `freezes  ${s.freezes ?? "—"}`,
      `fec      ${s.fecPackets ?? "—"} packets`,
      `latency  ${show(s.latencyMs, 0, " ms")}`,
      `route    ${s.route ?? "—"}`,
    ].join("\n");
  }
}

// "17:02:11", local time, with the date when it is not today.
function timeOfDay(seconds) {
  const date = new Date(seconds * 1000);
  const time = date.toTimeString().slice(0, 8);
  return date.toDateString() === new Date().toDateString()
    ? time : `${date.toLocaleDateString()} ${time}`;
}

// "1 min 0 s", "45 s".
function formatDuration(seconds) {
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// "29.8 MB", "812 kB" (SI units, as disks are sold).
function formatSize(bytes) {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(2)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}

async function responseError(response) {
  return `${response.status} ${response.statusText}: ${(await response.text()).trim()}`;
}

function hangUpSession(url) {
  // keepalive: the request outlives the page when this runs on pagehide.
  fetch(url, { method: "DELETE", keepalive: true }).catch(() => {});
}

function iceGatheringComplete(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}

// The selected candidate pair in a few words: "relay (TURN over tcp) -> host".
// A relay is a TURN server in the path (RFC 8445 §5.1.1.2).
function describeRoute(local, remote) {
  if (!local || !remote) return null;
  const relay = local.candidateType === "relay" && local.relayProtocol
    ? ` (TURN over ${local.relayProtocol})` : "";
  return `${local.candidateType}${relay} -> ${remote.candidateType}`;
}

async function loadCameras(status) {
  for (let delay = BACKOFF_FIRST_MS; ; delay = Math.min(delay * 2, BACKOFF_MAX_MS)) {
    try {
      const response = await fetch("/api/cameras");
      if (!response.ok) throw new Error(`${response.status} ${(await response.text()).trim()}`);
      readServerClock(response);
      return await response.json();
    } catch (error) {
      status.textContent = `Cannot load the camera list (${error.message}); retrying…`;
      status.classList.add("error");
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

// Every player's camera health from one /api/cameras poll: the next request
// HEALTH_POLL_MS after the last answer, so never two at once, and none while
// the page is hidden (the first on showing it again).
function watchHealth(all) {
  let timer = null, inFlight = false;
  const poll = async () => {
    timer = null;
    if (document.hidden || inFlight) return;
    inFlight = true;
    try {
      const response = await fetch("/api/cameras",
        { cache: "no-store", signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
      if (response.ok) {
        readServerClock(response);
        const cameras = await response.json();
        for (const player of all) {
          player.setHealth(cameras.find((c) => c.name === player.name)?.health);
        }
      }
    } catch {
      // the server is unreachable: the connections say so when they drop
    }
    inFlight = false;
    if (!document.hidden) timer = setTimeout(poll, HEALTH_POLL_MS);
  };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !timer && !inFlight) poll();
  });
  timer = setTimeout(poll, HEALTH_POLL_MS); // the camera list just gave the first
}

async function main() {
  const status = document.getElementById("status");
  const cameras = await loadCameras(status);
  status.classList.remove("error");
  const wanted = new URLSearchParams(window.location.search).getAll("camera");
  const names = wanted.length ? wanted : cameras.map((c) => c.name);
  status.textContent = names.length
    ? `${names.length} camera${names.length === 1 ? "" : "s"}`
    : "No cameras are configured on this server.";
  const container = document.getElementById("players");
  const seen = {};
  const all = names.map((name) => {
    seen[name] = (seen[name] ?? 0) + 1;
    const label = seen[name] === 1 ? name : `${name} (${seen[name]})`;
    return new Player(name, cameras.find((c) => c.name === name), label);
  });
  for (const player of all) {
    container.append(player.element);
    player.connect();
  }
  if (all.length) watchHealth(all);
  // Free the server's viewer slots at once rather than after ICE times out.
  window.addEventListener("pagehide", () => all.forEach((p) => p.hangUp()));
}

main();
