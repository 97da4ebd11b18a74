// The microphone's AudioWorklet: mono PCM s16le at the server's rate (16 kHz), posted to the
// page in 20 ms frames. The context runs at the device's rate (44.1 or 48 kHz mostly), so the
// audio is low-pass filtered (windowed sinc, cut-off at 90% of the new Nyquist frequency) and
// resampled here, off the page's main thread.
"use strict";

const PHASES = 128; // fractional positions of the filter table

class MicCapture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.outRate = opts.targetRate || 16000;
    this.frameLen = Math.round((this.outRate * (opts.frameMs || 20)) / 1000);
    this.step = sampleRate / this.outRate; // input samples per output sample
    this.passthrough = Math.abs(this.step - 1) < 1e-9;
    const scale = Math.max(1, this.step);
    const cutoff = 0.45 / scale; // cycles per input sample
    this.half = Math.ceil(12 * scale); // filter taps on each side
    const taps = 2 * this.half;
    this.taps = taps;
    this.table = new Float32Array(PHASES * taps);
    for (let p = 0; p < PHASES; p++) {
      const frac = p / PHASES;
      let sum = 0;
      for (let k = 0; k < taps; k++) {
        const d = k - this.half + 1 - frac; // input sample minus output position
        const x = 2 * cutoff * d;
        const sinc = x === 0 ? 1 : Math.sin(Math.PI * x) / (Math.PI * x);
        const w = Math.abs(d) >= this.half ? 0 : 0.5 + 0.5 * Math.cos((Math.PI * d) / this.half);
        const v = sinc * w;
        this.table[p * taps + k] = v;
        sum += v;
      }
      for (let k = 0; k < taps; k++) this.table[p * taps + k] /= sum; // unity gain
    }
    this.hist = new Float32Array(8192);
    this.histLen = this.half - 1; // leading zeros: the first output sits at sample 0
    this.pos = this.half - 1; // the next output's position in hist
    this.out = new Int16Array(this.frameLen);
    this.outLen = 0;
    this.port.onmessage = (ev) => {
      if (ev.data === "flush" && this.outLen) this.post();
    };
  }

  emit(value) {
    const s = Math.max(-1, Math.min(1, value));
    this.out[this.outLen++] = s < 0 ? s * 32768 : s * 32767;
    if (this.outLen === this.frameLen) this.post();
  }

  post() {
    const frame = this.out.slice(0, this.outLen);
    this.port.postMessage(frame.buffer, [frame.buffer]);
    this.outLen = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const n = input[0].length;
    const mono = new Float32Array(n);
    for (const channel of input) for (let i = 0; i < n; i++) mono[i] += channel[i] / input.length;
    if (this.passthrough) {
      for (let i = 0; i < n; i++) this.emit(mono[i]);
      return true;
    }
    if (this.histLen + n > this.hist.length) {
      const bigger = new Float32Array(2 * (this.histLen + n));
      bigger.set(this.hist.subarray(0, this.histLen));
      this.hist = bigger;
    }
    this.hist.set(mono, this.histLen);
    this.histLen += n;
    const { hist, table, taps, half } = this;
    // An output needs the input up to half samples past its position.
    while (Math.floor(this.pos) + half + 1 < this.histLen) {
      let base = Math.floor(this.pos);
      let phase = Math.round((this.pos - base) * PHASES);
      if (phase === PHASES) { base += 1; phase = 0; }
      const first = base - half + 1;
      let acc = 0;
      const row = phase * taps;
      for (let k = 0; k < taps; k++) acc += hist[first + k] * table[row + k];
      this.emit(acc);
      this.pos += this.step;
    }
    // Drop the input no later output needs.
    const keepFrom = Math.floor(this.pos) - half + 1;
    if (keepFrom > 0) {
      hist.copyWithin(0, keepFrom, this.histLen);
      this.histLen -= keepFrom;
      this.pos -= keepFrom;
    }
    return true;
  }
}

registerProcessor("mic-capture", MicCapture);
