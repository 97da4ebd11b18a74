// The page's voice: the microphone (an AudioWorklet sends 16 kHz PCM to the server) and the
// bot's audio (binary PCM, played gaplessly; stopped at once when the bot is interrupted).
// No build step: loaded by index.html before chat.js, which calls into window.voice.
"use strict";

window.voice = (() => {
  const MIC_RATE = 16000; // what client-ready declares (audio_in); the server expects it
  const START_DELAY = 0.05; // seconds of jitter buffer when a run of bot audio starts

  let ctx = null, workletLoaded = false;
  let micStream = null, micSource = null, micNode = null, micSink = null;
  let format = { sampleRate: 16000, channels: 1 };
  let playAt = 0;
  const sources = new Set();
  // What happened, for the page's indicators and for tests (window.voice.stats).
  const stats = {
    micOn: false, micFrames: 0,
    chunks: 0, bytes: 0, seconds: 0, played: 0, stopped: 0,
    interruptions: 0, afterInterruption: 0, lastStartedAt: 0, contextState: "none",
  };
  let interruptedRun = false;

  function context() {
    if (!ctx) ctx = new AudioContext({ latencyHint: "interactive" });
    if (ctx.state === "suspended") ctx.resume();
    stats.contextState = ctx.state;
    return ctx;
  }

  // ------------------------------------------------------------------ microphone

  async function startMic(send) {
    const c = context();
    if (!workletLoaded) {
      await c.audioWorklet.addModule("/static/mic-worklet.js");
      workletLoaded = true;
    }
    micStream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    micSource = c.createMediaStreamSource(micStream);
    micNode = new AudioWorkletNode(c, "mic-capture", {
      processorOptions: { targetRate: MIC_RATE, frameMs: 20 },
    });
    micNode.port.onmessage = (ev) => {
      stats.micFrames += 1;
      send(ev.data);
    };
    // A silent sink keeps the worklet pulled by the graph.
    micSink = c.createGain();
    micSink.gain.value = 0;
    micSource.connect(micNode).connect(micSink).connect(c.destination);
    stats.micOn = true;
  }

  function stopMic() {
    if (micNode) { micNode.port.postMessage("flush"); micNode.port.onmessage = null; micNode.disconnect(); }
    if (micSource) micSource.disconnect();
    if (micSink) micSink.disconnect();
    if (micStream) for (const track of micStream.getTracks()) track.stop();
    micStream = micSource = micNode = micSink = null;
    stats.micOn = false;
  }

  // ------------------------------------------------------------------ the bot's audio

  function setFormat(sampleRate, channels) {
    format = { sampleRate, channels: channels || 1 };
  }

  function play(buffer) {
    const c = context();
    const pcm = new Int16Array(buffer);
    const channels = format.channels;
    const frames = Math.floor(pcm.length / channels);
    if (!frames) return;
    stats.chunks += 1;
    stats.bytes += buffer.byteLength;
    stats.seconds += frames / format.sampleRate;
    if (interruptedRun) stats.afterInterruption += 1;
    const audio = c.createBuffer(channels, frames, format.sampleRate);
    for (let ch = 0; ch < channels; ch++) {
      const out = audio.getChannelData(ch);
      for (let i = 0; i < frames; i++) out[i] = pcm[i * channels + ch] / 32768;
    }
    const src = c.createBufferSource();
    src.buffer = audio;
    src.connect(c.destination);
    const now = c.currentTime;
    if (playAt < now) playAt = now + START_DELAY; // a new run, or it ran dry
    src.start(playAt);
    if (!sources.size) stats.lastStartedAt = playAt;
    playAt += audio.duration;
    sources.add(src);
    src.onended = () => {
      if (!src.stoppedEarly) stats.played += 1;
      sources.delete(src);
    };
  }

  // bot-interrupted: what is scheduled stops now (the server sent at most a little ahead).
  function interrupt() {
    stats.interruptions += 1;
    stats.afterInterruption = 0;
    interruptedRun = true;
    silence();
  }

  // Stop the bot's audio now (an interruption, or the connection is gone).
  function silence() {
    for (const src of sources) {
      src.stoppedEarly = true;
      try { src.stop(); } catch { /* not started yet */ }
      stats.stopped += 1;
    }
    sources.clear();
    playAt = 0;
  }

  // bot-started-speaking: a new answer's audio follows.
  function botStarted() {
    interruptedRun = false;
  }

  function playing() {
    return ctx !== null && sources.size > 0 && ctx.currentTime >= stats.lastStartedAt;
  }

  return { MIC_RATE, startMic, stopMic, setFormat, play, interrupt, silence, botStarted, playing, stats };
})();
