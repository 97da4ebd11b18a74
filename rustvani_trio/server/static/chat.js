// The chat page: RTVI over a WebSocket (JSON text), no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const log = $("log"), input = $("text"), sendButton = $("send"), stopButton = $("interrupt");
const statusEl = $("status"), notice = $("notice"), stats = $("stats"), nodeEl = $("node");
const micButton = $("mic"), hint = $("hint"), speakingEl = $("speaking");

const CLOSE_REASONS = {
  1001: "The server is shutting down; reconnecting…",
  1008: "The server closed the connection (policy).",
  1009: "That message was too large; reconnecting…",
  1011: "The server hit an error; reconnecting…",
  1013: "The server is full; retrying…",
  4001: "Wrong or missing token: open the page with ?token=… in its address.",
  4003: "This page's origin is not allowed by the server.",
};
const FINAL_CODES = new Set([4001, 4003]);

let ws = null, ready = false, attempt = 0, nextId = 1;
let bubble = null, sentAt = 0, firstAt = 0, tokens = 0;
let typed = []; // typed messages whose transcription echo is not shown again
const cards = new Map();

function wsUrl() {
  const page = new URL(location.href);
  const url = new URL("/ws", page);
  url.protocol = page.protocol === "https:" ? "wss:" : "ws:";
  const token = page.searchParams.get("token");
  if (token) url.searchParams.set("token", token);
  return url.toString();
}

function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

function showNotice(text) {
  notice.textContent = text;
  notice.hidden = !text;
}

function add(cls, text) {
  const el = document.createElement("div");
  el.className = cls;
  if (text !== undefined) el.textContent = text;
  log.appendChild(el);
  log.scrollTop = log.scrollHeight;
  return el;
}

function send(type, data) {
  const msg = { label: "rtvi-ai", type, id: String(nextId++) };
  if (data !== undefined) msg.data = data;
  ws.send(JSON.stringify(msg));
  return msg.id;
}

function setBusy(busy) {
  stopButton.disabled = !busy;
}

function connect() {
  setStatus("connecting", attempt ? `reconnecting (attempt ${attempt})…` : "connecting…");
  ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  ws.onopen = () => send("client-ready", {
    version: "2.2.0",
    about: { library: "rustvani-trio-page" },
    audio_in: { sample_rate: voice.MIC_RATE, num_channels: 1 }, // the microphone's PCM
  });
  ws.onmessage = (ev) => {
    if (typeof ev.data !== "string") { // the bot's voice
      if (ready) voice.play(ev.data);
      return;
    }
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    if (msg.label === "rtvi-ai") handle(msg);
  };
  ws.onclose = (ev) => {
    ready = false;
    sendButton.disabled = true;
    micButton.disabled = true;
    stopMic();
    voice.silence();
    setBusy(false);
    finishBubble(true);
    const reason = CLOSE_REASONS[ev.code] || `Connection lost (${ev.code}); reconnecting…`;
    if (FINAL_CODES.has(ev.code)) {
      setStatus("error", "disconnected");
      showNotice(reason);
      return;
    }
    showNotice(reason);
    attempt += 1;
    const delay = Math.min(10000, 500 * 2 ** Math.min(attempt, 5));
    setStatus("error", `disconnected; retrying in ${Math.round(delay / 100) / 10} s`);
    setTimeout(connect, delay);
  };
}

function finishBubble(interrupted) {
  if (!bubble) return;
  bubble.classList.remove("streaming");
  if (interrupted) bubble.classList.add("interrupted");
  bubble = null;
  setBusy(false);
}

function showStats() {
  const ttfb = firstAt ? `${Math.round(firstAt - sentAt)} ms` : "–";
  const secs = (performance.now() - (firstAt || sentAt)) / 1000;
  const rate = tokens && secs > 0 ? (tokens / secs).toFixed(1) : "–";
  stats.textContent = `TTFB ${ttfb} · ${tokens} tokens · ${rate} tok/s`;
  stats.dataset.ttfb = firstAt ? String(Math.round(firstAt - sentAt)) : "";
  stats.dataset.tokens = String(tokens);
}

function card(id, name) {
  let el = cards.get(id);
  if (!el) {
    if (bubble) { bubble.classList.remove("streaming"); bubble = null; } // text after the call: a new bubble
    el = add("card");
    el.dataset.testid = "tool-card";
    el.setAttribute("data-testid", "tool-card");
    // Built node by node: server and model text only ever goes in as textContent.
    const title = document.createElement("h3");
    title.textContent = name || "tool";
    const state = document.createElement("div");
    state.className = "state";
    el.append(title, state, document.createElement("dl"));
    cards.set(id, el);
  }
  return el;
}

function fill(el, data) {
  const dl = el.querySelector("dl");
  dl.textContent = "";
  const entries = data && typeof data === "object" ? Object.entries(data) : [["result", data]];
  for (const [k, v] of entries) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = typeof v === "object" ? JSON.stringify(v) : String(v);
    dl.append(dt, dd);
  }
}

function handle(msg) {
  const data = msg.data || {};
  switch (msg.type) {
    case "bot-ready": {
      ready = true; attempt = 0;
      sendButton.disabled = false;
      const talk = data.about && data.about.voice;
      micButton.hidden = !talk;
      micButton.disabled = !talk;
      hint.hidden = !talk;
      if (talk) hint.textContent = `Press Talk and say: ${(talk.understands || []).join(" · ")}`;
      setStatus("ready", "connected");
      showNotice("");
      break;
    }
    case "bot-llm-started":
      finishBubble(false);
      bubble = add("msg bot streaming");
      bubble.setAttribute("data-testid", "bot-message");
      firstAt = 0; tokens = 0;
      setBusy(true);
      break;
    case "bot-llm-text":
      if (!bubble) { bubble = add("msg bot streaming"); bubble.setAttribute("data-testid", "bot-message"); }
      if (!firstAt) firstAt = performance.now();
      tokens += 1;
      bubble.textContent += data.text;
      log.scrollTop = log.scrollHeight;
      showStats();
      break;
    case "bot-llm-stopped":
      showStats();
      finishBubble(false);
      break;
    case "bot-interrupted":
      voice.interrupt();
      finishBubble(true);
      for (const el of cards.values()) {
        if (el.dataset.done !== "1") el.querySelector(".state").textContent = "cancelled";
      }
      break;
    case "llm-function-call-in-progress": {
      const el = card(data.tool_call_id, data.function_name);
      el.querySelector(".state").textContent = "running…";
      if (data.arguments) fill(el, data.arguments);
      break;
    }
    case "llm-function-call-stopped": {
      const el = card(data.tool_call_id, data.function_name);
      el.dataset.done = "1";
      el.querySelector(".state").textContent = data.cancelled ? "cancelled" : "done";
      break;
    }
    case "user-transcription":
      if (data.final) {
        const at = typed.indexOf(data.text);
        if (at >= 0) typed.splice(at, 1); // our own typed message, already shown
        else add("msg user voice", data.text).setAttribute("data-testid", "user-transcript");
      }
      break;
    case "user-started-speaking":
      setSpeaking("user");
      break;
    case "user-stopped-speaking":
      if (speakingEl.dataset.who === "user") setSpeaking("none");
      break;
    case "bot-started-speaking":
      voice.botStarted();
      setSpeaking("bot");
      break;
    case "bot-stopped-speaking":
      if (speakingEl.dataset.who === "bot") setSpeaking("none");
      break;
    case "server-message":
      if (data.type === "audio-format") {
        voice.setFormat(data.sample_rate, data.num_channels);
      } else if (data.type === "function-call-raw-result") {
        const el = card(data.tool_call_id, data.function_name);
        fill(el, data.data);
      } else if (data.type === "dhara-node-changed") {
        nodeEl.hidden = false;
        nodeEl.textContent = `node: ${data.current}`;
        add("event", `${data.previous ?? "start"} → ${data.current}`).setAttribute("data-testid", "node-change");
      }
      break;
    case "metrics":
      if (data.ttfb && data.ttfb.length) stats.dataset.serverTtfb = String(data.ttfb[0].value);
      break;
    case "error":
      add("error", `Error: ${data.error}`).setAttribute("data-testid", "error");
      break;
    case "error-response":
      add("error", `Request failed: ${data.error}`).setAttribute("data-testid", "error");
      break;
  }
}

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = input.value.trim();
  if (!text || !ready) return;
  add("msg user", text);
  typed.push(text);
  if (typed.length > 20) typed.shift();
  input.value = "";
  sentAt = performance.now(); firstAt = 0; tokens = 0;
  send("send-text", { content: text });
});

stopButton.addEventListener("click", () => {
  if (ready) send("client-message", { t: "interrupt" });
});

function setSpeaking(who) {
  speakingEl.dataset.who = who;
  speakingEl.textContent = who === "user" ? "listening…" : who === "bot" ? "speaking…" : "";
}

function stopMic() {
  voice.stopMic();
  micButton.setAttribute("aria-pressed", "false");
  micButton.textContent = "🎤 Talk";
}

micButton.addEventListener("click", async () => {
  if (voice.stats.micOn) { stopMic(); return; }
  micButton.disabled = true;
  try {
    await voice.startMic((pcm) => {
      if (ready && ws.readyState === WebSocket.OPEN) ws.send(pcm);
    });
    micButton.setAttribute("aria-pressed", "true");
    micButton.textContent = "■ Stop";
    showNotice("");
  } catch (err) {
    stopMic();
    showNotice(`The microphone is not available: ${err.message || err}`);
  } finally {
    micButton.disabled = !ready;
  }
});

connect();
